"""mm/mprotect.c: change protections, merging or splitting vmas on the way.

mprotect is the call that splits and re-merges anonymous vmas in the 2010 hunt:
splits share one anon_vma; a later mprotect that makes the flags equal again goes
through vma_merge -> vma_adjust -> anon_vma_merge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmapsim import mmap
from rmapsim.structs import (
    PAGE_SIZE,
    VM_ACCOUNT,
    VM_HUGETLB,
    VM_NORESERVE,
    VM_RWX,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    PteKind,
    VmArea,
)

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

EINVAL, ENOMEM, EACCES = -22, -12, -13


def change_protection(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """Rewrite the present PTEs of [start, end) with the vma's new protection.

    Private mappings never get a writable protection, so every PTE comes out
    write-protected and the next write goes through do_wp_page; a write migration
    entry becomes a read one.  One page table at a time, under its PTE lock.
    """
    from rmapsim.memory import by_page_table

    mm = vma.vm_mm
    writable = bool(vma.vm_page_prot & VM_WRITE)
    for addresses in by_page_table(list(range(start, end, PAGE_SIZE))).values():
        ptl = k.pte_lockptr(mm, addresses[0])
        ptl.acquire()
        for address in addresses:
            pte = mm.ptes.get(address)
            if pte is not None and pte.kind is not PteKind.SWAP:
                pte.write = writable and pte.kind is PteKind.PRESENT
        ptl.release()


def mprotect_fixup(
    k: Kernel, vma: VmArea, prev: VmArea | None, start: int, end: int, newflags: int
) -> tuple[int, VmArea | None]:
    """Give [start, end) of `vma` the flags `newflags`; returns (error, new prev)."""
    mm = vma.vm_mm
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return 0, vma
    if newflags & VM_WRITE and not oldflags & (
        VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE
    ):
        newflags |= VM_ACCOUNT
    pgoff = vma.vm_pgoff + ((start - vma.vm_start) >> 12)
    merged = mmap.vma_merge(k, mm, prev, start, end, newflags, vma.anon_vma, pgoff)
    if merged is not None:
        vma = merged
        prev = merged
    else:
        prev = vma
        if start != vma.vm_start:
            err = mmap.split_vma(k, mm, vma, start, True)
            if err:
                return err, prev
        if end != vma.vm_end:
            err = mmap.split_vma(k, mm, vma, end, False)
            if err:
                return err, prev
    vma.vm_flags = newflags
    vma.vm_page_prot = mmap.vm_get_page_prot(newflags)
    change_protection(k, vma, start, end)
    return 0, prev


def sys_mprotect(k: Kernel, mm: MmStruct, start: int, length: int, prot: int) -> int:
    """mprotect(start, len, prot): every page of the range must be mapped (else ENOMEM)."""
    if start % PAGE_SIZE:
        return EINVAL
    if length == 0:
        return 0
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    end = start + length
    if end <= start:
        return ENOMEM
    vm_flags = mmap.calc_vm_prot_bits(prot)
    mm.mmap_sem.down_write()
    try:
        vma, prev = mmap.find_vma_prev(mm, start)
        if vma is None or vma.vm_start > start:
            return ENOMEM
        if start > vma.vm_start:
            prev = vma
        nstart = start
        while True:
            newflags = vm_flags | (vma.vm_flags & ~VM_RWX)
            if (newflags & ~(newflags >> 4)) & VM_RWX:  # VM_MAY* must allow it
                return EACCES
            tmp = min(vma.vm_end, end)
            err, prev = mprotect_fixup(k, vma, prev, nstart, tmp, newflags)
            if err:
                return err
            assert prev is not None
            nstart = tmp
            if nstart < prev.vm_end:
                nstart = prev.vm_end
            if nstart >= end:
                return 0
            nxt = prev.vm_next
            if nxt is None or nxt.vm_start != nstart:
                return ENOMEM
            vma = nxt
    finally:
        mm.mmap_sem.up_write()
