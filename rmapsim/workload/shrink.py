"""Two-axis shrinking of a failing concurrent program: fewer operations, fewer switches.

A candidate is kept when it still fails with the same verdict kind and signature.
The operations axis goes first, from coarse to fine: whole threads, then halves,
quarters ... down to single operations of each thread, then the prologue's lines.
Deleting operations renumbers the schedule's ``until op K`` lines of that thread
(a line inside a deleted operation goes with it), so a switch keeps pointing at
the same place in the code that is left.  Then the schedule axis: each schedule
line in turn, the ones that stop a thread inside an operation (preemptions)
first, so the result needs as few preemptions as possible.  Everything is
deterministic: each candidate is one controlled run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rmapsim.cprogram import ConcurrentProgram, Segment
from rmapsim.workload.lanes import LanesResult, run_concurrent
from stress.sched.pool import ThreadPool

Key = tuple[str, str]


@dataclass
class ShrinkStats:
    tried: int = 0
    kept: int = 0
    seconds: float = 0.0
    before_ops: int = 0
    before_threads: int = 0
    before_lines: int = 0


def preemptions(prog: ConcurrentProgram) -> int:
    """Schedule lines that stop a thread inside an operation (not at its start or end)."""
    last = len(prog.schedule) - 1
    return sum(
        1
        for i, s in enumerate(prog.schedule)
        if s.point is not None and not s.point.startswith("wait:") and i != last
    )


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segs:
        if out and out[-1].lane == seg.lane:
            out[-1] = seg
        else:
            out.append(seg)
    return out


def drop_ops(prog: ConcurrentProgram, lane: str, lo: int, hi: int) -> ConcurrentProgram:
    """`prog` without operations [lo, hi) (0-based) of `lane`, its schedule renumbered."""
    ops = prog.lanes[lane]
    lanes = dict(prog.lanes)
    kept = ops[:lo] + ops[hi:]
    if kept:
        lanes[lane] = kept
    else:
        del lanes[lane]
    gone = hi - lo
    segs: list[Segment] = []
    for seg in prog.schedule:
        if seg.lane != lane:
            segs.append(seg)
        elif not kept:
            continue
        elif seg.op is None:
            segs.append(seg)
        elif lo < seg.op <= hi:
            continue  # it stopped inside a deleted operation
        elif seg.op > hi:
            segs.append(replace(seg, op=seg.op - gone))
        else:
            segs.append(seg)
    return ConcurrentProgram(list(prog.prologue), lanes, _merge(segs))


def drop_lane(prog: ConcurrentProgram, lane: str) -> ConcurrentProgram:
    return drop_ops(prog, lane, 0, len(prog.lanes[lane]))


def drop_segment(prog: ConcurrentProgram, i: int) -> ConcurrentProgram:
    segs = prog.schedule[:i] + prog.schedule[i + 1 :]
    return ConcurrentProgram(list(prog.prologue), dict(prog.lanes), _merge(segs))


def drop_prologue(prog: ConcurrentProgram, lo: int, hi: int) -> ConcurrentProgram:
    return ConcurrentProgram(
        prog.prologue[:lo] + prog.prologue[hi:], dict(prog.lanes), list(prog.schedule)
    )


_THREAD = re.compile(r"\b(p\d+/t\d+|kswapd-\d+|hibernate|keeper|t\d+)\b")


def focus(prog: ConcurrentProgram, hint: str) -> ConcurrentProgram | None:
    """Only the threads a verdict names, and whatever created their processes.

    A defect report names the threads that allocated, freed and touched the object;
    a program made from a long workload has dozens of others.  Keeping the named ones
    (with the lanes that spawned or forked their processes, and their ancestors') is
    the first, biggest cut to try.
    """
    named = {m for m in _THREAD.findall(hint) if m in prog.lanes}
    if not named:
        return None
    procs = {n.split("/", 1)[0] for n in named if "/" in n}
    keep = set(named)
    while True:
        creators = {
            lane
            for lane, ops in prog.lanes.items()
            for op in ops
            if (op.name == "spawn" and op.proc in procs)
            or (op.name == "fork" and op.child in procs)
        }
        parents = {op.proc for lane in creators for op in prog.lanes[lane] if op.name == "fork"}
        more = {p for p in parents if p is not None} - procs
        keep |= creators
        if not more:
            break
        procs |= more
        keep |= {lane for lane in prog.lanes if lane.split("/", 1)[0] in more}
    keep |= {lane for lane in prog.lanes if lane.split("/", 1)[0] in procs}
    if keep == set(prog.lanes):
        return None
    candidate = prog
    for lane in list(prog.lanes):
        if lane not in keep:
            candidate = drop_lane(candidate, lane)
    return candidate


def shrink_program(
    prog: ConcurrentProgram,
    variant: str,
    *,
    key: Key,
    budget_s: float = 60.0,
    hint: str = "",
    run: Callable[[ConcurrentProgram], LanesResult] | None = None,
    **run_kwargs: Any,
) -> tuple[ConcurrentProgram, ShrinkStats]:
    """The smallest program found within `budget_s` that still fails with `key`.

    `hint` (the verdict's summary) names the threads involved: a program of only those
    is tried first.
    """
    pool = ThreadPool()

    def default_run(p: ConcurrentProgram) -> LanesResult:
        return run_concurrent(p, variant, pool=pool, **run_kwargs)

    runner = run or default_run
    stats = ShrinkStats(
        before_ops=prog.operations, before_threads=len(prog.lanes), before_lines=len(prog.schedule)
    )
    t0 = time.monotonic()
    deadline = t0 + budget_s
    best = prog

    def fails(candidate: ConcurrentProgram) -> bool:
        stats.tried += 1
        if not candidate.lanes:
            return False
        return runner(candidate).key() == key

    def attempt(candidate: ConcurrentProgram) -> bool:
        nonlocal best
        if time.monotonic() >= deadline:
            return False
        if fails(candidate):
            best = candidate
            stats.kept += 1
            return True
        return False

    if hint:
        focused = focus(best, hint)
        if focused is not None:
            attempt(focused)
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        chunk = max(1, len(best.lanes) // 2)
        while chunk >= 1 and time.monotonic() < deadline:  # whole threads, many at once
            i = 0
            while i < len(best.lanes) and len(best.lanes) > 1:
                names = list(best.lanes)[i : i + chunk]
                if len(names) == len(best.lanes):
                    break
                candidate = best
                for lane in names:
                    candidate = drop_lane(candidate, lane)
                if attempt(candidate):
                    changed = True
                else:
                    i += chunk
            chunk //= 2
        for lane in list(best.lanes):  # chunks of each thread, coarse to fine
            chunk = max(1, len(best.lanes.get(lane, [])) // 2)
            while lane in best.lanes and chunk >= 1 and time.monotonic() < deadline:
                lo = 0
                while lane in best.lanes and lo < len(best.lanes[lane]):
                    hi = min(lo + chunk, len(best.lanes[lane]))
                    if attempt(drop_ops(best, lane, lo, hi)):
                        changed = True
                    else:
                        lo = hi
                chunk //= 2
        chunk = max(1, len(best.prologue) // 2)
        while chunk >= 1 and best.prologue and time.monotonic() < deadline:
            lo = 0
            while lo < len(best.prologue):
                hi = min(lo + chunk, len(best.prologue))
                if attempt(drop_prologue(best, lo, hi)):
                    changed = True
                else:
                    lo = hi
            chunk //= 2
        order = sorted(
            range(len(best.schedule)),
            key=lambda i: (best.schedule[i].point is None, -i),
        )
        for i in order:  # switches, preemptions first
            if i < len(best.schedule) and attempt(drop_segment(best, i)):
                changed = True
                break
    stats.seconds = time.monotonic() - t0
    return best, stats
