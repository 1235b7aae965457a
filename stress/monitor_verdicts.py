"""The Monitor's verdict stream: recording, defects reported by the code under test,
crashes, stray unlocks, self-deadlocks and the harness's own errors.

A mixin of stress.monitor.Monitor (that module is the run's life; this one is what a
run says): every finding goes through `record`, which de-duplicates it by signature,
traces it, writes it to the run's report and, as the policy says, stops the run.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

from stress import diagnosis, leaks
from stress.config import Config
from stress.lockcore import Waiter
from stress.report import Record, RunReport
from stress.threads import ThreadState, capture_current, capture_exception, current, where
from stress.verdicts import Verdict, VerdictBook

if TYPE_CHECKING:
    from stress.monitor import Monitor
    from stress.sched.core import Scheduler


class VerdictSink:
    """What a Monitor records, and how a verdict may stop its run."""

    # The Monitor's fields this part reads and writes (set in Monitor.__init__).
    config: Config
    name: str
    meta: dict[str, Any]
    report: RunReport | None
    book: VerdictBook
    errors: list[str]
    late: list[Verdict]
    faulted: set[ThreadState]
    trace_ring: deque[Record] | None
    t0: float
    running: bool
    cancelled: bool
    scheduler: Scheduler | None
    _stop_at: float | None
    _stop_reason: str

    def cancel(self, reason: str) -> None:
        raise NotImplementedError  # the Monitor's

    @property
    def verdicts(self) -> list[Verdict]:
        return self.book.snapshot()

    def now_s(self) -> float:
        """Seconds since the run started."""
        return perf_counter() - self.t0

    def record(
        self, verdict: Verdict, *, keys: Sequence[Hashable] = (), stop: bool | None = None
    ) -> Verdict:
        """Add a verdict (deduplicated by signature); stop the run if the policy says so.

        After cancellation a verdict is kept apart (`late`): a worker stopped half-way
        may leave state that makes others fail, which is not a finding of the run.
        """
        if self.cancelled:
            self.late.append(verdict)
            return verdict
        kept, new = self.book.add(verdict, keys)
        if not new:
            return kept
        if kept.replay is None and "replay" in self.meta:
            kept.replay = str(self.meta["replay"])
        ring = self.trace_ring
        if ring is not None:
            ring.append(("V", current().tid, kept.kind, kept.summary, self.t0 + kept.at_s))
        if self.report is not None:
            self.report.event(
                "verdict", f"{kept.kind}: {kept.summary}", case=self.name, verdict=kept.to_dict()
            )
        if stop if stop is not None else self.config.stops_on(kept.kind):
            self._request_stop(kept)
        return kept

    def report_defect(
        self,
        kind: str,
        summary: str,
        *,
        evidence: Mapping[str, Any] | None = None,
        threads: Sequence[str] = (),
        locks: Sequence[Any] = (),
        stop: bool | None = None,
        exc: BaseException | None = None,
    ) -> Verdict:
        """A defect found by the code under test, reported through the verdict stream.

        `locks` may be lock objects or names; the calling thread's stack is the proof:
        where `exc` was raised when the defect arrives as a caught exception.
        """
        state = current()
        self.faulted.add(state)
        stack = capture_exception(exc, skip=2) if exc is not None else capture_current(skip=2)
        objects = [x for x in locks if not isinstance(x, str)]
        ev = {str(k): diagnosis.plain(v) for k, v in (evidence or {}).items()}
        held = [x.name for x in state.held_locks()]
        if held:
            ev.setdefault("held", held)
        verdict = Verdict(
            kind=kind,
            summary=summary,
            source="defect",
            threads=list(dict.fromkeys([state.name, *threads])),
            locks=[x if isinstance(x, str) else x.name for x in locks],
            lock_classes=[x.lock_class.name for x in objects],
            chain=[f"{state.name} found it at {where(stack)}"],
            stacks={state.name: stack},
            evidence=ev,
            culprits=[state.name],
            at_s=self.now_s(),
        )
        return self.record(verdict, stop=stop)

    def worker_crashed(self, state: ThreadState, exc: BaseException) -> Verdict:
        self.faulted.add(state)
        return self.record(diagnosis.crash(state, exc, self.now_s()))

    def stray_unlock(self, state: ThreadState, lock: Any) -> None:
        """`state` unlocked `lock`, which it does not hold (a kernel-style lock said nothing)."""
        stray = leaks.record(cast("Monitor", self), state, lock)
        if self.report is not None:
            meant = stray.meant
            self.report.event(
                "stray-unlock",
                f"{state.name} unlocked {lock.name}, which it did not hold"
                + (f" (its last lock was {meant.lock.name})" if meant is not None else ""),
                case=self.name,
            )

    def self_deadlock(self, state: ThreadState, lock: Any, waiter: Waiter) -> Verdict:
        """A thread takes a lock it holds: the same episode the watchdog would find.

        If the thread's last unlock meant for that lock went to another one, the lock
        was leaked, and that is the verdict.
        """
        leak = leaks.on_retake(cast("Monitor", self), state, lock, waiter)
        if leak is not None:
            return leak
        snap = diagnosis.Snapshot.take(cast("Monitor", self))
        verdict = diagnosis.deadlock([waiter], snap)
        verdict.source = "lock"
        return self.record(verdict, keys=[("deadlock", frozenset({id(waiter)}))])

    def internal_error(self, where_: str, exc: BaseException) -> None:
        text = f"{where_}: {type(exc).__name__}: {exc}"
        self.errors.append(text + "\n" + "".join(traceback.format_exception(exc)))
        if self.report is not None:
            self.report.event("error", text, case=self.name)

    def _request_stop(self, verdict: Verdict) -> None:
        if not self.running or self.cancelled or self._stop_at is not None:
            return
        self._stop_reason = f"{verdict.kind}: {verdict.summary}"
        if self.config.linger_s <= 0 or self.scheduler is not None:
            self.cancel(self._stop_reason)
        else:
            self._stop_at = perf_counter() + self.config.linger_s
