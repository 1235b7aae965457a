"""mm/migrate.c (2.6.34 to 2.6.36): moving an anonymous page to another page frame.

Migration (NUMA placement, memory hotplug, and from 2.6.35 memory compaction)
takes a page off the LRU, locks it, replaces every PTE mapping it by a migration
entry (try_to_unmap with TTU_MIGRATION), copies it into a new page, then walks
the reverse map again (remove_migration_ptes, through rmap_walk_anon) to turn
each migration entry into a PTE of the new page.  A thread faulting on a
migration entry meanwhile waits for the old page's lock (migration_entry_wait)
and retries.

Everything rests on the second walk finding every entry the first one made.  A
walk that misses a vma (vma_adjust moving its boundaries with no anon_vma lock
before 2.6.36) leaves a migration entry behind; the next fault on it finds the
old page unlocked, its migration long over, and hits
``BUG_ON(!PageLocked(p))`` in migration_entry_to_page (include/linux/swapops.h).

Page references follow the lockless protocol: isolation takes a speculative
reference, migration entries hold none, a page without a mapping migrates only
with no other reference than the isolation's, and a swap-cache page moves by
freezing its count from 2 under the cache's lock (migrate_page_move_mapping).
The anon_vma is kept alive by rcu_read_lock (2.6.34: only as some anon_vma, as
SLAB_DESTROY_BY_RCU guarantees) or, from 2.6.35, by a reference on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rmapsim import anon_vma as av
from rmapsim import rmap
from rmapsim.atomic import atomic_add, atomic_dec
from rmapsim.errors import KernelBug, KernelOops
from rmapsim.structs import MmStruct, Page, Pte, PteKind, VmArea

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

EAGAIN, ENOMEM, EBUSY = -11, -12, -16
#: migrate_pages' passes: from the fourth one it waits for a page lock instead of skipping.
PASSES = 10


# -- migration entries (include/linux/swapops.h) -----------------------------------------


def migration_entry_to_page(k: Kernel, mm: MmStruct, address: int, pte: Pte) -> Page:
    """The page a migration entry names; it must be locked, its migration under way."""
    page = pte.page
    assert page is not None
    if not page.lock.locked():
        raise KernelBug(
            f"kernel BUG at include/linux/swapops.h in migration_entry_to_page: "
            f"BUG_ON(!PageLocked(p)): the PTE of {mm.comm} at {address:#x} is a migration "
            f"entry for {page.name}, whose migration is over: the remove_migration_ptes "
            f"walk missed it (a migration entry left behind)",
            function="migration_entry_to_page",
            entry=f"migration entry of {mm.comm} at {address:#x}",
            page=page.name,
            address=f"{address:#x}",
        )
    return page


def migration_entry_wait(k: Kernel, mm: MmStruct, address: int) -> None:
    """A fault hit a migration entry: wait until the page is unlocked, then retry."""
    ptl = k.pte_lockptr(mm, address)
    ptl.acquire()
    pte = mm.ptes.get(address)
    if pte is None or pte.kind is not PteKind.MIGRATION:
        ptl.release()
        return
    page = migration_entry_to_page(k, mm, address, pte)
    if not k.get_page_unless_zero(page):  # being freed: fault again
        ptl.release()
        return
    ptl.release()
    wait_on_page_locked(k, page)
    k.put_page(page)


def wait_on_page_locked(k: Kernel, page: Page) -> None:
    """Sleep until PG_locked clears (the model takes and drops the page lock)."""
    page.lock.acquire()
    page.lock.release()


# -- the second walk ---------------------------------------------------------------------


def remove_migration_pte(k: Kernel, new: Page, vma: VmArea, address: int, old: Any) -> int:
    """Turn the migration entry for `old` at `address` into a PTE of `new`."""
    mm = vma.vm_mm
    ptes: dict[int, Pte] | None = getattr(mm, "ptes", None)
    if ptes is None:
        raise KernelOops(
            f"unable to handle kernel paging request: pgd_offset through vm_mm "
            f"{getattr(mm, 'name', mm)!r}, which is not an mm_struct",
            mm=getattr(mm, "name", repr(mm)),
        )
    pte = ptes.get(address)
    if pte is None or pte.kind not in (PteKind.SWAP, PteKind.MIGRATION):  # !is_swap_pte
        return rmap.SWAP_AGAIN
    ptl = k.pte_lockptr(mm, address)
    ptl.acquire()
    pte = ptes.get(address)
    if (
        pte is None
        or pte.kind is not PteKind.MIGRATION
        or migration_entry_to_page(k, mm, address, pte) is not old
    ):
        ptl.release()
        return rmap.SWAP_AGAIN
    k.get_page(new)
    ptes[address] = Pte(PteKind.PRESENT, new, write=pte.write, young=False)
    rmap.page_add_anon_rmap(k, new, vma, address)
    ptl.release()
    return rmap.SWAP_AGAIN


def remove_migration_ptes(k: Kernel, old: Page, new: Page) -> None:
    """Every migration entry for `old` becomes a PTE of `new` (rmap_walk over `new`)."""

    def one(page: Page, vma: VmArea, address: int, arg: Any) -> int:
        return remove_migration_pte(k, page, vma, address, arg)

    rmap.rmap_walk_anon(k, new, one, old)


# -- moving one page ------------------------------------------------------------------------


def migrate_page_move_mapping(k: Kernel, newpage: Page, page: Page) -> int:
    """Hand the page's place over to `newpage` if nobody else holds a reference.

    An anonymous page outside the swap cache has no mapping to move: only the
    isolation's reference may be left.  A swap-cache page has the cache's too:
    both are frozen at once under the cache's lock, the cache slot is pointed at
    the new page, and the old page's cache reference is dropped.
    """
    if not page.swapcache:
        return 0 if page.count == 1 else EAGAIN
    with k.swap.lock:
        slot = page.private
        expected = 2
        if page.count != expected or k.swap.cache.get(slot) is not page:
            return EAGAIN
        if not k.page_freeze_refs(page, expected):
            return EAGAIN
        k.get_page(newpage)  # the cache's reference
        newpage.swapcache = True
        newpage.private = slot
        k.swap.cache[slot] = newpage
        k.page_unfreeze_refs(page, expected)
        atomic_dec(page._count)  # __put_page: the cache's old reference, never the last
    return 0


def migrate_page_copy(k: Kernel, newpage: Page, page: Page) -> None:
    """The data and the flags go over; the old page loses its mapping and swap state."""
    newpage.dirty = newpage.dirty or page.dirty
    newpage.referenced = page.referenced
    page.swapcache = False
    page.private = 0
    page.mapping = None


def move_to_new_page(k: Kernel, newpage: Page, page: Page, remap_swapcache: bool) -> int:
    """Move the page's contents and place to `newpage`, then map `newpage` instead."""
    k.BUG_ON(not newpage.lock.acquire(False), "!trylock_page(newpage)", page=newpage.name)
    newpage.index = page.index
    newpage.mapping = page.mapping
    newpage.mapping_gen = page.mapping_gen
    rc = migrate_page_move_mapping(k, newpage, page)
    if rc == 0:
        migrate_page_copy(k, newpage, page)
    if rc:
        newpage.mapping = None
    elif remap_swapcache:
        remove_migration_ptes(k, page, newpage)
    newpage.lock.release()
    return rc


