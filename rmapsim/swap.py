"""Swap slots, the swap cache (mm/swapfile.c, mm/swap_state.c) and reclaim (mm/vmscan.c).

A swap slot counts the swap PTEs that name it plus one flag for the swap cache
(SWAP_HAS_CACHE).  The swap cache keeps a page findable by its slot after it was
read back in, so that the next process faulting on the same slot maps the very
same page through page_add_anon_rmap - the path where a page first mapped by a
child got the child's anon_vma in 2.6.34-rc3.

Reclaim (`shrink_page`) is one page of shrink_page_list: page_referenced through
the rmap, add_to_swap, try_to_unmap through the rmap, write-out, and freeing the
page once nothing maps it.  Swap is never nearly full (vm_swap_full() is false); a
full device makes add_to_swap fail and reclaim keep the page.

Slots are handed out as scan_swap_map does on a rotating disk: in runs
(SWAPFILE_CLUSTER slots taken one after another), each run starting at the first
wholly free stretch above the lowest free slot (`SwapState.scan_swap_map` says what
happens when there is none).  A freed slot is therefore not
handed out again at once - which matters: 2.6.34's do_swap_page does not check,
after lock_page, that the page it looked up is still the swap cache page of its
slot (2.6.36 does: the `swapin-recheck` patch), so a slot freed and reused twice
while a fault waits maps another address's page.  Reusing the last freed slot
first made that real but rare race an everyday one.

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


#: Slots of the model's swap device (a 256 MiB swap partition); slot 0 is its header.
SWAP_PAGES = 1 << 16
#: How many slots are handed out one after another before a new run is looked for.
SWAPFILE_CLUSTER = 256


class SwapState:
    """The swap device: slot counts, the swap cache, and swap_lock."""

    def __init__(self, k: Kernel, pages: int = SWAP_PAGES) -> None:
        self.k = k
        # swap_lock and the swap cache's tree_lock: a kernel spinlock, since a page
        # lock is tried (a scheduling point) while it is held.
        self.lock = k.sync.spinlock("swap_lock", "swap_lock")
        self.map: dict[int, SwapSlot] = {}
        self.cache: dict[int, Page] = {}
        self.pages = pages
        # Every free slot lies in [lowest_bit, highest_bit] (the bounds may be loose).
        self.lowest_bit = 1
        self.highest_bit = pages
        self.cluster_next = 1  # where the current run goes on
        self.cluster_nr = 0  # slots the current run may still hand out
        self._writes = atomic_t(0)
        self._reads = atomic_t(0)

    def get_swap_page(self) -> int:
        """A slot with SWAP_HAS_CACHE set, or 0 when the device is full."""
        with self.lock:
            slot = self.scan_swap_map()
            if slot:
                s = SwapSlot()
                s.cache = True
                self.map[slot] = s
            return slot

    def scan_swap_map(self) -> int:
        """The next slot to hand out (swap_lock held); 0 when none is free.

        Follows mm/swapfile.c of 2.6.34 for a rotating disk: go on with the current
        run; when it is used up, start the next run at the first stretch of
        SWAPFILE_CLUSTER free slots above the lowest free slot, or, when there is
        none, at the lowest free slot; on a nearly full device (fewer free slots
        than a run) just go on from where the last run ended.  Either way the slot
        taken is the first free one from there on, wrapping round to the lowest.
        """
        if len(self.map) >= self.pages:
            return 0
        offset = self.cluster_next
        if self.cluster_nr == 0:
            if self.pages - len(self.map) >= SWAPFILE_CLUSTER:
                offset = self._free_stretch() or self.lowest_bit
            self.cluster_nr = SWAPFILE_CLUSTER
        self.cluster_nr -= 1
        slot = self._first_free(offset)
        if slot == self.lowest_bit:
            self.lowest_bit += 1
        if slot == self.highest_bit:
            self.highest_bit -= 1
        self.cluster_next = slot + 1
        return slot

    def _free_stretch(self) -> int:
        """The first slot of the lowest stretch of SWAPFILE_CLUSTER free slots, or 0."""
        start = self.lowest_bit
        for slot in range(self.lowest_bit, self.highest_bit + 1):
            if slot in self.map:
                start = slot + 1
            elif slot - start + 1 == SWAPFILE_CLUSTER:
                return start
        return 0

    def _first_free(self, offset: int) -> int:
        if not self.lowest_bit <= offset <= self.highest_bit:
            offset = self.lowest_bit
        for slot in range(offset, self.highest_bit + 1):
            if slot not in self.map:
                return slot
        for slot in range(self.lowest_bit, offset):
            if slot not in self.map:
                return slot
        raise AssertionError("swap: a free slot outside [lowest_bit, highest_bit]")

    def _maybe_free(self, slot: int, s: SwapSlot) -> None:
        if s.count == 0 and not s.cache:
            del self.map[slot]
            self.lowest_bit = min(self.lowest_bit, slot)
            self.highest_bit = max(self.highest_bit, slot)

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
    """Give a page a swap slot and put it in the swap cache (it is locked).

    False when the swap device is full: reclaim keeps the page.
    """
    slot = k.swap.get_swap_page()
    if not slot:
        return False
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
        if not page.swapcache and not add_to_swap(k, page):
            return False  # swap is full: activate_locked
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
