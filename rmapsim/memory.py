"""mm/memory.c: page faults, COW, swap-in, zapping PTEs, copying them at fork.

Faults run under mmap_sem held for reading, so threads of one mm fault
concurrently; the PTE is re-checked under its PTE lock (pte_same) the way the
kernel does before anything is installed.  The PTE lock is the page table's own
with split PTE locks (`Kernel.pte_lockptr`), else mm->page_table_lock.

A migration entry (a PTE naming a page being migrated) faults like a swap entry:
do_swap_page waits for the migration to end and the access is retried
(migration_entry_wait, mm/migrate.c).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmapsim import migrate, rmap, swap
from rmapsim.structs import (
    PMD_SHIFT,
    VM_EXEC,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    Page,
    Pte,
    PteKind,
    VmArea,
)

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

VM_FAULT_OOM = 0x0001
VM_FAULT_SIGBUS = 0x0002
VM_FAULT_MAJOR = 0x0004
EFAULT = -14
MAX_FAULT_RETRIES = 16


def _maybe_mkwrite(vma: VmArea) -> bool:
    return bool(vma.vm_flags & VM_WRITE)


def do_anonymous_page(k: Kernel, mm: MmStruct, vma: VmArea, address: int, write: bool) -> int:
    """First touch of an anonymous page: the zero page on read, a new page on write."""
    ptl = k.pte_lockptr(mm, address)
    if not write:
        ptl.acquire()
        if mm.ptes.get(address) is None:
            mm.ptes[address] = Pte(PteKind.ZERO, write=False)
        ptl.release()
        return 0
    if rmap.anon_vma_prepare(k, vma):
        return VM_FAULT_OOM
    page = k.pages.alloc_page()
    entry = Pte(PteKind.PRESENT, page, write=_maybe_mkwrite(vma), dirty=True)
    ptl.acquire()
    if mm.ptes.get(address) is not None:
        ptl.release()
        k.put_page(page)
        return 0
    rmap.page_add_new_anon_rmap(k, page, vma, address)
    mm.ptes[address] = entry
    ptl.release()
    return 0


def do_wp_page(k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: Pte) -> int:
    """Write to a present, write-protected PTE (its PTE lock held; released here).

    Reuse the page when we are its only user (reuse_swap_page), moving it to our
    own anon_vma (page_move_anon_rmap); otherwise copy it (COW) into a new page.
    """
    ptl = k.pte_lockptr(mm, address)
    old_page = orig.page if orig.kind is PteKind.PRESENT else None
    if old_page is not None:
        if not old_page.lock.acquire(False):
            k.get_page(old_page)
            ptl.release()
            old_page.lock.acquire()
            ptl.acquire()
            if not orig.same(mm.ptes.get(address)):
                old_page.lock.release()
                k.put_page(old_page)
                ptl.release()
                return 0
            k.put_page(old_page)
        reuse = swap.reuse_swap_page(k, old_page)
        if reuse:
            rmap.page_move_anon_rmap(k, old_page, vma, address)
        old_page.lock.release()
        if reuse:
            pte = mm.ptes[address]
            pte.young = pte.dirty = True
            pte.write = _maybe_mkwrite(vma)
            ptl.release()
            return 0
        k.get_page(old_page)
    ptl.release()
    if rmap.anon_vma_prepare(k, vma):
        if old_page is not None:
            k.put_page(old_page)
        return VM_FAULT_OOM
    new_page: Page | None = k.pages.alloc_page()  # zeroed, or a copy of old_page
    ptl.acquire()
    if orig.same(mm.ptes.get(address)):
        assert new_page is not None
        entry = Pte(PteKind.PRESENT, new_page, write=_maybe_mkwrite(vma), dirty=True)
        rmap.page_add_new_anon_rmap(k, new_page, vma, address)
        mm.ptes[address] = entry
        if old_page is not None:
            rmap.page_remove_rmap(k, old_page)
        new_page = old_page  # drop the reference the old PTE held
    if new_page is not None:
        k.put_page(new_page)
    if old_page is not None:
        k.put_page(old_page)
    ptl.release()
    return 0


def do_swap_page(k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: Pte, write: bool) -> int:
    """Fault on a swap PTE: find the page in the swap cache or read it in, map it.

    2.6.34 order: set the PTE, then page_add_anon_rmap (which on a first mapping
    sets page->mapping by the variant's __page_set_anon_rmap rule), then swap_free.
    A write fault that can reuse the page maps it writable at once; otherwise it
    goes on to do_wp_page.  root-rmap (ad8c2ee8): such a page is exclusive, and its
    first mapping goes to the vma's own anon_vma.  A migration entry is not a swap
    entry: wait for the migration, and let the access fault again.

    2.6.34 trusts pte_same after lock_page; swapin-recheck (4969c1192d15, 2.6.36) also
    checks that the page is still its slot's swap cache page, since reuse_swap_page
    may have freed the slot and two more lives of it may have passed meanwhile.
    """
    ptl = k.pte_lockptr(mm, address)
    ptl.acquire()
    same = orig.same(mm.ptes.get(address))
    ptl.release()
    if not same:
        return 0
    if orig.kind is PteKind.MIGRATION:
        migrate.migration_entry_wait(k, mm, address)
        return 0
    slot = orig.slot
    page = swap.lookup_swap_cache(k, slot)
    ret = 0
    if page is None:
        page = swap.swapin_readahead(k, slot)
        if page is None:
            return 0 if not orig.same(mm.ptes.get(address)) else VM_FAULT_OOM
        ret = VM_FAULT_MAJOR
    k.sched("do_swap_page:before lock_page")
    page.lock.acquire()
    if k.variant.swapin_recheck and (not page.swapcache or page.private != slot):
        page.lock.release()  # the page left the slot's swap cache: fault again
        k.put_page(page)
        return ret
    ptl.acquire()
    if not orig.same(mm.ptes.get(address)):
        ptl.release()
        page.lock.release()
        k.put_page(page)
        return ret
    pte = Pte(PteKind.PRESENT, page, write=False)
    exclusive = False
    if write and swap.reuse_swap_page(k, page):
        pte.write = _maybe_mkwrite(vma)
        pte.dirty = True
        write = False
        exclusive = k.variant.root_rmap
    mm.ptes[address] = pte
    rmap.do_page_add_anon_rmap(k, page, vma, address, exclusive)
    swap.swap_free(k, slot)
    page.lock.release()
    if write:
        return ret | do_wp_page(k, mm, vma, address, pte.copy())
    ptl.release()
    return ret


def handle_pte_fault(k: Kernel, mm: MmStruct, vma: VmArea, address: int, write: bool) -> int:
    entry = mm.ptes.get(address)
    if entry is None:
        return do_anonymous_page(k, mm, vma, address, write)
    if entry.kind is PteKind.SWAP or entry.kind is PteKind.MIGRATION:
        return do_swap_page(k, mm, vma, address, entry.copy(), write)
    orig = entry.copy()
    ptl = k.pte_lockptr(mm, address)
    ptl.acquire()
    cur = mm.ptes.get(address)
    if not orig.same(cur):
        ptl.release()
        return 0
    assert cur is not None
    if write:
        if not cur.write:
            return do_wp_page(k, mm, vma, address, orig)
        cur.dirty = True
    cur.young = True
    ptl.release()
    return 0


def access_error(vma: VmArea, write: bool) -> bool:
    """arch/x86 access_error: writes need VM_WRITE, reads any of R/W/X."""
    if write:
        return not vma.vm_flags & VM_WRITE
    return not vma.vm_flags & (VM_READ | VM_EXEC | VM_WRITE)


def user_access(k: Kernel, mm: MmStruct, address: int, write: bool) -> int:
    """One user-space access to `address`: the MMU, then the fault handler if needed.

    Like a CPU, it retries the access after a fault that changed nothing (a racing
    thread got there first).  Returns 0, or -EFAULT when the kernel would send
    SIGSEGV (no vma, no permission) or could not complete the fault.
    """
    from rmapsim.mmap import find_vma

    mm.mmap_sem.down_read()
    try:
        vma = find_vma(mm, address)
        if vma is None or vma.vm_start > address or access_error(vma, write):
            return EFAULT
        for _ in range(MAX_FAULT_RETRIES):
            pte = mm.ptes.get(address)
            if (
                pte is not None
                and (pte.kind is PteKind.PRESENT or pte.kind is PteKind.ZERO)
                and (pte.write or not write)
            ):
                pte.young = True  # the MMU sets the accessed (and dirty) bits itself
                if write:
                    pte.dirty = True
                return 0
            if handle_pte_fault(k, mm, vma, address, write) & (VM_FAULT_OOM | VM_FAULT_SIGBUS):
                return EFAULT
        return EFAULT
    finally:
        mm.mmap_sem.up_read()


# -- zap, copy, free page tables -------------------------------------------------------


def by_page_table(addresses: list[int]) -> dict[int, list[int]]:
    """Addresses grouped by the page table (2 MiB) that maps them, in address order."""
    tables: dict[int, list[int]] = {}
    for a in sorted(addresses):
        tables.setdefault(a >> PMD_SHIFT, []).append(a)
    return tables


def zap_pte_range(k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int) -> None:
    """Clear the PTEs of [start, end), one page table at a time under its PTE lock.

    A migration entry holds no reference and no swap slot: it is just cleared.
    """
    for addresses in by_page_table([a for a in list(mm.ptes) if start <= a < end]).values():
        ptl = k.pte_lockptr(mm, addresses[0])
        ptl.acquire()
        released: list[Page] = []
        swaps: list[int] = []
        for address in addresses:
            pte = mm.ptes.pop(address, None)
            if pte is None:
                continue
            if pte.kind is PteKind.PRESENT:
                assert pte.page is not None
                if pte.dirty:
                    pte.page.dirty = True
                rmap.page_remove_rmap(k, pte.page)
                released.append(pte.page)
            elif pte.kind is PteKind.SWAP:
                swaps.append(pte.slot)
        ptl.release()
        for slot in swaps:
            swap.free_swap_and_cache(k, slot)
        for page in released:  # tlb_finish_mmu frees the gathered pages after the lock
            k.put_page(page)


def unmap_vmas(k: Kernel, mm: MmStruct, vma: VmArea | None, start: int, end: int) -> None:
    while vma is not None:
        s, e = max(start, vma.vm_start), min(end, vma.vm_end)
        if s < e:
            zap_pte_range(k, mm, vma, s, e)
        vma = vma.vm_next


def free_pgtables(k: Kernel, vma: VmArea | None) -> None:
    """Hide each vma from the rmap before its page tables go (unlink_anon_vmas)."""
    while vma is not None:
        nxt = vma.vm_next
        rmap.unlink_anon_vmas(k, vma)
        vma = nxt


def is_cow_mapping(flags: int) -> bool:
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def copy_page_range(k: Kernel, dst_mm: MmStruct, src_mm: MmStruct, vma: VmArea) -> int:
    """fork: copy the parent's PTEs of `vma`, write-protecting both sides (COW).

    Skipped for a vma with no anon_vma: its faults will fill the child correctly.
    One page table at a time, under the child's PTE lock and (nested) the parent's.
    A migration entry is copied as it is (made read-only in a COW mapping): the
    child's PTE then waits for the same migration.
    """
    if vma.anon_vma is None:
        return 0
    cow = is_cow_mapping(vma.vm_flags)
    tables = by_page_table([a for a in list(src_mm.ptes) if vma.vm_start <= a < vma.vm_end])
    for addresses in tables.values():
        dst_ptl = k.pte_lockptr(dst_mm, addresses[0])
        src_ptl = k.pte_lockptr(src_mm, addresses[0])
        dst_ptl.acquire()
        if src_ptl is not dst_ptl:
            k.lock_nested(src_ptl)
        for address in addresses:
            pte = src_mm.ptes.get(address)
            if pte is None:
                continue
            child = pte.copy()
            if pte.kind is PteKind.SWAP:
                swap.swap_duplicate(k, pte.slot)
            elif pte.kind is PteKind.MIGRATION:
                if cow:
                    pte.write = child.write = False  # make_migration_entry_read
            elif pte.kind is PteKind.PRESENT:
                if cow:
                    pte.write = child.write = False
                child.young = False
                assert pte.page is not None
                k.get_page(pte.page)
                rmap.page_dup_rmap(k, pte.page)
            dst_mm.ptes[address] = child
        if src_ptl is not dst_ptl:
            src_ptl.release()
        dst_ptl.release()
    return 0
