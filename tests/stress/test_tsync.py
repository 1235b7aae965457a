"""stress.Lock, RLock and the condition types beyond threading's contract (which
test_tsync_conformance checks): lock classes by creation site, what threading allows
that lockdep must not misread, and objects that outlive their run."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import stress
from stress import Cancelled, Instrumentation, instrument_threading, watch_config
from stress.threads import held_list

pytestmark = pytest.mark.timeout(30)

FAST = watch_config(hold_s=0.3, verdict_s=0.6)


@pytest.fixture
def watch() -> Iterator[Instrumentation]:
    with instrument_threading(FAST, name="tsync") as block:
        yield block


def started(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def kinds(block: Instrumentation) -> list[str]:
    return [v.kind for v in block.verdicts]


def test_lock_classes_are_creation_sites_and_names_are_assignment_targets() -> None:
    line = test_lock_classes_are_creation_sites_and_names_are_assignment_targets.__code__
    first, second = stress.Lock(), stress.RLock()
    site = f"tests/stress/test_tsync.py:{line.co_firstlineno + 2}"
    assert first.lock_class.name == site and second.lock_class.name == site
    assert first.name == f"first@{site}" and second.name == f"second@{site}"
    again = [stress.Lock() for _ in range(2)]
    assert again[1].name.endswith("#2") and again[0].lock_class is again[1].lock_class


def test_library_locks_name_the_users_line(watch: Instrumentation) -> None:
    jobs: queue.Queue[int] = queue.Queue()
    line = test_library_locks_name_the_users_line.__code__.co_firstlineno + 1  # jobs' line
    here = f"tests/stress/test_tsync.py:{line}"
    assert isinstance(jobs.mutex, stress.Lock)
    assert jobs.mutex.name.startswith("self.mutex@queue.py:")
    assert jobs.mutex.name.endswith(f"(for {here})")


def test_a_lock_released_by_another_thread_is_a_signal_not_an_order(
    watch: Instrumentation,
) -> None:
    # The old idiom: a Lock as a one-shot signal.  The main thread takes it, takes it
    # again (waiting for the worker's release), and nests other locks around it.
    done = threading.Lock()
    other = threading.Lock()
    done.acquire()

    def worker() -> None:
        time.sleep(FAST.verdict_s * 2)  # longer than a self-deadlock would take to call
        with other:
            done.release()  # another thread's release: legal for threading.Lock

    t = started(worker, name="signaller")
    with other:
        pass
    assert done.acquire(timeout=10)  # waits for the worker, holding "done" itself
    done.release()
    with done, other:  # and nothing here is an inversion of "other -> done"
        pass
    t.join(5)
    assert kinds(watch) == []


def test_a_with_block_that_gives_its_lock_away_ends_the_takers_hold_as_a_signal(
    watch: Instrumentation,
) -> None:
    # threading.Lock allows it: the block's body releases its lock, another thread
    # takes it, and the block's exit releases that thread's hold.  The exit must not
    # mistake the new taker for the block's own thread: the lock is a signal now.
    lock = threading.Lock()
    other = threading.Lock()
    taken = threading.Event()
    finish = threading.Event()

    def taker() -> None:
        lock.acquire()
        taken.set()
        finish.wait(10)

    with lock:
        t = started(taker, name="taker")
        lock.release()
        assert taken.wait(10)
    assert not lock.locked() and lock.holders() == []
    finish.set()
    t.join(5)
    with other, lock:
        pass
    with lock, other:  # a signal orders nothing: no inversion
        pass
    assert kinds(watch) == []


def test_with_blocks_end_their_own_holds_innermost_first(watch: Instrumentation) -> None:
    before = held_list()[1:]  # what earlier tests left held, if anything
    first, second = threading.Lock(), threading.Lock()
    for _ in range(3):
        with first, second:
            assert held_list()[1:] == [*before, first, second]
        assert held_list()[1:] == before
    first.acquire()
    with second:
        first.release()  # out of order: the block's lock is innermost again
        assert held_list()[1:] == [*before, second]
    assert held_list()[1:] == before and not first.locked() and not second.locked()


def test_reacquiring_a_held_lock_is_a_self_deadlock_after_verdict_s(
    watch: Instrumentation,
) -> None:
    lock = threading.Lock()
    lock.acquire()
    start = time.monotonic()
    with pytest.raises(Cancelled):
        lock.acquire()  # nobody else will ever release it
    assert time.monotonic() - start >= FAST.verdict_s
    (v,) = watch.verdicts
    assert v.kind == "deadlock" and v.evidence["self"] is True
    assert v.summary == f"self-deadlock: MainThread waits for {lock.name}, which it holds itself"


def test_two_locks_of_one_class_are_ordered_per_instance(watch: Instrumentation) -> None:
    class Node:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    parent, child, other = Node(), Node(), Node()
    for _ in range(3):
        with parent.lock, child.lock:  # always parent before child: fine
            pass
    with parent.lock, other.lock:
        pass
    assert kinds(watch) == []
    with child.lock, parent.lock:  # the opposite order: an inversion
        pass
    (v,) = watch.verdicts
    assert v.kind == "lock-order"
    assert v.locks[:2] == [child.lock.name, parent.lock.name]
    assert "two locks of class" in v.summary


def test_timed_and_non_blocking_acquisitions_order_nothing(watch: Instrumentation) -> None:
    a, b = threading.Lock(), threading.Lock()
    with a:
        assert b.acquire(timeout=1)
        b.release()
    with b:
        assert a.acquire(blocking=False)
        a.release()
    assert kinds(watch) == []


def test_a_cycle_of_timed_waits_is_no_deadlock(watch: Instrumentation) -> None:
    a, b = threading.Lock(), threading.Lock()
    both = threading.Barrier(2)
    gave_up: list[str] = []

    def cross(first: Any, second: Any, name: str) -> None:
        with first:
            both.wait()
            if not second.acquire(timeout=0.3):  # gives up: the cycle undoes itself
                gave_up.append(name)
            else:
                second.release()

    threads = [started(cross, a, b, "x", name="x"), started(cross, b, a, "y", name="y")]
    for t in threads:
        t.join(5)
    assert gave_up and kinds(watch) == []


def test_a_holder_waiting_on_an_event_is_named_parked(watch: Instrumentation) -> None:
    lock = threading.Lock()
    never = threading.Event()

    def holder() -> None:
        with lock:
            never.wait()  # nobody sets it: cancellation ends this wait

    started(holder, name="holder")
    assert wait_until(lock.locked)
    with pytest.raises(Cancelled):
        lock.acquire()
    (v,) = watch.verdicts
    assert v.kind == "long-hold"
    assert f"holder which is waiting on event {never.name}" in v.chain[0].replace(",", "")
    assert v.evidence["holder_state"] == "waiting on event"


def test_objects_outlive_their_block_as_plain_threading_objects() -> None:
    with instrument_threading(FAST, name="short") as block:
        cond = threading.Condition()
        lock = threading.Lock()
        lock.acquire()
        with pytest.raises(Cancelled):
            lock.acquire()  # a self-deadlock: the run is cancelled
    assert block.hung and block.monitor.cancelled
    lock.release()
    results: list[bool] = []

    def waiter() -> None:
        with cond:
            results.append(cond.wait(5))

    t = started(waiter, name="late-waiter")
    assert wait_until(lambda: len(cond._waiters) == 1)
    with cond:
        cond.notify()
    t.join(5)
    assert results == [True]  # the cancelled run's objects no longer raise
    with lock:  # plain threading.Lock behaviour: a bounded wait on oneself times out
        assert lock.acquire(timeout=0.05) is False


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_cancelled_with_block_does_not_turn_into_a_runtime_error(
    watch: Instrumentation, kind: str
) -> None:
    # A Condition over a Lock, or over its default RLock: each exits its with-block its
    # own way, and neither may turn the cancellation into a RuntimeError.
    lock = threading.Lock() if kind == "Lock" else threading.RLock()
    cond = threading.Condition(lock)
    outcome: list[str] = []

    def sleeper() -> None:
        try:
            with cond:
                cond.wait()  # woken by the cancellation; it cannot get the lock back
        except Cancelled:
            outcome.append("cancelled")
        except RuntimeError as exc:
            outcome.append(f"runtime error: {exc}")

    t = started(sleeper, name="sleeper")
    assert wait_until(lambda: len(cond._waiters) == 1)
    lock.acquire()  # the lock is taken: the woken waiter cannot re-take it
    watch.monitor.cancel("test over")
    t.join(5)
    lock.release()
    assert outcome == ["cancelled"]


def test_an_rlock_block_ends_as_threadings_does(watch: Instrumentation) -> None:
    before = held_list()[1:]
    for make in (threading.RLock, stress.RLock):
        lock = make()
        with lock, lock:  # re-entered: one hold, counted twice
            assert lock._is_owned()
        assert not lock._is_owned()
        with pytest.raises(RuntimeError, match="un-acquired"), lock:
            lock.release()  # the block's hold is gone before its end
    assert held_list()[1:] == before


def test_equal_code_in_two_files_makes_two_classes(tmp_path: Any) -> None:
    # Code objects compare by value: the same class in two files must not share a site.
    source = (
        "import stress\n\nclass Account:\n    def __init__(self):\n"
        "        self.lock = stress.Lock()\n"
    )
    made = []
    for name in ("bank_a.py", "bank_b.py"):
        path = tmp_path / name
        path.write_text(source)
        namespace: dict[str, Any] = {}
        exec(compile(source, str(path), "exec"), namespace)
        made.append(namespace["Account"]().lock)
    a, b = made
    assert a.lock_class is not b.lock_class
    assert a.name.endswith("bank_a.py:5") and b.name.endswith("bank_b.py:5")
