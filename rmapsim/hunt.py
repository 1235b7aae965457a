"""Hunting: search bounded programs for a defect and shrink it to a minimal one.

Hypothesis generates programs (a few processes, a small window of adjacent pages,
tens of operations) and shrinks the first failure; a final pass removes single
lines (and whole processes) for as long as the same defect class remains, so the
program printed is 1-minimal.  The engine computes; the CLI prints.
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

from rmapsim.program import ExecResult, Op, ProgramError, parse_program, render_program, run_program
from rmapsim.structs import PAGE_SIZE, VM_EXEC, VM_READ, VM_WRITE
from rmapsim.variants import Variant, parse_variant

PROCS = ("P", "C", "D")
WINDOW_BASE = 0x10000
WINDOW_PAGES = 5
PROTS = (
    VM_READ | VM_WRITE,
    VM_READ | VM_WRITE | VM_EXEC,
    VM_READ | VM_WRITE,
    VM_READ | VM_WRITE | VM_EXEC,
    VM_READ,
    0,
    VM_READ | VM_EXEC,
)

# (op, weight): the hunt's sense of what matters in the 2010 bugs.
_OPS = (
    ("mmap", 6),
    ("touch", 10),
    ("mprotect", 5),
    ("fork", 3),
    ("swapout-all", 3),
    ("swapout", 1),
    ("munmap", 2),
    ("exit", 2),
    ("referenced", 2),
    ("migrate", 2),
)
_OP_NAMES = tuple(name for name, w in _OPS for _ in range(w))


def _raw_op(names: tuple[str, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.sampled_from(names),
        st.integers(0, len(PROCS) - 1),
        st.integers(0, WINDOW_PAGES - 1),
        st.integers(1, 3),
        st.integers(0, len(PROTS) - 1),
        st.booleans(),
        st.integers(0, len(PROCS) - 1),
    )


def translate(raw: list[tuple[Any, ...]]) -> list[Op]:
    """Raw draws -> a valid program.

    An operation names a live process by index (the first one spawns P; fork makes
    the next free name); touch, mprotect, munmap, swapout and referenced aim at pages
    the process maps (a shadow of the mappings is kept), so that the search spends
    its time on address spaces that share pages rather than on EFAULTs.
    """
    maps: dict[str, dict[int, int]] = {}
    ops: list[Op] = []

    def target(proc: str, page: int) -> int | None:
        mapped = sorted(maps[proc])
        return mapped[page % len(mapped)] if mapped else None

    for name, p, page, n, prot, write, _c in raw:
        line = len(ops) + 1
        if name == "swapout-all":
            ops.append(Op(line, "swapout", None))
            continue
        if not maps:
            maps[PROCS[0]] = {}
            ops.append(Op(line, "spawn", PROCS[0]))
            continue
        alive = list(maps)
        proc = alive[p % len(alive)]
        mine = maps[proc]
        if name == "fork":
            free = [c for c in PROCS if c not in maps]
            if not free:
                continue
            maps[free[0]] = dict(mine)
            ops.append(Op(line, "fork", proc, child=free[0]))
            continue
        if name == "exit":
            del maps[proc]
            ops.append(Op(line, "exit", proc))
            continue
        if name == "mmap":
            n = min(n, WINDOW_PAGES - page)
            for i in range(page, page + n):
                mine[i] = PROTS[prot]
            ops.append(Op(line, "mmap", proc, WINDOW_BASE + page * PAGE_SIZE, n, PROTS[prot]))
            continue
        first = target(proc, page)
        if first is None:
            continue
        n = min(n, WINDOW_PAGES - first)
        addr = WINDOW_BASE + first * PAGE_SIZE
        if name == "touch":
            writable = all(mine.get(i, 0) & VM_WRITE for i in range(first, first + n))
            ops.append(Op(line, "touch", proc, addr, n, write=write and writable))
        elif name == "mprotect":
            for i in range(first, first + n):
                if i in mine:
                    mine[i] = PROTS[prot]
            ops.append(Op(line, "mprotect", proc, addr, n, PROTS[prot]))
        elif name == "munmap":
            for i in range(first, first + n):
                mine.pop(i, None)
            ops.append(Op(line, "munmap", proc, addr, n))
        else:
            ops.append(Op(line, name, proc, addr, n))
    return ops


def renumber(ops: list[Op]) -> list[Op]:
    return [
        Op(i + 1, o.name, o.proc, o.addr, o.npages, o.prot, o.write, o.child)
        for i, o in enumerate(ops)
    ]


def defect_class(result: ExecResult) -> tuple[str, str | None] | None:
    if not result.defects:
        return None
    d = result.defects[0]
    return (d.kind, d.invariant)


@st.composite
def programs(draw: Any, min_ops: int = 12, max_ops: int = 40) -> list[tuple[Any, ...]]:
    """Swarm testing: each program enables a random subset of the operation kinds."""
    kinds = sorted({name for name, _ in _OPS})
    enabled = draw(st.sets(st.sampled_from(kinds), min_size=3)) | {"mmap", "touch"}
    names = tuple(n for n in _OP_NAMES if n in enabled)
    ops: list[tuple[Any, ...]] = draw(st.lists(_raw_op(names), min_size=min_ops, max_size=max_ops))
    return ops


@dataclass
class HuntResult:
    variant: Variant
    memory: str
    seed: int
    found: bool
    program: list[Op] | None
    result: ExecResult | None
    examples: int
    elapsed_s: float
    found_after_s: float | None
    original_ops: int | None

    def program_text(self) -> str:
        if self.program is None:
            return ""
        assert self.result is not None
        d = self.result.defects[0]
        header = (
            f"found by: rmapstress hunt --variant {self.variant.name} --seed {self.seed}\n"
            f"variant {self.variant.expression}, memory {self.memory}\n"
            f"first defect: {d.kind}{' ' + d.invariant if d.invariant else ''} at line {d.line}: "
            f"{d.detail}"
        )
        return render_program(self.program, header)


def shrink(ops: list[Op], check: Callable[[list[Op]], bool], deadline: float) -> list[Op]:
    """Delta debugging to a 1-minimal program for which `check` still holds.

    Tries removing chunks (halves, quarters, ... single lines), a process with every
    line that names it, and any two lines together (a spawn with its exit).
    """

    def candidates(best: list[Op]) -> Any:
        n = len(best)
        size = n // 2
        while size >= 1:
            for i in range(0, n - size + 1, size):
                yield best[:i] + best[i + size :]
            size //= 2
        for victim in best:
            if victim.name in ("spawn", "fork"):
                gone = victim.child if victim.name == "fork" else victim.proc
                yield [o for o in best if o is not victim and gone not in (o.proc, o.child)]
        for i in range(n):
            for j in range(i + 1, n):
                yield best[:i] + best[i + 1 : j] + best[j + 1 :]

    best = ops
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for cand in candidates(best):
            if time.monotonic() >= deadline:
                break
            if cand and len(cand) < len(best) and check(renumber(cand)):
                best = renumber(cand)
                changed = True
                break
    return best


def hunt(
    variant: Variant | str,
    *,
    budget_s: float = 60.0,
    seed_value: int = 0,
    memory: str = "reuse",
    max_ops: int = 40,
    on_progress: Callable[[int, float], None] | None = None,
) -> HuntResult:
    v = parse_variant(variant) if isinstance(variant, str) else variant
    start = time.monotonic()
    deadline = start + budget_s
    state: dict[str, Any] = {"examples": 0, "target": None, "best": None, "found_at": None}

    def valid(ops: list[Op]) -> bool:
        try:
            parse_program(render_program(ops))
        except ProgramError:
            return False
        return True

    def fails(ops: list[Op]) -> bool:
        if not valid(ops):
            return False
        cls = defect_class(run_program(ops, v, memory))
        return cls is not None and cls == state["target"]

    def test(raw: list[tuple[Any, ...]]) -> None:
        if time.monotonic() > deadline:
            return
        state["examples"] += 1
        if on_progress is not None and state["examples"] % 200 == 0:
            on_progress(state["examples"], time.monotonic() - start)
        ops = translate(raw)
        result = run_program(ops, v, memory)
        cls = defect_class(result)
        if cls is None:
            return
        if state["target"] is None:
            state["target"] = cls
            state["found_at"] = time.monotonic() - start
        if cls != state["target"]:
            return
        best = state["best"]
        if best is None or len(ops) < len(best):
            state["best"] = ops
        raise AssertionError("defect")

    batch = 0
    while time.monotonic() < deadline and state["target"] is None:
        runner = settings(
            max_examples=300,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            verbosity=Verbosity.quiet,
        )(given(programs(max_ops=max_ops))(test))
        with contextlib.suppress(AssertionError, Flaky):
            seed(seed_value * 1_000_003 + batch)(runner)()
        batch += 1
    if state["best"] is None:
        return HuntResult(
            v,
            memory,
            seed_value,
            False,
            None,
            None,
            state["examples"],
            time.monotonic() - start,
            None,
            None,
        )
    original = len(state["best"])
    # Hypothesis shrinks within its own budget; finish 1-minimal, with time to spare.
    minimal = shrink(renumber(state["best"]), fails, max(deadline, time.monotonic() + 30))
    result = run_program(minimal, v, memory)
    return HuntResult(
        v,
        memory,
        seed_value,
        True,
        minimal,
        result,
        state["examples"],
        time.monotonic() - start,
        state["found_at"],
        original,
    )
