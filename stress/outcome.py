"""What a run has done, as others see it: the status ticks while it runs, and the
CaseResult with its statistics and trace once it ends (built from a Monitor's books)."""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.report import CaseResult, chrome_events, open_records
from stress.sched.timeline import trace_events as schedule_events
from stress.threads import all_threads

if TYPE_CHECKING:
    from stress.monitor import Monitor


@dataclass(frozen=True)
class Status:
    """A status tick: what the run has done so far (for progress bars and status lines)."""

    case: str
    elapsed_s: float
    ops: int
    ops_per_s: float
    walks: int
    walks_per_s: float
    walk_steps: int
    verdicts: int
    kinds: dict[str, int]


def totals(mon: Monitor) -> tuple[int, int, int, int]:
    """(ops, walks, walk steps, threads), retired threads included."""
    with mon._states_lock:
        states = list(mon._states)
        ops, walks, steps, nthreads = mon._retired
    ops += sum(s.ops for s in states)
    walks += sum(s.nwalks for s in states)
    steps += sum(s.steps for s in states)
    return ops, walks, steps, nthreads + len(states)


def status_tick(mon: Monitor, now: float) -> None:
    ops, walks, steps, _ = totals(mon)
    prev_t, prev_ops, prev_walks = mon._status_prev
    span = max(now - prev_t, 1e-9)
    mon._status_prev = (now, ops, walks)
    kinds: dict[str, int] = {}
    for v in mon.book.snapshot():
        kinds[v.kind] = kinds.get(v.kind, 0) + v.count
    status = Status(
        mon.name,
        round(now - mon.t0, 3),
        ops,
        round((ops - prev_ops) / span, 1),
        walks,
        round((walks - prev_walks) / span, 1),
        steps,
        sum(kinds.values()),
        kinds,
    )
    if mon.report is not None:
        mon.report.event(
            "status",
            f"{status.ops:,} ops, {status.walks:,} walks, {status.verdicts} verdicts",
            case=mon.name,
            status=status.__dict__,
        )
    if mon.on_status is not None:
        try:
            mon.on_status(status)
        except Exception as exc:
            mon.internal_error("status callback", exc)


def case_result(mon: Monitor) -> CaseResult:
    """The case as it stands (Monitor.result() keeps the final one)."""
    verdicts = mon.book.snapshot()
    if mon.errors or (mon.stuck and not verdicts):
        outcome = "error"
    elif mon.interrupted:
        outcome = "interrupted"
    else:
        outcome = "defect" if verdicts else "clean"
    end = mon._ended_at or perf_counter()
    return CaseResult(
        name=mon.name,
        meta=dict(mon.meta),
        outcome=outcome,
        first_defect_s=min((v.at_s for v in verdicts), default=None),
        duration_s=end - mon.t0,
        verdicts=verdicts,
        late=list(mon.late),
        stats=run_stats(mon, end),
        cancel_reason=mon.cancel_reason,
        stuck=list(mon.stuck),
        stuck_detail=list(mon.stuck_detail),
        errors=list(mon.errors),
        trace_events=trace_events(mon, end),
    )

def run_stats(mon: Monitor, now: float) -> dict[str, Any]:
    elapsed = max(now - mon.t0, 1e-9)
    ops, walks, steps, nthreads = totals(mon)
    kinds: dict[str, int] = {}
    for v in mon.book.snapshot():
        kinds[v.kind] = kinds.get(v.kind, 0) + v.count
    wd = mon._watchdog
    polls = wd.polls if wd is not None else 0
    busy = wd.busy_s if wd is not None else 0.0
    return {
        "duration_s": round(elapsed, 4),
        "threads": nthreads,
        "ops": ops,
        "ops_per_s": round(ops / elapsed, 1),
        "walks": walks,
        "walks_per_s": round(walks / elapsed, 1),
        "walk_steps": steps,
        "verdicts_by_kind": kinds,
        "watchdog": {
            "period_s": mon.config.poll_s,
            "polls": polls,
            "busy_s": round(busy, 4),
            "busy_pct": round(100.0 * busy / elapsed, 3),
            "cpu_pct": round(100.0 * (wd.cpu_s if wd is not None else 0.0) / elapsed, 3),
            # Checks put off because a thread only lacked a CPU (an overloaded machine).
            "deferred_for_overload": wd.deferred if wd is not None else 0,
        },
        "lockdep": {
            "classes": len(mon.lockdep.classes),
            "dependencies": sum(
                len(k.after) for c in mon.lockdep.classes.values() for k in c.keys
            ),
            "slow_checks": mon.lockdep.slow_checks,
        },
        "lock_classes": {name: c.stats.to_dict() for name, c in mon.lockdep.classes.items()},
        "trace": {
            "capacity": mon.config.trace_events,
            "kept": len(mon.trace_ring) if mon.trace_ring is not None else 0,
        },
        "schedule": (
            {"mode": "controlled", **mon.scheduler.describe()}
            if mon.scheduler is not None
            else {"mode": "free"}
        ),
    }

def trace_events(mon: Monitor, now: float) -> list[dict[str, Any]]:
    ring = mon.trace_ring
    if ring is None:
        return []
    states = mon.states()
    others = [s for s in all_threads() if s not in set(states)]
    records = list(ring) + open_records(states + others, mon, now)
    names = {s.tid: s.name for s in states + others}
    process = " ".join(f"{k}={mon.meta[k]}" for k in ("variant", "seed") if k in mon.meta)
    events = chrome_events(
        records, pid=1, base=mon.t0, process=process or mon.name, threads=names
    )
    sched = mon.scheduler
    if sched is not None and sched.switches:
        events += schedule_events(sched.switches, pid=1, base=mon.t0, start=mon.t0, end=now)
    return events
