"""Leaked locks: a lock still held when no thread is inside its critical section.

Two ways to get there, both silent on the real machine:

* a thread takes lock A and its unlock goes to another lock B (it meant A, it
  named B - an unlock through a pointer that changed meanwhile); spin_unlock
  checks nothing, so A stays held for ever while its taker goes on with its life;
* a thread exits holding a lock.

A stray unlock (an unlock of a lock the caller does not hold) is recorded by the
lock itself (`record`), with the caller's stack, the lock it released and the
locks it held then; the lock it most recently took and still held is the one the
unlock was meant for.  The watchdog (`check`) calls a hold leaked once its taker
has exited, or once the taker made a stray unlock meant for it and still holds
it at a later look; a taker that comes back for the lock it leaked would spin on
itself, which is the same verdict, not a self-deadlock (`on_retake`).

The verdict (kind ``leaked-lock``) names the lock, where it was taken (the frame
a TimedMutex keeps while it is held), which unlock went to which other lock, the
taker now, and everyone queued behind the lock.
"""

from __future__ import annotations

import linecache
from collections.abc import Hashable
from dataclasses import dataclass, field
from time import perf_counter
from types import FrameType
from typing import TYPE_CHECKING, Any

from stress.diagnosis import Snapshot, doing, waiters_behind, waiting_on
from stress.threads import Frame, ThreadState, capture, capture_current, format_stack, where
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.lockcore import Waiter
    from stress.monitor import Monitor

KIND = "leaked-lock"
#: Stray unlocks a run keeps (the most recent ones): enough to explain every leak.
KEEP = 256


@dataclass
class Site:
    """Where a hold was taken: the taking frame (exact) and its callers (names only).

    The callers have moved on since, so their line numbers are not the call's.
    """

    frame: Frame | None = None
    callers: list[str] = field(default_factory=list)

    def text(self) -> str:
        if self.frame is None:
            return "not recorded (only a TimedMutex keeps it)"
        here = self.frame.short() + (f": {self.frame.code}" if self.frame.code else "")
        return here + (f", called from {' < '.join(self.callers)}" if self.callers else "")


@dataclass
class HeldThen:
    """A lock the releasing thread held at its stray unlock."""

    lock: Any
    #: perf_counter time of that hold's start, if the lock records it (TimedMutex).
    t0: float | None
    #: Where that hold was taken, if the lock records it.
    site: Site = field(default_factory=Site)


@dataclass
class StrayUnlock:
    """An unlock of a lock the caller did not hold."""

    state: ThreadState
    lock: Any
    #: Who held `lock` at that moment (names).
    holders: list[str]
    stack: list[Frame]
    at: float
    held: list[HeldThen]

    @property
    def meant(self) -> HeldThen | None:
        """The lock the unlock was meant for: the caller's most recent one."""
        return self.held[-1] if self.held else None


def _site(lock: Any) -> Site:
    site: tuple[FrameType, int] | None = getattr(lock, "_site", None)
    if site is None:
        return Site()
    frame, line = site
    frames = capture(frame)
    if not frames:
        return Site()
    here = frames[-1]
    code = linecache.getline(here.file, line).strip()
    callers = [f.func for f in reversed(frames[:-1]) if not f.internal]
    return Site(Frame(here.file, line, here.func, code), callers[:8])


def record(mon: Monitor, state: ThreadState, lock: Any) -> StrayUnlock:
    """Remember a stray unlock by the calling thread (called by the lock)."""
    held = [
        HeldThen(x, getattr(x, "_t0", None) if hasattr(x, "_site") else None, _site(x))
        for x in state.held_locks()
        if not hasattr(x, "down_read")  # reader-writer semaphores are never leaked this way
    ]
    holders = [s.name for s, _, _ in lock.holders()]
    stray = StrayUnlock(state, lock, holders, capture_current(skip=2), perf_counter(), held)
    strays = mon.strays
    strays.append(stray)
    if len(strays) > KEEP:
        del strays[: len(strays) - KEEP]
    return stray


def _same_hold(lock: Any, then: HeldThen) -> bool:
    """Is the hold seen now the one held at the stray unlock (not a later one)?"""
    return then.t0 is None or getattr(lock, "_t0", None) == then.t0


def stray_for(mon: Monitor, holder: ThreadState, lock: Any) -> StrayUnlock | None:
    """The stray unlock by `holder` that was meant for its current hold of `lock`."""
    for stray in reversed(list(mon.strays)):
        meant = stray.meant
        if stray.state is holder and meant is not None and meant.lock is lock:
            return stray if _same_hold(lock, meant) else None
    return None


def _exit_explained(mon: Monitor, holder: ThreadState) -> bool:
    """A thread that crashed or reported a defect (an oops) explains the locks it left."""
    return holder in mon.faulted


def check(
    mon: Monitor,
    holds: list[tuple[Any, ThreadState, float]],
    snap: Snapshot,
    seen: set[Hashable],
    ex_threads: set[ThreadState],
    ex_locks: set[int],
) -> None:
    """Name every leaked hold (one watchdog poll); its lock and waiters are explained."""
    if not holds:
        return
    for lock, holder, since in holds:
        if id(lock) in ex_locks:
            continue
        stray: StrayUnlock | None = None
        if holder.thread.is_alive():
            stray = stray_for(mon, holder, lock) if mon.strays else None
            if stray is None or snap.now - stray.at < mon.config.poll_s:
                continue
            if not holder.holds(lock):  # released since the watchdog looked
                continue
        elif (
            not _exit_leaks(lock)
            or not holder.holds(lock)
            or _exit_explained(mon, holder)
        ):
            continue  # (a dead thread's books no longer change: this look is final)
        key = (KIND, id(lock), holder.tid, since)
        seen.add(key)
        ex_locks.add(id(lock))
        if stray is not None:
            ex_threads.add(holder)
        _record_or_refresh(
            mon, key, lambda x=lock, h=holder, s=stray, t=since: leaked(x, h, s, snap, since=t)
        )


