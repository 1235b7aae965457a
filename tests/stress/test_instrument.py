"""instrument_threading(): unchanged threaded code, watched; everything restored after."""

from __future__ import annotations

import _thread
import concurrent.futures
import itertools
import queue
import threading
import time
from typing import Any

import pytest

import stress
from stress import Cancelled, Config, Interrupted, Monitor, instrument_threading, watch_config

pytestmark = pytest.mark.timeout(60)

FAST = watch_config(hold_s=0.3, verdict_s=0.6, grace_s=0.3)


@pytest.mark.rmapstress(watch=False)  # under pytest --rmapstress-watch, threading is replaced
def test_inside_the_block_threading_makes_instrumented_objects() -> None:
    originals = {n: getattr(threading, n) for n in stress.instrument.REPLACED}
    start = threading.Thread.start
    with instrument_threading() as block:
        made = {
            "Lock": threading.Lock(),
            "RLock": threading.RLock(),
            "Condition": threading.Condition(),
            "Semaphore": threading.Semaphore(2),
            "BoundedSemaphore": threading.BoundedSemaphore(2),
            "Event": threading.Event(),
            "Barrier": threading.Barrier(2),
        }
        for name, obj in made.items():
            assert type(obj).__name__ == name and type(obj).__module__.startswith("stress")
        assert made["Lock"].monitor is block.monitor
        assert isinstance(made["Event"], originals["Event"])  # still a threading.Event
        assert block.monitor.running
    assert {n: getattr(threading, n) for n in originals} == originals
    assert threading.Thread.start is start
    assert type(threading.Lock()) is _thread.LockType
    assert not block.monitor.running and block.result is not None
    assert block.result.outcome == "clean" and not block.hung


def test_threads_start_and_the_stdlib_works_inside(tmp_path: Any) -> None:
    # Thread.start waits on an Event made from the replaced Lock; the harness's own
    # threads must not: this used to hang before the watchdog even started.
    with instrument_threading() as block:
        jobs: queue.Queue[int | None] = queue.Queue(maxsize=4)
        got: list[int] = []
        consumer = threading.Thread(
            target=lambda: got.extend(iter(jobs.get, None)), name="consumer"
        )
        consumer.start()
        for i in range(50):
            jobs.put(i)
        jobs.put(None)
        consumer.join(10)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            squares = list(pool.map(lambda x: x * x, range(20)))
        fired = threading.Event()
        timer = threading.Timer(0.01, fired.set)
        timer.start()
        assert fired.wait(5)
        timer.join(5)
    assert got == list(range(50)) and squares == [x * x for x in range(20)]
    assert block.verdicts == []
    assert {t.name for t in block.threads} >= {"consumer"}
    classes = block.result.stats["lock_classes"] if block.result else {}
    assert any(name.startswith("queue.py:") for name in classes)
    assert any(name.startswith("concurrent/futures/") for name in classes)


def test_a_deadlock_of_plain_threads_is_found_and_broken() -> None:
    with instrument_threading(FAST) as block:
        a, b = threading.Lock(), threading.Lock()
        both = threading.Barrier(2)

        def cross(first: Any, second: Any) -> None:
            with first:
                both.wait()
                with second:
                    pass

        threads = [
            threading.Thread(target=cross, args=(a, b), name="a-then-b"),
            threading.Thread(target=cross, args=(b, a), name="b-then-a"),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)  # cancelled, unwound, quiet
    assert [v.kind for v in block.verdicts] == ["lock-order", "deadlock"]
    deadlock = block.verdicts[1]
    assert set(deadlock.threads) == {"a-then-b", "b-then-a"}
    assert block.hung and block.stuck == [] and block.thread_errors == []


def test_an_exception_in_a_thread_is_a_crash_verdict_and_still_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(str(args.exc_value)))
    with instrument_threading(FAST) as block:

        def boom() -> None:
            raise ValueError("bad input 7")

        t = threading.Thread(target=boom, name="worker")
        t.start()
        t.join(5)
    (v,) = block.verdicts
    assert v.kind == "crash" and v.summary == "worker crashed: ValueError: bad input 7"
    assert [name for name, _ in block.thread_errors] == ["worker"]
    assert seen == ["bad input 7"]  # threading.excepthook still hears of it
    assert not block.hung  # a crash stops nothing


