"""Swap slots, the swap cache (mm/swapfile.c, mm/swap_state.c) and reclaim (mm/vmscan.c).

A swap slot counts the swap PTEs that name it plus one flag for the swap cache
(SWAP_HAS_CACHE).  The swap cache keeps a page findable by its slot after it was
read back in, so that the next process faulting on the same slot maps the very
same page through page_add_anon_rmap - the path where a page first mapped by a
child got the child's anon_vma in 2.6.34-rc3.

Reclaim (`shrink_page`) is one page of shrink_page_list: page_referenced through
the rmap, add_to_swap, try_to_unmap through the rmap, write-out, and freeing the
page once nothing maps it.  Swap is never full (vm_swap_full() is false).

References follow the kernel's lockless page-cache protocol: a lookup takes a
speculative reference that fails on a zero count (find_get_page), and reclaim
claims a page by freezing its count from 2 (the cache's and its own) to 0 under
the cache's lock (__remove_mapping), so a page on its way out can never be found
and mapped again.  One spinlock, `SwapState.lock`, stands for both swap_lock
(slot counts) and the swap cache's tree_lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmapsim import rmap
from rmapsim.atomic import atomic_inc, atomic_read, atomic_t
from rmapsim.structs import MmStruct, Page, PteKind

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel


class SwapSlot:
    __slots__ = ("cache", "count")

    def __init__(self) -> None:
        self.count = 0  # swap PTEs naming this slot
        self.cache = False  # SWAP_HAS_CACHE


class SwapState:
    """The swap device: slot counts, the swap cache, and swap_lock."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        # swap_lock and the swap cache's tree_lock: a kernel spinlock, since a page
        # lock is tried (a scheduling point) while it is held.
        self.lock = k.sync.spinlock("swap_lock", "swap_lock")
        self.map: dict[int, SwapSlot] = {}
        self.cache: dict[int, Page] = {}
        self.free_slots: list[int] = []
        self.next_slot = 1
        self._writes = atomic_t(0)
        self._reads = atomic_t(0)

    def get_swap_page(self) -> int:
        with self.lock:
            slot = self.free_slots.pop() if self.free_slots else self._fresh()
            s = SwapSlot()
            s.cache = True
            self.map[slot] = s
            return slot

    def _fresh(self) -> int:
        slot = self.next_slot
        self.next_slot += 1
        return slot

    def _maybe_free(self, slot: int, s: SwapSlot) -> None:
        if s.count == 0 and not s.cache:
            del self.map[slot]
            self.free_slots.append(slot)

    def in_use(self) -> int:
        return len(self.map)

    def count_read(self) -> None:
        atomic_inc(self._reads)

    def count_write(self) -> None:
        atomic_inc(self._writes)

    @property
    def reads(self) -> int:
        return atomic_read(self._reads)

    @property
    def writes(self) -> int:
        return atomic_read(self._writes)


def page_swapcount(k: Kernel, page: Page) -> int:
    with k.swap.lock:
        s = k.swap.map.get(page.private)
        return s.count if s is not None else 0


def swap_duplicate(k: Kernel, slot: int) -> int:
    """One more swap PTE names `slot` (try_to_unmap_one, fork)."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is None:
            return -22
        s.count += 1
        return 0


def swap_free(k: Kernel, slot: int) -> None:
    """One swap PTE fewer (a swap-in replaced it)."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is not None:
            s.count -= 1
            k.swap._maybe_free(slot, s)


def add_to_swap_cache(k: Kernel, page: Page, slot: int) -> None:
    """__add_to_swap_cache: the cache's reference is taken before the page is findable."""
    k.get_page(page)
    page.swapcache = True
    page.private = slot
    with k.swap.lock:
        k.swap.cache[slot] = page


def __delete_from_swap_cache(k: Kernel, page: Page) -> int:
    """Take the page out of the swap cache (the cache lookup no longer finds it)."""
    with k.swap.lock:
        slot = page.private
        if k.swap.cache.get(slot) is page:
            del k.swap.cache[slot]
        page.swapcache = False
        page.private = 0
    return slot


