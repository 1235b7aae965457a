"""The Monitor: everything one run owns, and the run's life from start to report.

A Monitor is one run (one case): its lock classes and lockdep graph, its threads,
its watchdog, its verdicts, its statistics and trace.  Many runs may follow one
another in one process; nothing of one leaks into the next.  Locks made through a
Monitor that is not started still work (no watchdog, no budget): verdicts are
recorded but nothing is cancelled, and a self-deadlock raises at once.

Life of a run:  start() arms the faulthandler backstop and starts the watchdog;
run() starts the spawned workers and waits for the budget to end, a stopping
verdict (plus linger_s), or every worker to finish; then it cancels, joins the
workers within grace_s (else the emergency exit), stops the watchdog and returns
the CaseResult, which is also added to the attached RunReport.
"""

from __future__ import annotations

import _thread
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress import diagnosis, escape, leaks, outcome, spins
from stress.config import Config
from stress.errors import Cancelled
from stress.lockdep import LockClass, Lockdep
from stress.locks import Mutex, TimedMutex
from stress.monitor_verdicts import VerdictSink
from stress.outcome import Status
from stress.rawsync import Flag
from stress.report import CaseResult, Record, RunReport
from stress.rwsem import RWSem
from stress.samples import Activity
from stress.sched.locks import ControlledMutex, ControlledRWSem, ControlledTimedMutex
from stress.threads import (
    ThreadState,
    all_threads,
    current,
    forget,
    held_list,
)
from stress.verdicts import Verdict, VerdictBook
from stress.walks import Walk
from stress.watchdog import Watchdog
from stress.worker import Worker

if TYPE_CHECKING:
    from stress.sched.core import Scheduler
    from stress.sched.pool import ThreadPool

#: How often run() looks at its workers while waiting for the budget to end.
_RUN_TICK_S = 0.05
#: A controlled run's wall-clock cap: duration_s times this, plus the slack.
CONTROLLED_WALL_FACTOR = 20.0
CONTROLLED_WALL_SLACK_S = 30.0


