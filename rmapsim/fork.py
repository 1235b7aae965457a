"""kernel/fork.c and exit: new address spaces, dup_mmap, and the last mmput.

At fork every vma of the parent is copied with anon_vma_fork (an edge to each of
the parent vma's anon_vmas, then a new anon_vma of the child's own) and its PTEs
are copied write-protected, both mms' mmap_sem held for writing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmapsim import memory, mmap, rmap
from rmapsim.atomic import atomic_dec_and_test, atomic_set
from rmapsim.structs import VM_LOCKED, MmStruct, VmArea

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

ENOMEM = -12


def mm_alloc(k: Kernel, comm: str) -> MmStruct:
    """allocate_mm + mm_init: an empty address space with fresh locks."""
    mm: MmStruct = k.mem.alloc(k.mm_cachep)
    mm.comm = comm
    mm.mmap = None
    mm.mmap_cache = None
    atomic_set(mm.mm_users, 1)
    mm.map_count = 0
    mm.mmap_sem = k.sync.rwsem("mmap_sem", f"{comm}.mmap_sem")
    mm.page_table_lock = k.sync.spinlock("page_table_lock", f"{comm}.page_table_lock")
    k.lists.INIT_LIST_HEAD(mm.mmlist)
    mm.ptes = {}
    mm.ptlocks = {}
    mm.junk = None
    return mm


def dup_mmap(k: Kernel, mm: MmStruct, oldmm: MmStruct) -> int:
    """Copy every vma of oldmm into the new mm (both mmap_sems held for writing)."""
    oldmm.mmap_sem.down_write()
    nested = getattr(mm.mmap_sem, "down_write_nested", None)
    if nested is not None:
        nested(1)
    else:
        mm.mmap_sem.down_write()
    retval = 0
    try:
        mm.mmap = None
        mm.map_count = 0
        prev: VmArea | None = None
        mpnt = oldmm.mmap
        while mpnt is not None:
            tmp = mmap.vma_alloc(k)
            mmap.vma_copy(tmp, mpnt)
            k.lists.INIT_LIST_HEAD(tmp.anon_vma_chain)
            if rmap.anon_vma_fork(k, tmp, mpnt):
                k.mem.free(tmp)
                retval = ENOMEM
                break
            tmp.vm_flags &= ~VM_LOCKED
            tmp.vm_mm = mm
            tmp.vm_next = None
            if prev is None:
                mm.mmap = tmp
            else:
                prev.vm_next = tmp
            prev = tmp
            mm.map_count += 1
            retval = memory.copy_page_range(k, mm, oldmm, mpnt)
            if retval:
                break
            mpnt = mpnt.vm_next
    finally:
        mm.mmap_sem.up_write()
        oldmm.mmap_sem.up_write()
    return retval


def do_fork(k: Kernel, parent: MmStruct, comm: str) -> tuple[MmStruct | None, int]:
    """copy_mm: a child address space duplicated from the parent's."""
    mm = mm_alloc(k, comm)
    err = dup_mmap(k, mm, parent)
    if err:
        mmput(k, mm)
        return None, err
    return mm, 0


def mmput(k: Kernel, mm: MmStruct) -> None:
    """The last user of mm is gone: exit_mmap, then free the mm."""
    if not atomic_dec_and_test(mm.mm_users):
        return
    mmap.exit_mmap(k, mm)
    mm.ptes.clear()  # the page tables go with the mm (mm_free_pgd)
    k.mem.free(mm)


def do_exit(k: Kernel, mm: MmStruct) -> None:
    """exit_mm: the task drops its mm (no other user in this model)."""
    mmput(k, mm)
