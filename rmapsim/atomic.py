"""atomic_t and the kernel's atomic operations (include/asm-generic/atomic.h names).

The kernel relies on a handful of atomic read-modify-writes: page->_count
(get_page, put_page_testzero, get_page_unless_zero, page_freeze_refs),
page->_mapcount (atomic_inc_and_test, atomic_add_negative), mm->mm_users.  In
CPython `x.count += 1` is a load, an add and a store, and a thread switch between
them loses an update the kernel cannot lose.  Every such operation of the model
goes through this module instead.

Each `atomic_t` carries its own lock (a `_thread` lock, so it stays atomic without
the GIL too), the way architectures without atomic instructions hash atomics onto
spinlocks.  The lock is held only for the load and the store: never across a
scheduling point, so a controlled scheduler never sees it.

A test build can put a yield point inside every window (`atomic_windows`): with
the lock in place nothing changes; with the lock taken out (`nonatomic()`, the
regression the tests put back on purpose) updates are lost at once.
"""

from __future__ import annotations

import _thread
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "atomic_add",
    "atomic_add_negative",
    "atomic_add_return",
    "atomic_add_unless",
    "atomic_cmpxchg",
    "atomic_dec",
    "atomic_dec_and_lock",
    "atomic_dec_and_test",
    "atomic_inc",
    "atomic_inc_and_test",
    "atomic_inc_not_zero",
    "atomic_read",
    "atomic_set",
    "atomic_sub",
    "atomic_t",
    "atomic_windows",
    "nonatomic",
]

WindowHook = Callable[[str], None]

#: Called between the load and the store of every operation when set (test builds).
_window: WindowHook | None = None


class _NoLock:
    """What `nonatomic()` puts in place of an atomic's lock: nothing at all."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()
_new_lock: Callable[[], Any] = _thread.allocate_lock


class atomic_t:
    """One atomic counter.  Read it with `atomic_read`, change it with the functions."""

    __slots__ = ("_lock", "counter")

    def __init__(self, i: int = 0) -> None:
        self.counter = i
        self._lock = _new_lock()

    def __repr__(self) -> str:
        return f"atomic_t({self.counter})"


def _win(where: str) -> None:
    hook = _window
    if hook is not None:
        hook(where)


def atomic_read(v: Any) -> int:
    counter: int = v.counter
    return counter


def atomic_set(v: Any, i: int) -> None:
    v.counter = i


def atomic_add_return(i: int, v: Any) -> int:
    with v._lock:
        new = v.counter + i
        if _window is not None:
            _win("atomic_add_return")
        v.counter = new
        return int(new)


def atomic_add(i: int, v: Any) -> None:
    atomic_add_return(i, v)


def atomic_sub(i: int, v: Any) -> None:
    atomic_add_return(-i, v)


def atomic_inc(v: Any) -> None:
    atomic_add_return(1, v)


def atomic_dec(v: Any) -> None:
    atomic_add_return(-1, v)


def atomic_inc_and_test(v: Any) -> bool:
    """Increment; true when the result is zero (page_add_anon_rmap's first mapping)."""
    return atomic_add_return(1, v) == 0


def atomic_dec_and_test(v: Any) -> bool:
    """Decrement; true when the result is zero (put_page_testzero, mmput)."""
    return atomic_add_return(-1, v) == 0


def atomic_add_negative(i: int, v: Any) -> bool:
    """Add; true when the result is negative (page_remove_rmap's last unmapping)."""
    return atomic_add_return(i, v) < 0


def atomic_cmpxchg(v: Any, old: int, new: int) -> int:
    """Set `new` if the value is `old`; return the value found either way."""
    with v._lock:
        cur = v.counter
        if _window is not None:
            _win("atomic_cmpxchg")
        if cur == old:
            v.counter = new
        return int(cur)


def atomic_inc_not_zero(v: Any) -> bool:
    """Increment unless zero (get_page_unless_zero): false when it was zero."""
    with v._lock:
        cur = v.counter
        if _window is not None:
            _win("atomic_inc_not_zero")
        if cur == 0:
            return False
        v.counter = cur + 1
        return True


def atomic_add_unless(v: Any, a: int, u: int) -> bool:
    """Add `a` unless the value is `u`; true when it added."""
    with v._lock:
        cur = v.counter
        if _window is not None:
            _win("atomic_add_unless")
        if cur == u:
            return False
        v.counter = cur + a
        return True


def atomic_dec_and_lock(v: Any, lock: Any) -> bool:
    """Decrement; if that reaches zero, return true with `lock` taken (lib/dec_and_lock.c).

    The fast path decrements without the lock while the count cannot reach zero;
    the last decrement happens under the lock, so whoever finds zero also holds it.
    """
    if atomic_add_unless(v, -1, 1):
        return False
    lock.acquire()
    if atomic_dec_and_test(v):
        return True
    lock.release()
    return False


@contextlib.contextmanager
def atomic_windows(hook: WindowHook | None) -> Iterator[None]:
    """Call `hook(where)` inside every atomic's window for the duration (a test build)."""
    global _window
    previous = _window
    _window = hook
    try:
        yield
    finally:
        _window = previous


@contextlib.contextmanager
def nonatomic() -> Iterator[None]:
    """Atomics created meanwhile are plain load-add-store: the regression, on purpose.

    Only for tests that prove the windows catch it; never in a real run.
    """
    global _new_lock
    previous = _new_lock
    _new_lock = _NoLock
    try:
        yield
    finally:
        _new_lock = previous


class AtomicWordView:
    """An atomic operation through a stale pointer: the word at `addr`, whatever it is now.

    atomic_dec() through a freed mm_struct decrements whatever the new owner of
    that memory keeps in that word, as on the real machine.
    """

    __slots__ = ("_lock", "addr", "mem")

    def __init__(self, mem: Any, addr: int, lock: Any) -> None:
        self.mem = mem
        self.addr = addr
        self._lock = lock

    @property
    def counter(self) -> int:
        value = self.mem.to_int(self.mem.read_word(self.addr))
        return value - (1 << 64) if value >= 1 << 63 else int(value)

    @counter.setter
    def counter(self, value: int) -> None:
        self.mem.write_word(self.addr, value & ((1 << 64) - 1))

    def __repr__(self) -> str:
        return f"<atomic_t at {self.addr:#x} ({self.mem.describe_addr(self.addr)})>"
