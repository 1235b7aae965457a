"""mm/mmap.c: the VMA list, merging, splitting, vma_adjust, mmap, munmap, exit_mmap.

The rbtree is not modelled: lookups walk the sorted vm_next list, which is what
the tree indexes.  Only private anonymous mappings exist (no files, no
mempolicies, no vm_ops), so the file and policy conditions of the kernel code are
always "equal" here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmapsim import memory, rmap
from rmapsim.anon_vma import anon_vma_lock, anon_vma_unlock
from rmapsim.structs import (
    MMAP_MIN_ADDR,
    PAGE_SHIFT,
    PAGE_SIZE,
    TASK_SIZE,
    VM_ACCOUNT,
    VM_EXEC,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_NORESERVE,
    VM_READ,
    VM_RWX,
    VM_SHARED,
    VM_SPECIAL,
    VM_WRITE,
    AnonVma,
    MmStruct,
    VmArea,
    shadow_oldest,
)

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

EINVAL, ENOMEM, EPERM = -22, -12, -1


# -- the VMA list ----------------------------------------------------------------------


def vma_alloc(k: Kernel) -> VmArea:
    vma: VmArea = k.mem.alloc(k.vm_area_cachep)
    return vma


def vma_zalloc(k: Kernel) -> VmArea:
    """kmem_cache_zalloc: every field zero."""
    vma = vma_alloc(k)
    vma.vm_mm = None  # type: ignore[assignment]
    vma.vm_start = vma.vm_end = 0
    vma.vm_next = None
    vma.vm_page_prot = vma.vm_flags = 0
    vma.anon_vma = None
    vma.vm_pgoff = 0
    vma.junk = None
    vma.shadow_oldest = None
    return vma


def vma_copy(dst: VmArea, src: VmArea) -> None:
    """*dst = *src (the list head pointers too: callers re-initialise them)."""
    dst.vm_mm = src.vm_mm
    dst.vm_start = src.vm_start
    dst.vm_end = src.vm_end
    dst.vm_next = src.vm_next
    dst.vm_page_prot = src.vm_page_prot
    dst.vm_flags = src.vm_flags
    dst.anon_vma_chain.next = src.anon_vma_chain.next
    dst.anon_vma_chain.prev = src.anon_vma_chain.prev
    dst.anon_vma = src.anon_vma
    dst.vm_pgoff = src.vm_pgoff
    dst.junk = dict(src.junk) if src.junk else None
    dst.shadow_oldest = shadow_oldest(src)


def vm_get_page_prot(vm_flags: int) -> int:
    """Private mappings never get a writable protection: writes fault and COW."""
    prot = vm_flags & (VM_READ | VM_EXEC)
    if vm_flags & VM_SHARED:
        prot |= vm_flags & VM_WRITE
    return prot


def find_vma(mm: MmStruct, addr: int) -> VmArea | None:
    """The first vma with vm_end > addr."""
    vma = mm.mmap
    while vma is not None:
        if vma.vm_end > addr:
            return vma
        vma = vma.vm_next
    return None


def find_vma_prev(mm: MmStruct, addr: int) -> tuple[VmArea | None, VmArea | None]:
    """(find_vma(mm, addr), the vma before it)."""
    prev = None
    vma = mm.mmap
    while vma is not None:
        if vma.vm_end > addr:
            return vma, prev
        prev, vma = vma, vma.vm_next
    return None, prev


def vma_link(mm: MmStruct, vma: VmArea, prev: VmArea | None) -> None:
    if prev is not None:
        vma.vm_next = prev.vm_next
        prev.vm_next = vma
    else:
        vma.vm_next = mm.mmap
        mm.mmap = vma
    mm.map_count += 1


def __vma_unlink(mm: MmStruct, vma: VmArea, prev: VmArea | None) -> None:
    if prev is not None:
        prev.vm_next = vma.vm_next
    else:
        mm.mmap = vma.vm_next
    mm.mmap_cache = None


def __insert_vm_struct(mm: MmStruct, vma: VmArea) -> None:
    _, prev = find_vma_prev(mm, vma.vm_start)
    vma_link(mm, vma, prev)


def remove_vma(k: Kernel, vma: VmArea) -> VmArea | None:
    nxt = vma.vm_next
    k.mem.free(vma)
    return nxt


# -- merging rules -----------------------------------------------------------------------


def is_mergeable_vma(vma: VmArea, vm_flags: int) -> bool:
    return vma.vm_flags == vm_flags  # same file (none) and no ->close


def is_mergeable_anon_vma(a1: AnonVma | None, a2: AnonVma | None) -> bool:
    """Pointer equality only: the chains are not compared."""
    return a1 is None or a2 is None or a1 is a2


def can_vma_merge_before(vma: VmArea, vm_flags: int, anon_vma: AnonVma | None, pgoff: int) -> bool:
    return (
        is_mergeable_vma(vma, vm_flags)
        and is_mergeable_anon_vma(anon_vma, vma.anon_vma)
        and vma.vm_pgoff == pgoff
    )


def can_vma_merge_after(vma: VmArea, vm_flags: int, anon_vma: AnonVma | None, pgoff: int) -> bool:
    return (
        is_mergeable_vma(vma, vm_flags)
        and is_mergeable_anon_vma(anon_vma, vma.anon_vma)
        and vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT) == pgoff
    )


def anon_vma_compatible(a: VmArea, b: VmArea) -> bool:
    """d0e9fe17: adjacent, same file and policy, flags equal apart from R/W/X, pgoffs in line."""
    return (
        a.vm_end == b.vm_start
        and not ((a.vm_flags ^ b.vm_flags) & ~VM_RWX)
        and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> PAGE_SHIFT)
    )


def reusable_anon_vma(old: VmArea, a: VmArea, b: VmArea) -> AnonVma | None:
    """d0e9fe17: old's anon_vma, only if old's chain is that single entry."""
    if anon_vma_compatible(a, b):
        anon_vma = old.anon_vma  # read once
        if (
            anon_vma is not None
            and old.anon_vma_chain.next is not old.anon_vma_chain
            and (old.anon_vma_chain.next is old.anon_vma_chain.prev)
        ):
            return anon_vma
    return None


def find_mergeable_vma(k: Kernel, vma: VmArea) -> VmArea | None:
    """The neighbour whose anon_vma `vma` may share, by the variant's rule.

    2.6.34-rc3 (2.6.33's find_mergeable_anon_vma, §4.3): next, then prev, if it has
    an anon_vma and could be merged with `vma` once R/W/X are made equal, whatever
    its chain.  reuse-singular (d0e9fe17): only a neighbour whose chain is a single
    entry (reusable_anon_vma).
    """
    mm = vma.vm_mm
    near = vma.vm_next
    if near is not None:
        if k.variant.reuse_singular:
            if reusable_anon_vma(near, vma, near) is not None:
                return near
        else:
            flags = (vma.vm_flags & ~VM_RWX) | (near.vm_flags & VM_RWX)
            if (
                near.anon_vma is not None
                and vma.vm_end == near.vm_start
                and can_vma_merge_before(
                    near, flags, None, vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT)
                )
            ):
                return near
    found, near = find_vma_prev(mm, vma.vm_start)
    k.BUG_ON(found is not vma, "find_vma_prev(vma->vm_mm, vma->vm_start, &near) != vma")
    if near is None:
        return None
    if k.variant.reuse_singular:
        return near if reusable_anon_vma(near, near, vma) is not None else None
    flags = (vma.vm_flags & ~VM_RWX) | (near.vm_flags & VM_RWX)
    if (
        near.anon_vma is not None
        and near.vm_end == vma.vm_start
        and can_vma_merge_after(near, flags, None, vma.vm_pgoff)
    ):
        return near
    return None


def find_mergeable_anon_vma(k: Kernel, vma: VmArea) -> AnonVma | None:
    """anon_vma_prepare's candidate for reuse: the mergeable neighbour's anon_vma."""
    near = find_mergeable_vma(k, vma)
    return near.anon_vma if near is not None else None


# -- vma_adjust and vma_merge ----------------------------------------------------------


def vma_adjust(
    k: Kernel, vma: VmArea, start: int, end: int, pgoff: int, insert: VmArea | None
) -> int:
    """Move vma's boundaries; absorb or trim next; insert a split-off vma.

    2.6.34-rc3 (§4.9, the 2.6.33 case analysis with the lock replaced by a clone):
    the local anon_vma is next's, or vma's when vma has one; an importer without an
    anon_vma gets ``anon_vma_clone(importer, vma)`` - always from vma, even when vma
    is the importer and next the one with the chain.
    adjust-exporter (287d97ac): track the exporter too and clone from it.
    No anon_vma lock is taken around the boundary writes in either version, so an
    rmap walk (holding only the page's anon_vma lock) can see a vma half-moved.
    root-anon-vma (012f1800): the boundary writes happen under vma->anon_vma's root
    lock when inserting, importing or moving vm_start, which excludes every rmap
    walk of the tree.
    """
    mm = vma.vm_mm
    nxt = vma.vm_next
    importer: VmArea | None = None
    exporter: VmArea | None = None
    anon_vma: AnonVma | None = None
    adjust_next = 0
    remove_next = 0
    again = False
    while True:
        if again or (nxt is not None and insert is None):
            assert nxt is not None
            if again or end >= nxt.vm_end:
                remove_next = 1 + (end > nxt.vm_end)
                end = nxt.vm_end
                anon_vma, exporter, importer = nxt.anon_vma, nxt, vma
            elif end > nxt.vm_start:
                adjust_next = (end - nxt.vm_start) >> PAGE_SHIFT
                anon_vma, exporter, importer = nxt.anon_vma, nxt, vma
            elif end < vma.vm_end:
                adjust_next = -((vma.vm_end - end) >> PAGE_SHIFT)
                anon_vma, exporter, importer = nxt.anon_vma, vma, nxt
        if k.variant.adjust_exporter:
            if (
                exporter is not None
                and importer is not None
                and exporter.anon_vma is not None
                and importer.anon_vma is None
            ):
                if rmap.anon_vma_clone(k, importer, exporter):
                    return ENOMEM
                importer.anon_vma = exporter.anon_vma
                importer.shadow_oldest = shadow_oldest(exporter)
        else:
            if vma.anon_vma is not None and (
                insert is not None or importer is not None or start != vma.vm_start
            ):
                anon_vma = vma.anon_vma
            if anon_vma is not None and importer is not None and importer.anon_vma is None:
                rmap.anon_vma_clone(k, importer, vma)
                importer.anon_vma = anon_vma
                importer.shadow_oldest = shadow_oldest(exporter or vma)
        locked: AnonVma | None = None
        if (
            k.variant.root_anon_vma
            and vma.anon_vma is not None
            and (insert is not None or importer is not None or start != vma.vm_start)
        ):
            locked = vma.anon_vma
            anon_vma_lock(k, locked)
        vma.vm_start = start
        k.sched("vma_adjust:vm_start written")
        vma.vm_end = end
        vma.vm_pgoff = pgoff
        if adjust_next:
            assert nxt is not None
            nxt.vm_start += adjust_next << PAGE_SHIFT
            k.sched("vma_adjust:next->vm_start written")
            nxt.vm_pgoff += adjust_next
        if remove_next:
            assert nxt is not None
            __vma_unlink(mm, nxt, vma)
        elif insert is not None:
            __insert_vm_struct(mm, insert)
        if locked is not None:
            anon_vma_unlock(k, locked)
        if remove_next:
            assert nxt is not None
            if nxt.anon_vma is not None:
                rmap.anon_vma_merge(k, vma, nxt)
            mm.map_count -= 1
            k.mem.free(nxt)
            if remove_next == 2:  # mprotect case 6: swallow the one after too
                nxt = vma.vm_next
                again = True
                continue
        return 0


def vma_merge(
    k: Kernel,
    mm: MmStruct,
    prev: VmArea | None,
    addr: int,
    end: int,
    vm_flags: int,
    anon_vma: AnonVma | None,
    pgoff: int,
) -> VmArea | None:
    """Merge [addr, end) with prev and/or next (mm/mmap.c cases 1-8).  Same in all variants."""
    pglen = (end - addr) >> PAGE_SHIFT
    if vm_flags & VM_SPECIAL:
        return None
    nxt = prev.vm_next if prev is not None else mm.mmap
    area = nxt
    if nxt is not None and nxt.vm_end == end:  # cases 6, 7, 8
        nxt = nxt.vm_next
    if (
        prev is not None
        and prev.vm_end == addr
        and can_vma_merge_after(prev, vm_flags, anon_vma, pgoff)
    ):
        if (
            nxt is not None
            and end == nxt.vm_start
            and can_vma_merge_before(nxt, vm_flags, anon_vma, pgoff + pglen)
            and is_mergeable_anon_vma(prev.anon_vma, nxt.anon_vma)
        ):  # cases 1, 6
            err = vma_adjust(k, prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff, None)
        else:  # cases 2, 5, 7
            err = vma_adjust(k, prev, prev.vm_start, end, prev.vm_pgoff, None)
        return None if err else prev
    if (
        nxt is not None
        and end == nxt.vm_start
        and can_vma_merge_before(nxt, vm_flags, anon_vma, pgoff + pglen)
    ):
        if prev is not None and addr < prev.vm_end:  # case 4
            err = vma_adjust(k, prev, prev.vm_start, addr, prev.vm_pgoff, None)
        else:  # cases 3, 8
            assert area is not None
            err = vma_adjust(k, area, addr, nxt.vm_end, nxt.vm_pgoff - pglen, None)
        return None if err else area
    return None


# -- split, munmap, mmap ------------------------------------------------------------------


def __split_vma(k: Kernel, mm: MmStruct, vma: VmArea, addr: int, new_below: bool) -> int:
    """Cut vma at addr; both halves share its anon_vma and identical chains (§4.13)."""
    new = vma_alloc(k)
    vma_copy(new, vma)
    k.lists.INIT_LIST_HEAD(new.anon_vma_chain)
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
    if rmap.anon_vma_clone(k, new, vma):
        k.mem.free(new)
        return ENOMEM
    if new_below:
        return vma_adjust(
            k, vma, addr, vma.vm_end, vma.vm_pgoff + ((addr - new.vm_start) >> PAGE_SHIFT), new
        )
    return vma_adjust(k, vma, vma.vm_start, addr, vma.vm_pgoff, new)


def split_vma(k: Kernel, mm: MmStruct, vma: VmArea, addr: int, new_below: bool) -> int:
    return __split_vma(k, mm, vma, addr, new_below)


def detach_vmas_to_be_unmapped(mm: MmStruct, vma: VmArea, prev: VmArea | None, end: int) -> None:
    tail = vma
    cur: VmArea | None = vma
    while cur is not None and cur.vm_start < end:
        mm.map_count -= 1
        tail = cur
        cur = cur.vm_next
    if prev is not None:
        prev.vm_next = cur
    else:
        mm.mmap = cur
    tail.vm_next = None
    mm.mmap_cache = None


def unmap_region(k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int) -> None:
    memory.unmap_vmas(k, mm, vma, start, end)
    memory.free_pgtables(k, vma)


def remove_vma_list(k: Kernel, vma: VmArea | None) -> None:
    while vma is not None:
        vma = remove_vma(k, vma)


def do_munmap(k: Kernel, mm: MmStruct, start: int, length: int) -> int:
    """Unmap [start, start+len): split at the ends, detach, zap, unlink, free."""
    if start % PAGE_SIZE or start > TASK_SIZE or length > TASK_SIZE - start:
        return EINVAL
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if length == 0:
        return EINVAL
    vma, prev = find_vma_prev(mm, start)
    if vma is None:
        return 0
    end = start + length
    if vma.vm_start >= end:
        return 0
    if start > vma.vm_start:
        err = __split_vma(k, mm, vma, start, False)
        if err:
            return err
        prev = vma
    last = find_vma(mm, end)
    if last is not None and end > last.vm_start:
        err = __split_vma(k, mm, last, end, True)
        if err:
            return err
    first = prev.vm_next if prev is not None else mm.mmap
    assert first is not None
    detach_vmas_to_be_unmapped(mm, first, prev, end)
    unmap_region(k, mm, first, start, end)
    remove_vma_list(k, first)
    return 0


def accountable_mapping(vm_flags: int) -> bool:
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


def mmap_region(k: Kernel, mm: MmStruct, addr: int, length: int, vm_flags: int, pgoff: int) -> int:
    """Map [addr, addr+len) with MAP_FIXED semantics: unmap what is there, merge or link."""
    while True:
        vma, prev = find_vma_prev(mm, addr)
        if vma is not None and vma.vm_start < addr + length:
            if do_munmap(k, mm, addr, length):
                return ENOMEM
            continue
        break
    if accountable_mapping(vm_flags):
        vm_flags |= VM_ACCOUNT
    if vma_merge(k, mm, prev, addr, addr + length, vm_flags, None, pgoff) is not None:
        return addr
    vma = vma_zalloc(k)
    vma.vm_mm = mm
    vma.vm_start = addr
    vma.vm_end = addr + length
    vma.vm_flags = vm_flags
    vma.vm_page_prot = vm_get_page_prot(vm_flags)
    vma.vm_pgoff = pgoff
    k.lists.INIT_LIST_HEAD(vma.anon_vma_chain)
    vma_link(mm, vma, prev)
    return addr


def calc_vm_prot_bits(prot: int) -> int:
    return prot & VM_RWX  # PROT_READ/WRITE/EXEC have the VM_ bits' values


def sys_mmap(k: Kernel, mm: MmStruct, addr: int, length: int, prot: int) -> int:
    """mmap(addr, len, prot, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0)."""
    if addr % PAGE_SIZE or length <= 0:
        return EINVAL
    if addr < MMAP_MIN_ADDR:
        return EPERM
    if addr + length > TASK_SIZE:
        return ENOMEM
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    pgoff = addr >> PAGE_SHIFT  # "Set pgoff according to addr for anon_vma"
    mm.mmap_sem.down_write()
    ret = mmap_region(k, mm, addr, length, vm_flags, pgoff)
    mm.mmap_sem.up_write()
    return 0 if ret == addr else ret


def sys_munmap(k: Kernel, mm: MmStruct, addr: int, length: int) -> int:
    mm.mmap_sem.down_write()
    ret = do_munmap(k, mm, addr, length)
    mm.mmap_sem.up_write()
    return ret


def exit_mmap(k: Kernel, mm: MmStruct) -> None:
    """The mm's last user is gone: zap everything, unlink the anon_vmas, free the vmas."""
    vma = mm.mmap
    if vma is None:
        return
    memory.unmap_vmas(k, mm, vma, 0, TASK_SIZE + PAGE_SIZE)
    memory.free_pgtables(k, vma)
    remove_vma_list(k, vma)
