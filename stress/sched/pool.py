"""A pool of parked OS threads for runs that start many short threads (exploration).

Starting an OS thread costs tens of microseconds on an idle machine and
milliseconds on a loaded one (`Thread.start()` waits until the new thread has
been scheduled); exploring thousands of schedules of a two-thread function would
spend most of its time there.  A `ThreadPool` keeps finished threads parked on a
`_thread` lock and hands them the next job: the thread takes the job's name, its
harness state is reset (nothing held, fresh counters) and it runs the job.

A `PooledThread` offers what `Monitor` needs of a thread (`ident`, `is_alive`,
`join`) for the job it runs now.  A job that never returns keeps its thread: the
pool simply starts another one for the next job.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from typing import Any

from stress.threads import current


class _Job:
    __slots__ = ("done", "fn", "ident", "name", "started")

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.started = False
        self.ident: int | None = None


class PooledThread:
    """The handle of one job on a pool thread (the part of threading.Thread Monitor uses)."""

    __slots__ = ("_job", "_pool", "name")

    def __init__(self, pool: ThreadPool, fn: Callable[[], Any], name: str) -> None:
        self._pool = pool
        self._job = _Job(fn, name)
        self.name = name

    def start(self) -> None:
        self._pool.submit(self._job)

    @property
    def ident(self) -> int | None:
        return self._job.ident if self._job.started else None

    def is_alive(self) -> bool:
        return self._job.started and self._job.done.locked()

    def join(self, timeout: float | None = None) -> None:
        if not self._job.started:
            return
        if self._job.done.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._job.done.release()


class _Worker:
    __slots__ = ("go", "job", "thread")

    def __init__(self, pool: ThreadPool, index: int) -> None:
        self.go = _thread.allocate_lock()
        self.go.acquire()
        self.job: _Job | None = None
        self.thread = threading.Thread(
            target=pool._loop, args=(self,), name=f"stress-pool-{index}", daemon=True
        )


class ThreadPool:
    """Parked daemon threads that run one job at a time each."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = _thread.allocate_lock()
        self._made = 0

    def thread(self, fn: Callable[[], Any], name: str) -> PooledThread:
        return PooledThread(self, fn, name)

    def submit(self, job: _Job) -> None:
        job.started = True
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                self._made += 1
                worker = _Worker(self, self._made)
                worker.job = job
                worker.thread.start()
                return
        worker.job = job
        worker.go.release()

    def _loop(self, worker: _Worker) -> None:
        state = current()
        first = True
        while True:
            if not first:
                worker.go.acquire()
            first = False
            job = worker.job
            assert job is not None
            job.ident = threading.get_ident()
            threading.current_thread().name = job.name
            state.name = job.name
            del state.held[1:]  # nothing of an earlier job's run is held by this one
            state.walks.clear()
            state.waiting = None
            try:
                job.fn()
            finally:
                worker.job = None
                job.done.release()
                with self._lock:
                    self._idle.append(worker)

    @property
    def threads(self) -> int:
        return self._made
