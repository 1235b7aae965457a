"""Locks the model takes, behind a factory so the harness can inject its own.

The model asks its `SyncFactory` for every lock it needs: one spinlock per
anon_vma (made by the slab constructor, once per slab object), page_table_lock
and mmap_sem per mm, PG_locked per page frame.  It only ever calls:

* spinlocks and page locks: ``acquire(blocking=True) -> bool``, ``release()``, ``locked()``;
* mmap_sem: ``down_read()``, ``down_read_trylock() -> bool``, ``up_read()``,
  ``down_write()``, ``up_write()``.

`ThreadingSync` gives plain locks for multi-threaded use without the harness.
`SingleThreadSync` is for single-threaded runs (``rmapstress exec``): with one CPU a
lock that is already held can never be released, so instead of hanging for ever
it raises `Lockup` naming the lock and who took it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

from rmapsim.errors import Lockup


class SpinLock(Protocol):
    name: str

    def acquire(self, blocking: bool = True) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> Any: ...


class RwSem(Protocol):
    name: str

    def down_read(self) -> None: ...
    def down_read_trylock(self) -> bool: ...
    def up_read(self) -> None: ...
    def down_write(self) -> None: ...
    def up_write(self) -> None: ...


class SyncFactory(Protocol):
    def spinlock(self, lock_class: str, name: str) -> SpinLock: ...
    def rwsem(self, lock_class: str, name: str) -> RwSem: ...


class _NamedLock:
    __slots__ = ("_lock", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        return self._lock.acquire(blocking)

    def release(self) -> None:
        # spin_unlock checks nothing: an unlock of a free lock changes nothing here.
        with contextlib.suppress(RuntimeError):
            self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __repr__(self) -> str:
        return f"<{self.name} {'locked' if self.locked() else 'unlocked'}>"


class RwSemaphore:
    """A reader-writer semaphore with writer preference, like the kernel's rwsem.

    Once a writer waits, new readers queue behind it; this is what lets a writer
    stuck behind a reader make every later fault of the mm wait too.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def down_read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def down_read_trylock(self) -> bool:
        with self._cond:
            if self._writer or self._writers_waiting:
                return False
            self._readers += 1
            return True

    def up_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def down_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def up_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    def __repr__(self) -> str:
        return f"<{self.name} readers={self._readers} writer={self._writer}>"


class ThreadingSync:
    """Plain threading locks."""

    single_cpu = False

    def spinlock(self, lock_class: str, name: str) -> SpinLock:
        return _NamedLock(name)

    def rwsem(self, lock_class: str, name: str) -> RwSem:
        return RwSemaphore(name)


def _site_text(site: Any) -> str:
    if isinstance(site, tuple) and len(site) == 2:
        return f"line {site[0]} ({site[1]})"
    return str(site) if site else "an earlier operation"


def _site_of(site_fn: Any) -> str:
    return _site_text(site_fn() if site_fn else None)


class _OneCpuLock:
    """A spinlock on a machine with one CPU: contention can only mean a lockup."""

    __slots__ = ("_held", "_held_at", "_site", "name")

    def __init__(self, name: str, site_fn: Any) -> None:
        self.name = name
        self._site = site_fn
        self._held = False
        self._held_at: Any = None  # the raw site; formatted only for a report

    def acquire(self, blocking: bool = True) -> bool:
        if self._held:
            if not blocking:
                return False
            held_at = _site_text(self._held_at)
            raise Lockup(
                f"soft lockup: spin_lock({self.name}) spins for ever: it is already held, "
                f"taken at {held_at} and never released",
                lock=self.name,
                held_since=held_at,
            )
        self._held = True
        self._held_at = self._site() if self._site is not None else None
        return True

    def release(self) -> None:
        self._held = False

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{self.name} {'held' if self._held else 'free'}>"


class _OneCpuRwSem:
    __slots__ = ("_readers", "_site", "_writer", "name")

    def __init__(self, name: str, site_fn: Any) -> None:
        self.name = name
        self._site = site_fn
        self._readers: list[str] = []
        self._writer: str | None = None

    def _hung(self, how: str) -> Lockup:
        holders = (
            f"held for write at {self._writer}"
            if self._writer
            else (f"held for read at {', '.join(self._readers)}")
        )
        return Lockup(
            f"hung task: {how}({self.name}) sleeps for ever: {holders}",
            lock=self.name,
            holders=holders,
        )

    def down_read(self) -> None:
        if self._writer is not None:
            raise self._hung("down_read")
        self._readers.append(_site_of(self._site))

    def down_read_trylock(self) -> bool:
        if self._writer is not None:
            return False
        self._readers.append(_site_of(self._site))
        return True

    def up_read(self) -> None:
        self._readers.pop()

    def down_write(self) -> None:
        if self._writer is not None or self._readers:
            raise self._hung("down_write")
        self._writer = _site_of(self._site)

    def up_write(self) -> None:
        self._writer = None


class SingleThreadSync:
    """Locks for single-threaded runs: a lock that would block is a lockup, raised.

    It also tells the kernel it has one CPU (`single_cpu`): a spin on a stale lock
    word that nobody else can change is reported at once instead of spinning.
    """

    single_cpu = True

    def __init__(self, site_fn: Any = None) -> None:
        self.site_fn = site_fn

    def spinlock(self, lock_class: str, name: str) -> SpinLock:
        return _OneCpuLock(name, self.site_fn)

    def rwsem(self, lock_class: str, name: str) -> RwSem:
        return _OneCpuRwSem(name, self.site_fn)