class Monitor(VerdictSink):
    """One run: its locks, lockdep graph, threads, watchdog, verdicts, stats and trace."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str = "run",
        meta: Mapping[str, Any] | None = None,
        report: RunReport | None = None,
        on_status: Callable[[Status], None] | None = None,
        emergency_dir: str | Path | None = None,
        scheduler: Scheduler | None = None,
        pool: ThreadPool | None = None,
        backstop: bool = True,
    ) -> None:
        self.config = (config or Config()).validate()
        #: Controlled scheduling (one thread at a time, logical time), or None: free.
        self.scheduler = scheduler
        #: Workers run on these parked threads instead of new ones (exploration).
        self.pool = pool
        self._use_backstop = backstop
        if scheduler is not None:
            scheduler.attach(self)
        self.name = name
        self.meta: dict[str, Any] = dict(meta or {})
        self.report = report
        self.on_status = on_status
        folder = (
            emergency_dir
            if emergency_dir is not None
            else (report.folder if report is not None else None)
        )
        self.emergency_dir = Path(folder) if folder is not None else None
        self.lockdep = Lockdep(self)
        self.book = VerdictBook()
        self.errors: list[str] = []
        #: Verdicts raised after cancellation: listed in reports, not counted.
        self.late: list[Verdict] = []
        self.t0 = perf_counter()
        self.started_at = time.time()
        self.running = False
        self.cancelled = False
        #: Cut short from outside (interrupt()): the outcome is 'interrupted'.
        self.interrupted = False
        self.cancel_reason = ""
        self.cancelled_at: float | None = None
        self._cancel_evt = Flag()
        self._stop_at: float | None = None
        self._stop_reason = ""
        self._states: list[ThreadState] = []
        self._states_lock = _thread.allocate_lock()
        #: Counters of threads that finished and were let go: ops, walks, steps, threads.
        self._retired = [0, 0, 0, 0]
        self._nspawned = 0
        self._prune_at = 0.0
        self._workers: list[Worker] = []
        cap = self.config.trace_events
        self.trace_ring: deque[Record] | None = deque(maxlen=cap) if cap else None
        self._watchdog: Watchdog | None = None
        self._backstop = escape.Backstop(self.emergency_dir)
        self._status_at = 0.0
        self._status_prev: tuple[float, int, int] = (self.t0, 0, 0)
        self._ended_at: float | None = None
        self._final: CaseResult | None = None
        self.stuck: list[str] = []
        self.stuck_detail: list[dict[str, Any]] = []
        #: Unlocks of kernel-style locks by threads that did not hold them (stress.leaks).
        self.strays: list[leaks.StrayUnlock] = []
        #: Threads that reported a defect or crashed: locks they die holding are explained.
        self.faulted: set[ThreadState] = set()
        #: Busy-waits in progress (stress.spins), by id.
        self.spins: dict[int, spins.Spin] = {}
        self.spins_lock = _thread.allocate_lock()

    # -- locks ---------------------------------------------------------------------------

    def lock_class(self, name: str, *, budget_s: float | None = None) -> LockClass:
        """The lock class `name` of this run (created on first use)."""
        return self.lockdep.lock_class(name, budget_s or self.config.budget(name))

    def mutex(
        self,
        lock_class: str,
        name: str | None = None,
        *,
        fair: bool = True,
        subclass: int = 0,
        strict: bool = True,
    ) -> Mutex:
        """A new instrumented mutex (timed when config.timing is on)."""
        kind: type[Mutex]
        if self.scheduler is not None:
            kind = ControlledTimedMutex if self.config.timing else ControlledMutex
        else:
            kind = TimedMutex if self.config.timing else Mutex
        return kind(lock_class, name, monitor=self, fair=fair, subclass=subclass, strict=strict)

    def spinlock(self, lock_class: str, name: str) -> Mutex:
        """A fair mutex standing in for a kernel spinlock (a sync-factory method).

        Like spin_unlock, its release checks nothing: an unlock by a thread that does
        not hold it is recorded (`stray_unlock`), not raised.
        """
        return self.mutex(lock_class, name, strict=False)

    def rwsem(self, lock_class: str, name: str | None = None, *, subclass: int = 0) -> RWSem:
        """A new instrumented reader-writer semaphore."""
        kind = ControlledRWSem if self.scheduler is not None else RWSem
        return kind(lock_class, name, monitor=self, subclass=subclass)

    # -- threads -------------------------------------------------------------------------

    def spawn(
        self,
        target: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        tracked: bool = True,
        **kwargs: Any,
    ) -> Worker:
        """A worker thread, started by run() (or at once if the run is already going).

        A tracked worker is expected to call progress() after each operation: going
        verdict_s without one is a livelock (if it keeps running) or a stall.
        """
        worker = Worker(self, target, args, kwargs, name or f"worker-{len(self._workers)}", tracked)
        if self.scheduler is not None and not self.cancelled:
            worker.task = self.scheduler.register(worker.name)
            worker.name = worker.task.name
        self._workers.append(worker)
        self._nspawned += 1
        if self.running and not self.cancelled:
            worker.start()
        return worker

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    def adopt(self, state: ThreadState) -> None:
        """Count `state` as a thread of this run (its counters start from zero)."""
        if state.monitor is self:
            return
        with self._states_lock:
            if state.monitor is not self:
                state.monitor = self
                state.ops = state.nwalks = state.steps = state.nslow = 0
                state.tracked_by = None
                self._states.append(state)

    def register_thread(self) -> ThreadState:
        """Watch the calling thread (threads not made by spawn())."""
        state = current()
        self.adopt(state)
        return state

    def states(self) -> list[ThreadState]:
        with self._states_lock:
            return list(self._states)

    # -- hooks for workers ---------------------------------------------------------------

    def progress(self, n: int = 1) -> None:
        """The calling thread completed `n` operations (livelock and stall need this)."""
        state: ThreadState = held_list()[0]
        if state.tracked_by is not self:
            self.adopt(state)
            state.tracked_by = self
        state.ops += n
        if self.cancelled:
            raise Cancelled(self.cancel_reason)
        if self.scheduler is not None:
            self.scheduler.progress()

    def checkpoint(self) -> None:
        """Raise Cancelled if the run is cancelled."""
        if self.cancelled:
            raise Cancelled(self.cancel_reason)

    def pause(self, seconds: float) -> None:
        """Sleep, idle by choice (never a stall); wakes at once and raises on cancellation.

        In a controlled run the sleep is logical (`Scheduler.steps_per_s`).
        """
        sched = self.scheduler
        if sched is not None and sched.controls_caller():
            sched.sleep(seconds)
            if self.cancelled:
                raise Cancelled(self.cancel_reason)
            return
        state = current()
        state.idle = True
        try:
            cancelled = self._cancel_evt.wait(seconds)
        finally:
            state.idle = False
        if cancelled:
            raise Cancelled(self.cancel_reason)

    def yield_point(self, name: str) -> None:
        """A race window the code names (controlled runs: a hot scheduling point)."""
        sched = self.scheduler
        if sched is not None:
            sched.point(name, True)

    def step_point(self, name: str) -> None:
        """A plain scheduling point (a walk step, say); nothing in a free-running run."""
        sched = self.scheduler
        if sched is not None:
            sched.point(name)

    def mark(self, name: str) -> None:
        """An operation boundary, then a scheduling point `name` (controlled runs)."""
        sched = self.scheduler
        if sched is not None:
            sched.mark(name)

    def relax(self, name: str) -> None:
        """The pause of a busy-wait loop: a controlled run lets someone else run first."""
        sched = self.scheduler
        if sched is not None:
            sched.relax(name)

    def wait_until(
        self,
        pred: Callable[[], bool],
        what: str,
        poll_s: float = 0.002,
        timeout_s: float | None = None,
    ) -> bool:
        """Wait until `pred()` holds (re-read at every switch, or every `poll_s` when free).

        With `timeout_s`, give up (False) after that long; in a controlled run a wait
        with a timeout gives up when no thread could run otherwise.
        """
        sched = self.scheduler
        if sched is not None and sched.controls_caller():
            ok = sched.wait_until(pred, f"wait:{what}", timeout=timeout_s is not None)
            if self.cancelled:
                raise Cancelled(self.cancel_reason)
            return ok
        deadline = None if timeout_s is None else perf_counter() + timeout_s
        while not pred():
            if deadline is not None and perf_counter() >= deadline:
                return False
            self.pause(poll_s)
        return True

    @property
    def controlled(self) -> bool:
        return self.scheduler is not None

    def walk(
        self, kind: str, subject: str, *, lock: Any | None = None, bound: int | None = None
    ) -> Walk:
        """Track a list walk: `with mon.walk(...) as w:` and `w.step()` per node."""
        return Walk(self, kind, subject, lock, bound)

    def spin(
        self, kind: str, subject: str, *, evidence: Callable[[], dict[str, Any]] | None = None
    ) -> spins.Spin:
        """Declare a busy-wait: `with mon.spin(...) as s:` and `s.step()` per look."""
        return spins.Spin(self, kind, subject, evidence)

    # -- tracing and hold bookkeeping ----------------------------------------------------

    def frozen(self, now: float) -> dict[ThreadState, float]:
        """How long each watched thread has run no Python code (from the watchdog)."""
        wd = self._watchdog
        return {} if wd is None else wd.frozen(now)

    def activities(self, now: float) -> dict[ThreadState, Activity]:
        """What each watched thread did lately, from its CPU times (from the watchdog)."""
        wd = self._watchdog
        return {} if wd is None else wd.activities(now)

    def walk_done(self, walk: Walk, t1: float, ended: str | None) -> None:
        ring = self.trace_ring
        if ring is not None:
            ring.append(
                (
                    "W",
                    walk.state.tid,
                    walk.kind,
                    walk.subject,
                    walk.t0,
                    t1,
                    walk.n,
                    walk.bound,
                    ended,
                )
            )

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Monitor:
        """Arm the backstop and start the watchdog (idempotent)."""
        if self.running or self._final is not None:
            return self
        self.t0 = perf_counter()
        self.started_at = time.time()
        self._status_at = self.t0 + self.config.status_every_s
        self._status_prev = (self.t0, 0, 0)
        self.running = True
        use_backstop = self._use_backstop and self.config.backstop
        if self.scheduler is not None:
            # Logical time: no watchdog polls; the run's own thread watches for a task
            # that stops reaching scheduling points (see _run_controlled).
            if use_backstop:
                self._backstop.arm(
                    self._wall_cap_s() + self.config.grace_s + self.config.backstop_s
                )
            return self
        if use_backstop:
            self._backstop.arm(self.config.backstop_at_s)
        self._watchdog = Watchdog(self)
        self._watchdog.start()
        return self

    def _wall_cap_s(self) -> float:
        """A controlled run's wall-clock safety cap: far past what its steps should take."""
        return self.config.duration_s * CONTROLLED_WALL_FACTOR + CONTROLLED_WALL_SLACK_S

    def run(self) -> CaseResult:
        """Run the spawned workers for the budget; cancel, join, stop, return the result."""
        if self.scheduler is not None:
            return self._run_controlled(self.scheduler)
        self.start()
        for worker in list(self._workers):
            worker.start()
        deadline = self.t0 + self.config.duration_s
        while not self.cancelled:
            left = deadline - perf_counter()
            if left <= 0:
                self.cancel(f"end of budget ({self.config.duration_s:g} s)")
            elif self._nspawned and not any(w.alive for w in list(self._workers)):
                self.cancel("every worker finished")
            else:
                self._cancel_evt.wait(min(left, _RUN_TICK_S))
        self._join_workers()
        return self.stop()

    def _run_controlled(self, sched: Scheduler) -> CaseResult:
        from stress.sched import run as controlled

        return controlled.run(self, sched)

    def no_runnable(self, states: list[ThreadState]) -> None:
        """Controlled run: no thread can run (see stress.sched.run)."""
        from stress.sched import run as controlled

        controlled.no_runnable(self, states)

    def spinning(self, state: ThreadState | None, point: str, spins: int) -> None:
        """Controlled run: a busy-wait went round `spins` times without progress."""
        from stress.sched import run as controlled

        controlled.spinning(self, state, point, spins)

    def _join_workers(self) -> None:
        assert self.cancelled_at is not None
        until = self.cancelled_at + self.config.grace_s
        workers = list(self._workers)
        for worker in workers:
            if worker.thread.ident is not None:  # spawned after cancellation: never started
                worker.thread.join(max(until - perf_counter(), 0.0))
        stuck = [w.name for w in workers if w.alive]
        if stuck:
            self.stuck = stuck
            snap = diagnosis.Snapshot.take(self)
            self.stuck_detail = [
                diagnosis.describe_stuck(w.state, snap)
                for w in self._workers
                if w.alive and w.state is not None
            ]
            try:
                escape.emergency(self, stuck)  # does not return when on_stuck='exit'
            finally:
                self.stop()

    def cancel(self, reason: str) -> None:
        """Ask every thread of the run to stop: waits wake, walk steps raise."""
        if self.cancelled:
            return
        self.cancel_reason = reason
        self.cancelled_at = perf_counter()
        self.cancelled = True
        self._cancel_evt.set()
        if self.scheduler is not None:
            self.scheduler.cancel(reason)
        for state in self._watched():
            for walk in list(state.walks):
                walk.cancel()
            waiter = state.waiting
            if waiter is not None and waiter.lock.monitor is self:
                waiter.wake()

    def interrupt(self, reason: str) -> None:
        """Cut the run short from outside (a signal, a test timeout): cancel it and mark its
        outcome 'interrupted', unless it had already ended or a stopping verdict had already
        decided it (then only its linger is cut)."""
        if not self.cancelled and self._stop_at is None and self._final is None:
            self.interrupted = True
        self.cancel(reason)

    def _watched(self) -> list[ThreadState]:
        mine = self.states()
        known = set(mine)
        return mine + [s for s in all_threads() if s not in known and s.waiting is not None]

    def tick_status(self, now: float) -> None:
        """A status tick when one is due (the controlled run's watching thread)."""
        if now >= self._status_at:
            self._status_at = now + self.config.status_every_s
            self._status(now)

    def tick(self, now: float) -> None:
        """Called by the watchdog every poll: linger, budget and status ticks."""
        if self._stop_at is not None and now >= self._stop_at:
            self.cancel(self._stop_reason)
        if self.running and now - self.t0 >= self.config.duration_s:
            self.cancel(f"end of budget ({self.config.duration_s:g} s)")
        if now >= self._status_at:
            self._status_at = now + self.config.status_every_s
            self._status(now)
        if now >= self._prune_at:
            self._prune_at = now + 1.0
            self._prune()

    def _prune(self) -> None:
        """Let go of threads that finished holding nothing: a long run spawns thousands.

        Their counts move to the retired totals; a thread that died holding a lock of this
        run stays, as the holder it still is (another run's locks keep it in no run).
        """
        with self._states_lock:
            keep = []
            for st in self._states:
                if (
                    st.thread.ident is not None
                    and not st.thread.is_alive()
                    and not any(getattr(x, "monitor", None) is self for x in st.held_locks())
                ):
                    self._retired[0] += st.ops
                    self._retired[1] += st.nwalks
                    self._retired[2] += st.steps
                    self._retired[3] += 1
                else:
                    keep.append(st)
            kept = set(map(id, keep))
            gone = [st for st in self._states if id(st) not in kept]
            self._states = keep
        self._workers = [w for w in list(self._workers) if not w.finished]
        forget(gone)

    def _totals(self) -> tuple[int, int, int, int]:
        return outcome.totals(self)

    def _status(self, now: float) -> None:
        outcome.status_tick(self, now)

    def stop(self) -> CaseResult:
        """End the run (cancelling it if needed) and return its result (idempotent)."""
        if self._final is not None:
            return self._final
        if not self.cancelled:
            self.cancel(self._stop_reason or "stopped")
        if self._watchdog is not None:
            self._watchdog.stop()
        self._backstop.disarm()
        self.running = False
        self._ended_at = perf_counter()
        self._final = self.result()
        if self.report is not None:
            self.report.add_case(self._final)
        self._release()
        return self._final

    def _release(self) -> None:
        """After the final result: drop every reference from outside into this run.

        Threads that died holding a lock stay in the process-wide registry for as long
        as a run needs them as holders; once it has ended, nothing does, and keeping
        them would keep the whole run (and what its workers touched) alive.
        """
        with self._states_lock:
            states = list(self._states)
        forget(states)
        for st in states:
            if st.monitor is self:
                st.monitor = None
            if st.tracked_by is self:
                st.tracked_by = None

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results (stress.outcome builds them) --------------------------------------------

    def result(self) -> CaseResult:
        """The case as it stands (final after stop())."""
        if self._final is not None:
            return self._final
        return outcome.case_result(self)

    def stats(self, now: float | None = None) -> dict[str, Any]:
        return outcome.run_stats(self, perf_counter() if now is None else now)

    def close(self) -> None:
        """Alias of stop() for callers that only want the run ended."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._final else "idle")
        return f"<Monitor {self.name} {state}, {len(self.book.verdicts)} verdicts>"


_default: Monitor | None = None
_default_lock = _thread.allocate_lock()


def default_monitor() -> Monitor:
    """The process-wide Monitor of locks made without one (never started)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Monitor(name="default")
        return _default
