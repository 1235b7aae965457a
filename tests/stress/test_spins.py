"""Declared busy-waits: a spin on a word that never frees is a soft lockup with its evidence."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stress import Config, Monitor

pytestmark = pytest.mark.timeout(30)


def spin_on_dead_word(mon: Monitor, word: list[int], held: Any) -> None:
    with held:
        mon.progress()
        with mon.spin(
            "spin_lock", "lock word @0x1000", evidence=lambda: {"word": hex(word[0])}
        ) as s:
            while word[0] != 0:
                s.step()


def test_spin_that_never_ends_is_a_soft_lockup(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="spin")
    page = mon.spinlock("page_lock", "page#3.lock")
    word = [0x0201]
    spinner = mon.spawn(spin_on_dead_word, mon, word, page, name="kswapd-0")

    def victim() -> None:
        while not page.locked():
            mon.pause(0.001)
        with page:
            pass

    mon.spawn(victim, name="p1/t0", tracked=False)
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["livelock"]
    (v,) = result.verdicts
    assert v.summary.startswith("soft lockup: kswapd-0 has spun ")
    assert "in spin_lock on lock word @0x1000" in v.summary
    assert "holding page#3.lock; 1 waiting behind it" in v.summary
    assert v.evidence["word"] == "0x201" and v.evidence["looks"] > 0
    assert v.evidence["held"] == ["page#3.lock"] and v.evidence["waiters"] == 1
    assert any("p1/t0 waits for page#3.lock" in line for line in v.chain)
    assert "spin_on_dead_word" in v.to_dict()["where"]["kswapd-0"]
    assert spinner.error is None  # cancelled, not crashed
    assert mon.spins == {}


def test_spin_that_ends_is_no_verdict(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=1.0), name="spin-ok")
    word = [1]
    lock = threading.Lock()

    def writer() -> None:
        mon.pause(0.05)
        word[0] = 0  # another CPU frees the word

    def spinner() -> None:
        with mon.spin("spin_lock", "lock word @0x2000") as s:
            while word[0] != 0:
                s.step()
                with lock:
                    pass
        mon.progress()

    mon.spawn(writer, name="writer", tracked=False)
    mon.spawn(spinner, name="spinner", tracked=False)
    result = mon.run()
    assert result.outcome == "clean"
