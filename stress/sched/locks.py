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


class _ControlledMutexBase:
    """Makes a mutex's acquisitions and contended releases scheduling points (a mixin:
    the same points for Mutex and TimedMutex)."""

    __slots__ = ()
    _mon: Monitor
    _waiters: Any
    _pt_lock: str
    _pt_unlock: str

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
        super().__init__(  # type: ignore[call-arg]
            lock_class, name, monitor=monitor, fair=fair, subclass=subclass, strict=strict
        )
        # Slots of the concrete classes: beside Mutex's layout a mixin can carry none.
        self._pt_lock = f"lock:{lock_class}"  # type: ignore[misc]
        self._pt_unlock = f"unlock:{lock_class}"  # type: ignore[misc]

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return super().acquire(blocking, timeout)  # type: ignore[misc,no-any-return]

    def acquire_nested(self, subclass: int = 1, blocking: bool = True, timeout: float = -1) -> bool:
        sched = self._mon.scheduler
        if sched is not None:
            sched.point(self._pt_lock)
        return super().acquire_nested(  # type: ignore[misc,no-any-return]
            subclass, blocking, timeout
        )

    def release(self) -> None:
        super().release()  # type: ignore[misc]
        if self._waiters:
            sched = self._mon.scheduler
            if sched is not None:
                sched.point(self._pt_unlock)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class ControlledMutex(_ControlledMutexBase, Mutex):
    """A Mutex whose acquisitions and contended releases are scheduling points."""

    __slots__ = ("_pt_lock", "_pt_unlock")


class ControlledTimedMutex(_ControlledMutexBase, TimedMutex):
    """A TimedMutex whose acquisitions and contended releases are scheduling points."""

    __slots__ = ("_pt_lock", "_pt_unlock")


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
