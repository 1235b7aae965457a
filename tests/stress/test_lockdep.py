"""Lock-order checking: inversions named before they deadlock, nesting, and the chain cache."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from stress import Config, Monitor

pytestmark = pytest.mark.timeout(30)


def _order_verdicts(mon: Monitor) -> list[Any]:
    return [v for v in mon.verdicts if v.kind == "lock-order"]


def test_abba_inversion_is_reported_without_any_deadlock(thread: Any) -> None:
    mon = Monitor(Config(timing=False), name="abba")
    a = mon.mutex("alpha", "alpha#1")
    b = mon.mutex("beta", "beta#1")

    def forward() -> None:
        with a, b:  # alpha -> beta
            pass

    def backward() -> None:
        with b, a:  # beta -> alpha: closes the cycle
            pass

    thread(forward, name="forward").join(5)
    thread(backward, name="backward").join(5)
    verdicts = _order_verdicts(mon)
    assert len(verdicts) == 1
    v = verdicts[0]
    assert v.source == "lockdep"
    assert v.threads == ["backward", "forward"]
    assert {"alpha#1", "beta#1"} <= set(v.locks)
    assert sorted(set(v.lock_classes)) == ["alpha", "beta"]
    assert v.evidence["new_dependency"] == "beta -> alpha"
    assert v.evidence["cycle"] == "beta -> alpha -> beta"
    # Both chains, each with where it was taken (this file, the with-statement lines).
    new, existing = v.chain
    assert new.startswith("new:      backward takes alpha#1 (alpha) while holding beta#1 (beta)")
    assert "test_lockdep.py" in new and "in backward" in new
    assert existing.startswith("existing: alpha -> beta: first taken by forward")
    assert "test_lockdep.py" in existing and "in forward" in existing
    assert set(v.stacks) == {"backward", "forward (first alpha -> beta)"}
    mon.stop()


def test_inversion_is_named_before_the_deadlock_it_causes(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast.replace(stop_on=frozenset({"deadlock"})), name="abba")
    a = mon.mutex("alpha", "alpha#1")
    b = mon.mutex("beta", "beta#1")
    both = threading.Barrier(2, timeout=5)

    def one() -> None:
        with a:
            both.wait()
            with b:
                pass

    def two() -> None:
        with b:
            both.wait()
            with a:
                pass

    mon.spawn(one, name="one", tracked=False)
    mon.spawn(two, name="two", tracked=False)
    result = mon.run()
    kinds = [v.kind for v in result.verdicts]
    assert kinds == ["lock-order", "deadlock"]
    order, dead = result.verdicts
    assert order.at_s <= dead.at_s
    assert set(dead.threads) == {"one", "two"}


def test_nesting_two_locks_of_one_class_needs_the_annotation() -> None:
    mon = Monitor(Config(timing=False), name="nesting")
    parent = mon.mutex("anon_vma", "anon_vma#1")
    child = mon.mutex("anon_vma", "anon_vma#2")
    with parent:
        child.acquire_nested(1)  # annotated: a different subclass key
        child.release()
    assert _order_verdicts(mon) == []
    with parent, child:  # not annotated: possible recursive locking
        pass
    verdicts = _order_verdicts(mon)
    assert len(verdicts) == 1
    assert verdicts[0].summary.startswith(
        "possible recursive locking: MainThread takes anon_vma#2 while holding anon_vma#1"
    )
    assert "acquire_nested()" in verdicts[0].summary
    # A lock made in a subclass nests under its class without annotation.
    inner = mon.mutex("anon_vma", "anon_vma#3", subclass=2)
    with parent, inner:
        pass
    assert len(_order_verdicts(mon)) == 1
    mon.stop()


def test_known_chains_skip_the_slow_path() -> None:
    mon = Monitor(Config(timing=False), name="cache")
    a = mon.mutex("alpha", "alpha#1")
    b = mon.mutex("beta", "beta#1")
    c = mon.mutex("gamma", "gamma#1")
    counts: list[int] = []

    def chains() -> None:  # a thread of its own holds nothing else (under a watch too)
        with a, b, c:
            pass
        counts.append(mon.lockdep.slow_checks)
        for _ in range(1000):
            with a, b, c:
                pass
        with a:  # a lock taken with nothing held never asks lockdep
            pass
        counts.append(mon.lockdep.slow_checks)

    t = threading.Thread(target=chains, name="chains")
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert counts == [2, 2]  # alpha -> beta, beta -> gamma; then never again
    assert mon.stats()["lockdep"]["dependencies"] == 2
    mon.stop()


def test_three_class_cycle_and_trylocks() -> None:
    mon = Monitor(Config(timing=False), name="cycle3")
    a, b, c = (mon.mutex(n, f"{n}#1") for n in ("alpha", "beta", "gamma"))
    with a, b:
        pass
    with b, c:
        pass
    # A trylock cannot wait, so it adds no dependency (as in the kernel).
    with c:
        assert a.acquire(blocking=False)
        a.release()
    assert _order_verdicts(mon) == []
    with c, a:  # gamma -> alpha closes alpha -> beta -> gamma
        pass
    (v,) = _order_verdicts(mon)
    assert v.evidence["cycle"] == "gamma -> alpha -> beta -> gamma"
    assert len(v.evidence["existing_chain"]) == 2
    mon.stop()


def test_runs_do_not_share_their_lock_order(thread: Any) -> None:
    first = Monitor(Config(timing=False), name="first")
    a1, b1 = first.mutex("alpha", "a"), first.mutex("beta", "b")
    with a1, b1:
        pass
    first.stop()
    second = Monitor(Config(timing=False), name="second")
    a2, b2 = second.mutex("alpha", "a"), second.mutex("beta", "b")
    with b2, a2:  # the opposite order, but in another run: no verdict
        pass
    assert _order_verdicts(second) == []
    assert set(second.lockdep.classes) == {"alpha", "beta"}
    second.stop()


def test_lock_order_verdict_is_recorded_once_per_dependency() -> None:
    mon = Monitor(Config(timing=False), name="once")
    a, b = mon.mutex("alpha", "a"), mon.mutex("beta", "b")
    with a, b:
        pass
    start = time.monotonic()
    for _ in range(50):
        with b, a:
            pass
    assert time.monotonic() - start < 5
    assert len(_order_verdicts(mon)) == 1
    assert _order_verdicts(mon)[0].count == 1
    mon.stop()