def swapcache_free(k: Kernel, slot: int) -> None:
    """The slot loses SWAP_HAS_CACHE (and is freed when no swap PTE names it)."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is not None:
            s.cache = False
            k.swap._maybe_free(slot, s)


def delete_from_swap_cache(k: Kernel, page: Page) -> None:
    slot = __delete_from_swap_cache(k, page)
    swapcache_free(k, slot)
    k.put_page(page)


def add_to_swap(k: Kernel, page: Page) -> bool:
    """Give a page a swap slot and put it in the swap cache (it is locked)."""
    slot = k.swap.get_swap_page()
    add_to_swap_cache(k, page, slot)
    page.dirty = True
    return True


def find_get_page(k: Kernel, slot: int, *, preemptible: bool = True) -> Page | None:
    """The swap-cache page of `slot` with a reference taken, or None (mm/filemap.c).

    The lookup takes no lock (RCU in the kernel): the page found may be on its way
    out, so the reference is speculative - it fails on a page whose count is zero
    (frozen by reclaim, or being freed) - and the slot is read again afterwards in
    case the page moved.  Either failure looks again.  `preemptible=False` when the
    caller holds swap_lock (free_swap_and_cache): no yield point then.
    """
    while True:
        page = k.swap.cache.get(slot)
        if page is None:
            return None
        if preemptible:
            k.sched("find_get_page:speculative")
        if not k.get_page_unless_zero(page):
            if preemptible:
                k.cpu_relax("find_get_page:retry")
            continue
        if k.swap.cache.get(slot) is not page:  # has the page moved?
            k.put_page(page)
            continue
        return page


def lookup_swap_cache(k: Kernel, slot: int) -> Page | None:
    return find_get_page(k, slot)


def swapcache_prepare(k: Kernel, slot: int) -> int:
    """Claim SWAP_HAS_CACHE for a read-in: -EEXIST if someone has, -ENOENT if freed."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is None or (s.count == 0 and not s.cache):
            return -2
        if s.cache:
            return -17
        if s.count == 0:
            return -2
        s.cache = True
        return 0


def read_swap_cache_async(k: Kernel, slot: int) -> Page | None:
    """Find the page of `slot` in the swap cache, or read it into a new one.

    Two faulting threads may race here: the loser of swapcache_prepare (-EEXIST)
    goes round and finds the winner's page, exactly as mm/swap_state.c does.
    """
    new_page: Page | None = None
    found: Page | None = None
    while True:
        found = find_get_page(k, slot)
        if found is not None:
            break
        if new_page is None:
            new_page = k.pages.alloc_page()
        err = swapcache_prepare(k, slot)
        if err == -17:
            k.cpu_relax("read_swap_cache_async:EEXIST")
            continue
        if err:
            break  # the slot was freed while we looked
        add_to_swap_cache(k, new_page, slot)
        k.pages.lru_cache_add(new_page)
        k.swap.count_read()
        return new_page
    if new_page is not None:
        k.put_page(new_page)
    return found


def swapin_readahead(k: Kernel, slot: int) -> Page | None:
    """Read `slot` in (no readahead cluster in this model)."""
    return read_swap_cache_async(k, slot)


def reuse_swap_page(k: Kernel, page: Page) -> bool:
    """Are we the only user of this (locked) page?  If so, drop it from the swap cache."""
    count = rmap.page_mapcount(page)
    if count <= 1 and page.swapcache:
        count += page_swapcount(k, page)
        if count == 1:
            delete_from_swap_cache(k, page)
            page.dirty = True
    return count <= 1


def free_swap_and_cache(k: Kernel, slot: int) -> None:
    """A swap PTE is zapped: drop it, and the cached page if nothing maps it.

    As in mm/swapfile.c the cache is looked up with swap_lock still held, so the
    slot cannot be freed and handed out again between the two.
    """
    page: Page | None = None
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is None:
            return
        s.count -= 1
        only_cache = s.count == 0 and s.cache
        k.swap._maybe_free(slot, s)
        if only_cache:
            page = find_get_page(k, slot, preemptible=False)
            if page is not None and not page.lock.acquire(False):
                k.put_page(page)
                page = None
    if page is None:
        return
    if page.swapcache and not rmap.page_mapped(page):
        delete_from_swap_cache(k, page)
        page.dirty = True
    page.lock.release()
    k.put_page(page)


