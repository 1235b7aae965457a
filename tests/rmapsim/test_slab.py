"""The memory model: reuse, type stability, free pointers, recycling, RCU, KASAN."""

from __future__ import annotations

import threading

import pytest

from rmapsim.errors import Lockup, UseAfterFree
from rmapsim.kernel import Kernel
from rmapsim.lists import ListHead
from rmapsim.slab import LIVE, Memory, peek
from rmapsim.stale import LockWordView
from rmapsim.structs import KERNEL_BASE, AnonVma, AnonVmaChain, VmArea
from rmapsim.sync import SingleThreadSync


def kernel(mode: str = "reuse", **kw: int) -> Kernel:
    return Kernel("2.6.34", memory=mode, sync=SingleThreadSync(), **kw)  # type: ignore[arg-type]


def test_freed_object_is_handed_out_again_lifo() -> None:
    k = kernel()
    a = k.mem.alloc(k.anon_vma_chain_cachep)
    b = k.mem.alloc(k.anon_vma_chain_cachep)
    k.mem.free(a)
    k.mem.free(b)
    assert k.mem.alloc(k.anon_vma_chain_cachep) is b
    assert k.mem.alloc(k.anon_vma_chain_cachep) is a
    assert a.addr >= KERNEL_BASE and a.addr != b.addr


def test_anon_vma_is_type_stable_ctor_runs_once_per_slab_object() -> None:
    k = kernel()
    av = k.mem.alloc(k.anon_vma_cachep)
    lock, head = av.lock, av.head
    k.mem.free(av)
    again = k.mem.alloc(k.anon_vma_cachep)
    assert again is av
    assert again.lock is lock and again.head is head  # not re-initialised per allocation
    assert again.head.next is again.head


def test_stale_read_of_a_freed_chain_sees_the_slub_free_pointer() -> None:
    k = kernel()
    a = k.mem.alloc(k.anon_vma_chain_cachep)
    b = k.mem.alloc(k.anon_vma_chain_cachep)
    vma = k.mem.alloc(k.vm_area_cachep)
    a.vma = b.vma = vma
    k.mem.free(b)
    k.mem.free(a)  # a's first word now points at the next free object, b
    stale = a.vma  # read through the stale pointer: b's memory viewed as a vma
    assert stale is not vma
    assert stale.addr == b.addr
    assert type(a).__name__ == "StaleAnonVmaChain"


def test_anon_vma_keeps_its_first_word_when_freed() -> None:
    k = kernel()
    av = k.mem.alloc(k.anon_vma_cachep)
    lock = av.lock
    k.mem.free(av)
    assert av.lock is lock  # ctor + RCU: the free pointer lives outside the object


def test_kasan_reports_first_stale_access_with_sites_and_never_reuses() -> None:
    k = kernel("kasan")
    k.mem.site = (3, "fork P C")
    av = k.mem.alloc(k.anon_vma_cachep)
    k.mem.site = (8, "exit C")
    k.mem.free(av)
    k.mem.site = (9, "referenced P 0x10000 1")
    with pytest.raises(UseAfterFree) as info:
        av.lock  # noqa: B018
    d = info.value.details
    assert (d["allocated_at"], d["freed_at"], d["accessed_at"]) == (
        "line 3 (fork P C)",
        "line 8 (exit C)",
        "line 9 (referenced P 0x10000 1)",
    )
    assert d["object"] == av.name and d["field"] == "lock"
    with pytest.raises(UseAfterFree):
        av.head.next  # noqa: B018
    assert k.mem.alloc(k.anon_vma_cachep) is not av


def test_double_free_corrupts_the_free_list_as_slub_does() -> None:
    k = kernel()
    a = k.mem.alloc(k.anon_vma_chain_cachep)
    k.mem.free(a)
    k.mem.free(a)  # no check without slub_debug
    assert k.mem.double_frees == 1
    first = k.mem.alloc(k.anon_vma_chain_cachep)
    second = k.mem.alloc(k.anon_vma_chain_cachep)
    assert first is a and second is a  # two owners, one object


def test_kasan_reports_a_double_free_with_both_sites() -> None:
    k = kernel("kasan")
    k.mem.site = (2, "mmap P 0x10000 1 rw")
    a = k.mem.alloc(k.anon_vma_chain_cachep)
    k.mem.site = (5, "exit P")
    k.mem.free(a)
    k.mem.site = (7, "exit C")
    with pytest.raises(UseAfterFree, match="double-free") as info:
        k.mem.free(a)
    assert info.value.details["freed_at"] == "line 5 (exit P)"
    assert info.value.details["accessed_at"] == "line 7 (exit C)"


def test_kasan_keeps_a_freed_anon_vma_readable_until_the_grace_period_ends() -> None:
    """SLAB_DESTROY_BY_RCU: page_lock_anon_vma may lock it after it was freed."""
    k = kernel("kasan")
    av = k.mem.alloc(k.anon_vma_cachep)
    k.mem.rcu_read_lock()  # a reader that found it before the free
    k.mem.free(av)
    assert av.lock.acquire()  # still a valid anon_vma for this reader
    av.lock.release()
    k.mem.rcu_read_unlock()
    k.mem.quiesce()
    with pytest.raises(UseAfterFree):
        av.lock  # noqa: B018


def test_live_count_tracks_alloc_and_free() -> None:
    k = kernel()
    before = k.mem.live_objects
    objs = [k.mem.alloc(k.anon_vma_chain_cachep) for _ in range(5)]
    assert k.mem.live_objects == before + 5
    for o in objs:
        k.mem.free(o)
    assert k.mem.live_objects == before


