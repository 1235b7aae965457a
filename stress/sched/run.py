"""A Monitor's run under the controlled scheduler, and the verdicts only such a run gives.

The Monitor's own thread starts the workers (each parks until its first turn), hands
the token to the first task and then only watches: the scheduler ends the run when
the tasks end, the step budget is spent, a stopping verdict is recorded, or no task
can run.  Wall time is used for one thing only: a task that stops reaching scheduling
points (an endless loop the harness cannot see into, a wait on a lock it does not
know) is named after verdict_s, with its stack.

When no task can run, the reason is one of: a lock whose holder leaked it (ended
holding it, or released another lock instead - the leaked-lock verdict), a wait-for
cycle (deadlock), or waits nobody can end (stall).
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from stress import diagnosis, leaks
from stress.report import CaseResult
from stress.sched.core import DONE
from stress.threads import ThreadState, where
from stress.verdicts import Verdict
from stress.watchdog import cycles

if TYPE_CHECKING:
    from stress.monitor import Monitor
    from stress.sched.core import Scheduler

#: How often the Monitor's thread looks at the run while it waits for its end.
TICK_S = 0.05


def run(mon: Monitor, sched: Scheduler) -> CaseResult:
    """One thread at a time, switched by the scheduler; this thread only watches."""
    mon.start()
    for worker in mon.workers:
        worker.start()
    sched.begin()
    cap = mon.t0 + mon._wall_cap_s()
    last_step, last_t = -1, perf_counter()
    while not sched.wait_done(TICK_S):
        now = perf_counter()
        if sched.step != last_step:
            last_step, last_t = sched.step, now
        elif now - last_t >= mon.config.verdict_s and not mon.cancelled:
            stuck_between_points(mon, sched, now - last_t)
        mon.tick_status(now)
        if now >= cap and not mon.cancelled:
            mon.cancel(
                f"wall-clock cap ({mon._wall_cap_s():g} s) before the step budget "
                f"({sched.max_steps:,} steps) was spent"
            )
        if mon.cancelled and mon.cancelled_at is not None:
            break
    if not mon.cancelled:
        mon.cancel(sched.end_reason or "every worker finished")
    mon._join_workers()
    return mon.stop()


def stuck_between_points(mon: Monitor, sched: Scheduler, idle_s: float) -> None:
    task = sched.current
    state = task.state if task is not None else None
    if state is None:
        return
    snap = diagnosis.Snapshot.take(mon)
    holds = state.held_locks()
    what = "holding " + ", ".join(x.name for x in holds) if holds else "holding no lock"
    verdict = Verdict(
        kind="stall",
        summary=(
            f"{state.name} ran {diagnosis.seconds(idle_s)} without reaching a scheduling "
            f"point, {what}: at {where(snap.stack(state))}"
        ),
        source="watchdog",
        threads=[state.name],
        locks=[x.name for x in holds],
        lock_classes=diagnosis.lock_classes(holds),
        chain=[
            diagnosis.chain_from(state, snap),
            *diagnosis.waiters_behind(holds, snap, {state}),
        ],
        stacks=snap.stacks([state]),
        evidence={"step": sched.step, "controlled": True},
        culprits=[state.name],
        at_s=snap.at_s,
    )
    mon.record(verdict)
    mon.cancel(f"stall: {verdict.summary}")


def _ended(mon: Monitor, state: ThreadState) -> bool:
    sched = mon.scheduler
    task = sched.by_state.get(state) if sched is not None else None
    if task is not None:
        return task.status == DONE  # a pooled thread lives on after its task
    return not state.thread.is_alive()


def no_runnable(mon: Monitor, states: list[ThreadState]) -> None:
    """Nobody can run: a leaked lock, else a wait-for cycle (deadlock), else a stall."""
    snap = diagnosis.Snapshot.take(mon)
    step = mon.scheduler.step if mon.scheduler is not None else 0
    waiting = {s: w for s in states if (w := diagnosis.waiting_on(s)) is not None}
    for w in waiting.values():
        for holder, _mode, since in w.lock.holders():
            stray = leaks.stray_for(mon, holder, w.lock) if mon.strays else None
            gone = _ended(mon, holder) and holder not in mon.faulted
            if stray is not None or gone:
                verdict = leaks.leaked(w.lock, holder, stray, snap, since=since)
                verdict.evidence["step"] = step
                mon.record(verdict, stop=True)
                return
    edges = {s: [b for b, _, _ in w.lock.blockers(w)] for s, w in waiting.items()}
    found = cycles(edges)
    for cycle in found:
        verdict = diagnosis.deadlock([waiting[s] for s in cycle], snap)
        verdict.evidence["step"] = step
        mon.record(verdict, stop=True)
    if found:
        return
    verdict = Verdict(
        kind="stall",
        summary="no thread can run: "
        + "; ".join(diagnosis.chain_from(s, snap) for s in states[:4]),
        source="watchdog",
        threads=[s.name for s in states],
        chain=[diagnosis.chain_from(s, snap) for s in states],
        stacks=snap.stacks(states),
        evidence={"step": step},
        culprits=[s.name for s in states],
        at_s=snap.at_s,
    )
    mon.record(verdict, stop=True)


def spinning(mon: Monitor, state: ThreadState | None, point: str, spins: int) -> None:
    """A task went round a busy-wait `spins` times without progress: a livelock."""
    if state is None:
        return
    snap = diagnosis.Snapshot.take(mon)
    holds = state.held_locks()
    behind = diagnosis.waiters_behind(holds, snap, {state})
    holding = f", holding {', '.join(x.name for x in holds)}" if holds else ""
    verdict = Verdict(
        kind="livelock",
        summary=(
            f"{state.name} spins in {point!r}: {spins:,} turns without progress"
            f"{holding}, at {where(snap.stack(state))}"
        ),
        source="watchdog",
        threads=[state.name],
        locks=[x.name for x in holds],
        lock_classes=diagnosis.lock_classes(holds),
        chain=[diagnosis.chain_from(state, snap), *behind],
        stacks=snap.stacks([state]),
        evidence={"point": point, "spins": spins, "controlled": True},
        culprits=[state.name],
        at_s=snap.at_s,
    )
    mon.record(verdict)
