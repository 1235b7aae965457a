"""struct anon_vma: allocation, locking and pinning (include/linux/rmap.h, mm/rmap.c).

The static inlines of include/linux/rmap.h (anon_vma_lock/unlock, get_anon_vma)
and the rmap.c helpers that free an anon_vma when its last pin goes
(drop_anon_vma).  Which lock "the anon_vma's lock" is depends on the kernel: its
own in 2.6.34 and 2.6.35, its root's from 2.6.36 (root-anon-vma), read through
``->root`` at every lock and every unlock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rmapsim.atomic import atomic_dec_and_lock, atomic_dec_and_test, atomic_inc, atomic_read
from rmapsim.structs import AnonVma, AnonVmaChain, Page

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel


# -- allocation ------------------------------------------------------------------------


def anon_vma_alloc(k: Kernel) -> AnonVma:
    av: AnonVma = k.mem.alloc(k.anon_vma_cachep)
    return av


def anon_vma_free(k: Kernel, anon_vma: AnonVma) -> None:
    k.mem.free(anon_vma)


def anon_vma_chain_alloc(k: Kernel) -> AnonVmaChain:
    avc: AnonVmaChain = k.mem.alloc(k.anon_vma_chain_cachep)
    return avc


def anon_vma_chain_free(k: Kernel, avc: AnonVmaChain) -> None:
    k.mem.free(avc)


# -- locking and pinning -------------------------------------------------------------


def anon_vma_lockptr(k: Kernel, anon_vma: Any) -> Any:
    """The lock that guards `anon_vma`'s list: its own, or (root-anon-vma) its root's.

    012f1800 reads anon_vma->root at every lock and unlock: nothing pins the two
    reads to the same root but the caller's guarantee that the anon_vma is alive.
    """
    return anon_vma.root.lock if k.variant.root_anon_vma else anon_vma.lock


def anon_vma_lock(k: Kernel, anon_vma: Any) -> None:
    anon_vma_lockptr(k, anon_vma).acquire()


def anon_vma_unlock(k: Kernel, anon_vma: Any) -> None:
    anon_vma_lockptr(k, anon_vma).release()


def get_anon_vma(k: Kernel, anon_vma: Any) -> None:
    """Pin an anon_vma (KSM, migration; root-anon-vma: a child pins its root)."""
    atomic_inc(anon_vma.external_refcount)


def anonvma_external_refcount(k: Kernel, anon_vma: Any) -> int:
    """The pins on an anon_vma (2.6.34: ksm_refcount, always 0 here without KSM)."""
    return atomic_read(anon_vma.external_refcount) if k.variant.has_refcount else 0


def drop_anon_vma(k: Kernel, anon_vma: Any) -> None:
    """Drop a pin; the last one frees an anon_vma whose list is empty.

    anon-vma-refcount (2.6.35, inlined in unmap_and_move): atomic_dec_and_lock on
    the anon_vma's lock, free if the list is empty.  root-anon-vma (76545066): the
    lock is the root's, and freeing a child also drops the child's pin on its root,
    freeing the root too when that was the last user of an empty root.  root-rmap
    (44ab57a0) BUGs on a count that is not positive.
    """
    root_tree = k.variant.root_anon_vma
    if k.variant.root_rmap:
        k.BUG_ON(
            atomic_read(anon_vma.external_refcount) <= 0,
            "atomic_read(&anon_vma->external_refcount) <= 0",
            anon_vma=anon_vma.name,
        )
    if not atomic_dec_and_lock(anon_vma.external_refcount, anon_vma_lockptr(k, anon_vma)):
        return
    root = anon_vma.root if root_tree else anon_vma
    empty = k.lists.list_empty(anon_vma.head)
    last_root_user = root_empty = False
    if root_tree and empty and anon_vma is not root:
        if k.variant.root_rmap:
            k.BUG_ON(
                atomic_read(root.external_refcount) <= 0,
                "atomic_read(&root->external_refcount) <= 0",
                anon_vma=root.name,
            )
        last_root_user = atomic_dec_and_test(root.external_refcount)
        root_empty = k.lists.list_empty(root.head)
    anon_vma_unlock(k, anon_vma)
    if empty:
        anon_vma_free(k, anon_vma)
        if root_empty and last_root_user:
            anon_vma_free(k, root)


def page_anon_vma(page: Page) -> Any:
    """page->mapping of an anonymous page (None when the page has none)."""
    return page.mapping
