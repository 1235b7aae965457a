"""A thread a Monitor spawns: it enters the controlled schedule if there is one, joins
the run's books, and turns an exception into a verdict (cancellation ends it quietly)."""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled
from stress.threads import ThreadState, current

if TYPE_CHECKING:
    from stress.monitor import Monitor
    from stress.sched.core import Task


class Worker:
    """A thread spawned by a Monitor: cancellation ends it quietly, an exception is a verdict."""

    def __init__(
        self,
        mon: Monitor,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        tracked: bool,
    ) -> None:
        self.mon = mon
        self.name = name
        self.tracked = tracked
        self._target, self._args, self._kwargs = target, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.state: ThreadState | None = None
        #: The controlled scheduler's task of this thread (controlled runs only).
        self.task: Task | None = None
        pool = mon.pool
        self.thread: Any = (
            pool.thread(self._main, name)
            if pool is not None
            else threading.Thread(target=self._main, name=name, daemon=True)
        )
        self._start_lock = _thread.allocate_lock()
        self._started = False
        self._ended = False

    def start(self) -> None:
        # run() and a worker that spawns another may both try to start it.
        with self._start_lock:
            if not self._started:
                self._started = True
                self.thread.start()

    @property
    def alive(self) -> bool:
        return bool(self.thread.is_alive())

    @property
    def finished(self) -> bool:
        """Its target has returned or raised.  (Not "started and not alive": between
        start() and the thread's first breath it is neither, and pruning it then would
        lose a running worker; a busy machine makes that window long.)"""
        return self._ended

    def _main(self) -> None:
        state = self.state = current()
        task, sched = self.task, self.mon.scheduler
        if task is not None and sched is not None:
            try:
                sched.enter(task, state)  # parked until its first turn
            except Cancelled:
                sched.exit(task)
                return
        try:
            self.mon.adopt(state)
            if self.tracked:
                state.tracked_by = self.mon
            self.result = self._target(*self._args, **self._kwargs)
        except Cancelled:
            pass
        except BaseException as exc:  # recorded, never lost: a crash verdict
            self.error = exc
            self.mon.worker_crashed(state, exc)
        finally:
            self._ended = True
            if task is not None and sched is not None:
                sched.exit(task)
