"""Walk tracking: a step counter the watchdog can read from outside.

A list walk (list_for_each_entry in the kernel) calls `step()` once per node.
`step()` is one increment and one comparison: the limit it compares against is
the step bound when the walk checks itself, "never" when only the watchdog
watches it, and -1 once the run is cancelled, so cancellation costs the walk
nothing until it happens.  The watchdog reads `n` and `bound` of every open walk
and calls a walk past its bound a list-loop, even if the walker never reports;
a walker that finds the cycle itself reports it with `cycle()`.  Both give the
same verdict kind under the same episode, so it is recorded once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress import diagnosis
from stress.errors import Cancelled
from stress.threads import ThreadState, current
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.monitor import Monitor

_NEVER = sys.maxsize


class Walk:
    """One list walk in progress; use as `with mon.walk(...) as w: ... w.step()`."""

    __slots__ = (
        "_mon",
        "bound",
        "cycle_nodes",
        "kind",
        "limit",
        "lock",
        "n",
        "reported",
        "state",
        "subject",
        "t0",
    )

    def __init__(
        self, mon: Monitor, kind: str, subject: str, lock: Any | None, bound: int | None
    ) -> None:
        if bound is not None and bound < 0:
            raise ValueError(f"walk bound must be >= 0, got {bound}")
        self._mon = mon
        self.kind = kind
        self.subject = subject
        self.lock = lock
        self.bound = bound
        self.n = 0
        self.limit = _NEVER
        self.t0 = 0.0
        self.cycle_nodes: list[str] = []
        self.reported = False
        self.state: ThreadState = current()

    def __enter__(self) -> Walk:
        mon = self._mon
        if mon.cancelled:
            raise Cancelled(mon.cancel_reason)
        state = self.state
        mon.adopt(state)
        if self.bound is not None and (mon.config.walk_self_check or not mon.running):
            self.limit = self.bound
        state.walks.append(self)
        self.t0 = perf_counter()
        if mon.cancelled:
            self.limit = -1
        return self

    def begin(self) -> Walk:
        """Start the walk without a with-block (a per-step hook elsewhere calls step())."""
        return self.__enter__()

    def end(self, error: BaseException | None = None) -> None:
        """End a walk started with begin(); `error` is what ended it early, if anything."""
        self.__exit__(type(error) if error is not None else None)

    def step(self) -> None:
        """One node visited; raises Cancelled once the run is cancelled."""
        self.n += 1
        if self.n > self.limit:
            self._over()

    def _over(self) -> None:
        mon = self._mon
        if mon.cancelled:
            raise Cancelled(mon.cancel_reason)
        # The step bound is checked here only when the walk checks itself.
        self.report("walk")
        raise Cancelled(f"list-loop in {self.kind} over {self.subject}")

    def cancel(self) -> None:
        """Make the next step raise Cancelled (called by the monitor, from any thread)."""
        self.limit = -1

    def cycle(self, nodes: Sequence[str]) -> Verdict:
        """Report a cycle the walker found itself (nodes as readable names)."""
        self.cycle_nodes = [str(n) for n in nodes]
        return self.report("walk")

    def report(self, source: str, snap: diagnosis.Snapshot | None = None) -> Verdict:
        """Record this walk's list-loop verdict (once per walk)."""
        mon = self._mon
        if snap is None:
            snap = diagnosis.Snapshot.take(mon)
        verdict = diagnosis.list_loop(self, snap, source)
        kept = mon.record(verdict, keys=[self.episode])
        self.reported = True
        return kept

    @property
    def episode(self) -> tuple[str, int]:
        return ("list-loop", id(self))

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        state = self.state
        walks = state.walks
        if walks and walks[-1] is self:
            walks.pop()
        elif self in walks:
            walks.remove(self)
        state.nwalks += 1
        state.steps += self.n
        self._mon.walk_done(self, perf_counter(), exc_type.__name__ if exc_type else None)

    def __repr__(self) -> str:
        bound = "no bound" if self.bound is None else f"bound {self.bound}"
        return f"<Walk {self.kind} over {self.subject}: step {self.n} ({bound})>"
