"""Locks of a controlled run: the instrumented locks, with scheduling points around them.

Taking a lock (or trying to) is a scheduling point, so another task may run
first and take it; giving one back is a point too when someone waits for it, so
the waiter may run at once.  Waiting itself goes through the scheduler (see
`LockBase._block` and `Scheduler.lock_wait`): a task that waits for a lock is not
runnable until a release wakes it.  Everything else - ownership, lockdep, hand-over
after repeated misses, statistics - is the free-running lock's own code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stress.locks import Mutex, TimedMutex
from stress.rwsem import RWSem

if TYPE_CHECKING:
    from stress.lockdep import LockKey
    from stress.monitor import Monitor


class ControlledMutex(Mutex):
    """A Mutex whose acquisitions and contended releases are scheduling points."""

    __slots__ = ("_pt_lock", "_pt_unlock")

    def __init__(
        self,
        lock_class: str = "mutex",
        name: str | None = None,
        *,
        monitor: Monitor | None = None,
        fair: bool = True,
        subclass: int = 0,
        strict: bool = True,
    ) -> None:
        super().__init__(
            lock_class, name, monitor=monitor, fair=fair, subclass=subclass, strict=strict
        )
        self._pt_lock = f"lock:{lock_class}"
        self._pt_unlock = f"unlock:{lock_class}"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return Mutex.acquire(self, blocking, timeout)

    def acquire_nested(self, subclass: int = 1, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return Mutex.acquire_nested(self, subclass, blocking, timeout)

    def release(self) -> None:
        Mutex.release(self)
        if self._waiters:
            sched = self._mon.scheduler
            if sched is not None:
                sched.point(self._pt_unlock)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class ControlledTimedMutex(TimedMutex):
    """A TimedMutex whose acquisitions and contended releases are scheduling points."""

    __slots__ = ("_pt_lock", "_pt_unlock")

    def __init__(
        self,
        lock_class: str = "mutex",
        name: str | None = None,
        *,
        monitor: Monitor | None = None,
        fair: bool = True,
        subclass: int = 0,
        strict: bool = True,
    ) -> None:
        super().__init__(
            lock_class, name, monitor=monitor, fair=fair, subclass=subclass, strict=strict
        )
        self._pt_lock = f"lock:{lock_class}"
        self._pt_unlock = f"unlock:{lock_class}"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return TimedMutex.acquire(self, blocking, timeout)

    def acquire_nested(self, subclass: int = 1, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return TimedMutex.acquire_nested(self, subclass, blocking, timeout)

    def release(self) -> None:
        TimedMutex.release(self)
        if self._waiters:
            sched = self._mon.scheduler
            if sched is not None:
                sched.point(self._pt_unlock)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class ControlledRWSem(RWSem):
    """An RWSem whose downs and contended ups are scheduling points."""

    __slots__ = ()

    def _down(self, mode: Any, blocking: bool, key: LockKey | None = None) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(f"down_{mode}:{self._cls.name}")
        return RWSem._down(self, mode, blocking, key)

    def _up(self, mode: Any) -> None:
        RWSem._up(self, mode)
        if self._waiters:
            sched = self._mon.scheduler
            if sched is not None:
                sched.point(f"up_{mode}:{self._cls.name}")