def _exit_leaks(lock: Any) -> bool:
    """Whether a taker's exit with `lock` held is a leak (see LockBase.leak_on_exit)."""
    policy = getattr(lock, "leak_on_exit", "always")
    return policy == "always" or (policy == "waited" and bool(lock.waiters()))


def _record_or_refresh(mon: Monitor, key: Hashable, build: Any) -> None:
    active = mon.book.active(key)
    if active is None:
        mon.record(build(), keys=[key])
        return
    fresh = build()
    active.summary, active.chain = fresh.summary, fresh.chain
    active.evidence.update(fresh.evidence)
    active.threads = list(dict.fromkeys(active.threads + fresh.threads))


def on_retake(mon: Monitor, state: ThreadState, lock: Any, waiter: Waiter) -> Verdict | None:
    """A thread takes a lock it holds: a leak if its last unlock meant for it went astray."""
    stray = stray_for(mon, state, lock)
    if stray is None:
        return None
    snap = Snapshot.take(mon)
    verdict = leaked(lock, state, stray, snap, retake=True)
    verdict.source = "lock"
    since = getattr(lock, "_t0", None)
    keys: list[Hashable] = [("deadlock", frozenset({id(waiter)}))]
    if since is not None:
        keys.append((KIND, id(lock), state.tid, since))
    return mon.record(verdict, keys=keys)


def leaked(
    lock: Any,
    holder: ThreadState,
    stray: StrayUnlock | None,
    snap: Snapshot,
    *,
    since: float | None = None,
    retake: bool = False,
) -> Verdict:
    """The verdict: which lock, taken where, by whom, and which unlock went astray."""
    taken = _site(lock)
    if taken.frame is None and stray is not None and stray.meant is not None:
        taken = stray.meant.site
    taken_at = taken.text()
    behind = waiters_behind([lock], snap, {holder})
    waiting = f"; {len(behind)} waiting for it" if behind else "; nobody waits for it yet"
    if stray is not None:
        went = stray.lock.name
        owner = f"held by {', '.join(stray.holders)}" if stray.holders else "held by nobody"
        how = (
            f"{holder.name} took it at {taken_at} and its unlock went to {went} "
            f"({owner}) at {where(stray.stack)}"
        )
        if retake:
            how += f"; {holder.name} now spins on it itself"
    else:
        how = f"{holder.name} took it at {taken_at} and exited without releasing it"
    summary = f"{lock.name} is held by nobody inside it: {how}{waiting}"
    stacks: dict[str, list[Frame]] = {}
    culprit = holder.name
    if stray is not None:
        culprit = f"{holder.name} (at the unlock that went to {stray.lock.name})"
        stacks[culprit] = stray.stack
    if taken.frame is not None:
        stacks[f"{holder.name} (when it took {lock.name})"] = [taken.frame]
    if holder.thread.is_alive():
        stacks[holder.name] = snap.stack(holder)
    evidence: dict[str, Any] = {
        "lock": lock.name,
        "class": lock.lock_class.name,
        "taken_by": holder.name,
        "taken_at": taken_at,
        "held_s": round(snap.now - (since if since is not None else lock_since(lock, snap)), 4),
        "taker_now": _taker_now(holder, snap),
        "waiters": len(behind),
    }
    if stray is not None:
        evidence["unlock_went_to"] = stray.lock.name
        evidence["unlock_went_to_class"] = stray.lock.lock_class.name
        evidence["that_lock_was"] = (
            f"held by {', '.join(stray.holders)}" if stray.holders else "held by nobody"
        )
        evidence["unlock_at"] = where(stray.stack)
        evidence["unlock_stack"] = format_stack(stray.stack)
        evidence["unlock_s_ago"] = round(snap.now - stray.at, 4)
    chain = behind or [f"{holder.name} holds {lock.name}, {_taker_now(holder, snap)}"]
    locks = [lock] + ([stray.lock] if stray is not None else [])
    return Verdict(
        kind=KIND,
        summary=summary,
        source="watchdog",
        threads=[holder.name] + [w.state.name for w in lock.waiters() if w.state is not holder],
        locks=[x.name for x in locks],
        lock_classes=[x.lock_class.name for x in locks],
        chain=chain,
        stacks=stacks,
        evidence=evidence,
        culprits=[culprit],
        at_s=snap.at_s,
    )


def lock_since(lock: Any, snap: Snapshot) -> float:
    t0 = getattr(lock, "_t0", None)
    return t0 if isinstance(t0, float) and t0 > 0 else snap.now


def _taker_now(holder: ThreadState, snap: Snapshot) -> str:
    if not holder.thread.is_alive():
        return "which has exited"
    waiter = waiting_on(holder)
    if waiter is not None:
        return f"which waits for {waiter.lock.name}"
    text = doing(holder, snap)
    return text if text.startswith("which") else f"which {text}"
