"""Evidence in words: blocker chains, what a thread is doing, and verdict builders.

The watchdog decides *when* something is wrong; this module says *what* it is, in
sentences a reader who never saw the code can follow ("kswapd-1 waits for
anon_vma#17, held 3.2 s by kswapd-0, which is walking anon_vma#17's list
(page_referenced_anon), step 41,000 of a bound of 96").  Everything here reads
the live state once, from a `Snapshot`, and takes no lock a stuck thread could
hold, so the emergency path may use it too.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.samples import Activity
from stress.threads import Frame, FrameView, ThreadState, frame_views, stack_of, where
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.lockcore import Waiter
    from stress.monitor import Monitor
    from stress.walks import Walk


@dataclass
class Snapshot:
    """One look at every thread: its frames now, and how long each has not moved."""

    now: float
    t0: float
    #: What each thread (by ident) was executing at `now`, as plain values: a frame
    #: object of another thread must not be kept (see stress.threads.frozen_frames).
    views: dict[int, FrameView]
    #: Seconds since the watchdog last saw the thread execute Python code.
    frozen: dict[ThreadState, float] = field(default_factory=dict)
    #: What each thread did lately, from its CPU times (stress.samples).
    activity: dict[ThreadState, Activity] = field(default_factory=dict)
    #: The process as a whole lacked CPU time lately (an overloaded machine).
    starved: bool = False
    #: Threads blocked in Thread.join() on each thread (the watchdog fills it).
    joiners: dict[ThreadState, list[ThreadState]] = field(default_factory=dict)
    _stacks: dict[int, list[Frame]] = field(default_factory=dict)

    @classmethod
    def take(cls, mon: Monitor) -> Snapshot:
        now = perf_counter()
        snap = cls(now, mon.t0, frame_views(), mon.frozen(now))
        snap.activity = mon.activities(now)
        return snap

    @property
    def at_s(self) -> float:
        return self.now - self.t0

    def stack(self, state: ThreadState) -> list[Frame]:
        cached = self._stacks.get(state.ident)
        if cached is None:
            cached = self._stacks[state.ident] = stack_of(state.ident)
        return cached

    def stacks_of(self, ident: int | None) -> list[Frame]:
        """The stack of the thread with this ident (one the harness has no state for)."""
        return stack_of(ident)

    def stacks(self, states: list[ThreadState]) -> dict[str, list[Frame]]:
        return {s.name: self.stack(s) for s in states}


def seconds(value: float) -> str:
    if value < 1:
        return f"{value:.3f} s"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def waiting_on(state: ThreadState) -> Waiter | None:
    """The wait the thread is blocked in, if any (a granted wait is over)."""
    waiter = state.waiting
    if waiter is None or waiter.granted:
        return None
    return waiter


def blocker_phrase(who: ThreadState, how: str, since: float | None, snap: Snapshot) -> str:
    """'held 3.2 s by kswapd-0', 'held for reading 0.4 s by proc-1', 'queued behind mmap-1'."""
    if how == "queued":
        return f"queued behind {who.name}"
    dur = "" if since is None else f" {seconds(max(snap.now - since, 0.0))}"
    verb = "held" if how == "lock" else f"held for {'reading' if how == 'read' else 'writing'}"
    return f"{verb}{dur} by {who.name}"


def holders_phrase(lock: Any, snap: Snapshot) -> tuple[str, list[ThreadState]]:
    """'held 3.2 s by kswapd-0' and the holders."""
    holders = lock.holders()
    if not holders:
        return "which nobody holds (it is being handed over)", []
    return ", ".join(blocker_phrase(s, m, t, snap) for s, m, t in holders), [h[0] for h in holders]


def steps_phrase(walk: Walk, snap: Snapshot) -> str:
    if walk.bound is not None:
        return f"step {walk.n:,} of a bound of {walk.bound:,}"
    return f"step {walk.n:,}, walking for {seconds(snap.now - walk.t0)} (no step bound)"


def walk_phrase(walk: Walk, snap: Snapshot) -> str:
    return f"walking {walk.subject}'s list ({walk.kind}), {steps_phrase(walk, snap)}"


def parked_phrase(state: ThreadState, snap: Snapshot) -> str | None:
    """'waiting on condition x (for 3.2 s)' for a thread in a non-lock wait."""
    parked = state.parked
    if parked is None:
        return None
    what, obj, since = parked
    return f"waiting on {what} {getattr(obj, 'name', obj)} (for {seconds(snap.now - since)})"


def doing(state: ThreadState, snap: Snapshot) -> str:
    """What a thread that others wait for is doing now."""
    if state.walks:
        return "which is " + walk_phrase(state.walks[-1], snap)
    if not state.thread.is_alive():
        return "which has exited without releasing it"
    here = where(snap.stack(state))
    frozen = snap.frozen.get(state)
    act = snap.activity.get(state)
    if state.idle:
        return f"which is pausing at {here}"
    parked = parked_phrase(state, snap)
    if parked is not None:
        return f"which is {parked} at {here}"
    if act is not None and act.word == "not scheduled":
        return (
            f"which is runnable but not scheduled at {here} ({act.describe()}): "
            f"the machine is overloaded"
        )
    if act is not None and act.word == "running":
        return f"which is running at {here} ({act.describe()})"
    if frozen is not None and frozen > 0:
        return (
            f"which has run no Python code for {seconds(frozen)}: blocked outside Python at {here}"
        )
    return f"which is running at {here}"


def chain_from(state: ThreadState, snap: Snapshot) -> str:
    """The blocker chain from a waiting thread, to its end or around its cycle."""
    parts: list[str] = []
    seen = {state}
    current = state
    while True:
        waiter = waiting_on(current)
        if waiter is None:
            parts.append(doing(current, snap))
            break
        lead = f"{current.name} waits for" if current is state else "which waits for"
        mode = "" if waiter.mode == "lock" else f" ({waiter.mode})"
        parts.append(f"{lead} {waiter.lock.name}{mode}")
        blockers = waiter.lock.blockers(waiter)
        if not blockers:
            parts.append("which nobody holds (it is being handed over)")
            break
        parts.append(", ".join(blocker_phrase(s, how, t, snap) for s, how, t in blockers))
        nxt = blockers[0][0]
        if nxt in seen:
            parts[-1] += (
                " itself: a self-deadlock" if nxt is current else f": a cycle back to {nxt.name}"
            )
            break
        seen.add(nxt)
        current = nxt
    return ", ".join(parts)


def describe_stuck(state: ThreadState, snap: Snapshot) -> dict[str, Any]:
    """A thread that would not stop: what it holds, what it does, where it is."""
    holds = [x.name for x in state.held_locks()]
    waiter = waiting_on(state)
    if waiter is not None:
        what = chain_from(state, snap)
    else:
        what = (
            f"{state.name}{' holds ' + ', '.join(holds) if holds else ''}, "
            f"{doing(state, snap)[len('which ') :]}"
        )
    return {
        "thread": state.name,
        "doing": what,
        "holds": holds,
        "stack": [f.to_dict() for f in snap.stack(state)],
    }


def waiters_behind(locks: list[Any], snap: Snapshot, skip: set[ThreadState]) -> list[str]:
    """Chains of every thread queued on `locks` (the pile-up behind a culprit)."""
    lines = []
    for lock in locks:
        for waiter in lock.waiters():
            if waiter.state not in skip:
                lines.append(chain_from(waiter.state, snap))
    return lines


def lock_classes(locks: list[Any]) -> list[str]:
    return [lock.lock_class.name for lock in locks]


# -- builders ------------------------------------------------------------------------------


def list_loop(walk: Walk, snap: Snapshot, source: str) -> Verdict:
    state = walk.state
    held = state.held_locks()
    lock = walk.lock
    locks = [lock] if lock is not None else []
    locks += [h for h in held if h is not lock]
    under = f", holding {', '.join(x.name for x in locks)}" if locks else ""
    behind = waiters_behind(locks, snap, {state})
    chain = behind or [f"{state.name}, {doing(state, snap)[len('which ') :]}"]
    evidence: dict[str, Any] = {
        "walk": walk.kind,
        "subject": walk.subject,
        "lock": lock.name if lock is not None else None,
        "steps": walk.n,
        "bound": walk.bound,
        "walking_s": round(snap.now - walk.t0, 4),
        "waiters": len(behind),
    }
    if walk.cycle_nodes:
        evidence["cycle"] = list(walk.cycle_nodes)
    return Verdict(
        kind="list-loop",
        summary=(
            f"{state.name} loops in {walk.kind} over {walk.subject}'s list: "
            f"{steps_phrase(walk, snap)}{under}"
        ),
        source=source,
        threads=[state.name]
        + [w.state.name for x in locks for w in x.waiters() if w.state is not state],
        locks=[x.name for x in locks],
        lock_classes=lock_classes(locks),
        chain=chain,
        stacks={state.name: snap.stack(state)},
        evidence=evidence,
        culprits=[state.name],
        at_s=snap.at_s,
    )


def deadlock(cycle: list[Waiter], snap: Snapshot) -> Verdict:
    states = [w.state for w in cycle]
    locks = [w.lock for w in cycle]
    if len(cycle) == 1:
        only = cycle[0]
        summary = (
            f"self-deadlock: {only.state.name} waits for {only.lock.name}, which it holds itself"
        )
    else:
        summary = (
            "deadlock: "
            + ", ".join(
                f"{w.state.name} waits for {w.lock.name}"
                + ("" if w.mode == "lock" else f" ({w.mode})")
                for w in cycle
            )
            + " - a cycle"
        )
    others = waiters_behind(locks, snap, set(states))
    return Verdict(
        kind="deadlock",
        summary=summary,
        source="watchdog",
        threads=[s.name for s in states],
        locks=[x.name for x in locks],
        lock_classes=lock_classes(locks),
        chain=[chain_from(s, snap) for s in states] + others,
        stacks=snap.stacks(states),
        evidence={
            "cycle": [
                {
                    "thread": w.state.name,
                    "waits_for": w.lock.name,
                    "mode": w.mode,
                    "waiting_s": round(snap.now - w.since, 4),
                }
                for w in cycle
            ],
            "self": len(cycle) == 1,
        },
        culprits=[s.name for s in states],
        at_s=snap.at_s,
    )


def long_hold(lock: Any, holder: ThreadState, since: float, snap: Snapshot) -> Verdict:
    held_s = snap.now - since
    budget = lock.lock_class.budget_s
    what = doing(holder, snap)[len("which ") :]
    behind = waiters_behind([lock], snap, {holder}) + [
        f"{j.name} waits in join() for {holder.name} to end, which holds {lock.name} and {what}"
        for j in snap.joiners.get(holder, [])
    ]
    waiters = f", {len(behind)} waiting" if behind else ", nobody waiting"
    act = snap.activity.get(holder)
    overloaded = act is not None and act.word == "not scheduled"
    note = (
        f" (machine overloaded: it waited for a CPU {act.wait or 0:.0%} of the time)"
        if act is not None and overloaded
        else ""
    )
    return Verdict(
        kind="long-hold",
        summary=(
            f"{lock.name} held {seconds(held_s)} by {holder.name} (budget "
            f"{seconds(budget)}){waiters}; {holder.name} {what}{note}"
        ),
        source="watchdog",
        threads=[holder.name] + [w.state.name for w in lock.waiters()],
        locks=[lock.name],
        lock_classes=[lock.lock_class.name],
        chain=behind or [f"{holder.name} holds {lock.name}, {what}"],
        stacks=snap.stacks([holder]),
        evidence={
            "lock": lock.name,
            "class": lock.lock_class.name,
            "holder": holder.name,
            "held_s": round(held_s, 4),
            "budget_s": budget,
            "holder_state": _state_word(holder, snap),
            "holder_at": where(snap.stack(holder)),
            "holder_cpu": act.describe() if act is not None else "activity unknown",
            "machine_overloaded": overloaded,
            "waiters": len(behind),
        },
        culprits=[holder.name],
        at_s=snap.at_s,
    )


def _state_word(state: ThreadState, snap: Snapshot) -> str:
    if not state.thread.is_alive():
        return "exited"
    if state.walks:
        return "walking"
    if waiting_on(state) is not None:
        return "waiting"
    if state.parked is not None:
        return f"waiting on {state.parked[0]}"
    act = snap.activity.get(state)
    if act is not None and act.word == "not scheduled":
        return "not scheduled"
    if act is not None and act.word == "running":
        return "running"
    frozen = snap.frozen.get(state)
    if frozen is not None and frozen > 0:
        return "blocked outside Python"
    return "running"


def starvation(waiter: Waiter, snap: Snapshot) -> Verdict:
    state, lock = waiter.state, waiter.lock
    grants = waiter.passed
    waited = snap.now - waiter.since
    phrase, holders = holders_phrase(lock, snap)
    return Verdict(
        kind="starvation",
        summary=(
            f"{state.name} has waited {seconds(waited)} for {lock.name} while it changed "
            f"hands {grants:,} times"
        ),
        source="watchdog",
        threads=[state.name] + [h.name for h in holders],
        locks=[lock.name],
        lock_classes=[lock.lock_class.name],
        chain=[f"{state.name} waits for {lock.name} ({seconds(waited)}), now {phrase}"],
        stacks=snap.stacks([state, *holders]),
        evidence={
            "lock": lock.name,
            "waiter": state.name,
            "waited_s": round(waited, 4),
            "acquisitions_by_others": grants,
            "fair": bool(getattr(lock, "fair", True)),
        },
        culprits=[state.name],
        at_s=snap.at_s,
    )


def livelock(
    states: list[ThreadState],
    idle_s: dict[ThreadState, float],
    busy: dict[ThreadState, float],
    snap: Snapshot,
    failing: dict[ThreadState, list[tuple[Any, int]]] | None = None,
) -> Verdict:
    """Threads that keep trying and achieve nothing; `busy` is each one's CPU share."""
    failing = failing or {}
    names = [s.name for s in states]
    worst = max(idle_s.values())
    locks = list(dict.fromkeys(x for s in states for x, _ in failing.get(s, [])))
    tries = sum(n for s in states for _, n in failing.get(s, []))
    if locks:
        what = (
            f"keep failing to take {', '.join(x.name for x in locks)} ({tries:,} failed "
            f"attempts) and completed nothing for {seconds(worst)}"
        )
    else:
        what = f"keep running but completed no operation for {seconds(worst)}"
    chain = []
    for s in states:
        tried = failing.get(s, [])
        attempts = (
            "; failed to take " + ", ".join(f"{x.name} {n:,} times" for x, n in tried)
            if tried
            else ""
        )
        chain.append(
            f"{s.name} is at {where(snap.stack(s))}, nothing completed for "
            f"{seconds(idle_s[s])}, on a CPU {busy[s]:.0%} of the time{attempts}"
        )
    return Verdict(
        kind="livelock",
        summary=f"livelock: {', '.join(names)} {what}",
        source="watchdog",
        threads=names,
        locks=[x.name for x in locks],
        lock_classes=lock_classes(locks),
        chain=chain,
        stacks=snap.stacks(states),
        evidence={
            "no_progress_s": {s.name: round(idle_s[s], 3) for s in states},
            "busy_fraction": {s.name: round(busy[s], 3) for s in states},
            "contended_or_failed_attempts": {s.name: s.nslow for s in states},
            "failing_locks": {s.name: [x.name for x, _ in failing.get(s, [])] for s in states},
            "walk_steps": {s.name: s.steps + sum(w.n for w in s.walks) for s in states},
        },
        culprits=names,
        at_s=snap.at_s,
    )


