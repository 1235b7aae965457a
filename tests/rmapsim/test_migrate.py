"""Page migration (mm/migrate.c): the two walks, the references, and the race that
leaves a migration entry behind when vma_adjust moves a vma under the second walk."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rmapsim import Kernel, SingleThreadSync, ThreadingSync, audit, migrate
from rmapsim.errors import KernelBug, UseAfterFree
from rmapsim.structs import VM_READ, VM_WRITE, PteKind

pytestmark = pytest.mark.timeout(60)

RW = VM_READ | VM_WRITE
BASE = 0x10000
VARIANTS = ["2.6.34", "2.6.34+anon-vma-refcount", "2.6.35", "2.6.36"]


def kernel(variant: str, memory: str = "reuse", **kw: Any) -> Kernel:
    return Kernel(variant, memory=memory, sync=SingleThreadSync(), **kw)


def pfns(k: Kernel, name: str) -> dict[int, int]:
    return {a: p.page.pfn for a, p in k.task(name).ptes.items() if p.page is not None}


@pytest.mark.parametrize("variant", VARIANTS)
def test_migration_moves_each_page_and_remaps_every_mapping(variant: str) -> None:
    k = kernel(variant)
    k.spawn("P")
    k.mmap("P", BASE, 3, RW)
    k.touch("P", BASE, 3, True)
    k.fork("P", "C")
    before = pfns(k, "P")
    assert k.migrate("P", BASE, 3) == 0
    after = pfns(k, "P")
    assert set(after) == set(before) and all(after[a] != before[a] for a in before)
    assert pfns(k, "C") == after  # the child's PTEs were turned into the new pages too
    for pte in k.task("P").ptes.values():
        assert pte.kind is PteKind.PRESENT and pte.page is not None
        assert pte.page.count == 2 and pte.page.mapcount == 1  # two PTEs, no stray reference
        assert not pte.page.lock.locked()
    assert k.pages.in_use == 3  # the old frames went back
    assert audit(k) == []
    k.exit("C")
    k.exit("P")
    assert k.pages.in_use == 0 and k.mem.live_objects == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_swap_cache_page_moves_in_the_cache_behind_swap_entries(variant: str) -> None:
    k = kernel(variant)
    k.spawn("P")
    k.mmap("P", BASE, 1, RW)
    k.touch("P", BASE, 1, True)
    k.swapout(None)
    assert k.touch("P", BASE, 1, False) == 0  # read back: in the swap cache and mapped
    old = k.task("P").ptes[BASE].page
    assert old is not None and old.swapcache
    slot = old.private
    assert k.migrate("P", BASE, 1) == 0
    pte = k.task("P").ptes[BASE]
    assert pte.kind is PteKind.SWAP and pte.slot == slot  # unmapped like reclaim does
    new = k.swap.cache[slot]
    assert new is not old and new.swapcache and not old.in_use
    assert k.touch("P", BASE, 1, False) == 0
    assert k.task("P").ptes[BASE].page is new
    assert audit(k) == []


@pytest.mark.parametrize(
    ("variant", "walks"), [("2.6.34", True), ("2.6.34+anon-vma-refcount", False)]
)
def test_an_unmapped_page_is_left_alone_from_2_6_35(variant: str, walks: bool) -> None:
    """67b9509b: 2.6.34 walks the anon_vma of a page whose process is gone (freed)."""
    k = kernel(variant, memory="kasan")
    k.spawn("P")
    k.mmap("P", BASE, 1, RW)
    k.touch("P", BASE, 1, True)
    page = k.task("P").ptes[BASE].page
    assert page is not None
    k.get_page(page)  # isolated by compaction ...
    k.get_page(page)  # ... and looked at by someone else
    k.exit("P")  # the anon_vma is freed
    k.mem.quiesce()  # and its grace period is over
    if walks:
        with pytest.raises(UseAfterFree, match="rmap_walk_anon"):
            migrate.migrate_pages(k, [page])
    else:
        assert migrate.migrate_pages(k, [page]) == 1  # never migrated, put back
        assert page.count == 1


def test_a_left_behind_entry_is_a_bug_on_the_next_fault_and_an_audit_finding() -> None:
    k = kernel("2.6.34")
    k.spawn("P")
    k.mmap("P", BASE, 1, RW)
    k.touch("P", BASE, 1, True)
    page = k.task("P").ptes[BASE].page
    assert page is not None
    # What a missed second walk leaves: the entry, and the page's migration over.
    from rmapsim.structs import Pte

    k.task("P").ptes[BASE] = Pte(PteKind.MIGRATION, page, write=True)
    found = audit(k)
    assert [v.invariant for v in found] == ["I8"]
    assert "migration entry" in found[0].summary and "P at 0x10000" in found[0].summary
    with pytest.raises(KernelBug, match=r"BUG_ON\(!PageLocked\(p\)\).*P at 0x10000"):
        k.touch("P", BASE, 1, False)


def race_second_walk_against_mprotect(variant: str) -> tuple[Kernel, list[str]]:
    """Migration's second walk runs while mprotect has moved next->vm_start, not vm_pgoff.

    P maps four pages, [0x10000,0x12000) rw and [0x12000,0x14000) r; mprotect of
    0x11000 to r shrinks the first vma and grows the second down (vma_merge case 4).
    The migration thread installs its entries, then waits for mprotect to reach the
    half-written boundary; mprotect waits (at most 1 s) for the migration to end.
    """
    entries = threading.Event()
    in_window = threading.Event()
    migrated = threading.Event()
    log: list[str] = []

    def hook(where: str) -> None:
        me = threading.current_thread().name
        if me == "migrate" and where == "unmap_and_move:copying" and not entries.is_set():
            entries.set()
            in_window.wait(5)
        elif me == "mprotect" and where == "vma_adjust:next->vm_start written":
            in_window.set()
            log.append("mprotect waits" if migrated.wait(1.0) else "mprotect gave up waiting")

    k = Kernel(variant, sync=ThreadingSync(), yield_point=hook)
    k.spawn("P")
    k.mmap("P", BASE, 4, RW)
    k.touch("P", BASE, 4, True)
    assert k.mprotect("P", BASE + 0x2000, 2, VM_READ) == 0
    errors: list[BaseException] = []

    def run(name: str, fn: Any) -> threading.Thread:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the test
                errors.append(exc)

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        return t

    def do_migrate() -> None:
        k.migrate("P", BASE + 0x1000, 1)
        migrated.set()

    mig = run("migrate", do_migrate)
    assert entries.wait(10)
    mp = run("mprotect", lambda: k.mprotect("P", BASE + 0x1000, 1, VM_READ))
    mig.join(10)
    mp.join(10)
    assert not mig.is_alive() and not mp.is_alive() and errors == []
    return k, log


def test_the_second_walk_misses_a_vma_being_moved_before_2_6_36() -> None:
    k, log = race_second_walk_against_mprotect("2.6.34+anon-vma-refcount")
    assert log == ["mprotect waits"]  # the walk ran inside mprotect's window
    assert [v.invariant for v in audit(k)] == ["I8"]
    with pytest.raises(KernelBug, match="left behind"):
        k.touch("P", BASE + 0x1000, 1, False)


def test_the_root_lock_keeps_the_second_walk_out_of_vma_adjust_in_2_6_36() -> None:
    k, log = race_second_walk_against_mprotect("2.6.36")
    assert log == ["mprotect gave up waiting"]  # the walk needed the lock mprotect held
    assert audit(k) == []
    assert k.touch("P", BASE + 0x1000, 1, False) == 0
    assert k.task("P").ptes[BASE + 0x1000].kind is PteKind.PRESENT
