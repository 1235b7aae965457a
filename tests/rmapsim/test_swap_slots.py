"""Swap slots are handed out as 2.6.34's scan_swap_map does, not last-freed-first.

Runs of SWAPFILE_CLUSTER slots one after another; each new run at the lowest stretch of
that many free slots (else at the lowest free slot); a nearly full device goes on where it
was and wraps round; a full one makes reclaim keep the page.  How soon a freed slot comes
back decides how often do_swap_page's swap-in race
(tests/programs/bug5-swapin-race.rmap) can happen at all.
"""

from __future__ import annotations

from rmapsim import swap
from rmapsim.kernel import Kernel
from rmapsim.structs import VM_READ, VM_WRITE, PteKind

CLUSTER = swap.SWAPFILE_CLUSTER


def take(k: Kernel, n: int) -> list[int]:
    return [k.swap.get_swap_page() for _ in range(n)]


def free(k: Kernel, slot: int) -> None:
    swap.swapcache_free(k, slot)  # a slot only the swap cache held


def test_a_run_hands_slots_out_one_after_another() -> None:
    k = Kernel("2.6.34")
    assert take(k, 5) == [1, 2, 3, 4, 5]
    assert all(k.swap.map[s].cache for s in range(1, 6))


def test_a_freed_slot_is_not_handed_out_again_within_the_run() -> None:
    k = Kernel("2.6.34")
    first = take(k, 3)
    free(k, first[1])
    assert take(k, 2) == [4, 5]
    assert 2 not in k.swap.map


def test_the_next_run_starts_at_the_lowest_wholly_free_stretch() -> None:
    k = Kernel("2.6.34")
    slots = take(k, CLUSTER)
    for s in slots:
        free(k, s)
    assert take(k, 1) == [1]  # the run used up: a new one, back at the bottom


def test_a_slot_still_in_use_pushes_the_next_run_above_it() -> None:
    k = Kernel("2.6.34")
    slots = take(k, CLUSTER)
    for s in slots:
        if s != 10:
            free(k, s)
    assert take(k, 2) == [11, 12]


def test_with_no_free_stretch_the_next_run_starts_at_the_lowest_free_slot() -> None:
    k = Kernel("2.6.34")
    k.swap = swap.SwapState(k, pages=600)
    slots = take(k, 600)
    for s in slots[1::2]:
        free(k, s)  # 300 free slots, none next to another
    k.swap.cluster_next, k.swap.cluster_nr = 400, 0  # a run used up, half way
    assert take(k, 2) == [2, 4]


def test_a_nearly_full_device_goes_on_where_it_was_and_wraps_round() -> None:
    k = Kernel("2.6.34")
    k.swap = swap.SwapState(k, pages=8)
    assert take(k, 8) == list(range(1, 9))
    assert take(k, 1) == [0]  # full
    free(k, 3)
    free(k, 6)
    assert take(k, 2) == [3, 6]  # from the lowest free slot, in order
    free(k, 7)
    free(k, 2)
    assert take(k, 1) == [7]  # goes on from 6, not back to 2
    assert take(k, 1) == [2]  # ... and wraps round


def test_reclaim_keeps_the_page_when_swap_is_full() -> None:
    k = Kernel("2.6.34")
    k.swap = swap.SwapState(k, pages=2)
    k.spawn("P")
    assert k.mmap("P", 0x10000, 3, VM_READ | VM_WRITE) == 0
    assert k.touch("P", 0x10000, 3, True) == 0
    assert k.swapout("P", 0x10000, 3) == 2
    kinds = [k.task("P").ptes[0x10000 + i * 4096].kind for i in range(3)]
    assert kinds == [PteKind.SWAP, PteKind.SWAP, PteKind.PRESENT]
    page = k.task("P").ptes[0x12000].page
    assert page is not None and not page.swapcache and page.in_use
    assert k.touch("P", 0x10000, 1, False) == 0  # slot 1 read back in, still cached
    assert k.swapout("P", 0x12000, 1) == 0  # still full: the page stays
    assert k.munmap("P", 0x11000, 1) == 0  # slot 2 freed with its PTE
    assert k.swapout("P", 0x12000, 1) == 1
    assert k.task("P").ptes[0x12000].slot == 2


def test_the_audit_names_a_swap_pte_whose_slot_is_counted_short_or_free() -> None:
    from rmapsim.audit import audit

    k = Kernel("2.6.34")
    k.spawn("P")
    assert k.mmap("P", 0x10000, 1, VM_READ | VM_WRITE) == 0
    assert k.touch("P", 0x10000, 1, True) == 0
    assert k.fork("P", "C") == 0
    assert k.swapout("P", 0x10000, 1) == 1  # one slot, named by P's and C's PTEs
    slot = k.task("P").ptes[0x10000].slot
    assert k.task("C").ptes[0x10000].slot == slot
    assert k.swap.map[slot].count == 2 and audit(k) == []
    k.swap.map[slot].count = 1  # a swap_duplicate lost
    (v,) = audit(k)
    assert v.invariant == "I9" and v.summary.startswith(f"swap slot {slot} counts 1 swap PTE(s)")
    assert "P at 0x10000, C at 0x10000" in v.summary and "freed while one still" in v.summary
    k.swap.map[slot].count = 0
    swap.swapcache_free(k, slot)  # ... and the slot freed under both PTEs
    (v,) = audit(k)
    assert v.invariant == "I9" and "names swap slot" in v.summary and "which is free" in v.summary
