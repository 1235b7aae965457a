"""mm/rmap.c: anon_vma chains, page->mapping, and the reverse-map walks.

(Allocating, locking and pinning an anon_vma is `rmapsim.anon_vma`; its names are
re-exported here, where the kernel's callers find them.)

Every function follows the 2.6.34 step lists of anon-vma-2010.md (§4); where a
variant changes a rule, the docstring names the patch and its source.  Locks are
taken and released explicitly, in the kernel's order (anon_vma->lock before
page_table_lock), so that a defect raised half-way leaves them held as an oops
would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rmapsim.anon_vma import (
    anon_vma_alloc,
    anon_vma_chain_alloc,
    anon_vma_chain_free,
    anon_vma_free,
    anon_vma_lock,
    anon_vma_lockptr,
    anon_vma_unlock,
    anonvma_external_refcount,
    drop_anon_vma,
    get_anon_vma,
    page_anon_vma,
)
from rmapsim.atomic import (
    atomic_add_negative,
    atomic_inc,
    atomic_inc_and_test,
    atomic_read,
    atomic_set,
)
from rmapsim.errors import KernelOops
from rmapsim.structs import (
    AVC_SAME_ANON_VMA,
    AVC_SAME_VMA,
    PAGE_SHIFT,
    VM_LOCKED,
    AnonVma,
    AnonVmaChain,
    MmStruct,
    Page,
    Pte,
    PteKind,
    VmArea,
    linear_page_index,
    shadow_oldest,
)

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

EFAULT = -14
ENOMEM = -12

SWAP_SUCCESS, SWAP_AGAIN, SWAP_FAIL, SWAP_MLOCK = 0, 1, 2, 3
TTU_UNMAP = 0
TTU_MIGRATION = 1
TTU_ACTION = 0xFF
TTU_IGNORE_MLOCK = 1 << 8
TTU_IGNORE_ACCESS = 1 << 9


def page_mapped(page: Page) -> bool:
    return atomic_read(page._mapcount) >= 0


def page_mapcount(page: Page) -> int:
    return atomic_read(page._mapcount) + 1


# -- chains ------------------------------------------------------------------------------


def anon_vma_prepare(k: Kernel, vma: VmArea) -> int:
    """Give `vma` an anon_vma before its first anonymous page (mmap_sem held for read).

    2.6.34 (§4.2): fast path when one is set; otherwise reuse a neighbour's
    (find_mergeable_anon_vma) or allocate one, and link it under anon_vma->lock then
    page_table_lock, re-checking vma->anon_vma against a racing fault of another
    thread.  The lock is taken even on a fresh anon_vma (d9d332e0): a stale
    page_lock_anon_vma may be spinning on this very slab object.

    root-anon-vma (5c341ee1): a fresh anon_vma is the root of its own tree, and the
    lock taken is the root's.  root-rmap (26ba0cb6): the edge goes to the tail of the
    anon_vma's list, so an rmap walk in progress cannot miss it.

    rik-v2 (reconstructed from the seed mail): when a mergeable neighbour with an
    anon_vma exists, link `vma` to all of the neighbour's anon_vmas with
    anon_vma_clone and return, with only mmap_sem held for read, setting nothing else.
    """
    anon_vma = vma.anon_vma
    if anon_vma is None:
        from rmapsim import mmap

        mm = vma.vm_mm
        if k.variant.rik_v2:
            near = mmap.find_mergeable_vma(k, vma)
            if near is not None:
                k.sched("anon_vma_prepare:rik-v2 clone")
                vma.shadow_oldest = shadow_oldest(near)
                return anon_vma_clone(k, vma, near)
        avc: AnonVmaChain | None = anon_vma_chain_alloc(k)
        anon_vma = mmap.find_mergeable_anon_vma(k, vma)
        allocated = None
        if anon_vma is None:
            anon_vma = anon_vma_alloc(k)
            allocated = anon_vma
            if k.variant.root_anon_vma:
                anon_vma.root = anon_vma  # type: ignore[attr-defined]
        k.sched("anon_vma_prepare:before locks")
        anon_vma_lock(k, anon_vma)
        mm.page_table_lock.acquire()
        if vma.anon_vma is None:
            assert avc is not None
            vma.anon_vma = anon_vma
            vma.shadow_oldest = anon_vma
            avc.anon_vma = anon_vma
            avc.vma = vma
            k.lists.list_add(avc.same_vma, vma.anon_vma_chain)
            if k.variant.root_rmap:
                k.lists.list_add_tail(avc.same_anon_vma, anon_vma.head)
            else:
                k.lists.list_add(avc.same_anon_vma, anon_vma.head)
            allocated = None
            avc = None
        mm.page_table_lock.release()
        anon_vma_unlock(k, anon_vma)
        if allocated is not None:
            anon_vma_free(k, allocated)
        if avc is not None:
            anon_vma_chain_free(k, avc)
    return 0


def anon_vma_chain_link(k: Kernel, vma: VmArea, avc: AnonVmaChain, anon_vma: AnonVma) -> None:
    """Make `avc` the edge (vma, anon_vma): head of vma's chain, tail of anon_vma's list."""
    avc.vma = vma
    avc.anon_vma = anon_vma
    k.lists.list_add(avc.same_vma, vma.anon_vma_chain)
    anon_vma_lock(k, anon_vma)
    k.lists.list_add_tail(avc.same_anon_vma, anon_vma.head)
    anon_vma_unlock(k, anon_vma)


def anon_vma_clone(k: Kernel, dst: VmArea, src: VmArea) -> int:
    """Link `dst` to every anon_vma of `src`.

    2.6.34-rc3 (§4.4): walks src's chain forward; with head insertion the copy comes
    out in reverse order.  clone-order ("anon_vma: clone the anon_vma chain in the
    right order"): walks it in reverse, so dst keeps src's newest->oldest order.
    clone-sets-anon-vma (Linus' suggestion in the seed mail): the success path ends
    with dst->anon_vma = src->anon_vma.
    """
    walk = k.walks.for_each_entry_reverse if k.variant.clone_order else k.walks.for_each_entry
    for pavc in walk(src.anon_vma_chain, AVC_SAME_VMA, what="anon_vma_clone"):
        avc = anon_vma_chain_alloc(k)
        anon_vma_chain_link(k, dst, avc, pavc.anon_vma)
    if k.variant.clone_sets_anon_vma:
        dst.anon_vma = src.anon_vma
    return 0


def anon_vma_fork(k: Kernel, vma: VmArea, pvma: VmArea) -> int:
    """Child vma: an edge to every anon_vma of the parent vma, then its own (§4.5).

    root-anon-vma (5c341ee1, 76545066): the new anon_vma's root is the parent's root,
    pinned by a reference the child's anon_vma drops when it is freed; vma->anon_vma
    is set before the edge is linked.
    """
    if pvma.anon_vma is None:
        return 0
    if anon_vma_clone(k, vma, pvma):
        return ENOMEM
    anon_vma: Any = anon_vma_alloc(k)
    avc = anon_vma_chain_alloc(k)
    if k.variant.root_anon_vma:
        anon_vma.root = pvma.anon_vma.root  # type: ignore[attr-defined]
        get_anon_vma(k, anon_vma.root)
        vma.anon_vma = anon_vma
        anon_vma_chain_link(k, vma, avc, anon_vma)
    else:
        anon_vma_chain_link(k, vma, avc, anon_vma)
        vma.anon_vma = anon_vma
    vma.shadow_oldest = shadow_oldest(pvma)
    return 0


def anon_vma_unlink(k: Kernel, avc: AnonVmaChain) -> None:
    """Take `avc` off its anon_vma's list; free the anon_vma when that empties it.

    An anon_vma pinned by a reference (KSM, migration, a child's pin on its root) is
    left to the last drop_anon_vma.  root-anon-vma (76545066): freeing a child
    anon_vma drops its pin on the root first.
    """
    anon_vma: Any = avc.anon_vma
    if anon_vma is None:  # anon_vma_fork failed half-way
        return
    anon_vma_lock(k, anon_vma)
    k.lists.list_del(avc.same_anon_vma)
    empty = k.lists.list_empty(anon_vma.head) and not anonvma_external_refcount(k, anon_vma)
    anon_vma_unlock(k, anon_vma)
    if empty:
        if k.variant.root_anon_vma and anon_vma.root is not anon_vma:
            drop_anon_vma(k, anon_vma.root)
        anon_vma_free(k, anon_vma)


def unlink_anon_vmas(k: Kernel, vma: VmArea) -> None:
    """Drop every edge of `vma`, newest first (§4.6); vma->anon_vma is left as is."""
    for avc in k.walks.for_each_entry_safe(
        vma.anon_vma_chain, AVC_SAME_VMA, what="unlink_anon_vmas"
    ):
        anon_vma_unlink(k, avc)
        k.lists.list_del(avc.same_vma)
        anon_vma_chain_free(k, avc)


def anon_vma_merge(k: Kernel, vma: VmArea, next: VmArea) -> None:
    """`next` is being merged into `vma` by vma_adjust.

    2.6.34-rc3 and 2.6.34 (§4.7): discard next's chain, which is right only when the
    two chains are equal (I5, which d0e9fe17 establishes).

    hannes-merge (the seed mail's diff): if vma's chain is not singular, next's
    chain is a subset of it and is dropped; otherwise next's edges are moved to vma
    one by one (the one on vma->anon_vma is dropped), each under its anon_vma's lock.
    """
    k.VM_BUG_ON(
        vma.anon_vma is not next.anon_vma,
        "vma->anon_vma != next->anon_vma",
        vma=vma.describe(),
        next=next.describe(),
    )
    if not k.variant.hannes_merge or not k.lists.list_is_singular(vma.anon_vma_chain):
        unlink_anon_vmas(k, next)
        return
    for avc in k.walks.drain(next.anon_vma_chain, AVC_SAME_VMA, what="anon_vma_merge"):
        anon_vma: AnonVma = avc.anon_vma
        if anon_vma is vma.anon_vma:
            anon_vma_lock(k, anon_vma)
            k.lists.list_del(avc.same_anon_vma)
            anon_vma_unlock(k, anon_vma)
            k.lists.list_del(avc.same_vma)
            anon_vma_chain_free(k, avc)
        else:
            anon_vma_lock(k, anon_vma)
            avc.vma = vma
            k.lists.list_move_tail(avc.same_vma, vma.anon_vma_chain)
            anon_vma_unlock(k, anon_vma)
            vma.shadow_oldest = shadow_oldest(next)  # next's ancestors are vma's now


# -- page->mapping ---------------------------------------------------------------------


def __page_set_anon_rmap(k: Kernel, page: Page, vma: VmArea, address: int, exclusive: bool) -> None:
    """Point page->mapping at an anon_vma of `vma` and set page->index.

    2.6.34-rc3 (2.6.33's form, §4.10): always vma->anon_vma, the newest.
    oldest-anon-vma (ea90002b): only an exclusive page gets vma->anon_vma; any other
    gets the anon_vma of the last entry of vma's chain, the oldest ancestor, which
    every vma that may share the page is linked to.
    root-rmap (288468c3): a page that already has an anon_vma keeps it; any other
    non-exclusive page gets anon_vma->root (with root-anon-vma; the chain's last
    entry otherwise).
    """
    anon_vma: Any = vma.anon_vma
    k.BUG_ON(anon_vma is None, "!anon_vma", vma=vma.describe(), page=page.name)
    if k.variant.root_rmap:
        if page.mapping is not None:  # PageAnon(page): the mapping it has is a family one
            return
        if not exclusive:
            if k.variant.root_anon_vma:
                anon_vma = anon_vma.root
            else:
                anon_vma = k.walks.container_of(vma.anon_vma_chain.prev, AVC_SAME_VMA).anon_vma
    elif k.variant.oldest_anon_vma and not exclusive:
        avc = k.walks.container_of(vma.anon_vma_chain.prev, AVC_SAME_VMA)
        anon_vma = avc.anon_vma
    page.mapping = anon_vma
    page.mapping_gen = anon_vma.gen
    page.index = linear_page_index(vma, address)


def __page_check_anon_rmap(k: Kernel, page: Page, vma: VmArea, address: int) -> None:
    """CONFIG_DEBUG_VM: an added mapping must agree with page->index.

    With anon_vma chains a page may legitimately point at an ancestor of
    vma->anon_vma, so (as in 2.6.34) only the index is checked.  root-rmap
    (44ab57a0, with root-anon-vma): the page's anon_vma and the vma's share a root.
    """
    if k.variant.root_rmap and k.variant.root_anon_vma:
        mapping: Any = page.mapping
        vav: Any = vma.anon_vma
        k.VM_BUG_ON(
            mapping is not None and vav is not None and mapping.root is not vav.root,
            "page_anon_vma(page)->root != vma->anon_vma->root",
            page=page.name,
            vma=vma.describe(),
        )
    k.VM_BUG_ON(
        page.index != linear_page_index(vma, address),
        "page->index != linear_page_index(vma, address)",
        page=page.name,
        vma=vma.describe(),
    )


def page_move_anon_rmap(k: Kernel, page: Page, vma: VmArea, address: int) -> None:
    """do_wp_page reuses a page it owns alone: move it to vma's own anon_vma."""
    anon_vma: Any = vma.anon_vma
    k.VM_BUG_ON(not page.lock.locked(), "!PageLocked(page)", page=page.name)
    k.VM_BUG_ON(anon_vma is None, "!anon_vma", vma=vma.describe())
    k.VM_BUG_ON(
        page.index != linear_page_index(vma, address),
        "page->index != linear_page_index(vma, address)",
        page=page.name,
    )
    page.mapping = anon_vma
    page.mapping_gen = anon_vma.gen


def page_add_anon_rmap(k: Kernel, page: Page, vma: VmArea, address: int) -> None:
    """Map an existing page (swap-in, migration).  Caller holds the PTE and page locks."""
    do_page_add_anon_rmap(k, page, vma, address, False)


def do_page_add_anon_rmap(
    k: Kernel, page: Page, vma: VmArea, address: int, exclusive: bool
) -> None:
    """page_add_anon_rmap; do_swap_page says whether the page is ours alone (ad8c2ee8)."""
    first = atomic_inc_and_test(page._mapcount)
    k.VM_BUG_ON(not page.lock.locked(), "!PageLocked(page)", page=page.name)
    k.VM_BUG_ON(
        address < vma.vm_start or address >= vma.vm_end,
        "address outside vma",
        page=page.name,
        vma=vma.describe(),
    )
    if first:
        __page_set_anon_rmap(k, page, vma, address, exclusive)
    else:
        __page_check_anon_rmap(k, page, vma, address)


def page_add_new_anon_rmap(k: Kernel, page: Page, vma: VmArea, address: int) -> None:
    """Map a brand-new page: mapcount 0, exclusive, onto the LRU."""
    k.VM_BUG_ON(address < vma.vm_start or address >= vma.vm_end, "address outside vma")
    atomic_set(page._mapcount, 0)  # no other user can see it yet
    __page_set_anon_rmap(k, page, vma, address, True)
    k.pages.lru_cache_add(page)


def page_dup_rmap(k: Kernel, page: Page) -> None:
    """fork's copy_one_pte: one more mapping of an already set-up page."""
    atomic_inc(page._mapcount)


def page_remove_rmap(k: Kernel, page: Page) -> None:
    """One PTE fewer.  page->mapping is left set: it is only trusted while mapped."""
    atomic_add_negative(-1, page._mapcount)


# -- walks --------------------------------------------------------------------------------


def page_lock_anon_vma(k: Kernel, page: Page) -> AnonVma | None:
    """Lock the anon_vma of a page found off the LRU (§4.11).

    Inside rcu_read_lock: read page->mapping once; bail out unless it is anonymous
    and the page is mapped (a mapped page keeps its anon_vma alive, which is exactly
    what I1/I2 must guarantee); then spin on its lock.  The race window is between
    the check and the spin_lock: the page may be unmapped and the anon_vma freed and
    reused meanwhile (d9d332e0 locks even a fresh anon_vma because of it).

    root-anon-vma: the lock is anon_vma->root's, read again by page_unlock_anon_vma;
    a reused anon_vma's ->root can change in between, so the unlock may go to
    another root's lock and leave this one held.  root-lock-recheck (f18194275c39):
    read ->root once, lock it, and check page_mapped() again before succeeding.
    """
    k.mem.rcu_read_lock()
    anon_vma: Any = page.mapping
    if anon_vma is None or not page_mapped(page):
        k.mem.rcu_read_unlock()
        return None
    k.sched("page_lock_anon_vma:before spin_lock")
    if k.variant.root_lock_recheck:
        root = anon_vma.root if k.variant.root_anon_vma else anon_vma
        root.lock.acquire()
        if page_mapped(page):
            return anon_vma  # type: ignore[no-any-return]
        root.lock.release()
        k.mem.rcu_read_unlock()
        return None
    anon_vma_lockptr(k, anon_vma).acquire()  # anon_vma_lock(), inline as in the kernel
    return anon_vma  # type: ignore[no-any-return]


def page_unlock_anon_vma(k: Kernel, anon_vma: AnonVma) -> None:
    anon_vma_lockptr(k, anon_vma).release()  # anon_vma_unlock(): ->root read again
    k.mem.rcu_read_unlock()


def vma_address(page: Page, vma: VmArea) -> int:
    """Where `page` would be mapped in `vma`, or -EFAULT when outside it.

    Reads vm_start/vm_pgoff with no lock of the vma's own (the migration race).
    """
    if vma is None:
        raise KernelOops(
            "BUG: unable to handle kernel NULL pointer dereference at 0000000000000008 "
            "(vma->vm_start of an anon_vma_chain whose vma is NULL)",
            address=8,
        )
    start = vma.vm_start
    address = start + ((page.index - vma.vm_pgoff) << PAGE_SHIFT)
    if address < start or address >= vma.vm_end:
        return EFAULT
    return address


def page_check_address(
    k: Kernel, page: Page, mm: MmStruct, address: int, sync: bool
) -> tuple[Pte, Any] | None:
    """The PTE mapping `page` at `address` in `mm` and its lock, returned held."""
    ptes: dict[int, Pte] | None = getattr(mm, "ptes", None)
    if ptes is None:
        raise KernelOops(
            f"unable to handle kernel paging request: pgd_offset through vm_mm "
            f"{getattr(mm, 'name', mm)!r}, which is not an mm_struct",
            mm=getattr(mm, "name", repr(mm)),
        )
    pte = ptes.get(address)
    if not sync and (pte is None or pte.kind is not PteKind.PRESENT):
        return None
    ptl = k.pte_lockptr(mm, address)
    ptl.acquire()
    pte = ptes.get(address)
    if pte is not None and pte.kind is PteKind.PRESENT and pte.page is page:
        return pte, ptl
    ptl.release()
    return None


def page_referenced_one(
    k: Kernel, page: Page, vma: VmArea, address: int, mapcount: list[int], vm_flags: list[int]
) -> int:
    mm = vma.vm_mm
    found = page_check_address(k, page, mm, address, False)
    if found is None:
        return 0
    pte, ptl = found
    referenced = 0
    if vma.vm_flags & VM_LOCKED:
        mapcount[0] = 1
        vm_flags[0] |= VM_LOCKED
    elif pte.young:
        pte.young = False  # ptep_clear_flush_young
        referenced = 1
    mapcount[0] -= 1
    ptl.release()
    if referenced:
        vm_flags[0] |= vma.vm_flags
    return referenced


def page_referenced_anon(k: Kernel, page: Page, vm_flags: list[int]) -> int:
    """Count the young PTEs of `page` through its anon_vma, holding anon_vma->lock."""
    anon_vma = page_lock_anon_vma(k, page)
    if anon_vma is None:
        return 0
    referenced = 0
    mapcount = [page_mapcount(page)]
    for avc in k.walks.for_each_entry(
        anon_vma.head,
        AVC_SAME_ANON_VMA,
        what="page_referenced_anon",
        lock=anon_vma_lockptr(k, anon_vma),
    ):
        vma = avc.vma
        address = vma_address(page, vma)
        if address == EFAULT:
            continue
        referenced += page_referenced_one(k, page, vma, address, mapcount, vm_flags)
        if not mapcount[0]:
            break
    page_unlock_anon_vma(k, anon_vma)
    return referenced


def page_referenced(k: Kernel, page: Page, is_locked: bool = True) -> tuple[int, int]:
    """(referenced PTEs, vm_flags of the vmas that referenced it)."""
    vm_flags = [0]
    referenced = 0
    if page_mapped(page) and page.mapping is not None:
        referenced = page_referenced_anon(k, page, vm_flags)
    return referenced, vm_flags[0]


def try_to_unmap_one(k: Kernel, page: Page, vma: VmArea, address: int, flags: int) -> int:
    """Replace the PTE mapping `page` in `vma` by its swap entry, or a migration entry.

    A page in the swap cache gets a swap entry whatever the caller; only a page
    outside it gets a migration entry (TTU_MIGRATION), which holds no reference.
    """
    from rmapsim import swap

    mm = vma.vm_mm
    found = page_check_address(k, page, mm, address, False)
    if found is None:
        return SWAP_AGAIN
    pte, ptl = found
    if not (flags & TTU_IGNORE_MLOCK) and vma.vm_flags & VM_LOCKED:
        ptl.release()
        return SWAP_MLOCK
    if not (flags & TTU_IGNORE_ACCESS) and pte.young:
        pte.young = False
        ptl.release()
        return SWAP_FAIL
    if pte.dirty:
        page.dirty = True
    if page.swapcache:
        slot = page.private
        if swap.swap_duplicate(k, slot) < 0:
            ptl.release()
            return SWAP_FAIL
        mm.ptes[address] = Pte(PteKind.SWAP, slot=slot)
    else:
        k.BUG_ON(
            flags & TTU_ACTION != TTU_MIGRATION,
            "TTU_ACTION(flags) != TTU_MIGRATION",
            page=page.name,
        )
        mm.ptes[address] = Pte(PteKind.MIGRATION, page, write=pte.write)
    page_remove_rmap(k, page)
    k.put_page(page)
    ptl.release()
    return SWAP_AGAIN


def try_to_unmap_anon(k: Kernel, page: Page, flags: int) -> int:
    anon_vma = page_lock_anon_vma(k, page)
    ret = SWAP_AGAIN
    if anon_vma is None:
        return ret
    for avc in k.walks.for_each_entry(
        anon_vma.head,
        AVC_SAME_ANON_VMA,
        what="try_to_unmap_anon",
        lock=anon_vma_lockptr(k, anon_vma),
    ):
        vma = avc.vma
        address = vma_address(page, vma)
        if address == EFAULT:
            continue
        ret = try_to_unmap_one(k, page, vma, address, flags)
        if ret != SWAP_AGAIN or not page_mapped(page):
            break
    page_unlock_anon_vma(k, anon_vma)
    return ret


def try_to_unmap(k: Kernel, page: Page, flags: int = TTU_UNMAP) -> int:
    k.BUG_ON(not page.lock.locked(), "!PageLocked(page)", page=page.name)
    ret = try_to_unmap_anon(k, page, flags)
    if ret != SWAP_MLOCK and not page_mapped(page):
        ret = SWAP_SUCCESS
    return ret


RmapOne = Callable[[Page, VmArea, int, Any], int]


def rmap_walk_anon(k: Kernel, page: Page, rmap_one: RmapOne, arg: Any) -> int:
    """Migration's walk: no page_mapped check and no RCU; the caller keeps it alive.

    2.6.34: the caller's rcu_read_lock only keeps the memory an anon_vma (SLAB_
    DESTROY_BY_RCU); anon-vma-refcount: migration pins it with a reference.
    root-anon-vma: the lock is the root's, which also excludes vma_adjust moving a
    vma of the tree under the walk (012f1800).
    """
    anon_vma: Any = page_anon_vma(page)
    if anon_vma is None:
        return SWAP_AGAIN
    ret = SWAP_AGAIN
    anon_vma_lock(k, anon_vma)
    for avc in k.walks.for_each_entry(
        anon_vma.head,
        AVC_SAME_ANON_VMA,
        what="rmap_walk_anon",
        lock=anon_vma_lockptr(k, anon_vma),
    ):
        vma = avc.vma
        address = vma_address(page, vma)
        if address == EFAULT:
            continue
        ret = rmap_one(page, vma, address, arg)
        if ret != SWAP_AGAIN:
            break
    anon_vma_unlock(k, anon_vma)
    return ret