# -- reclaim --------------------------------------------------------------------------


def shrink_page(k: Kernel, page: Page, *, force: bool) -> bool:
    """Reclaim one isolated page (the caller holds a reference).  True when freed.

    `force` reclaims whatever page_referenced says, as the passes of hibernation's
    shrink_all_memory eventually do; otherwise a referenced page is kept.
    """
    if not page.lock.acquire(False):
        return False
    try:
        referenced, _ = rmap.page_referenced(k, page, True)
        if referenced and not force:
            page.referenced = True
            return False
        if not page.swapcache:
            add_to_swap(k, page)
        if rmap.page_mapped(page):
            ret = rmap.try_to_unmap(k, page, rmap.TTU_UNMAP)
            if ret != rmap.SWAP_SUCCESS:
                return False
        if page.dirty:  # pageout: synchronous write to the slot
            page.dirty = False
            k.swap.count_write()
        if not __remove_mapping(k, page):
            return False
    finally:
        page.lock.release()  # on success: __clear_page_locked, nobody can find it now
    k.pages.free_page(page)  # free_it: the count is already zero
    return True


def __remove_mapping(k: Kernel, page: Page) -> bool:
    """Take a clean, isolated page out of the swap cache if nobody else holds it.

    Only two references may be left - the swap cache's and reclaim's own - and
    page_freeze_refs takes both at once, under the cache's lock, so that no
    speculative lookup can pick the page up on its way out.  Freed pages keep a
    count of zero and go straight back to the allocator.
    """
    with k.swap.lock:
        if not k.page_freeze_refs(page, 2):
            return False
        if page.dirty:
            k.page_unfreeze_refs(page, 2)
            return False
        slot = page.private
        if k.swap.cache.get(slot) is page:
            del k.swap.cache[slot]
        page.swapcache = False
        page.private = 0
    swapcache_free(k, slot)
    return True


def isolate(k: Kernel, page: Page) -> bool:
    """Take a reference on an LRU page unless it is being freed (__isolate_lru_page).

    The reference is speculative: a page whose count already reached zero is on
    its way back to the allocator.  Unlike the kernel the page stays on the LRU
    list while isolated; the page lock decides which reclaimer works on it.
    """
    with k.pages.lru_lock:
        return page.lru and k.get_page_unless_zero(page)


def reclaim(k: Kernel, page: Page, *, force: bool) -> bool:
    """Isolate, shrink, and put back (or free) one LRU page.  True when freed."""
    if not isolate(k, page):
        return False
    if shrink_page(k, page, force=force):
        return True  # the isolation reference went with the page
    k.put_page(page)  # putback_lru_page
    return False


def shrink_all(k: Kernel, *, force: bool = True) -> int:
    """Swap out every anonymous page on the LRU, as a hibernation image does."""
    freed = 0
    for page in k.pages.lru_pages():
        freed += reclaim(k, page, force=force)
    return freed


def mapped_pages(k: Kernel, mm: MmStruct, start: int, length: int) -> list[Page]:
    """The pages mapped in [start, start+len) of mm, each with a reference taken."""
    pages: list[Page] = []
    for address in range(start, start + length, 4096):
        ptl = k.pte_lockptr(mm, address)
        ptl.acquire()
        pte = mm.ptes.get(address)
        if pte is not None and pte.kind is PteKind.PRESENT and pte.page is not None:
            k.get_page(pte.page)
            pages.append(pte.page)
        ptl.release()
    return pages


def swapout_range(k: Kernel, mm: MmStruct, start: int, length: int) -> int:
    freed = 0
    for page in mapped_pages(k, mm, start, length):
        if shrink_page(k, page, force=True):
            freed += 1
        else:
            k.put_page(page)
    return freed


def referenced_range(k: Kernel, mm: MmStruct, start: int, length: int) -> int:
    total = 0
    for page in mapped_pages(k, mm, start, length):
        total += rmap.page_referenced(k, page, False)[0]
        k.put_page(page)
    return total
