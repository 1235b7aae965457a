"""Running concurrent programs: one real thread per lane, under the controlled scheduler.

`run_concurrent` executes a `ConcurrentProgram` deterministically: the prologue on
the calling thread, then each lane on its own real thread, one at a time, switched
only where the schedule says (or, without one, where a strategy decides).  The
kernel, its locks, its yield points and its walks are wired to the Monitor exactly
as a workload case wires them, and every operation starts with the same
operation mark (``op:VERB``), so a schedule recorded from a workload run replays
here.  When the lanes have ended, the reverse map is audited (I1-I9) as `exec`
does after every line.

`program_from_workload` turns a controlled workload case that found a defect into
a concurrent program: each thread's operations become a lane, and the recorded
switches become schedule lines named by operation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rmapsim import swap
from rmapsim.audit import audit
from rmapsim.cprogram import WORKLOAD_ONLY, ConcurrentProgram, Segment
from rmapsim.errors import KernelDefect, ModelError
from rmapsim.kernel import Kernel
from rmapsim.program import Op, apply, null_deref, parse_program
from rmapsim.variants import Variant, parse_variant
from rmapsim.workload.actors import KernelHarness
from stress import CaseResult, Config, Monitor, StuckThreadsError
from stress.sched import MarkedReplay, Scheduler, Stop, Strategy, Switch
from stress.sched.pool import ThreadPool
from stress.verdicts import Verdict

_ERRNO = {-1: "EPERM", -2: "ENOENT", -12: "ENOMEM", -13: "EACCES", -14: "EFAULT", -22: "EINVAL"}


def stops_for(prog: ConcurrentProgram) -> list[Stop]:
    """The schedule as the scheduler's stops (an op start is its op mark's first point)."""
    out = []
    segs = prog.schedule
    for i, seg in enumerate(segs):
        then = segs[i + 1].lane if i + 1 < len(segs) else ""
        if seg.op is None:
            out.append(Stop(seg.lane, None, "exit", 1, then))
        elif seg.point is None:
            verb = prog.lanes[seg.lane][seg.op - 1].name
            out.append(Stop(seg.lane, seg.op, f"op:{verb}", 1, then))
        else:
            out.append(Stop(seg.lane, seg.op, seg.point, seg.n, then))
    return out


@dataclass
class LanesResult:
    """What a concurrent program's run found."""

    variant: Variant
    memory: str
    case: CaseResult
    switches: list[Switch]
    steps: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    invariants: list[dict[str, Any]] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)

    @property
    def verdicts(self) -> list[Verdict]:
        return sorted(self.case.verdicts, key=lambda v: v.at_s)

    @property
    def outcome(self) -> str:
        return "defect" if self.case.verdicts else self.case.outcome

    @property
    def first(self) -> Verdict | None:
        vs = self.verdicts
        return vs[0] if vs else None

    def key(self) -> tuple[str, str] | None:
        v = self.first
        return None if v is None else (v.kind, v.signature)


