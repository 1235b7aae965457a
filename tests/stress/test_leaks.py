"""Leaked locks: an unlock that went to the wrong lock, and a taker that exited.

Each test injects the fault on purpose with plain harness locks (nothing of the
model), then checks the verdict's kind, the lock it names, where that lock was
taken and which unlock went astray.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from stress import Config, Monitor, NotOwnerError

pytestmark = pytest.mark.timeout(30)


def lock_root(root: Any) -> None:
    root.acquire()
    return None  # the taking frame goes on to another line after the acquire


def unlock_root_through_a_pointer_that_moved(other: Any) -> None:
    other.release()  # meant for the lock taken in lock_root


def leaky_walker(mon: Monitor, root: Any, other: Any, again: bool = False, queue: int = 0) -> None:
    lock_root(root)
    while len(root.waiters()) < queue:  # let the victims queue up first
        mon.pause(0.005)
    unlock_root_through_a_pointer_that_moved(other)
    mon.progress()
    if again:
        root.acquire()  # comes back for the lock it leaked
    while True:
        mon.pause(0.01)


def test_unlock_of_the_wrong_lock_leaks_the_right_one(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="leak")
    root = mon.spinlock("anon_vma", "root#1")
    other = mon.spinlock("anon_vma", "anon_vma#2")
    mon.spawn(leaky_walker, mon, root, other, False, 1, name="kswapd-0")

    def victim() -> None:
        while not root.locked():
            time.sleep(0.001)
        with root:
            pass

    mon.spawn(victim, name="proc-1/t0", tracked=False)
    result = mon.run()
    kinds = [v.kind for v in result.verdicts]
    assert kinds == ["leaked-lock"], kinds
    (v,) = result.verdicts
    assert v.summary.startswith("root#1 is held by nobody inside it: kswapd-0 took it at ")
    assert "in lock_root" in v.summary
    assert "its unlock went to anon_vma#2 (held by nobody)" in v.summary
    assert "in unlock_root_through_a_pointer_that_moved" in v.summary
    ev = v.evidence
    assert ev["lock"] == "root#1" and ev["taken_by"] == "kswapd-0"
    assert ev["unlock_went_to"] == "anon_vma#2" and ev["that_lock_was"] == "held by nobody"
    assert "in lock_root: root.acquire(), called from leaky_walker" in ev["taken_at"]
    assert any("unlock_root_through" in line for line in ev["unlock_stack"])
    assert ev["waiters"] == 1 and "proc-1/t0" in v.threads
    assert any("proc-1/t0 waits for root#1" in line for line in v.chain)
    assert v.locks == ["root#1", "anon_vma#2"]
    # The signature is the wrong unlock's stack, so repeats of one bug count as one.
    assert "unlock_root_through_a_pointer_that_moved" in v.signature


def test_taker_that_comes_back_is_a_leak_not_a_self_deadlock(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast, name="retake")
    root = mon.spinlock("anon_vma", "root#1")
    other = mon.spinlock("anon_vma", "anon_vma#2")
    worker = mon.spawn(leaky_walker, mon, root, other, True, name="kswapd-0")
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["leaked-lock"]
    (v,) = result.verdicts
    assert v.source == "lock"
    assert "kswapd-0 now spins on it itself" in v.summary
    assert worker.error is None


def test_exited_taker(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="exited")
    lock = mon.spinlock("page_lock", "page#7.lock")
    taken = threading.Event()

    def take_and_leave() -> None:
        lock.acquire()
        taken.set()

    def victim() -> None:
        taken.wait(5)
        with lock:
            pass

    mon.spawn(take_and_leave, name="oom-killed", tracked=False)
    mon.spawn(victim, name="reclaim", tracked=False)
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["leaked-lock"]
    (v,) = result.verdicts
    assert "oom-killed took it at " in v.summary and "in take_and_leave" in v.summary
    assert "exited without releasing it" in v.summary
    assert v.evidence["taker_now"] == "which has exited"
    assert "unlock_went_to" not in v.evidence


def test_a_crashed_taker_is_explained_by_its_crash(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="crash")
    lock = mon.spinlock("page_lock", "page#7.lock")

    def oops() -> None:
        lock.acquire()
        raise RuntimeError("BUG: unable to handle kernel NULL pointer dereference")

    mon.spawn(oops, name="kswapd-0", tracked=False)
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["crash"]


def test_takers_that_reported_a_defect_are_explained_too(
    monitor_factory: Any, fast: Config
) -> None:
    """Two threads hit the same bug (one verdict, counted twice) and die holding locks."""
    mon = monitor_factory(fast.replace(linger_s=0.3), name="oopses")
    locks = [mon.spinlock("page_lock", f"page#{i}.lock") for i in range(2)]
    both = threading.Barrier(2, timeout=5)

    def oops(lock: Any) -> None:
        lock.acquire()
        both.wait()
        mon.report_defect("crash", "kernel BUG in the same place")  # then the thread dies

    for i, lock in enumerate(locks):
        mon.spawn(oops, lock, name=f"p{i}/t0", tracked=False)
    result = mon.run()
    assert [(v.kind, v.count) for v in result.verdicts] == [("crash", 2)]


def test_stray_unlock_then_proper_unlock_is_no_leak(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=0.8), name="no-leak")
    a = mon.spinlock("alpha", "alpha#1")
    b = mon.spinlock("beta", "beta#1")

    def worker() -> None:
        while True:
            a.acquire()
            b.release()  # a stray unlock, but the right lock is released right after
            a.release()
            mon.progress()
            mon.pause(0.01)

    mon.spawn(worker, name="w0")
    result = mon.run()
    assert result.outcome == "clean", [v.summary for v in result.verdicts]
    assert len(mon.strays) > 5 and not a.locked() and not b.locked()


def test_a_strict_mutex_still_refuses_a_stray_unlock(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="strict")
    lock = mon.mutex("plain", "plain#1")
    with pytest.raises(NotOwnerError):
        lock.release()
    assert mon.strays == []


def test_a_threading_lock_left_to_another_thread_is_no_leak(
    monitor_factory: Any, fast: Config
) -> None:
    # threading.Lock has no owner: taking it in one thread and releasing it in another
    # is legal (CPython's lock_tests do it), so its taker's exit proves nothing.
    from stress.tsync import Lock

    mon = monitor_factory(fast, name="handed-over")
    lock = Lock(monitor=mon)
    polls_while_left: list[int] = []

    def take_and_leave() -> None:
        lock.acquire()

    def release_later(taker: Any) -> None:
        while not taker.finished:
            mon.pause(0.005)
        wd = mon._watchdog
        first = wd.polls
        while wd.polls < first + 3:  # the watchdog looks at the dead taker's hold
            mon.pause(0.005)
        polls_while_left.append(wd.polls - first)
        lock.release()
        mon.cancel("done")

    taker = mon.spawn(take_and_leave, name="signaller", tracked=False)
    mon.spawn(release_later, taker, name="releaser", tracked=False)
    result = mon.run()
    assert polls_while_left and polls_while_left[0] >= 3
    assert [v.kind for v in result.verdicts] == []
    assert not lock.locked()


def test_a_threading_rlock_left_held_leaks_once_someone_waits(
    monitor_factory: Any, fast: Config
) -> None:
    # An RLock only its owner can release: left held by a thread that exited, it is lost.
    # Nobody is the worse until someone waits for it (CPython's lock_tests leave one so).
    from stress.tsync import RLock

    mon = monitor_factory(fast, name="rlock-left")
    lock = RLock(monitor=mon)
    quiet_polls: list[int] = []

    def take_and_leave() -> None:
        lock.acquire()

    def come_later(taker: Any) -> None:
        while not taker.finished:
            mon.pause(0.005)
        wd = mon._watchdog
        first = wd.polls
        while wd.polls < first + 3:
            mon.pause(0.005)
        quiet_polls.append(len(mon.verdicts))
        lock.acquire()  # waits for ever: the run ends on the verdict

    taker = mon.spawn(take_and_leave, name="owner", tracked=False)
    mon.spawn(come_later, taker, name="latecomer", tracked=False)
    result = mon.run()
    assert quiet_polls == [0]  # three looks at the dead owner's hold: nothing said
    assert [v.kind for v in result.verdicts] == ["leaked-lock"]
    (v,) = result.verdicts
    assert "owner" in v.summary and "exited without releasing it" in v.summary
    assert v.evidence["waiters"] == 1 and "latecomer" in v.text()
