"""rmapsim.atomic: the kernel's atomic operations, atomic under threads with or without the GIL.

Each operation is checked for its result; then real threads hammer one counter with a
yield point forced inside every window.  The same test with the lock taken out
(`nonatomic()`, the old `x.count += 1` pattern) must lose updates: that is what the
windows are for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from rmapsim import atomic
from rmapsim.atomic import (
    atomic_add,
    atomic_add_negative,
    atomic_add_return,
    atomic_cmpxchg,
    atomic_dec,
    atomic_dec_and_test,
    atomic_inc,
    atomic_inc_and_test,
    atomic_inc_not_zero,
    atomic_read,
    atomic_set,
    atomic_sub,
    atomic_t,
)
from rmapsim.kernel import Kernel
from rmapsim.slab import Memory
from rmapsim.structs import MmStruct


def test_each_operation_returns_what_the_kernel_returns() -> None:
    v = atomic_t(-1)
    assert atomic_inc_and_test(v) is True  # -1 -> 0: the first mapping
    assert atomic_inc_and_test(v) is False  # 0 -> 1
    assert atomic_add_negative(-1, v) is False  # 1 -> 0
    assert atomic_add_negative(-1, v) is True  # 0 -> -1: the last unmapping
    atomic_set(v, 2)
    assert atomic_dec_and_test(v) is False
    assert atomic_dec_and_test(v) is True
    assert atomic_inc_not_zero(v) is False and atomic_read(v) == 0
    atomic_inc(v)
    assert atomic_inc_not_zero(v) is True and atomic_read(v) == 2
    assert atomic_cmpxchg(v, 3, 0) == 2 and atomic_read(v) == 2  # no match: unchanged
    assert atomic_cmpxchg(v, 2, 0) == 2 and atomic_read(v) == 0  # page_freeze_refs
    atomic_add(5, v)
    atomic_sub(2, v)
    atomic_dec(v)
    assert atomic_add_return(10, v) == 12


def _hammer(op: Callable[[atomic_t], object], v: atomic_t, threads: int, each: int) -> None:
    def body() -> None:
        for _ in range(each):
            op(v)

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive(), "a hammering thread did not finish"


@pytest.mark.timeout(60)
def test_no_update_is_lost_with_a_thread_switch_inside_every_window() -> None:
    with atomic.atomic_windows(lambda where: time.sleep(0)):
        v = atomic_t(0)
        _hammer(atomic_inc, v, threads=4, each=2000)
        _hammer(lambda x: atomic_add_negative(-1, x), v, threads=4, each=1000)
        _hammer(atomic_inc_not_zero, v, threads=4, each=500)
    assert atomic_read(v) == 4 * 2000 - 4 * 1000 + 4 * 500


@pytest.mark.timeout(60)
def test_a_non_atomic_increment_loses_updates_in_the_window() -> None:
    """The regression the windows exist for: load, switch, store loses the other's update."""
    barrier = threading.Barrier(2)

    def meet(where: str) -> None:
        # Both threads load before either stores: every round loses one increment.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1)

    with atomic.nonatomic(), atomic.atomic_windows(meet):
        v = atomic_t(0)
        _hammer(atomic_inc, v, threads=2, each=50)
    assert atomic_read(v) < 100


def test_mm_users_is_an_atomic_field_of_kernel_memory() -> None:
    k = Kernel("2.6.34")
    k.spawn("p1")
    mm = k.task("p1")
    assert atomic_read(mm.mm_users) == 1
    # The word in slab memory is the counter: a stale pointer's view reads and writes it.
    mem: Memory = k.mem
    addr = mm.addr + next(f.word for f in MmStruct.LAYOUT if f.name == "mm_users") * 8
    assert mem.to_int(mem.read_word(addr)) == 1
    mem.write_word(addr, 5)
    assert atomic_read(mm.mm_users) == 5
    view = atomic.AtomicWordView(mem, addr, threading.Lock())
    atomic_dec(view)
    assert atomic_read(mm.mm_users) == 4


def test_mmput_through_a_freed_mm_decrements_the_new_owners_word() -> None:
    """In reuse mode an atomic through a stale pointer scribbles on whatever lives there."""
    k = Kernel("2.6.34", memory="reuse")
    k.spawn("p1")
    old = k.task("p1")
    k.exit("p1")
    k.spawn("p2")  # SLUB hands out the same object again (LIFO)
    new = k.task("p2")
    assert new.addr == old.addr
    # The live object was reused, so its fields are the new owner's.
    assert atomic_read(new.mm_users) == 1


def test_add_unless_and_dec_and_lock() -> None:
    from rmapsim.atomic import atomic_add_unless, atomic_dec_and_lock

    v = atomic_t(2)
    assert atomic_add_unless(v, -1, 1) and atomic_read(v) == 1
    assert not atomic_add_unless(v, -1, 1) and atomic_read(v) == 1
    lock = threading.Lock()
    v = atomic_t(2)
    assert not atomic_dec_and_lock(v, lock) and not lock.locked()  # 2 -> 1, no lock
    assert atomic_dec_and_lock(v, lock) and lock.locked()  # 1 -> 0 under the lock
    lock.release()
    assert atomic_read(v) == 0
