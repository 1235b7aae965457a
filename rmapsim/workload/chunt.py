"""Concurrent hunting: search threads of operations and their interleavings for a defect.

Hypothesis draws a short sequential prologue (processes, mappings, pages, forks)
and N threads of operations on those processes, plus the seed of a random
controlled schedule; each example is one deterministic controlled run.  The first
failing example is shrunk by Hypothesis (operations and seed), its schedule
recorded as schedule lines named by operation, and the program then shrunk on both
axes (`rmapsim.workload.shrink`): fewer threads and operations, fewer switches.
The result is a concurrent program `rmapstress exec` runs to the same defect.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from rmapsim.cprogram import ConcurrentProgram
from rmapsim.hunt import PROTS, WINDOW_BASE, WINDOW_PAGES, programs, translate
from rmapsim.program import Op
from rmapsim.structs import PAGE_SIZE
from rmapsim.variants import Variant, parse_variant
from rmapsim.workload.lanes import LanesResult, run_concurrent, segments_from
from rmapsim.workload.shrink import ShrinkStats, preemptions, shrink_program
from stress.sched import RandomWalk
from stress.sched.pool import ThreadPool

_LANE_OPS = (
    ("touch", 10),
    ("mmap", 3),
    ("mprotect", 4),
    ("munmap", 2),
    ("swapout", 3),
    ("referenced", 3),
    ("swapout-all", 1),
    ("fork", 1),
)
_LANE_NAMES = tuple(name for name, w in _LANE_OPS for _ in range(w))
#: Small slab pages, recycled at once: freed memory is reused soon, as under pressure.
MEMORY: dict[str, Any] = {"slab_page_bytes": 768, "min_partial": 0}
SCHEDULES_PER_PROGRAM = 3


def lane_ops(raw: list[tuple[Any, ...]], procs: list[str], lane: str) -> list[Op]:
    """Raw draws -> one lane's operations on the prologue's processes."""
    ops: list[Op] = []
    for i, (name, p, page, n, prot, write) in enumerate(raw):
        proc = procs[p % len(procs)]
        addr = WINDOW_BASE + (page % WINDOW_PAGES) * PAGE_SIZE
        n = max(1, min(n, WINDOW_PAGES - page % WINDOW_PAGES))
        if name == "swapout-all":
            ops.append(Op(0, "swapout", None))
        elif name == "fork":
            ops.append(Op(0, "fork", proc, child=f"{lane}c{i}"))
        elif name in ("mmap", "mprotect"):
            ops.append(Op(0, name, proc, addr, n, PROTS[prot % len(PROTS)]))
        elif name == "touch":
            ops.append(Op(0, "touch", proc, addr, n, write=write))
        else:
            ops.append(Op(0, name, proc, addr, n))
    return ops


@dataclass
class ConcurrentHunt:
    variant: Variant
    threads: int
    examples: int = 0
    elapsed_s: float = 0.0
    found_after_s: float | None = None
    program: ConcurrentProgram | None = None
    result: LanesResult | None = None
    original_ops: int = 0
    original_threads: int = 0
    original_preemptions: int = 0
    shrink: ShrinkStats | None = None

    @property
    def found(self) -> bool:
        return self.program is not None


def hunt_concurrent(
    variant: Variant | str,
    *,
    threads: int = 2,
    budget_s: float = 60.0,
    seed_value: int = 0,
    memory: str = "reuse",
    shrink_budget_s: float = 60.0,
    max_steps: int = 20_000,
    on_progress: Callable[[int, float], None] | None = None,
) -> ConcurrentHunt:
    """Search concurrent programs of `threads` threads for a defect of `variant`."""
    v = parse_variant(variant) if isinstance(variant, str) else variant
    out = ConcurrentHunt(v, threads)
    pool = ThreadPool()
    t0 = time.monotonic()
    deadline = t0 + budget_s
    found: list[tuple[ConcurrentProgram, int, LanesResult]] = []

    def run(prog: ConcurrentProgram, sched_seed: int) -> LanesResult:
        return run_concurrent(
            prog,
            v,
            memory,
            strategy=RandomWalk(sched_seed, p=0.05, p_hot=0.5),
            max_steps=max_steps,
            pool=pool,
        )

    def build(
        prologue_raw: list[tuple[Any, ...]], lanes_raw: list[list[Any]], same: bool
    ) -> Any:
        prologue = translate(prologue_raw)
        procs = [op.proc for op in prologue if op.name == "spawn"] + [
            op.child for op in prologue if op.name == "fork"
        ]
        live = [p for p in procs if p is not None]
        if not live:
            return None
        if same:  # symmetric threads: the same code racing with itself
            lanes_raw = [lanes_raw[0]] * len(lanes_raw)
        lanes = {f"t{i}": lane_ops(raw, live, f"t{i}") for i, raw in enumerate(lanes_raw)}
        return ConcurrentProgram(prologue, {k: x for k, x in lanes.items() if x}, [])

    # Threads race when they work on the same process and pages: most draws pick the
    # first process, and writes (which fault in new anon_vmas) are as likely as reads.
    lane_op = st.tuples(
        st.sampled_from(_LANE_NAMES),
        st.sampled_from((0, 0, 0, 1, 2)),
        st.integers(0, WINDOW_PAGES - 1),
        st.integers(1, 3),
        st.integers(0, len(PROTS) - 1),
        st.booleans(),
    )
    target: list[tuple[str, str]] = []

    def test(
        prologue_raw: list[tuple[Any, ...]],
        lanes_raw: list[list[Any]],
        same: bool,
        sched_seed: int,
    ) -> None:
        if time.monotonic() >= deadline:
            return
        out.examples += 1
        if on_progress is not None and out.examples % 50 == 0:
            on_progress(out.examples, time.monotonic() - t0)
        prog = build(prologue_raw, lanes_raw, same)
        if prog is None or not prog.lanes:
            return
        # A few schedules per program: the right program fails under many interleavings.
        for k in range(SCHEDULES_PER_PROGRAM):
            res = run(prog, sched_seed + k)
            key = res.key()
            if key is not None and res.case.outcome != "error":
                break
        if key is None or res.case.outcome == "error":
            return
        if not target:
            target.append(key)
            out.found_after_s = time.monotonic() - t0
        if key != target[0]:
            return
        if not found or prog.operations < found[0][0].operations:
            found[:] = [(prog, sched_seed, res)]
        raise AssertionError("defect")

    batch = 0
    while time.monotonic() < deadline and not target:
        runner = settings(
            max_examples=200,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            verbosity=Verbosity.quiet,
        )(
            given(
                programs(min_ops=8, max_ops=30),
                st.lists(
                    st.lists(lane_op, min_size=1, max_size=5), min_size=threads, max_size=threads
                ),
                st.booleans(),
                st.integers(0, 2**32 - 1),
            )(test)
        )
        with contextlib.suppress(AssertionError, Flaky):
            seed(seed_value * 1_000_003 + batch)(runner)()
        batch += 1
    out.elapsed_s = time.monotonic() - t0
    if not found:
        return out
    prog, _, res = found[0]
    key = res.key()
    assert key is not None
    scheduled = ConcurrentProgram(
        prog.prologue, prog.lanes, segments_from(res.switches, prog.lanes)
    )
    check = run_concurrent(scheduled, v, memory, max_steps=max_steps, pool=pool, **MEMORY)
    if check.key() != key:  # the recorded schedule did not carry over: keep the seed's run
        scheduled = prog
    out.original_ops = scheduled.operations
    out.original_threads = len(scheduled.lanes)
    out.original_preemptions = preemptions(scheduled)
    if check.key() == key:
        best, stats = shrink_program(
            scheduled,
            v.expression,
            key=key,
            budget_s=shrink_budget_s,
            memory=memory,
            max_steps=max_steps,
        )
        out.shrink = stats
    else:
        best = scheduled
    out.program = best
    out.result = run_concurrent(best, v, memory, max_steps=max_steps, pool=pool, **MEMORY)
    out.elapsed_s = time.monotonic() - t0
    return out
