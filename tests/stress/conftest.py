"""Fixtures of the stress self-tests: short budgets, monitors that always stop, bounded joins."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stress import Config, Monitor

#: Thresholds scaled down so each injected hang is named in well under a second,
#: with margins wide enough for a loaded 2-core machine.  In-process tests raise
#: StuckThreadsError rather than take the emergency exit (tested in a subprocess).
FAST = Config(
    poll_s=0.02,
    walk_s=0.1,
    hold_s=0.3,
    verdict_s=0.8,
    duration_s=6.0,
    grace_s=2.0,
    backstop_s=5.0,
    status_every_s=0.5,
    on_stuck="raise",  # a stuck run fails its test instead of ending the pytest process
)


@pytest.fixture
def fast() -> Config:
    return FAST


@pytest.fixture
def monitor_factory() -> Iterator[Callable[..., Monitor]]:
    """Make Monitors; each is stopped at teardown even if the test failed half-way."""
    made: list[Monitor] = []

    def make(config: Config | None = None, **kwargs: Any) -> Monitor:
        mon = Monitor(config or FAST, **kwargs)
        made.append(mon)
        return mon

    yield make
    for mon in made:
        mon.stop()


def _join_all(threads: list[threading.Thread], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout} s: {alive}"


@pytest.fixture
def join_all() -> Callable[..., None]:
    """join_all(threads, timeout=5.0): bounded join; fails naming the threads still alive."""
    return _join_all


@pytest.fixture
def thread() -> Iterator[Callable[..., threading.Thread]]:
    """thread(target, *args, name=...): a started daemon thread, joined (bounded) at teardown."""
    made: list[threading.Thread] = []

    def start(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        made.append(t)
        t.start()
        return t

    yield start
    _join_all(made, 10.0)
