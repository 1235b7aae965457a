"""2.6.34 stays clean with a thread switch forced into every atomic and swap-cache window,
and fails at once when the old, non-atomic patterns are put back.

The test build (`yield.atomic_windows`, `yield.probability = 1`) yields inside every
atomic operation and at every model yield point, among them the swap cache's
speculative lookup.  The two regressions are the ones the model once had: page
counts changed by a plain load-add-store, and a swap-cache lookup that takes its
reference after dropping the lock (the "freeing page twice" crash under load).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest

from rmapsim import atomic, swap
from rmapsim.kernel import Kernel
from rmapsim.structs import Page
from rmapsim.workload import run_case
from rmapsim.workload.scenario import Yields
from tests.workload.workload_support import inprocess_config, tiny_scenario

WINDOWS = Yields(probability=1.0, atomic_windows=True)


def _old_find_get_page(k: Kernel, slot: int, *, preemptible: bool = True) -> Page | None:
    """The pattern the model had: look up under the lock, take the reference after it."""
    if preemptible:
        with k.swap.lock:
            page = k.swap.cache.get(slot)
    else:  # the caller holds the lock already (free_swap_and_cache)
        page = k.swap.cache.get(slot)
    if page is not None:
        if preemptible:
            k.sched("find_get_page:speculative")
        k.get_page(page)
    return page


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.mark.timeout(60)
@pytest.mark.parametrize("memory", ["kasan", "reuse"])
def test_released_kernel_is_clean_with_every_window_forced(memory: str) -> None:
    # Wide watchdog margins: a thread the loaded machine does not schedule is not a finding.
    scn = dataclasses.replace(
        tiny_scenario(duration_s=5.0, memory=memory),
        yields=WINDOWS,
        watchdog={"walk_s": 1.0, "hold_s": 2.0, "verdict_s": 4.0},
    )
    result = run_case(scn, "2.6.34", 3, config=inprocess_config(scn))
    assert result.outcome == "clean", [(v.kind, v.summary) for v in result.verdicts]
    assert result.stats["ops"] > 100  # it did run
    assert result.stats["model"]["swap_reads"] > 0  # and swapped pages back in


@pytest.mark.timeout(90)
@pytest.mark.parametrize("regression", ["nonatomic page counts", "reference after unlock"])
def test_putting_an_old_pattern_back_fails_at_once(
    regression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scn = dataclasses.replace(tiny_scenario(duration_s=20.0), yields=WINDOWS)
    if regression == "reference after unlock":
        monkeypatch.setattr(swap, "find_get_page", _old_find_get_page)
        ctx = _nothing()
    else:
        ctx = atomic.nonatomic()
    with ctx:
        result = run_case(scn, "2.6.34", 3, config=inprocess_config(scn))
    assert result.outcome == "defect"
    summaries = " | ".join(v.summary for v in result.verdicts)
    # A lost reference frees a page too early: a double free, a bad page state, a
    # get_page on a free page, or a page_count that no longer adds up.
    assert any(
        word in summaries
        for word in ("freeing page", "Bad page state", "_count", "VM_BUG_ON", "BUG_ON")
    ), summaries