class Lanes(KernelHarness):
    """One kernel, one Monitor, one thread per lane."""

    def __init__(
        self,
        prog: ConcurrentProgram,
        variant: Variant,
        mon: Monitor,
        *,
        memory: str,
        debug_list: bool,
        slab_page_bytes: int,
        min_partial: int,
    ) -> None:
        super().__init__()
        self.prog = prog
        self.mon = mon
        self.k = Kernel(
            variant,
            memory=memory,
            sync=mon,
            debug_list=debug_list,
            slab_page_bytes=slab_page_bytes,
            min_partial=min_partial,
            walk_tracker=self.track,
            walk_step=self.walk_point,
            on_loop=self.on_loop,
            yield_point=mon.yield_point,
            on_event=self.report,
        )
        self.k.relax_point = mon.relax
        self.errors: list[dict[str, Any]] = []
        self.finished: set[str] = set()
        #: Audit I1-I9 whenever no thread is inside an operation (as exec does per line).
        self.check = False
        self.active = 0
        self.seen: set[tuple[Any, ...]] = set()
        self.invariants: list[dict[str, Any]] = []

    def prologue(self) -> bool:
        """Run the prologue alone; False when it hit a defect (the lanes then never run)."""
        for op in self.prog.prologue:
            if not self._one("main", op) or not self.audit("main", op):
                return False
        return True

    def audit(self, lane: str, op: Op) -> bool:
        """At a quiescent moment: check the invariants; False when one is broken."""
        if not self.check or self.active:
            return True
        self.k.mem.quiesce()
        fresh = [v for v in audit(self.k) if v.key not in self.seen]
        if not fresh:
            return True
        self.seen.update(v.key for v in fresh)
        self.invariants += [{**v.to_dict(), "summary": v.summary} for v in fresh]
        first = fresh[0]
        self.mon.report_defect(
            "invariant",
            f"{first.title}: {first.summary}",
            evidence={
                "after": f"{lane}: {op.render()}",
                "violations": [f"{v.title}: {v.summary}" for v in fresh[:6]],
            },
        )
        return False

    def lane(self, name: str, ops: Sequence[Op]) -> None:
        try:
            owner = name.split("/", 1)[0] if "/" in name else None
            if owner is not None and owner not in self.k.tasks:
                # A thread of a process that does not exist yet: it starts with it.
                self.mon.wait_until(lambda: owner in self.k.tasks, f"{owner} exists", timeout_s=1)
            for op in ops:
                # kswapd picks its page before the operation starts, as the workload does.
                page = self._page_at(op) if op.name == "reclaim" and op.proc else None
                self.mon.mark(f"op:{op.name}")
                if not self._wait_for(name, op):
                    self.errors.append(
                        {"thread": name, "op": op.render(), "error": f"no process {op.proc}"}
                    )
                    continue
                self.active += 1
                try:
                    ok = self._one(name, op, page)
                finally:
                    self.active -= 1
                if not ok or not self.audit(name, op):
                    return
                self.mon.progress()
        finally:
            self.finished.add(name)

    def _wait_for(self, lane: str, op: Op) -> bool:
        """Wait for what `op` needs; False when its process never comes to exist."""
        k = self.k
        proc = op.proc
        # Another lane may still create it; if nobody can, the call fails (ENOENT).
        if (
            proc is not None
            and op.name != "spawn"
            and proc not in k.tasks
            and not self.mon.wait_until(lambda: proc in k.tasks, f"{proc} exists", timeout_s=1)
        ):
            return False
        if op.name == "exit" and proc is not None:
            siblings = [
                n for n in self.prog.lanes if n != lane and n.split("/", 1)[0] == proc
            ]
            if siblings:
                self.mon.wait_until(
                    lambda: all(s in self.finished for s in siblings), f"{proc} threads"
                )
        return True

    def _page_at(self, op: Op) -> Any:
        mm = self.k.tasks.get(op.proc or "")
        pte = mm.ptes.get(op.addr) if mm is not None else None
        return pte.page if pte is not None else None

    def _one(self, lane: str, op: Op, page: Any = None) -> bool:
        text = op.render()
        self.k.mem.set_thread_site(f"{lane}: {text}")
        try:
            if page is not None:  # the page picked before the operation began
                ret = int(swap.reclaim(self.k, page, force=False))
            else:
                ret = apply(self.k, op)
        except KernelDefect as exc:
            self.report(exc)
            return False
        except AttributeError as exc:
            oops = null_deref(exc)
            if oops is None:
                self.internal(exc)
            else:
                self.report(oops)
            return False
        except ModelError as exc:  # a process that exited meanwhile: that call's error
            self.errors.append({"thread": lane, "op": text, "error": str(exc)})
            return True
        if ret < 0:
            self.errors.append({"thread": lane, "op": text, "error": _ERRNO.get(ret, str(ret))})
        return True


