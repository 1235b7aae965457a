"""The controlled scheduler: real threads, one at a time, switched only at scheduling points.

Every thread of a controlled run is a `Task`.  Exactly one task holds the run token;
the others are parked on their own `_thread` lock.  A task gives the token up only
at a *scheduling point* - a model yield point, a lock or rwsem operation, a walk
step, the start of a workload operation, an explicit `yield_point()` - or when it
cannot go on (it waits for a lock, sleeps, or ends).  At each of those the
`Strategy` decides who runs next, so the whole interleaving is a function of the
strategy and its seed: the same seed gives the same run on any machine, loaded or
idle.

Time is logical: `step` counts scheduling points.  Sleeps, the run budget and spin
limits are counted in steps, never in seconds.  When no task can run:

- sleepers are woken early (logical time jumps ahead, as in a discrete-event run);
- a wait with a timeout times out (timeouts fire only when nothing else can happen);
- otherwise every live task waits for another: a deadlock, reported at once with the
  wait-for cycle.

Every switch is recorded (`Switch`): who ran until which arrival at which named
point, and who ran next.  That record is the schedule a reproducer file keeps, and
`Replay` follows it back exactly.

The scheduler never blocks while holding anything but a task's own park lock, and
model-internal locks are never held across a scheduling point, so a parked thread
can never hold up the running one.
"""

from __future__ import annotations

import _thread
import contextlib
import heapq
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled

if TYPE_CHECKING:
    from stress.lockcore import LockBase, Waiter
    from stress.monitor import Monitor
    from stress.sched.strategies import Strategy
    from stress.threads import ThreadState

#: Task states.
NEW, RUNNABLE, BLOCKED, SLEEPING, WAITING, DONE = range(6)
STATUS_NAMES = ("new", "runnable", "blocked", "sleeping", "waiting", "done")

#: Why the running task gave up the token.
PREEMPT, BLOCK, SLEEP, WAIT, EXIT, RELAX, START = (
    "preempt",
    "block",
    "sleep",
    "wait",
    "exit",
    "relax",
    "start",
)

_tls: Any = _thread._local()


class Task:
    """One thread of a controlled run."""

    __slots__ = (
        "base",
        "blocked_on",
        "counts",
        "deadline",
        "index",
        "marks",
        "name",
        "pred",
        "sem",
        "spin",
        "spin_at",
        "state",
        "status",
        "steps",
        "timed_out",
        "until",
        "wake_at",
    )

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.sem = _thread.allocate_lock()
        self.sem.acquire()  # parked until granted
        self.status = NEW
        #: Arrivals at each named point (the schedule names switches by them).
        self.counts: dict[str, int] = {}
        #: Marks passed (operation boundaries), and the counts at the last one.
        self.marks = 0
        self.base: dict[str, int] = {}
        self.steps = 0
        self.wake_at = 0
        self.blocked_on: Waiter | None = None
        self.deadline = False  # the current wait may time out
        self.timed_out = False
        self.pred: Callable[[], bool] | None = None
        #: Consecutive relax() calls at one point without progress (a spin).
        self.spin = 0
        self.spin_at = ""
        #: (point, arrival) at which a semantic replay must look at this task.
        self.until: tuple[str, int] | None = None
        self.state: ThreadState | None = None

    def __repr__(self) -> str:
        return f"<Task {self.name} {STATUS_NAMES[self.status]}>"

    def __lt__(self, other: Task) -> bool:  # heap ties: registration order
        return self.index < other.index


@dataclass(frozen=True)
class Switch:
    """The running task `task` stopped at its `n`-th arrival at `point`; `to` ran next."""

    step: int
    task: str
    point: str
    n: int
    to: str
    why: str
    #: Where `task` was in its own code ("file.py:12 in func"), for timelines.
    site: str = ""
    #: Marks (operation boundaries) `task` had passed, and its arrivals at `point`
    #: since the last one: "in its 3rd operation, the 2nd time it reached `point`".
    mark: int = 0
    since: int = 0
    #: perf_counter() at the switch (for trace.json; not kept in reproducer files).
    t: float = 0.0

    def to_list(self) -> list[Any]:
        return [self.step, self.task, self.point, self.n, self.to, self.why]


