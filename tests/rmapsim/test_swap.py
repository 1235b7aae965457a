"""The swap cache's page references: never revive a page reclaim freed.

A plain get_page taken after the lookup can come too late: reclaim may drop the
swap cache's reference in between and free the page, and the late get_page revives a
free page that is then freed a second time.  Found by running the workload under
`pytest --rmapstress-watch` (slower, Python-level locks open the window).  So
free_swap_and_cache takes its reference under swap_lock, and the lock-free lookups take
a speculative one that fails on a freed page (find_get_page).  Here the window is
forced open: by a swap_lock that lets "another CPU" run as it is released, or by
reclaim run at the lookup's scheduling point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rmapsim import swap
from rmapsim.kernel import Kernel


class RacingLock:
    """swap_lock whose next release first runs `then` (another CPU getting in)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.then: Callable[[], None] | None = None

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        hook, self.then = self.then, None
        if hook is not None:
            hook()


def cached_page(k: Kernel) -> tuple[Any, int]:
    """A page held only by the swap cache, its slot named by one swap PTE."""
    page = k.pages.alloc_page()
    slot = k.swap.get_swap_page()
    swap.add_to_swap_cache(k, page, slot)
    k.swap.map[slot].count = 1
    k.put_page(page)  # the allocation's reference: only the swap cache's is left
    return page, slot


def reclaim(k: Kernel, page: Any) -> Callable[[], None]:
    """What reclaim does to an unmapped swap cache page: drop it from the cache."""

    def run() -> None:
        vars(swap)["__delete_from_swap_cache"](k, page)
        k.put_page(page)

    return run


def test_zapping_the_last_swap_pte_takes_its_page_reference_under_swap_lock() -> None:
    k = Kernel("2.6.34")
    page, slot = cached_page(k)
    k.swap.lock = RacingLock()  # type: ignore[assignment]
    k.swap.lock.then = reclaim(k, page)  # type: ignore[attr-defined]
    swap.free_swap_and_cache(k, slot)  # raised "kernel BUG: freeing page#0 twice"
    assert not page.in_use and page.count == 0


def test_a_swap_cache_lookup_takes_no_reference_on_a_page_reclaim_freed() -> None:
    # The lookup takes no lock (RCU in the kernel): reclaim may free the page between
    # reading the slot and taking the reference.  The reference is speculative, so it
    # fails on the freed page and the lookup looks again, instead of reviving it.
    k = Kernel("2.6.34")
    page, slot = cached_page(k)
    late = reclaim(k, page)
    seen: list[str] = []

    def window(where: str) -> None:
        seen.append(where)
        if where == "find_get_page:speculative" and len(seen) == 1:
            late()

    k.yield_point = window
    found = swap.lookup_swap_cache(k, slot)
    assert seen[0] == "find_get_page:speculative"
    assert found is None and not page.in_use and page.count == 0


def test_a_swap_cache_lookup_takes_a_reference_beside_the_cache() -> None:
    k = Kernel("2.6.34")
    page, slot = cached_page(k)
    found = swap.lookup_swap_cache(k, slot)
    assert found is page and page.in_use and page.count == 2
    k.put_page(page)
    assert page.in_use and page.count == 1  # the swap cache's reference is left