def run_concurrent(
    prog: ConcurrentProgram,
    variant: Variant | str,
    memory: str = "reuse",
    *,
    strategy: Strategy | None = None,
    max_steps: int = 200_000,
    debug_list: bool = False,
    slab_page_bytes: int = 4096,
    min_partial: int = 5,
    check: bool = True,
    pool: ThreadPool | None = None,
) -> LanesResult:
    """Run `prog` under its schedule (or `strategy`), then audit the reverse map."""
    v = parse_variant(variant) if isinstance(variant, str) else variant
    strat = strategy if strategy is not None else MarkedReplay(stops_for(prog))
    sched = Scheduler(strat, max_steps=max_steps, steps_per_s=max(max_steps // 4, 1000))
    cfg = Config(
        duration_s=4.0,
        timing=False,
        trace_events=0,
        on_stuck="raise",
        verdict_s=2.0,
        hold_s=1.0,
        walk_s=0.5,
        # Threads released at cancellation need the CPU to unwind: a loaded machine
        # may not give it to dozens of them at once.
        grace_s=10.0,
    )
    mon = Monitor(
        cfg,
        name=f"{v.name} program",
        meta={"variant": v.name},
        scheduler=sched,
        pool=pool,
        backstop=pool is None,
    )
    lanes = Lanes(
        prog,
        v,
        mon,
        memory=memory,
        debug_list=debug_list,
        slab_page_bytes=slab_page_bytes,
        min_partial=min_partial,
    )
    lanes.check = check
    ran = lanes.prologue()
    if ran:
        for name, ops in prog.lanes.items():
            mon.spawn(lanes.lane, name, list(ops), name=name, tracked=False)
    else:
        for name in prog.lanes:  # never started: nothing of theirs runs
            lanes.finished.add(name)
    try:
        case = mon.run()
    except StuckThreadsError:  # reported, and the run's result stands as an error
        case = mon.stop()
        case.outcome = "error"
    invariants = list(lanes.invariants)
    if check and not case.verdicts and ran:  # what the threads left behind
        lanes.k.mem.quiesce()
        fresh = [v for v in audit(lanes.k) if v.key not in lanes.seen]
        invariants += [{**v.to_dict(), "summary": v.summary} for v in fresh]
        if fresh:
            case.verdicts.append(
                Verdict(
                    kind="invariant",
                    summary=f"{fresh[0].title}: {fresh[0].summary}",
                    source="defect",
                    threads=["audit"],
                    evidence={"violations": [f"{v.title}: {v.summary}" for v in fresh[:6]]},
                    culprits=["audit"],
                    at_s=case.duration_s,
                )
            )
            case.outcome = "defect"
    diverged = list(strat.diverged) if isinstance(strat, MarkedReplay) else []
    return LanesResult(
        v, memory, case, list(sched.switches), sched.step, lanes.errors, invariants, diverged
    )


def segments_from(switches: Sequence[Switch], lanes: Mapping[str, Sequence[Any]]) -> list[Segment]:
    """Recorded switches as schedule lines named by operation.

    A switch inside a thread's k-th operation names that operation and the arrivals
    since it began; a switch where only the workload's own loop was (a sleep, the
    audit gate) is a switch before the thread's next operation, or at its end.
    """
    out: list[Segment] = []
    for sw in switches:
        nops = len(lanes.get(sw.task, ()))
        if sw.point == "exit" or sw.task not in lanes:
            seg = Segment(sw.task)
        elif sw.point in WORKLOAD_ONLY or sw.mark == 0:
            nxt = sw.mark + 1
            seg = Segment(sw.task, nxt) if nxt <= nops else Segment(sw.task)
        elif sw.point.startswith("op:") and sw.since == 1:
            seg = Segment(sw.task, sw.mark)
        else:
            seg = Segment(sw.task, sw.mark, sw.point, sw.since)
        out.append(seg)
    if switches:
        out.append(Segment(switches[-1].to))
    # Consecutive lines of one lane: the later one says it all.
    merged: list[Segment] = []
    for seg in out:
        if merged and merged[-1].lane == seg.lane:
            merged[-1] = seg
        else:
            merged.append(seg)
    return [s for s in merged if s.lane in lanes]


def program_from_workload(
    operations: Mapping[str, Sequence[str]], switches: Sequence[Switch]
) -> ConcurrentProgram:
    """A controlled workload case as a concurrent program: its threads' operations as
    lanes (in the order the threads first ran), its switches as schedule lines."""
    order: list[str] = []
    for sw in switches:
        for name in (sw.task, sw.to):
            if (name in operations or "/" in name) and name not in order:
                order.append(name)
    order += [n for n in operations if n not in order]
    lanes: dict[str, list[Op]] = {}
    for name in order:
        ops = parse_program(
            "\n".join(operations.get(name, ())), f"<{name}>", static_procs=False
        )
        # A thread of a process that did nothing still ran: its process waited for it.
        if ops or "/" in name:
            lanes[name] = ops
    return ConcurrentProgram([], lanes, segments_from(switches, lanes))


__all__ = [
    "Lanes",
    "LanesResult",
    "program_from_workload",
    "run_concurrent",
    "segments_from",
    "stops_for",
]