class Scheduler:
    """Runs a Monitor's workers one at a time under a strategy."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        max_steps: int = 1_000_000,
        steps_per_s: int = 20_000,
        spin_limit: int = 2_000,
        record: bool = True,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.strategy = strategy
        self.max_steps = max_steps
        self.steps_per_s = steps_per_s
        self.spin_limit = spin_limit
        self.record = record
        self.mon: Monitor | None = None
        self.tasks: list[Task] = []
        self.by_name: dict[str, Task] = {}
        self.by_state: dict[ThreadState, Task] = {}
        self.current: Task | None = None
        self.step = 0
        self.switches: list[Switch] = []
        self._sleepers: list[tuple[int, Task]] = []
        self._next_event = 0
        self.cancelled = False
        self.finished = False
        #: True while the strategy is asked at a hot point.
        self.hot_now = False
        self._live: list[Task] = []
        self.end_reason = ""
        #: Replay divergences and other notes a report should show.
        self.notes: list[str] = []
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._started = False

    # -- set-up ----------------------------------------------------------------------------

    def attach(self, mon: Monitor) -> None:
        self.mon = mon

    def register(self, name: str) -> Task:
        """A new task, in creation order (called by whoever spawns the thread)."""
        if name in self.by_name:
            base, i = name, 2
            while f"{base}#{i}" in self.by_name:
                i += 1
            name = f"{base}#{i}"
        task = Task(name, len(self.tasks))
        self.tasks.append(task)
        self._live.append(task)
        self.by_name[name] = task
        task.status = RUNNABLE
        self.strategy.on_new(self, task)
        self._event_now()
        return task

    def enter(self, task: Task, state: ThreadState) -> None:
        """First thing a task's thread does: park until its first turn."""
        task.state = state
        self.by_state[state] = task
        _tls.task = task
        _tls.sched = self
        self._park(task)

    def begin(self) -> None:
        """Hand the token to the first task (called once, by the thread running the Monitor)."""
        self._started = True
        first = self._choose(None, START)
        if first is None:
            self._finish("nothing to run")
            return
        self.current = first
        first.sem.release()

    # -- the hot path ------------------------------------------------------------------------

    def point(self, name: str, hot: bool = False) -> None:
        """A scheduling point of the calling thread.

        A `hot` point is a race window the code named itself (a model yield point,
        `stress.yield_point`): the strategy is asked there every time, and may preempt
        more readily than at the cold points (locks, walk steps, marks).
        """
        try:
            task: Task = _tls.task
        except AttributeError:
            return  # not a thread of this run
        if task is not self.current:
            if self.cancelled:
                raise Cancelled(self._reason())
            return
        self.step += 1
        task.steps += 1
        counts = task.counts
        n = counts[name] = counts.get(name, 0) + 1
        until = task.until
        if (
            not hot
            and self.step < self._next_event
            and (until is None or until[1] != n or until[0] != name)
        ):
            return
        self.hot_now = hot
        try:
            self._event(task, name, n, PREEMPT)
        finally:
            self.hot_now = False

    # -- giving the token up ------------------------------------------------------------

    def _event(self, task: Task, name: str, n: int, why: str) -> None:
        if self.step >= self.max_steps:
            self._end_of_budget()
        self._wake_sleepers()
        nxt = self._choose(task, why, name, n)
        if nxt is None or nxt is task:
            self._rearm()
            return
        self._switch(task, nxt, name, n, why)

    def _switch(self, task: Task, nxt: Task, name: str, n: int, why: str) -> None:
        if self.record:
            since = n - task.base.get(name, 0)
            self.switches.append(
                Switch(
                    self.step,
                    task.name,
                    name,
                    n,
                    nxt.name,
                    why,
                    _site(),
                    task.marks,
                    since,
                    time.perf_counter(),
                )
            )
        self._rearm()
        self.current = nxt
        nxt.sem.release()
        if task.status != DONE:
            self._park(task)

    def _park(self, task: Task) -> None:
        task.sem.acquire()
        if self.cancelled:
            raise Cancelled(self._reason())

    def _choose(self, task: Task | None, why: str, name: str = "", n: int = 0) -> Task | None:
        """Ask the strategy; when nobody can run, resolve sleepers, timeouts, deadlock."""
        while True:
            cands = self.runnable()
            if cands:
                return self.strategy.pick(self, task, cands, why, name, n)
            if self._sleepers:
                wake_at = self._sleepers[0][0]
                if wake_at >= self.max_steps:  # nobody runs again within the budget
                    self.step = self.max_steps
                    self._end_of_budget()
                self.step = max(self.step, wake_at)  # nobody can run: time passes
                self._wake_sleepers()
                continue
            timed = [t for t in self.tasks if t.status in (BLOCKED, WAITING) and t.deadline]
            if timed:
                t = timed[0]
                t.timed_out = True
                t.status = RUNNABLE
                t.pred = None
                continue
            waiting = [t for t in self.tasks if t.status in (BLOCKED, WAITING)]
            if waiting and not self.cancelled:
                self._deadlock(waiting)
            else:
                self._finish("every task finished")
            return None

    def runnable(self) -> list[Task]:
        if len(self._live) > 8 and any(t.status == DONE for t in self._live):
            self._live = [t for t in self._live if t.status != DONE]
        out = []
        for t in self._live:
            s = t.status
            if s == RUNNABLE:
                out.append(t)
            elif s == WAITING and t.pred is not None and t.pred():
                t.status = RUNNABLE
                t.pred = None
                out.append(t)
        return out

    def _wake_sleepers(self) -> None:
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= self.step:
            _, t = heapq.heappop(sleepers)
            if t.status == SLEEPING:
                t.status = RUNNABLE
                self.strategy.on_wake(self, t)

    def _rearm(self) -> None:
        """The next step at which the running task must stop and ask the strategy."""
        self._next_event = min(self.strategy.next_event(self), self._sleep_event(), self.max_steps)

    def _sleep_event(self) -> int:
        return self._sleepers[0][0] if self._sleepers else self.max_steps

    def _event_now(self) -> None:
        self._next_event = self.step

    # -- what tasks ask of it ----------------------------------------------------------

    def _me(self) -> Task | None:
        try:
            task: Task = _tls.task
        except AttributeError:
            return None
        return task if task is self.current else None

    def controls_caller(self) -> bool:
        """The calling thread is the running task of this run."""
        return self._me() is not None

    def relax(self, name: str) -> None:
        """A busy-wait loop's pause: someone else must run before the spinner looks again."""
        task = self._me()
        if task is None:
            if self.cancelled:
                raise Cancelled(self._reason())
            return
        self.step += 1
        task.steps += 1
        n = task.counts[name] = task.counts.get(name, 0) + 1
        if task.spin_at == name:
            task.spin += 1
        else:
            task.spin_at, task.spin = name, 1
        if task.spin > self.spin_limit and self.mon is not None and not self.cancelled:
            self.mon.spinning(task.state, name, task.spin)
        self._event(task, name, n, RELAX)

    def mark(self, name: str) -> None:
        """An operation boundary of the calling task, then a scheduling point `name`.

        Switches remember the marks passed and the arrivals since the last one, so a
        schedule can say "in its 3rd operation, at the 2nd `lock:anon_vma`" - which
        stays true when other operations are added or removed.
        """
        task = self._me()
        if task is None:
            if self.cancelled:
                raise Cancelled(self._reason())
            return
        task.marks += 1
        task.base = dict(task.counts)
        self.strategy.on_mark(self, task)
        self.point(name)

    def progress(self) -> None:
        task = self._me()
        if task is not None:
            task.spin = 0

    def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Sleep in logical time: `seconds` of it are `seconds * steps_per_s` steps."""
        task = self._me()
        if task is None:
            return
        steps = max(1, int(seconds * self.steps_per_s))
        task.status = SLEEPING
        task.wake_at = self.step + steps
        heapq.heappush(self._sleepers, (task.wake_at, task))
        self._leave(task, name, SLEEP)

    def wait_until(self, pred: Callable[[], bool], name: str, *, timeout: bool = False) -> bool:
        """Wait (not runnable) until `pred()` holds; it is re-read whenever tasks switch.

        With `timeout`, the wait gives up (False) once no task can run otherwise.
        """
        task = self._me()
        if task is None:
            return bool(pred())
        try:
            while not pred():
                task.status = WAITING
                task.pred = pred
                task.deadline = timeout
                self._leave(task, name, WAIT)
                if task.timed_out:
                    return False
            return True
        finally:
            task.deadline = False
            task.timed_out = False

    def lock_wait(self, lock: LockBase, waiter: Waiter, deadline: float | None) -> bool:
        """The controlled form of LockBase._block: not runnable until a release wakes us."""
        task = self._me()
        assert task is not None
        mon = lock.monitor
        signalled = False
        name = f"wait:{lock.lock_class.name}"
        try:
            while True:
                with lock._guard:
                    if waiter.granted or lock._take_locked(waiter):
                        return True
                    if signalled:
                        waiter.misses += 1
                    if mon.cancelled or task.timed_out:
                        lock._waiters.remove(waiter)
                        lock._kick_locked()
                        if mon.cancelled:
                            raise Cancelled(mon.cancel_reason)
                        return False
                task.status = BLOCKED
                task.blocked_on = waiter
                task.deadline = deadline is not None
                self._leave(task, name, BLOCK)
                signalled = True
        finally:
            task.blocked_on = None
            task.deadline = False
            task.timed_out = False
            waiter.state.waiting = None

    def wake(self, waiter: Waiter) -> None:
        """A release woke `waiter` (from Waiter.signal_locked)."""
        task = self.by_state.get(waiter.state)
        if task is not None and task.status == BLOCKED and task.blocked_on is waiter:
            task.status = RUNNABLE
            self.strategy.on_wake(self, task)
            self._event_now()

    def exit(self, task: Task) -> None:
        """The task's thread ends: hand the token on (never parks)."""
        task.status = DONE
        if task is not self.current or self.cancelled:
            return
        self.step += 1
        with contextlib.suppress(Cancelled):  # the budget ran out as it ended: it ends anyway
            self._event(task, "exit", 1, EXIT)

    def _leave(self, task: Task, name: str, why: str) -> None:
        """The running task cannot go on: count the point and switch."""
        self.step += 1
        task.steps += 1
        n = task.counts[name] = task.counts.get(name, 0) + 1
        if self.step >= self.max_steps:
            self._end_of_budget()
        self._wake_sleepers()
        nxt = self._choose(task, why, name, n)
        if nxt is None:
            if self.cancelled:
                raise Cancelled(self._reason())
            raise AssertionError("scheduler found no task and no deadlock")  # pragma: no cover
        if nxt is task:
            self._rearm()
            return
        self._switch(task, nxt, name, n, why)

    # -- endings ---------------------------------------------------------------------------

    def _reason(self) -> str:
        mon = self.mon
        return mon.cancel_reason if mon is not None and mon.cancel_reason else self.end_reason

    def _end_of_budget(self) -> None:
        reason = f"end of budget ({self.max_steps:,} scheduling steps)"
        self.end_reason = reason
        if self.mon is not None:
            self.mon.cancel(reason)
        else:
            self.cancel(reason)
        raise Cancelled(reason)

    def _deadlock(self, waiting: list[Task]) -> None:
        mon = self.mon
        self.end_reason = "no task can run"
        if mon is not None:
            mon.no_runnable([t.state for t in waiting if t.state is not None])
        if not self.cancelled:
            if mon is not None:
                mon.cancel("no task can run")
            else:
                self.cancel("no task can run")

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.end_reason:
            self.end_reason = reason
        self.current = None
        self._done.release()

    def cancel(self, reason: str) -> None:
        """Release every parked task: each raises Cancelled where it stands."""
        if self.cancelled:
            return
        self.cancelled = True
        if not self.end_reason:
            self.end_reason = reason
        self.current = None
        for t in self.tasks:
            if t.status != DONE and t.sem.locked():
                with contextlib.suppress(RuntimeError):  # granted meanwhile: waking anyway
                    t.sem.release()
        if not self.finished:
            self.finished = True
            self._done.release()

    def wait_done(self, timeout: float) -> bool:
        """Wait (the Monitor's thread) until the run ended; False after `timeout` seconds."""
        if self._done.acquire(True, timeout):
            self._done.release()
            return True
        return False

    # -- introspection ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        preempt = sum(1 for s in self.switches if s.why == PREEMPT)
        return {
            "strategy": self.strategy.describe(),
            "steps": self.step,
            "max_steps": self.max_steps,
            "switches": len(self.switches),
            "preemptions": preempt,
            "tasks": len(self.tasks),
            "end": self.end_reason,
            "notes": list(self.notes),
        }


def now_s() -> float:
    return time.perf_counter()


_HARNESS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: Frames that only carry a scheduling point for the code above them (memory plumbing,
#: the walk machinery, yield-point helpers): a site names the code that called them.
_PLUMBING_FILES = ("slab.py", "stale.py", "walk.py", "threading.py")
_PLUMBING_FUNCS = frozenset({"sched", "cpu_relax", "lock_nested", "yield_point", "relax", "mark"})


def _site() -> str:
    """The innermost frame of the switching thread outside the harness and plumbing."""
    f = sys._getframe(2)
    while f is not None:
        code = f.f_code
        name = code.co_filename
        if not (
            name.startswith(_HARNESS)
            or name.endswith(_PLUMBING_FILES)
            or code.co_name in _PLUMBING_FUNCS
        ):
            return f"{os.path.basename(name)}:{f.f_lineno} in {code.co_name}"
        f = f.f_back  # type: ignore[assignment]
    return ""


def yield_point(name: str) -> None:
    """An explicit scheduling point in user code (a no-op outside a controlled run)."""
    try:
        sched: Scheduler = _tls.sched
    except AttributeError:
        return
    sched.point(name, True)