def stall(states: list[ThreadState], idle_s: dict[ThreadState, float], snap: Snapshot) -> Verdict:
    names = [s.name for s in states]
    lines = []
    for s in states:
        waiter = waiting_on(s)
        if waiter is not None:
            lines.append(chain_from(s, snap))
        else:
            lines.append(f"{s.name}, {doing(s, snap)[len('which ') :]}")
    locks = [w.lock for s in states if (w := waiting_on(s)) is not None]
    return Verdict(
        kind="stall",
        summary=(
            f"stall: {', '.join(names)} made no progress and ran no Python code for "
            f"{seconds(max(idle_s.values()))}"
        ),
        source="watchdog",
        threads=names,
        locks=[x.name for x in locks],
        lock_classes=lock_classes(locks),
        chain=lines,
        stacks=snap.stacks(states),
        evidence={
            "no_progress_s": {s.name: round(idle_s[s], 3) for s in states},
            "at": {s.name: where(snap.stack(s)) for s in states},
            "held": {s.name: [x.name for x in s.held_locks()] for s in states},
        },
        culprits=names,
        at_s=snap.at_s,
    )


def crash(state: ThreadState, exc: BaseException, at_s: float) -> Verdict:
    """A worker ended with an exception; a `kind`/`summary` on it are kept."""
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip()) for f in tb]
    kind = getattr(exc, "kind", None)
    summary = getattr(exc, "summary", None)
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(kind, str):
        kind = "crash"
    if not isinstance(summary, str):
        summary = f"{state.name} crashed: {text}"
    held = [x.name for x in state.held_locks()]
    evidence: dict[str, Any] = {
        "exception": type(exc).__name__,
        "message": str(exc),
        "traceback": traceback.format_exception(exc),
        "held": held,
    }
    details = getattr(exc, "details", None)
    if isinstance(details, dict):
        evidence["details"] = {str(k): plain(v) for k, v in details.items()}
    return Verdict(
        kind=kind,
        summary=summary,
        source="worker",
        threads=[state.name],
        locks=held,
        lock_classes=lock_classes(state.held_locks()),
        chain=[f"{state.name} raised {text} at {where(frames)}"],
        stacks={state.name: frames},
        evidence=evidence,
        culprits=[state.name],
        at_s=at_s,
    )


def plain(value: Any) -> Any:
    """`value` made JSON-safe (anything unknown becomes its repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)