def putback_lru_page(k: Kernel, page: Page) -> None:
    """Back on the LRU, and the isolation's reference dropped (the last frees it)."""
    k.pages.lru_cache_add(page)
    k.put_page(page)


def unmap_and_move(k: Kernel, page: Page, force: bool) -> int:
    """Migrate one isolated page (the caller holds a reference): 0, or -EAGAIN to retry.

    2.6.34: rcu_read_lock for an anonymous page, whatever its state, then unmap,
    move, and remap.  anon-vma-refcount (2.6.35): a page no longer mapped is left
    alone unless it is in the swap cache (migrated then, but not remapped: its
    anon_vma may be gone), and a mapped page's anon_vma is pinned by a reference
    until the end.
    """
    newpage = k.pages.alloc_page()
    rc = 0
    if page.count == 1:  # only our reference is left: freed from under us
        putback_lru_page(k, page)  # (the kernel leaves it on the list for the final putback)
        putback_lru_page(k, newpage)
        return 0
    rc = EAGAIN
    if not page.lock.acquire(False):
        if not force:
            putback_lru_page(k, newpage)
            return rc
        page.lock.acquire()
    remap_swapcache = True
    rcu_locked = False
    anon_vma: Any = None
    skip = False
    if page.mapping is not None:  # PageAnon
        k.mem.rcu_read_lock()
        rcu_locked = True
        if k.variant.anon_vma_refcount:
            if not rmap.page_mapped(page):
                if not page.swapcache:
                    skip = True
                remap_swapcache = False
            else:
                anon_vma = av.page_anon_vma(page)
                av.get_anon_vma(k, anon_vma)
    if not skip:
        if page.mapping is not None:
            rmap.try_to_unmap(
                k, page, rmap.TTU_MIGRATION | rmap.TTU_IGNORE_MLOCK | rmap.TTU_IGNORE_ACCESS
            )
        k.sched("unmap_and_move:copying")
        if not rmap.page_mapped(page):
            rc = move_to_new_page(k, newpage, page, remap_swapcache)
        if rc and remap_swapcache:
            remove_migration_ptes(k, page, page)
    if anon_vma is not None:
        av.drop_anon_vma(k, anon_vma)
    if rcu_locked:
        k.mem.rcu_read_unlock()
    page.lock.release()
    if rc != EAGAIN:
        putback_lru_page(k, page)
    putback_lru_page(k, newpage)
    return rc


def migrate_pages(k: Kernel, pages: Iterable[Page]) -> int:
    """Migrate isolated pages (one reference each, handed over); the count left unmoved.

    Up to ten passes; pages that answer -EAGAIN are tried again, and from the
    fourth pass the page lock is waited for.  Whatever is left goes back.
    """
    todo = list(pages)
    failed = 0
    for npass in range(PASSES):
        if not todo:
            break
        again: list[Page] = []
        for page in todo:
            k.sched("migrate_pages:cond_resched")
            rc = unmap_and_move(k, page, npass > 2)
            if rc == EAGAIN:
                again.append(page)
            elif rc:
                failed += 1
        todo = again
    for page in todo:
        putback_lru_page(k, page)
    return failed + len(todo)


def compact_pages(k: Kernel, pages: Iterable[Page]) -> int:
    """One round of memory compaction (mm/compaction.c, 2.6.35) over candidate pages.

    isolate_migratepages takes each page off the LRU with a speculative reference
    (a page on its way to the allocator is skipped); migrate_pages moves them to
    new frames.  Returns how many were isolated and moved.
    """
    from rmapsim import swap

    isolated = [page for page in pages if swap.isolate(k, page)]
    if not isolated:
        return 0
    moved = len(isolated) - migrate_pages(k, isolated)
    atomic_add(moved, k.migrated)
    return moved
