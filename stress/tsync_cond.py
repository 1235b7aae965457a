"""threading's Condition, Semaphore, BoundedSemaphore, Event and Barrier, instrumented.

They are threading's own algorithms (subclasses: isinstance checks still hold) over
stress.tsync's Lock and RLock, so everything built on them - queue.Queue,
concurrent.futures, threading.Timer - takes instrumented locks whose class is the
site the object was made at.  Two differences:

- A thread in wait() is *parked*: its ThreadState says on what (condition, event,
  semaphore, barrier) and since when, so a blocker chain can say "which is waiting on
  event done@test_x.py:12 (for 3.1 s)".  A parked thread is not waiting for a lock: it
  is no wait-for edge, and asleep there it is never a stall.
- The wait sleeps in chunks and, while its monitor runs, raises Cancelled once the run
  is cancelled: a thread waiting for a notification that a hung thread will never send
  unwinds.  After the monitor stopped, the objects are plain threading objects.
"""

from __future__ import annotations

import _thread
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled
from stress.sites import Site, creation_site
from stress.threads import current
from stress.tsync import Lock, RLock, active_monitor

if TYPE_CHECKING:
    from stress.monitor import Monitor

#: Longest a parked thread sleeps before looking at cancellation again.
PARK_CHUNK_S = 0.1


class _Parked:
    """Marks the calling thread parked on `obj` for a with-block (outermost mark wins)."""

    __slots__ = ("_mine", "_state", "obj", "what")

    def __init__(self, what: str, obj: Any) -> None:
        self.what = what
        self.obj = obj

    def __enter__(self) -> None:
        state = self._state = current()
        self._mine = state.parked is None
        if self._mine:
            state.parked = (self.what, self.obj, perf_counter())

    def __exit__(self, *exc: object) -> None:
        if self._mine:
            self._state.parked = None


class Condition(threading.Condition):
    """threading.Condition whose waits are visible and cancellable."""

    # threading.Condition's internal interface (taken from the lock when it has one).
    _is_owned: Callable[[], bool]
    _release_save: Callable[[], Any]
    _acquire_restore: Callable[[Any], None]
    acquire: Callable[..., bool]
    release: Callable[[], None]

    def __init__(
        self, lock: Any = None, *, monitor: Monitor | None = None, site: Site | None = None
    ) -> None:
        if site is None:
            site = creation_site(1, "Condition")
        self._mon = monitor or active_monitor()
        if lock is None:
            lock = RLock(monitor=self._mon, site=site)
        self.name = site.name
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        # The lock's own versions when it has them, else threading.Condition's.
        for name in ("_release_save", "_acquire_restore", "_is_owned"):
            method = getattr(lock, name, None)
            if method is not None:
                setattr(self, name, method)
        self._waiters: deque[Any] = deque()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _thread.allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved = self._release_save()
        gotit = False
        try:  # restore state no matter what (Cancelled, KeyboardInterrupt)
            with _Parked("condition", self):
                gotit = self._park(waiter, timeout)
            return gotit
        finally:
            self._acquire_restore(saved)
            if not gotit:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _park(self, waiter: Any, timeout: float | None) -> bool:
        if timeout is not None and timeout <= 0:
            return bool(waiter.acquire(False))
        mon = self._mon
        deadline = None if timeout is None else perf_counter() + timeout
        while True:
            if mon.running and mon.cancelled:
                raise Cancelled(mon.cancel_reason)
            chunk = PARK_CHUNK_S
            if deadline is not None:
                left = deadline - perf_counter()
                if left <= 0:
                    return bool(waiter.acquire(False))
                chunk = min(chunk, left)
            if waiter.acquire(True, chunk):
                return True


class Semaphore(threading.Semaphore):
    """threading.Semaphore over an instrumented Condition."""

    __module__ = "stress"

    def __init__(
        self, value: int = 1, *, monitor: Monitor | None = None, site: Site | None = None
    ) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if site is None:
            site = creation_site(1, type(self).__name__)
        self.name = site.name
        self._cond = Condition(Lock(monitor=monitor, site=site), monitor=monitor, site=site)
        self._value = value

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        with _Parked("semaphore", self):
            return super().acquire(blocking, timeout)

    __enter__ = acquire

    def __repr__(self) -> str:
        return f"<stress.Semaphore at {id(self):#x} {self.name}: value={self._value}>"


class BoundedSemaphore(Semaphore, threading.BoundedSemaphore):
    """threading.BoundedSemaphore over an instrumented Condition."""

    __module__ = "stress"

    def __init__(
        self, value: int = 1, *, monitor: Monitor | None = None, site: Site | None = None
    ) -> None:
        if site is None:
            site = creation_site(1, "BoundedSemaphore")
        super().__init__(value, monitor=monitor, site=site)
        self._initial_value = value

    def __repr__(self) -> str:
        return (
            f"<stress.BoundedSemaphore at {id(self):#x} {self.name}: "
            f"value={self._value}/{self._initial_value}>"
        )


class Event(threading.Event):
    """threading.Event over an instrumented Condition."""

    __module__ = "stress"

    def __init__(self, *, monitor: Monitor | None = None, site: Site | None = None) -> None:
        if site is None:
            site = creation_site(1, "Event")
        self.name = site.name
        self._cond = Condition(Lock(monitor=monitor, site=site), monitor=monitor, site=site)
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with _Parked("event", self):
            return super().wait(timeout)

    def __repr__(self) -> str:
        return f"<stress.Event at {id(self):#x} {self.name}: {'set' if self._flag else 'unset'}>"


class Barrier(threading.Barrier):
    """threading.Barrier over an instrumented Condition."""

    __module__ = "stress"

    def __init__(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
        *,
        monitor: Monitor | None = None,
        site: Site | None = None,
    ) -> None:
        if site is None:
            site = creation_site(1, "Barrier")
        self.name = site.name
        self._cond = Condition(Lock(monitor=monitor, site=site), monitor=monitor, site=site)
        self._action = action
        self._timeout = timeout
        self._parties = parties
        self._state = 0  # 0 filling, 1 draining, -1 resetting, -2 broken
        self._count = 0

    def wait(self, timeout: float | None = None) -> int:
        with _Parked("barrier", self):
            return super().wait(timeout)

    def __repr__(self) -> str:
        if self.broken:
            return f"<stress.Barrier at {id(self):#x} {self.name}: broken>"
        return (
            f"<stress.Barrier at {id(self):#x} {self.name}: "
            f"waiters={self.n_waiting}/{self.parties}>"
        )
