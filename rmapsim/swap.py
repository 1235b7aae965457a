"""Swap slots, the swap cache (mm/swapfile.c, mm/swap_state.c) and reclaim (mm/vmscan.c).

A swap slot counts the swap PTEs that name it plus one flag for the swap cache
(SWAP_HAS_CACHE).  The swap cache keeps a page findable by its slot after it was
read back in, so that the next process faulting on the same slot maps the very
same page through page_add_anon_rmap - the path where a page first mapped by a
child got the child's anon_vma in 2.6.34-rc3.

Reclaim (`shrink_page`) is one page of shrink_page_list: page_referenced through
the rmap, add_to_swap, try_to_unmap through the rmap, write-out, and freeing the
page once nothing maps it.  Swap is never full (vm_swap_full() is false).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rmapsim import rmap
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
        self.lock = threading.Lock()
        self.map: dict[int, SwapSlot] = {}
        self.cache: dict[int, Page] = {}
        self.free_slots: list[int] = []
        self.next_slot = 1
        self.writes = 0
        self.reads = 0

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
    k.get_page(page)  # the swap cache holds a reference
    with k.swap.lock:
        page.private = slot
        page.swapcache = True
        k.swap.cache[slot] = page


def __delete_from_swap_cache(k: Kernel, page: Page) -> int:
    with k.swap.lock:
        slot = page.private
        k.swap.cache.pop(slot, None)
        page.swapcache = False
        page.private = 0
        s = k.swap.map.get(slot)
        if s is not None:
            s.cache = False
            k.swap._maybe_free(slot, s)
    return slot


def delete_from_swap_cache(k: Kernel, page: Page) -> None:
    __delete_from_swap_cache(k, page)
    k.put_page(page)


def add_to_swap(k: Kernel, page: Page) -> bool:
    """Give a page a swap slot and put it in the swap cache (it is locked)."""
    slot = k.swap.get_swap_page()
    add_to_swap_cache(k, page, slot)
    page.dirty = True
    return True


def lookup_swap_cache(k: Kernel, slot: int) -> Page | None:
    with k.swap.lock:
        page = k.swap.cache.get(slot)
        if page is not None:
            k.get_page(page)  # under swap_lock, as find_get_page: the cache's ref keeps it
    return page


def swapin_readahead(k: Kernel, slot: int) -> Page | None:
    """read_swap_cache_async: a new page for `slot`, added to the swap cache and LRU."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is None or s.count == 0:
            return None  # the slot was freed while we looked
        found = k.swap.cache.get(slot)
        if found is None:
            s.cache = True  # swapcache_prepare
        else:
            k.get_page(found)  # under swap_lock, as find_get_page
    if found is not None:
        return found
    page = k.pages.alloc_page()
    add_to_swap_cache(k, page, slot)
    k.pages.lru_cache_add(page)
    k.swap.reads += 1
    return page


def reuse_swap_page(k: Kernel, page: Page) -> bool:
    """Are we the only user of this (locked) page?  If so, drop it from the swap cache."""
    count = page.mapcount + 1
    if count <= 1 and page.swapcache:
        count += page_swapcount(k, page)
        if count == 1:
            delete_from_swap_cache(k, page)
            page.dirty = True
    return count <= 1


def free_swap_and_cache(k: Kernel, slot: int) -> None:
    """A swap PTE is zapped: drop it, and the cached page if nothing maps it."""
    with k.swap.lock:
        s = k.swap.map.get(slot)
        if s is None:
            return
        s.count -= 1
        page = k.swap.cache.get(slot) if s.count == 0 and s.cache else None
        k.swap._maybe_free(slot, s)
        if page is not None:
            # find_get_page under swap_lock: taken after it, the swap cache's reference
            # may already be gone and the page freed by reclaim.
            k.get_page(page)
    if page is None:
        return
    if page.lock.acquire(False):
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
            k.swap.writes += 1
        # __remove_mapping: only the swap cache and our isolation reference left?
        with k.atomic:
            sole = page.count == 2
        if not sole:
            return False
        __delete_from_swap_cache(k, page)
        k.put_page(page)  # the swap cache's reference
        return True
    finally:
        page.lock.release()


def isolate(k: Kernel, page: Page) -> bool:
    """Take a reference on an LRU page unless it is being freed."""
    with k.pages.lru_lock, k.atomic:
        if page.lru and page.in_use and page.count > 0:
            page.count += 1
            return True
    return False


def shrink_all(k: Kernel, *, force: bool = True) -> int:
    """Swap out every anonymous page on the LRU, as a hibernation image does."""
    freed = 0
    for page in k.pages.lru_pages():
        if isolate(k, page):
            freed += shrink_page(k, page, force=force)
            k.put_page(page)
    return freed


def _mapped_pages(k: Kernel, mm: MmStruct, start: int, length: int) -> list[Page]:
    """The pages mapped in [start, start+len) of mm, each with a reference taken."""
    pages: list[Page] = []
    mm.page_table_lock.acquire()
    for address in range(start, start + length, 4096):
        pte = mm.ptes.get(address)
        if pte is not None and pte.kind is PteKind.PRESENT and pte.page is not None:
            k.get_page(pte.page)
            pages.append(pte.page)
    mm.page_table_lock.release()
    return pages


def swapout_range(k: Kernel, mm: MmStruct, start: int, length: int) -> int:
    freed = 0
    for page in _mapped_pages(k, mm, start, length):
        freed += shrink_page(k, page, force=True)
        k.put_page(page)
    return freed


def referenced_range(k: Kernel, mm: MmStruct, start: int, length: int) -> int:
    total = 0
    for page in _mapped_pages(k, mm, start, length):
        total += rmap.page_referenced(k, page, False)[0]
        k.put_page(page)
    return total
