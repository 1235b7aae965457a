"""Lock conformance (in the style of CPython's Lib/test/lock_tests.py), run on every lock type.

Every instrumented lock must behave as a lock first: exclusion, blocking and
non-blocking takes, timeouts, context managers, and errors for misuse that name
the threads involved.  RWSem joins the suite through its write side; its reader
behaviour has tests of its own below.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from stress import (
    Cancelled,
    Config,
    Monitor,
    Mutex,
    NotOwnerError,
    RWSem,
    SelfDeadlockError,
    TimedMutex,
)

pytestmark = pytest.mark.timeout(30)


class WriteSide:
    """An RWSem's write side seen as a plain lock."""

    timeouts = False

    def __init__(self, sem: RWSem) -> None:
        self.sem = sem
        self.name = sem.name

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self.sem.down_write()
            return True
        return self.sem.down_write_trylock()

    def release(self) -> None:
        self.sem.up_write()

    def locked(self) -> bool:
        return self.sem.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return repr(self.sem)

    def info(self) -> dict[str, Any]:
        return self.sem.info()


_serial = iter(range(1, 1_000_000))


def _name() -> str:
    return f"conf#{next(_serial)}"


KINDS: dict[str, Callable[[Monitor], Any]] = {
    "mutex-standalone": lambda mon: Mutex("conf", _name()),
    "mutex": lambda mon: mon.mutex("conf", _name()),
    "timed-mutex": lambda mon: TimedMutex("conf", _name(), monitor=mon),
    "unfair-mutex": lambda mon: mon.mutex("conf", _name(), fair=False),
    "rwsem-write": lambda mon: WriteSide(mon.rwsem("conf-sem", _name())),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mon() -> Any:
    monitor = Monitor(Config(timing=False), name="conformance")
    yield monitor
    monitor.stop()


@pytest.fixture
def lock(kind: str, mon: Monitor) -> Any:
    return KINDS[kind](mon)


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def test_acquire_release(lock: Any) -> None:
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_trylock_fails_while_another_thread_holds_it(lock: Any, thread: Any) -> None:
    results: list[bool] = []

    def attempt() -> None:
        got = lock.acquire(blocking=False)
        results.append(got)
        if got:
            lock.release()

    lock.acquire()
    thread(attempt, name="trier-1").join(5)
    lock.release()
    thread(attempt, name="trier-2").join(5)
    assert results == [False, True]


def test_blocked_acquire_proceeds_after_release(lock: Any, thread: Any) -> None:
    got = threading.Event()

    def taker() -> None:
        lock.acquire()
        got.set()
        lock.release()

    lock.acquire()
    t = thread(taker, name="taker")
    assert not got.wait(0.15), "acquired a lock that was held"
    lock.release()
    assert got.wait(5), "the waiter never got the lock after release"
    t.join(5)
    assert not lock.locked()


def test_with_statement_releases_on_exception(lock: Any) -> None:
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(ZeroDivisionError), lock:
        1 / 0  # noqa: B018
    assert not lock.locked()


def test_release_of_unheld_lock_names_the_thread(lock: Any) -> None:
    with pytest.raises(NotOwnerError) as err:
        lock.release()
    assert "MainThread" in str(err.value)
    assert lock.name in str(err.value)
    assert "not held by anyone" in str(err.value)


def test_release_by_another_thread_names_both(lock: Any, thread: Any) -> None:
    errors: list[NotOwnerError] = []

    def thief() -> None:
        try:
            lock.release()
        except NotOwnerError as exc:
            errors.append(exc)

    lock.acquire()
    thread(thief, name="thief").join(5)
    assert len(errors) == 1
    assert errors[0].thread == "thief"
    assert any("MainThread" in h for h in errors[0].holders)
    assert "thief released" in str(errors[0]) and "MainThread" in str(errors[0])
    assert lock.locked(), "a refused release must leave the lock with its holder"
    lock.release()


def test_mutual_exclusion_under_contention(lock: Any, join_all: Any) -> None:
    inside = [0]
    overlaps = [0]
    count = [0]

    def work() -> None:
        for _ in range(300):
            with lock:
                inside[0] += 1
                if inside[0] != 1:
                    overlaps[0] += 1
                count[0] += 1
                inside[0] -= 1

    threads = [threading.Thread(target=work, name=f"w{i}", daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    join_all(threads, 20)
    assert overlaps[0] == 0
    assert count[0] == 1800
    assert not lock.locked()


def test_out_of_order_release(kind: str, mon: Monitor) -> None:
    first = KINDS[kind](mon)
    second = Mutex("conf-other", _name(), monitor=mon)
    first.acquire()
    second.acquire()
    first.release()
    assert not first.locked() and second.locked()
    second.release()
    assert not second.locked()
    first.acquire()  # the held list is consistent again: both can be taken anew
    first.release()


def test_repr_and_info_say_who_holds_and_who_waits(lock: Any, thread: Any) -> None:
    assert repr(lock).endswith("free>")
    lock.acquire()
    thread(lock.acquire, name="queued")
    assert _wait_until(lambda: len(lock.info()["waiters"]) == 1)
    text = repr(lock)
    assert f"<{lock.name} class=" in text
    assert "by MainThread" in text and "1 waiter" in text
    info = lock.info()
    assert [h["thread"] for h in info["holders"]] == ["MainThread"]
    assert info["waiters"][0]["thread"] == "queued"
    assert info["waiters"][0]["waited_s"] >= 0
    lock.release()
    assert _wait_until(lambda: any(h["thread"] == "queued" for h in lock.info()["holders"]))
    # Counted once the waiter has the lock (a wait that timed out acquired nothing).
    assert _wait_until(lambda: lock.info()["contentions"] == 1)


def test_self_deadlock_without_watchdog_raises(lock: Any) -> None:
    lock.acquire()
    with pytest.raises(SelfDeadlockError) as err:
        lock.acquire()
    assert "MainThread" in str(err.value) and "self-deadlock" in str(err.value)
    assert lock.acquire(blocking=False) is False  # a trylock on oneself just fails
    lock.release()


def test_cancellation_wakes_a_blocked_acquirer(kind: str, thread: Any) -> None:
    if kind == "mutex-standalone":
        pytest.skip("stand-alone locks belong to no run that could be cancelled")
    mon = Monitor(Config(timing=False), name="cancel")
    lock = KINDS[kind](mon)
    outcome: list[str] = []

    def blocked() -> None:
        try:
            lock.acquire()
            outcome.append("acquired")
        except Cancelled as exc:
            outcome.append(f"cancelled: {exc.reason}")

    with mon:
        lock.acquire()
        t = thread(blocked, name="blocked")
        assert _wait_until(lambda: len(lock.info()["waiters"]) == 1)
        start = time.monotonic()
        mon.cancel("test over")
        t.join(5)
        woke_after = time.monotonic() - start
        lock.release()
    assert outcome == ["cancelled: test over"]
    assert woke_after < 1.0


# -- mutex only --------------------------------------------------------------------------

MUTEXES = ["mutex", "mutex-standalone", "timed-mutex", "unfair-mutex"]


@pytest.mark.parametrize("kind", MUTEXES)
def test_timeout_returns_false_after_the_timeout(kind: str, mon: Monitor, thread: Any) -> None:
    lock = KINDS[kind](mon)
    result: list[tuple[bool, float]] = []

    def timed() -> None:
        start = time.monotonic()
        result.append((lock.acquire(timeout=0.2), time.monotonic() - start))

    lock.acquire()
    thread(timed, name="timed").join(5)
    lock.release()
    got, waited = result[0]
    assert got is False
    assert 0.18 <= waited < 2.0
    assert lock.acquire(timeout=0.2) is True  # free now: a timeout does not matter
    lock.release()


@pytest.mark.parametrize("kind", MUTEXES)
def test_timeout_arguments_are_checked_like_threading_lock(kind: str, mon: Monitor) -> None:
    lock = KINDS[kind](mon)
    for bad in ((False, 1.0), (True, -2.0)):
        with pytest.raises(ValueError):
            threading.Lock().acquire(*bad)
        with pytest.raises(ValueError):
            lock.acquire(*bad)
    assert not lock.locked()


def test_fair_mutex_hands_over_in_arrival_order(mon: Monitor, thread: Any) -> None:
    lock = mon.mutex("fifo", "fifo#1")
    order: list[int] = []

    def take(i: int) -> None:
        with lock:
            order.append(i)

    lock.acquire()
    for i in range(5):
        thread(take, i, name=f"fifo-{i}")
        assert _wait_until(lambda i=i: len(lock.waiters()) == i + 1)
    lock.release()
    assert _wait_until(lambda: len(order) == 5)
    assert order == [0, 1, 2, 3, 4]


def test_timed_mutex_keeps_hold_histogram_and_acquisitions(mon: Monitor) -> None:
    lock = TimedMutex("timed", "timed#1", monitor=mon)
    for _ in range(10):
        with lock:
            time.sleep(0.001)
    stats = mon.stats()["lock_classes"]["timed"]
    assert stats["acquisitions"] == 10
    assert stats["hold"]["count"] == 10
    assert stats["hold"]["p50_us"] >= 1000
    plain = mon.mutex("plain", "plain#1")
    with plain:
        pass
    assert mon.stats()["lock_classes"]["plain"]["acquisitions"] is None  # not counted


# -- rwsem -------------------------------------------------------------------------------


def test_rwsem_readers_share(mon: Monitor, join_all: Any) -> None:
    sem = mon.rwsem("sem", "sem#1")
    both_in = threading.Barrier(2, timeout=5)

    def reader() -> None:
        with sem.read():
            both_in.wait()  # only passes if the two readers are inside together

    threads = [threading.Thread(target=reader, name=f"r{i}", daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    join_all(threads)
    assert not both_in.broken
    assert not sem.locked()


def test_rwsem_writer_excludes_readers_and_queued_writer_holds_back_readers(
    mon: Monitor, thread: Any
) -> None:
    sem = mon.rwsem("sem", "sem#2")
    order: list[str] = []

    def writer() -> None:
        with sem.write():
            order.append("writer")

    def late_reader() -> None:
        with sem.read():
            order.append("late reader")

    sem.down_read()
    thread(writer, name="writer")
    assert _wait_until(lambda: len(sem.waiters()) == 1)
    thread(late_reader, name="late-reader")
    assert _wait_until(lambda: len(sem.waiters()) == 2)
    assert order == []  # the writer waits for us, the late reader for the writer
    holders = [(s.name, m) for s, m, _ in sem.holders()]
    assert holders == [("MainThread", "read")]
    sem.up_read()
    assert _wait_until(lambda: len(order) == 2)
    assert order == ["writer", "late reader"]


def test_rwsem_misuse(mon: Monitor) -> None:
    sem = mon.rwsem("sem", "sem#3")
    with pytest.raises(NotOwnerError, match="MainThread released sem#3 \\(read\\)"):
        sem.up_read()
    sem.down_read()
    with pytest.raises(NotOwnerError, match="held by MainThread \\(read\\)"):
        sem.up_write()
    with pytest.raises(SelfDeadlockError):
        sem.down_write()  # a write under one's own read never gets in
    assert sem.down_read_trylock() is True  # read recursion is allowed with nobody queued
    sem.up_read()
    sem.up_read()
    assert not sem.locked()


def test_rwsem_nested_write_is_annotated_not_recursive(monitor_factory: Any) -> None:
    """dup_mmap: the child's mmap_sem is taken for writing under the parent's."""
    mon = monitor_factory()
    parent, child = (
        mon.rwsem("mmap_sem", "parent.mmap_sem"),
        mon.rwsem("mmap_sem", "child.mmap_sem"),
    )
    parent.down_write()
    child.down_write_nested(1)
    assert child.locked() and parent.locked()
    child.up_write()
    parent.up_write()
    assert not child.locked() and not parent.locked()
    assert [v.kind for v in mon.verdicts] == []
    parent.down_write()
    child.down_write()  # the same nesting without the annotation
    child.up_write()
    parent.up_write()
    assert [v.kind for v in mon.verdicts] == ["lock-order"]


# -- statistics and cancellation fixes ---------------------------------------------------


@pytest.mark.parametrize("kind", ["mutex", "timed-mutex", "rwsem-write"])
def test_a_cancelled_wait_in_a_plain_thread_chains_no_index_error(kind: str, thread: Any) -> None:
    # A plain thread (not spawned) sees Cancelled escape its with-statement; its traceback
    # must not show the empty lock word's IndexError as the cause.
    mon = Monitor(Config(timing=kind == "timed-mutex"), name="cancel-plain")
    lock = KINDS[kind](mon)
    caught: list[BaseException] = []

    def blocked() -> None:
        try:
            with lock:
                pass
        except Cancelled as exc:
            caught.append(exc)

    with mon:
        lock.acquire()
        t = thread(blocked, name="plain")
        assert _wait_until(lambda: len(lock.info()["waiters"]) == 1)
        mon.cancel("test over")
        t.join(5)
        lock.release()
    (exc,) = caught
    assert exc.__context__ is None
    assert "IndexError" not in "".join(traceback.format_exception(exc))


def test_contentions_count_only_acquisitions_that_waited(mon: Monitor, thread: Any) -> None:
    lock = TimedMutex("stat", "stat#1", monitor=mon)

    def give_up() -> None:
        for _ in range(5):
            assert lock.acquire(timeout=0.005) is False

    def wait_for_it() -> None:
        with lock:
            pass

    lock.acquire()
    thread(give_up, name="timeouts").join(5)
    waiter = thread(wait_for_it, name="waiter")
    assert _wait_until(lambda: len(lock.waiters()) == 1)
    lock.release()
    waiter.join(5)
    stats = mon.stats()["lock_classes"]["stat"]
    # 2 acquisitions (main, waiter), 1 of them contended; 5 timeouts acquired nothing.
    assert (stats["acquisitions"], stats["contentions"]) == (2, 1)
    assert stats["contention_pct"] == 50.0
    assert stats["wait"]["max_us"] >= stats["wait"]["p50_us"]
