"""instrument_threading(): watch any threaded Python code, unchanged.

    with stress.instrument_threading() as watch:   # or (monitor) or (config)
        run_the_code()
    print(watch.verdicts)

Inside the block `threading.Lock()`, `RLock()`, `Condition()`, `Semaphore()`,
`BoundedSemaphore()`, `Event()` and `Barrier()` make stress's instrumented types
(stress.tsync, stress.tsync_cond) bound to the block's monitor, and so do
`queue.Queue`, `concurrent.futures` and `threading.Timer`, which are built on them.
Every thread started in the block is watched: adopted by the monitor when it starts,
its exception (other than the harness's Cancelled) recorded as a crash verdict and
passed on to threading.excepthook as usual.  On exit everything is restored; objects
made inside keep working as plain threading objects.

When the watchdog finds a hang (a stopping verdict) the run is cancelled: every
instrumented wait raises Cancelled and the threads unwind.  The ones that do not
within grace_s (asleep in C, spinning in pure Python) are reported as stuck, made
daemon threads (so that interpreter exit does not wait for them) and get an
`Interrupted` exception raised in them the moment they run Python code again; the
thread that entered the block, if it still has not left it, is interrupted by a
signal (SIGUSR2, main thread only), which also ends a blocking wait such as join().
Nothing calls os._exit: a pytest session goes on.

The harness's own threads (the watchdog, the supervisor here) run on `_thread` and
wait on `_thread` locks, so replacing threading's primitives cannot block them.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from time import perf_counter
from types import FrameType
from typing import Any

from stress import diagnosis, tsync
from stress.config import WATCHDOG_KINDS, Config
from stress.errors import Cancelled
from stress.monitor import Monitor
from stress.rawsync import Flag, RawThread
from stress.report import CaseResult
from stress.threads import ThreadState, all_threads, current, where
from stress.tsync import Lock, RLock
from stress.tsync_cond import Barrier, BoundedSemaphore, Condition, Event, Semaphore
from stress.verdicts import Verdict

#: threading's names the block replaces, and with what.
REPLACED: dict[str, Any] = {
    "Lock": Lock,
    "RLock": RLock,
    "Condition": Condition,
    "Semaphore": Semaphore,
    "BoundedSemaphore": BoundedSemaphore,
    "Event": Event,
    "Barrier": Barrier,
}
#: The signal that interrupts the block's own thread after a hang (main thread only).
INTERRUPT_SIGNAL = signal.SIGUSR2
#: How often the supervisor looks at the run.
_SUPERVISE_S = 0.05


def watch_config(**changes: Any) -> Config:
    """Settings for watching code that was not written for the harness.

    No run budget (the code decides how long it runs), no faulthandler backstop (it
    would end the process), a hold is a hang only if someone waits for the lock,
    a grace of half a second for threads to unwind, lock-order and crash verdicts
    recorded without stopping anything.  `changes` override any of them.
    """
    base = Config(
        poll_s=0.05,  # hangs are named in a tenth of a second; the watchdog costs little
        walk_s=0.25,
        hold_s=1.0,
        verdict_s=1.5,
        duration_s=1e6,
        grace_s=0.5,
        backstop_s=0.5,
        backstop=False,
        hold_needs_waiters=True,
        stop_on=frozenset(WATCHDOG_KINDS),
        linger_s=0.1,
        timing=False,
        trace_events=0,
        on_stuck="raise",
    )
    return base.replace(**changes)


class Interrupted(Cancelled):
    """Raised by the watch in a thread that did not stop after a hang was found."""

    def __init__(self, reason: str = "stopped by the stress watch after a hang") -> None:
        super().__init__(reason)


#: The blocks in force, innermost last (a nested block watches its own threads).
_blocks: list[Instrumentation] = []


class Instrumentation:
    """One instrument_threading block: its monitor, the threads it watches, its findings."""

    def __init__(self, target: Monitor | Config | None, name: str, interrupt: bool) -> None:
        if isinstance(target, Monitor):
            self.monitor = target
            self.owned = False
        else:
            self.monitor = Monitor(target or watch_config(), name=name)
            self.owned = True
        self.interrupt = interrupt
        #: Threads started in the block, weakly (a finished one is nobody's to keep), in
        #: start order; ended ones are dropped every second.
        self._threads: list[weakref.ref[threading.Thread]] = []
        #: How many threads were started in the block.
        self.started = 0
        self._threads_lock = _thread.allocate_lock()
        #: Stuck threads after a hang: what each holds, does, and its stack.
        self.stuck: list[dict[str, Any]] = []
        #: Exceptions raised in watched threads, as (thread name, exception).
        self.thread_errors: list[tuple[str, BaseException]] = []
        #: Where the block's own thread was when the stuck threads were let go.
        self.owner_stack: list[Any] = []
        self.result: CaseResult | None = None
        self.owner_ident = threading.get_ident()
        #: Whether the block's own thread may be interrupted now (a test runner clears
        #: it while its own code, not the code under test, runs in that thread).
        self.interruptible = True
        self._inside = False
        self._interrupts = 0
        self._escalated = False
        self._saved: dict[str, Any] = {}
        self._saved_start: Callable[..., Any] | None = None
        self._saved_handler: Any = None
        self._done = Flag()
        self._supervisor: RawThread | None = None
        #: When the supervisor (or close) first saw the run cancelled inside the block.
        self._cancel_seen: float | None = None
        self._next_interrupt = 0.0

    # -- what was found --------------------------------------------------------------

    @property
    def threads(self) -> list[threading.Thread]:
        """Threads started in the block that are alive, or ended lately and still referenced."""
        with self._threads_lock:
            refs = list(self._threads)
        return [t for r in refs if (t := r()) is not None]

    @property
    def verdicts(self) -> list[Verdict]:
        return self.monitor.verdicts

    @property
    def hung(self) -> bool:
        """The run was cancelled inside the block: a hang was found (or the budget ran out)."""
        return self._cancel_seen is not None

    # -- the block -------------------------------------------------------------------

    def __enter__(self) -> Instrumentation:
        mon = self.monitor
        if self.owned or not mon.running:
            mon.start()
            self.owned = True
        mon.register_thread()
        for name, replacement in REPLACED.items():
            self._saved[name] = getattr(threading, name)
            setattr(threading, name, replacement)
        self._saved_start = threading.Thread.start
        threading.Thread.start = self._patched_start()  # type: ignore[method-assign,assignment]
        tsync._active.append(mon)
        _blocks.append(self)
        if self.interrupt and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):
                self._saved_handler = signal.signal(INTERRUPT_SIGNAL, self._on_signal)
        self._inside = True
        self._supervisor = RawThread(self._supervise, f"stress-watch[{mon.name}]")
        self._supervisor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self) -> None:
        """After a hang: give the threads the rest of their grace, then report (and let
        go of) those that did not stop.  Nothing to do if the run was not cancelled."""
        mon = self.monitor
        if mon.cancelled and self._cancel_seen is None and (mon.running or not self.owned):
            self._cancel_seen = mon.cancelled_at or perf_counter()
        if self._cancel_seen is None or self._escalated:
            return
        end = self._cancel_seen + mon.config.grace_s
        for thread in list(self.threads):
            if thread is not threading.current_thread():
                thread.join(max(end - perf_counter(), 0.0))
        self._escalate(interrupt_owner=False)

    def close(self) -> None:
        """End the block (idempotent): restore threading, stop an owned monitor."""
        if not self._inside:
            return
        self.settle()
        self._inside = False
        mon = self.monitor
        self._done.set()
        if self._supervisor is not None:
            self._supervisor.join(2.0)
        for name, original in self._saved.items():
            setattr(threading, name, original)
        if self._saved_start is not None:
            threading.Thread.start = self._saved_start  # type: ignore[method-assign]
        with contextlib.suppress(ValueError):
            tsync._active.remove(mon)
        with contextlib.suppress(ValueError):
            _blocks.remove(self)
        if self._saved_handler is not None:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(INTERRUPT_SIGNAL) == self._on_signal:
                    signal.signal(INTERRUPT_SIGNAL, self._saved_handler)
        if self.owned:
            # Stop without cancelling what still waits: objects made in the block
            # outlive it, and their waits raise only while the monitor runs.
            mon.running = False
            self.result = mon.stop()

    # -- watching threads ------------------------------------------------------------

    def _patched_start(self) -> Callable[[threading.Thread], None]:
        saved = self._saved_start
        assert saved is not None

        def start(thread: threading.Thread) -> None:
            if _blocks and _blocks[-1] is self and self._inside:
                self._watch(thread)
            saved(thread)

        return start

    def _watch(self, thread: threading.Thread) -> None:
        run = thread.run
        mon = self.monitor
        with self._threads_lock:
            self._threads.append(weakref.ref(thread))
            self.started += 1

        def watched() -> None:
            state = current()
            if mon.running:
                mon.adopt(state)
            try:
                run()
            except Cancelled:
                return  # stopped by the harness: quietly
            except SystemExit:
                raise
            except BaseException as exc:
                self._thread_error(state, exc)
                raise

        thread.run = watched  # type: ignore[method-assign]

    def _thread_error(self, state: ThreadState, exc: BaseException) -> None:
        self.thread_errors.append((state.name, exc))
        mon = self.monitor
        mon.record(diagnosis.crash(state, exc, mon.now_s()), stop=False)

    # -- after a hang ----------------------------------------------------------------

    def _supervise(self) -> None:
        mon = self.monitor
        prune_at = perf_counter() + 1.0
        while not self._done.wait(_SUPERVISE_S):
            if perf_counter() >= prune_at and not mon.cancelled:
                # A long block starts thousands of threads: keep the living ones.
                prune_at = perf_counter() + 1.0
                with self._threads_lock:
                    self._threads[:] = [
                        r for r in self._threads if (t := r()) is not None and t.is_alive()
                    ]
            if not mon.cancelled or not self._inside:
                continue
            now = perf_counter()
            if self._cancel_seen is None:
                self._cancel_seen = mon.cancelled_at or now
            grace = mon.config.grace_s
            if not self._escalated and now >= self._cancel_seen + grace:
                self._escalate(interrupt_owner=True)
                self._next_interrupt = now + grace
            elif 0 < self._interrupts < 3 and now >= self._next_interrupt:
                self._interrupt_owner()
                self._next_interrupt = now + 2 * grace

    def _escalate(self, interrupt_owner: bool) -> None:
        """Report the threads that did not stop, let them go, interrupt the owner."""
        if self._escalated:
            return
        self._escalated = True
        mon = self.monitor
        snap = diagnosis.Snapshot.take(mon)
        self.owner_stack = snap.stacks_of(self.owner_ident)
        # Ran out of budget without a verdict: every thread of the block is suspect.
        everyone = not any(mon.config.stops_on(v.kind) for v in mon.verdicts)
        named = {n for v in mon.verdicts for n in v.threads}
        stuck: list[tuple[threading.Thread, ThreadState | None]] = []
        states = {s.ident: s for s in all_threads()}
        for thread in list(self.threads):
            if not thread.is_alive() or thread.ident in (None, self.owner_ident):
                continue
            state = states.get(thread.ident)
            involved = (
                everyone
                or thread.name in named
                or (
                    state is not None
                    and (
                        any(getattr(x, "monitor", None) is mon for x in state.held_locks())
                        or state.waiting is not None
                    )
                )
            )
            if involved:
                stuck.append((thread, state))
        for thread, state in stuck:
            if state is not None:
                self.stuck.append(diagnosis.describe_stuck(state, snap))
            else:
                stack = snap.stacks_of(thread.ident)
                doing = f"{thread.name}, at {where(stack)}"
                self.stuck.append(
                    {
                        "thread": thread.name,
                        "doing": doing,
                        "holds": [],
                        "stack": [f.to_dict() for f in stack],
                    }
                )
            _let_go(thread)
        if interrupt_owner:
            self._interrupt_owner()

    def _interrupt_owner(self) -> None:
        if not (self.interrupt and self._inside and self.interruptible):
            return
        self._interrupts += 1
        handler = signal.getsignal(INTERRUPT_SIGNAL)
        if self._saved_handler is not None and handler == self._on_signal:
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(self.owner_ident, INTERRUPT_SIGNAL)
                return
        _raise_in(self.owner_ident)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._inside and self._escalated and self.interruptible:
            raise Interrupted(f"interrupted after a hang: {self.monitor.cancel_reason}")
        previous = self._saved_handler
        if callable(previous):
            previous(signum, frame)


def _let_go(thread: threading.Thread) -> None:
    """Make a stuck thread a daemon that nothing waits for at exit, and stop it when it
    next runs Python code."""
    if not thread.daemon:
        thread._daemonic = True  # type: ignore[attr-defined]
        lock = getattr(thread, "_tstate_lock", None)
        guard = getattr(threading, "_shutdown_locks_lock", None)
        locks = getattr(threading, "_shutdown_locks", None)
        if lock is not None and guard is not None and locks is not None:
            with guard:
                locks.discard(lock)
    # concurrent.futures joins its workers at exit: not this one.
    pool = sys.modules.get("concurrent.futures.thread")
    queues = getattr(pool, "_threads_queues", None)
    if queues is not None:
        with contextlib.suppress(Exception):
            queues.pop(thread, None)
    if thread.ident is not None:
        _raise_in(thread.ident)


def _raise_in(ident: int) -> None:
    """Raise Interrupted in thread `ident` when it next executes Python bytecode."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(Interrupted))


@contextlib.contextmanager
def instrument_threading(
    target: Monitor | Config | None = None, *, name: str = "watch", interrupt: bool = True
) -> Iterator[Instrumentation]:
    """Instrument `threading` for the block; see the module documentation.

    `target`: a Monitor to report to (started here if it is not running, and then
    stopped at the end), or the Config of a new one (default: watch_config()).
    `interrupt`: after a hang, interrupt the block's own thread if it has not left it.
    """
    block = Instrumentation(target, name, interrupt)
    block.__enter__()
    try:
        yield block
    finally:
        block.close()
