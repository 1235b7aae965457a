"""stress.samples: what a thread's CPU and run-queue history says over a hold.

The histories are fed as the watchdog's polls record them (cumulative nanoseconds per
poll), so the rules are checked on exact figures; test_watchdog checks them against the
OS on real threads.
"""

from __future__ import annotations

import pytest

from stress.samples import Sample

pytestmark = pytest.mark.timeout(30)

POLL = 0.05


def history(cpu_share: float, wait_share: float, *, polls: int = 20, t0: float = 10.0) -> Sample:
    """A sample of `polls` polls in which the thread ran and waited for a CPU at the
    given shares of each poll."""
    sample = Sample(t0, window=polls)
    cpu = wait = 0
    for i in range(polls + 1):
        t = t0 + i * POLL
        sample.cpu.append((t, cpu))
        sample.waits.append((t, wait, i))
        cpu += int(cpu_share * POLL * 1e9)
        wait += int(wait_share * POLL * 1e9)
    return sample


def test_queued_since_is_the_run_queue_wait_in_the_window() -> None:
    sample = history(0.1, 0.5)  # 20 polls of 50 ms: 1 s, half of it queued
    assert sample.queued_since(10.0) == pytest.approx(0.5, rel=1e-6)
    assert sample.queued_since(10.5) == pytest.approx(0.25, rel=1e-6)
    assert sample.cpu_since(10.5) == pytest.approx(0.05, rel=1e-6)


def test_queued_since_counts_only_the_window() -> None:
    # Queued before t, asleep after it: nothing queued since t.
    sample = Sample(0.0, window=40)
    cpu = wait = 0
    for i in range(41):
        t = i * POLL
        sample.cpu.append((t, cpu))
        sample.waits.append((t, wait, i))
        if i < 20:
            cpu += int(0.05 * POLL * 1e9)
            wait += int(0.8 * POLL * 1e9)
    assert sample.queued_since(0.0) == pytest.approx(0.8, rel=1e-6)
    assert sample.queued_since(20 * POLL) == 0.0


def test_without_run_queue_samples_nothing_was_queued() -> None:
    sample = history(0.1, 0.9, polls=1)
    assert sample.queued_since(10.0 + POLL) == 0.0  # one sample in the window: no span
    sample.waits.clear()
    assert sample.queued_since(0.0) == 0.0
