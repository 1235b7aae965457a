"""Busy-waits the watchdog can see: a thread re-reading a word until it changes.

Code that spins on something the harness does not own (a lock word in memory it
models itself, a flag) declares the spin so that the watchdog can name it when
it never ends, with what it spins on, instead of calling the thread merely busy:

    with mon.spin("spin_lock", "lock word @0x...", evidence=lambda: {...}) as s:
        while not free():
            s.step()          # one look; raises Cancelled once the run is cancelled

A spin still going after the walk bound (`walk_s`) is a soft lockup, named
before any lock the spinner holds can be called a long hold: a ``livelock``
verdict (a thread that runs and completes nothing) whose evidence is
the spin's subject and evidence, the spinner's stack, the locks it holds and
everyone queued behind them.  Spins are rare and short-lived, so they live in a
small registry of the Monitor rather than in the per-thread fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.diagnosis import Snapshot, lock_classes, seconds, waiters_behind
from stress.errors import Cancelled
from stress.threads import ThreadState, current
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.monitor import Monitor

Evidence = Callable[[], dict[str, Any]]


class Spin:
    """One busy-wait in progress."""

    __slots__ = ("_mon", "evidence", "kind", "n", "state", "subject", "t0")

    def __init__(self, mon: Monitor, kind: str, subject: str, evidence: Evidence | None) -> None:
        self._mon = mon
        self.kind = kind
        self.subject = subject
        self.evidence = evidence
        self.n = 0
        self.t0 = 0.0
        self.state: ThreadState = current()

    def __enter__(self) -> Spin:
        mon = self._mon
        if mon.cancelled:
            raise Cancelled(mon.cancel_reason)
        mon.adopt(self.state)
        self.t0 = perf_counter()
        with mon.spins_lock:
            mon.spins[id(self)] = self
        return self

    def begin(self) -> Spin:
        """Start without a with-block (someone else's loop calls step())."""
        return self.__enter__()

    def step(self) -> None:
        """One more look at the word; raises Cancelled once the run is cancelled."""
        self.n += 1
        if self._mon.cancelled:
            raise Cancelled(self._mon.cancel_reason)

    def end(self, error: BaseException | None = None) -> None:
        self.__exit__(None)

    def __exit__(self, *exc: object) -> None:
        mon = self._mon
        with mon.spins_lock:
            mon.spins.pop(id(self), None)

    def __repr__(self) -> str:
        return f"<Spin {self.kind} on {self.subject}: {self.n} looks>"


def check(
    mon: Monitor,
    snap: Snapshot,
    seen: set[Hashable],
    ex_threads: set[ThreadState],
    ex_locks: set[int],
) -> None:
    """Name every spin older than the walk bound (one watchdog poll)."""
    if not mon.spins:
        return
    with mon.spins_lock:
        spins = list(mon.spins.values())
    for spin in spins:
        if spin.state in ex_threads or snap.now - spin.t0 <= mon.config.walk_s:
            continue
        key = ("soft-lockup", id(spin))
        seen.add(key)
        ex_threads.add(spin.state)
        ex_locks.update(id(x) for x in spin.state.held_locks())
        active = mon.book.active(key)
        if active is None:
            mon.record(soft_lockup(spin, snap), keys=[key])
        else:
            fresh = soft_lockup(spin, snap)
            active.summary, active.chain = fresh.summary, fresh.chain
            active.evidence.update(fresh.evidence)


def soft_lockup(spin: Spin, snap: Snapshot) -> Verdict:
    state = spin.state
    held = state.held_locks()
    behind = waiters_behind(held, snap, {state})
    holding = f", holding {', '.join(x.name for x in held)}" if held else ""
    waiting = f"; {len(behind)} waiting behind it" if behind else ""
    spun = snap.now - spin.t0
    details: dict[str, Any] = {}
    if spin.evidence is not None:
        try:
            details = dict(spin.evidence())
        except Exception as exc:  # the evidence reads live state: never fail the verdict
            details = {"evidence_error": f"{type(exc).__name__}: {exc}"}
    return Verdict(
        kind="livelock",
        summary=(
            f"soft lockup: {state.name} has spun {seconds(spun)} in {spin.kind} on "
            f"{spin.subject} ({spin.n:,} looks){holding}{waiting}"
        ),
        source="watchdog",
        threads=[state.name] + [w.state.name for x in held for w in x.waiters()],
        locks=[x.name for x in held],
        lock_classes=lock_classes(held),
        chain=behind or [f"{state.name} spins in {spin.kind} on {spin.subject}{holding}"],
        stacks={state.name: snap.stack(state)},
        evidence={
            "spin": spin.kind,
            "on": spin.subject,
            "spinning_s": round(spun, 4),
            "looks": spin.n,
            **details,
            "held": [x.name for x in held],
            "waiters": len(behind),
        },
        culprits=[state.name],
        at_s=snap.at_s,
    )