def fill_page(mem: Memory, cache: object) -> list[object]:
    objs = [mem.alloc(cache) for _ in range(cache.per_slab)]  # type: ignore[attr-defined]
    assert len({mem._page_of(o.addr).pageno for o in objs}) == 1  # type: ignore[attr-defined]
    return objs


def test_empty_page_goes_to_another_cache_and_stale_pointers_read_the_new_owner() -> None:
    k = kernel(slab_page_bytes=768, min_partial=0)
    avcs = fill_page(k.mem, k.anon_vma_chain_cachep)
    victim = avcs[0]
    for o in avcs:
        k.mem.free(o)
    assert len(k.mem.pool) == 1  # not RCU: given back at once
    vma = k.mem.alloc(k.vm_area_cachep)  # takes the recycled page
    assert k.mem.recycled_pages == 1
    assert vma.addr == victim.addr
    vma.vm_mm = None
    vma.vm_start = 0x1234000
    # The stale chain's ->anon_vma (word 1) is the vma's vm_start now.
    assert k.mem.to_int(peek(vma, "vm_start")) == 0x1234000
    seen = victim.anon_vma
    assert k.mem.to_int(seen) == 0x1234000
    # Its same_vma list head (words 2-3) reads vm_end and vm_next.
    vma.vm_end = 0
    assert victim.same_vma.next is not None


def test_anon_vma_pages_wait_for_a_grace_period() -> None:
    k = kernel(slab_page_bytes=768, min_partial=0)
    avs = fill_page(k.mem, k.anon_vma_cachep)
    reader_in = threading.Event()
    release = threading.Event()

    def reader() -> None:
        k.mem.rcu_read_lock()
        reader_in.set()
        release.wait(5)
        k.mem.rcu_read_unlock()

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert reader_in.wait(5)
        for av in avs:
            k.mem.free(av)
        k.mem.quiesce()
        assert k.mem.pool == []  # a reader that may hold a pointer into the page is still inside
    finally:
        release.set()
        t.join(5)
    assert not t.is_alive()
    k.mem.quiesce()
    assert len(k.mem.pool) == 1


def test_spin_lock_on_recycled_anon_vma_memory_is_a_lockup_or_a_scribble() -> None:
    k = kernel(slab_page_bytes=768, min_partial=0)
    avs = fill_page(k.mem, k.anon_vma_cachep)
    for av in avs:
        k.mem.free(av)
    k.mem.quiesce()
    vma = k.mem.alloc(k.vm_area_cachep)
    vma.vm_mm = vma  # word 0 now holds a pointer
    stale = next(av for av in avs if av.addr == vma.addr)
    lock = stale.lock
    assert isinstance(lock, LockWordView)
    owner, ticket = vma.addr & 0xFF, (vma.addr >> 8) & 0xFF
    if owner != ticket:
        with pytest.raises(Lockup, match="no longer a spinlock"):
            lock.acquire()
    else:  # the word happens to look unlocked: taking it changes the vma's field
        lock.acquire()
        assert peek(vma, "vm_mm") is not vma


def test_new_objects_on_a_recycled_page_start_with_the_old_bytes() -> None:
    k = kernel(slab_page_bytes=768, min_partial=0)
    vmas = fill_page(k.mem, k.vm_area_cachep)
    for v in vmas:
        v.vm_start = 0xABC000
    for v in vmas:
        k.mem.free(v)
    avc = k.mem.alloc(k.anon_vma_chain_cachep)
    assert avc.addr == vmas[0].addr
    # word 1 of the page was vmas[0].vm_start; the new chain's ->anon_vma starts there.
    assert k.mem.to_int(peek(avc, "anon_vma")) == 0xABC000
    assert isinstance(avc.same_vma, ListHead)
    assert avc.state == LIVE


def test_memory_rejects_bad_parameters() -> None:
    from rmapsim.errors import ModelError

    with pytest.raises(ModelError, match="unknown memory mode"):
        Memory("leaky")
    with pytest.raises(ModelError, match="slab page size"):
        Memory("reuse", page_bytes=100)


def test_structure_sizes_match_x86_64() -> None:
    assert (AnonVma.SIZE, AnonVmaChain.SIZE, VmArea.SIZE) == (24, 48, 176)


def test_kasan_quarantine_is_bounded_and_then_reuses_the_oldest() -> None:
    k = kernel("kasan", quarantine_bytes=4 * 48)  # room for four anon_vma_chains
    objs = [k.mem.alloc(k.anon_vma_chain_cachep) for _ in range(6)]
    for o in objs:
        k.mem.free(o)
    with pytest.raises(UseAfterFree):
        objs[-1].vma  # noqa: B018 - still quarantined: caught
    again = {id(k.mem.alloc(k.anon_vma_chain_cachep)) for _ in range(2)}
    assert again == {id(objs[0]), id(objs[1])}  # the two oldest left the quarantine


def test_copying_a_vma_read_through_a_wild_pointer_has_no_shadow_state() -> None:
    """*tmp = *mpnt of recycled memory copies whatever is there; the audit's own
    shadow field (not kernel memory) is simply absent, never a model error."""
    from rmapsim import mmap
    from rmapsim.structs import VmArea

    k = kernel()
    avc = k.mem.alloc(k.anon_vma_chain_cachep)
    view = k.mem.object_at(avc.addr + 8, VmArea)  # not a vma: a view of the words
    dst = mmap.vma_alloc(k)
    mmap.vma_copy(dst, view)
    assert dst.shadow_oldest is None
