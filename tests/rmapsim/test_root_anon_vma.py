"""The root anon_vma (2.6.36-rc1), its refcount, and the locking rules of each kernel.

Single-threaded: which lock each function takes is recorded by a sync factory that
notes the function that took it, so a test can say "vma_adjust takes the root's
lock" and fail when it does not.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from rmapsim import Kernel, SingleThreadSync, anon_vma, audit, rmap
from rmapsim.atomic import atomic_read
from rmapsim.structs import VM_READ, VM_WRITE, AnonVma, AnonVmaRef, AnonVmaRoot
from rmapsim.sync import RwSem, SpinLock, _OneCpuLock, _OneCpuRwSem

RW = VM_READ | VM_WRITE
BASE = 0x10000


class RecordingSync(SingleThreadSync):
    """One-CPU locks that note (lock name, the kernel function that took it)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[str, str]] = []

    def spinlock(self, lock_class: str, name: str) -> SpinLock:
        sync = self

        class Recorded(_OneCpuLock):
            __slots__ = ()

            def acquire(self, blocking: bool = True) -> bool:
                caller = sys._getframe(1).f_code.co_name
                if caller in ("anon_vma_lock", "atomic_dec_and_lock"):
                    caller = sys._getframe(2).f_code.co_name
                sync.taken.append((self.name, caller))
                return super().acquire(blocking)

        return Recorded(name, None)

    def rwsem(self, lock_class: str, name: str) -> RwSem:
        return _OneCpuRwSem(name, None)


def kernel(variant: str, sync: Any = None) -> Kernel:
    return Kernel(variant, sync=sync or SingleThreadSync())


def three_generations(k: Kernel) -> None:
    """P maps and writes a page; C is forked and writes one; G is C's child."""
    k.spawn("P")
    k.mmap("P", BASE, 2, RW)
    k.touch("P", BASE, 2, True)
    k.fork("P", "C")
    k.touch("C", BASE, 1, True)
    k.fork("C", "G")
    k.touch("G", BASE + 0x1000, 1, True)


def own_anon_vma(k: Kernel, name: str) -> Any:
    vma = k.task(name).mmap
    assert vma is not None
    return vma.anon_vma


@pytest.mark.parametrize(
    ("variant", "cls"),
    [
        ("2.6.34", AnonVma),
        ("2.6.34+anon-vma-refcount", AnonVmaRef),
        ("2.6.35", AnonVmaRoot),
        ("2.6.36", AnonVmaRoot),
    ],
)
def test_each_kernel_has_its_anon_vma_layout(variant: str, cls: type) -> None:
    k = kernel(variant)
    three_generations(k)
    assert type(own_anon_vma(k, "P")) is cls
    assert (AnonVma.SIZE, AnonVmaRef.SIZE, AnonVmaRoot.SIZE) == (24, 32, 40)


@pytest.mark.parametrize("variant", ["2.6.35", "2.6.36"])
def test_every_anon_vma_of_a_fork_tree_points_at_the_oldest_and_pins_it(variant: str) -> None:
    k = kernel(variant)
    three_generations(k)
    root, child, grandchild = (own_anon_vma(k, n) for n in "PCG")
    assert root.root is root and child.root is root and grandchild.root is root
    assert atomic_read(root.external_refcount) == 2  # one pin per descendant anon_vma
    assert audit(k) == []
    k.exit("P")  # the root's own vma is gone, but C and G keep it alive
    assert root.state == 1 and root.root is root
    k.exit("C")  # C's anon_vma is still on G's chain: neither it nor its pin goes
    assert child.state == 1 and atomic_read(root.external_refcount) == 2
    k.exit("G")
    assert k.mem.live_objects == 0  # the root went last, with the last pin
    assert k.pages.in_use == 0


def test_2_6_34_has_no_root_and_no_pins() -> None:
    k = kernel("2.6.34")
    three_generations(k)
    assert not hasattr(own_anon_vma(k, "C"), "root")
    k.exit("G")
    k.exit("C")
    k.exit("P")
    assert k.mem.live_objects == 0


@pytest.mark.parametrize(
    ("variant", "lock_of_walk"),
    [("2.6.34", "own"), ("2.6.35", "root"), ("2.6.36", "root")],
)
def test_a_walk_of_a_childs_page_takes_the_lock_its_kernel_says(
    variant: str, lock_of_walk: str
) -> None:
    sync = RecordingSync()
    k = kernel(variant, sync)
    three_generations(k)
    page = k.task("G").ptes[BASE + 0x1000].page
    assert page is not None
    mine = page.mapping
    sync.taken.clear()
    rmap.page_referenced(k, page)
    want = (mine.root if lock_of_walk == "root" else mine).lock.name
    assert (want, "page_lock_anon_vma") in sync.taken
    if lock_of_walk == "root":
        assert want.endswith("[root]") and mine.root is not mine


@pytest.mark.parametrize(("variant", "locks"), [("2.6.34", False), ("2.6.36", True)])
def test_vma_adjust_takes_the_root_lock_only_from_2_6_36(variant: str, locks: bool) -> None:
    sync = RecordingSync()
    k = kernel(variant, sync)
    three_generations(k)
    sync.taken.clear()
    assert k.mprotect("G", BASE, 1, VM_READ) == 0  # a split: vma_adjust inserts
    in_adjust = [name for name, fn in sync.taken if fn == "vma_adjust"]
    if locks:
        assert in_adjust == [own_anon_vma(k, "G").root.lock.name]
    else:
        assert in_adjust == []


def test_root_rmap_keeps_the_mapping_a_page_has_and_gives_others_the_root() -> None:
    k = kernel("2.6.36")
    three_generations(k)
    k.swapout(None)
    assert k.touch("G", BASE, 1, False) == 0  # a page first written by P: shared
    page = k.task("G").ptes[BASE].page
    assert page is not None and page.mapping is own_anon_vma(k, "P")
    assert audit(k) == []


def test_page_lock_anon_vma_yields_after_the_mapped_check_before_the_lock() -> None:
    seen: list[tuple[str, bool, bool]] = []
    k: Kernel

    def hook(where: str) -> None:
        if where == "page_lock_anon_vma:before spin_lock":
            root = page.mapping.root
            seen.append((where, rmap.page_mapped(page), root.lock.locked()))

    k = Kernel("2.6.36", sync=SingleThreadSync(), yield_point=hook)
    three_generations(k)
    page = k.task("G").ptes[BASE + 0x1000].page
    assert page is not None
    rmap.page_referenced(k, page)
    assert seen == [("page_lock_anon_vma:before spin_lock", True, False)]
    k.swapout("G", BASE + 0x1000, 1)  # unmapped now: page_lock_anon_vma bails out first
    seen.clear()
    assert rmap.page_lock_anon_vma(k, page) is None
    assert seen == []


@pytest.mark.parametrize("variant", ["2.6.34+anon-vma-refcount", "2.6.35", "2.6.36"])
def test_drop_anon_vma_frees_an_unlinked_anon_vma_with_its_last_pin(variant: str) -> None:
    k = kernel(variant)
    three_generations(k)
    av = own_anon_vma(k, "G")
    anon_vma.get_anon_vma(k, av)  # as migration does
    k.exit("G")
    assert av.state == 1  # pinned: still allocated with an empty list
    anon_vma.drop_anon_vma(k, av)
    assert av.state != 1
    k.exit("C")
    k.exit("P")
    assert k.mem.live_objects == 0