def test_threads_that_do_not_stop_are_let_go_and_the_owner_interrupted() -> None:
    # The holder sleeps in C, out of reach of cancellation; the main thread waits in
    # join(), out of reach too: after grace_s the holder is reported and made a daemon,
    # and the main thread is interrupted by a signal.
    nap = 3.0
    lock_holder: list[threading.Thread] = []
    start = time.monotonic()
    with pytest.raises(Interrupted), instrument_threading(FAST) as block:
        lock = threading.Lock()

        def holder() -> None:
            with lock:
                time.sleep(nap)

        def waiter() -> None:
            with lock:
                pass

        h = threading.Thread(target=holder, name="sleeper")
        lock_holder.append(h)
        h.start()
        while not lock.locked():
            time.sleep(0.001)
        w = threading.Thread(target=waiter, name="waiter")
        w.start()
        h.join()  # only the interrupt gets the main thread out of here early
    elapsed = time.monotonic() - start
    assert elapsed < nap
    assert [v.kind for v in block.verdicts] == ["long-hold"]
    assert [s["thread"] for s in block.stuck] == ["sleeper"]
    assert "time.sleep(nap)" in block.stuck[0]["doing"]
    sleeper = lock_holder[0]
    assert sleeper.daemon  # interpreter exit will not wait for it
    # It wakes, the pending Interrupted ends it, and its with-block frees the lock.
    # (Not join(): in 3.11 an exception interrupting join() marks the thread stopped.)
    deadline = time.monotonic() + nap + 5
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lock.locked()


def test_the_owners_interrupt_ends_a_spinning_holder_too() -> None:
    class Node:
        def __init__(self, key: int) -> None:
            self.key = key
            self.next: Node = self

    nodes = [Node(i) for i in range(4)]
    for x, y in itertools.pairwise(nodes):
        x.next = y
    nodes[-1].next = nodes[1]  # the tail points back into the middle
    with pytest.raises(Interrupted), instrument_threading(FAST) as block:
        lock = threading.Lock()
        with lock:
            node = nodes[0]
            while node.key != 99:  # spins in pure Python, in the block's own thread
                node = node.next
    (v,) = block.verdicts
    assert v.kind == "list-loop" and v.threads[0] == "MainThread"
    assert v.evidence["ring"]["lead"] == 1 and v.evidence["ring"]["length"] == 3
    assert not lock.locked()


def test_given_a_monitor_or_a_config() -> None:
    mon = Monitor(FAST, name="mine")
    with instrument_threading(mon) as block:
        assert block.monitor is mon and threading.Lock().monitor is mon
    assert not mon.running  # it was not running: the block started and stopped it
    with instrument_threading(Config(duration_s=30, on_stuck="raise", backstop=False)) as b2:
        assert b2.monitor.config.duration_s == 30


def test_a_nested_block_watches_its_own_threads() -> None:
    with instrument_threading(FAST, name="outer") as outer:
        with instrument_threading(FAST, name="inner") as inner:
            assert threading.Lock().monitor is inner.monitor
            t = threading.Thread(target=lambda: None, name="inner-thread")
            t.start()
            t.join(5)
        assert threading.Lock().monitor is outer.monitor
        u = threading.Thread(target=lambda: None, name="outer-thread")
        u.start()
        u.join(5)
    assert [t.name for t in inner.threads] == ["inner-thread"]
    assert [t.name for t in outer.threads] == ["outer-thread"]


def test_cancellation_stops_waits_only_while_the_monitor_runs() -> None:
    with instrument_threading(FAST) as block:
        ev = threading.Event()
        block.monitor.cancel("test over")
        with pytest.raises(Cancelled):
            ev.wait(5)
    assert ev.wait(0.01) is False  # after the block: a plain Event again


def test_a_thread_joining_a_holder_counts_as_waiting_for_its_lock() -> None:
    # Nobody waits for the lock, but the test's thread waits for its holder to end.
    nap = 2.0
    with pytest.raises(Interrupted), instrument_threading(FAST) as block:
        lock = threading.Lock()

        def holder() -> None:
            with lock:
                time.sleep(nap)

        h = threading.Thread(target=holder, name="slowpoke")
        h.start()
        h.join()
    (v,) = block.verdicts
    assert v.kind == "long-hold" and "1 waiting" in v.summary
    assert v.chain[0].startswith("MainThread waits in join() for slowpoke to end, which holds")
    deadline = time.monotonic() + nap + 5
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lock.locked()
