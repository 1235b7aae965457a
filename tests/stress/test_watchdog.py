"""Each verdict kind, produced on purpose by a small injected fault.

Every test checks the kind, the threads and locks named, the evidence, and that
the run ended within its budget.  Latency bounds carry wide margins: the suite
runs on a loaded 2-core machine, and the figures that matter live in bench/.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from stress import Config, Monitor
from stress.samples import CPU_TIMES, RUN_QUEUE, Activity, Sample
from stress.watchdog import only_lacks_cpu

pytestmark = pytest.mark.timeout(30)

#: Slack on top of any bound, for a machine busy with other work (the suite must pass
#: with two busy processes beside it; see bench/suite_under_load.py).  Every bound with
#: it stays below the 6 s budget, so "named at the verdict, not at the end" still shows.
SLACK_S = 3.0


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.next: Node = self


def ring_without_head() -> Node:
    """head -> a -> b -> c -> a: a list whose ring no longer passes through its head."""
    head, a, b, c = Node("head"), Node("avc-a"), Node("avc-b"), Node("avc-c")
    head.next, a.next, b.next, c.next = a, b, c, a
    return head


def timed_run(mon: Monitor) -> tuple[Any, float]:
    start = time.monotonic()
    result = mon.run()
    return result, time.monotonic() - start


def assert_within_budget(mon: Monitor, elapsed: float) -> None:
    cfg = mon.config
    assert elapsed <= cfg.duration_s + cfg.grace_s + SLACK_S


def walk_list(mon: Monitor, lock: Any, head: Node, bound: int) -> None:
    with lock, mon.walk("page_referenced_anon", "anon_vma#17", lock=lock, bound=bound) as w:
        node = head.next
        while node is not head:
            w.step()
            node = node.next


def wait_then_take(lock: Any) -> None:
    while not lock.locked():
        time.sleep(0.001)
    time.sleep(0.02)
    with lock:
        pass


def test_list_loop_seen_from_outside(monitor_factory: Any, fast: Config) -> None:
    # A hold budget far above the time the waiter may take to queue on a busy machine.
    mon = monitor_factory(fast.replace(linger_s=0.15, hold_s=3.0, verdict_s=4.0), name="loop")
    lock = mon.spinlock("anon_vma", "anon_vma#17")

    def walk_once_waited_for() -> None:
        with lock:
            while not lock.waiters():  # the verdict must find kswapd-1 behind the walker
                time.sleep(0.001)
            with mon.walk("page_referenced_anon", "anon_vma#17", lock=lock, bound=96) as w:
                node = ring_without_head().next
                while True:
                    w.step()
                    node = node.next

    mon.spawn(walk_once_waited_for, name="kswapd-0", tracked=False)
    mon.spawn(wait_then_take, lock, name="kswapd-1", tracked=False)
    result, elapsed = timed_run(mon)

    assert [v.kind for v in result.verdicts] == ["list-loop"]
    v = result.verdicts[0]
    assert v.source == "watchdog"
    assert v.threads[:2] == ["kswapd-0", "kswapd-1"]
    assert v.locks == ["anon_vma#17"] and v.lock_classes == ["anon_vma"]
    assert v.evidence["walk"] == "page_referenced_anon"
    assert v.evidence["bound"] == 96 and v.evidence["steps"] > 96
    assert v.evidence["waiters"] == 1
    assert re.fullmatch(
        r"kswapd-1 waits for anon_vma#17, held [0-9.]+ s by kswapd-0, which is walking "
        r"anon_vma#17's list \(page_referenced_anon\), step [0-9,]+ of a bound of 96",
        v.chain[0],
    ), v.chain
    assert "in walk_once_waited_for" in v.to_dict()["where"]["kswapd-0"]
    assert v.at_s < 0.02 + 2 * fast.poll_s + SLACK_S
    assert result.cancel_reason.startswith("list-loop")
    assert_within_budget(mon, elapsed)
    assert elapsed < 1.0 + SLACK_S  # cancelled at the verdict, not at the end of the budget


def test_list_loop_reported_by_the_walker_itself(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(walk_self_check=True), name="self-check")
    lock = mon.spinlock("anon_vma", "anon_vma#17")
    worker = mon.spawn(
        walk_list, mon, lock, ring_without_head(), 96, name="kswapd-0", tracked=False
    )
    result, elapsed = timed_run(mon)
    assert [v.kind for v in result.verdicts] == ["list-loop"]
    v = result.verdicts[0]
    assert v.source == "walk"
    assert v.evidence["steps"] == 97  # the first step past the bound
    assert v.threads == ["kswapd-0"] and v.locks == ["anon_vma#17"]
    assert worker.error is None  # the walk raised Cancelled, which ends a worker quietly
    assert not lock.locked()
    assert_within_budget(mon, elapsed)


def test_walker_reports_the_cycle_it_found(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="cycle")
    lock = mon.spinlock("anon_vma", "anon_vma#3")
    head = ring_without_head()

    def walker() -> None:
        with lock, mon.walk("try_to_unmap_anon", "anon_vma#3", lock=lock, bound=10) as w:
            slow = fast_ = head.next
            while True:
                w.step()
                slow, fast_ = slow.next, fast_.next.next
                if slow is fast_:  # Floyd: a ring that skips the head
                    cycle = [slow.name]
                    node = slow.next
                    while node is not slow:
                        cycle.append(node.name)
                        node = node.next
                    w.cycle(cycle)
                    return

    mon.spawn(walker, name="kswapd-0", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "list-loop" and v.source == "walk"
    assert sorted(v.evidence["cycle"]) == ["avc-a", "avc-b", "avc-c"]
    assert "anon_vma#3" in v.summary and "try_to_unmap_anon" in v.summary
    assert_within_budget(mon, elapsed)


def test_abba_deadlock(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(stop_on=frozenset({"deadlock"})), name="abba")
    a = mon.spinlock("mm", "mm#1")
    b = mon.spinlock("page_table_lock", "ptl#1")
    both = threading.Barrier(2, timeout=5)

    def take(first: Any, second: Any) -> None:
        with first:
            both.wait()
            with second:
                pass

    mon.spawn(take, a, b, name="proc-1", tracked=False)
    mon.spawn(take, b, a, name="proc-2", tracked=False)
    result, elapsed = timed_run(mon)
    dead = [v for v in result.verdicts if v.kind == "deadlock"]
    assert len(dead) == 1
    v = dead[0]
    assert set(v.threads) == {"proc-1", "proc-2"} and set(v.locks) == {"mm#1", "ptl#1"}
    assert v.evidence["self"] is False
    assert {c["thread"]: c["waits_for"] for c in v.evidence["cycle"]} == {
        "proc-1": "ptl#1",
        "proc-2": "mm#1",
    }
    assert any(
        re.fullmatch(
            r"proc-1 waits for ptl#1, held [0-9.]+ s by proc-2, which waits for "
            r"mm#1, held [0-9.]+ s by proc-1: a cycle back to proc-1",
            line,
        )
        for line in v.chain
    ), v.chain
    assert set(v.stacks) == {"proc-1", "proc-2"}
    assert_within_budget(mon, elapsed)
    assert elapsed < 1.0 + SLACK_S


def test_self_deadlock(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="self")
    lock = mon.spinlock("anon_vma", "anon_vma#9")

    def twice() -> None:
        with lock, lock:
            pass

    worker = mon.spawn(twice, name="kswapd-0", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "deadlock" and v.source == "lock"
    assert v.evidence["self"] is True
    assert v.summary == "self-deadlock: kswapd-0 waits for anon_vma#9, which it holds itself"
    assert "in twice" in v.to_dict()["where"]["kswapd-0"]
    assert worker.error is None and not lock.locked()
    assert_within_budget(mon, elapsed)


def test_spin_retry_livelock(monitor_factory: Any, fast: Config) -> None:
    # Each holds its lock across a barrier: on a busy machine a thread can be off the CPU
    # for a while doing so, which must not pass for a long hold.
    cfg = fast.replace(hold_s=2.5, verdict_s=3.0)
    mon = monitor_factory(cfg, name="livelock")
    a = mon.spinlock("alpha", "alpha#1")
    b = mon.spinlock("beta", "beta#1")
    rounds = threading.Barrier(2, timeout=20)

    def polite(mine: Any, other: Any) -> None:
        # Each takes its own lock, tries the other's, backs off, and tries again:
        # both always collide, so neither ever completes an operation.
        try:
            while True:
                with mine:
                    rounds.wait()
                    if other.acquire(blocking=False):
                        other.release()
                        mon.progress()
                    rounds.wait()
                mon.checkpoint()
        except threading.BrokenBarrierError:
            return
        finally:
            rounds.abort()  # the partner must not wait for a thread that has left

    mon.spawn(polite, a, b, name="polite-1")
    mon.spawn(polite, b, a, name="polite-2")
    result, elapsed = timed_run(mon)
    assert [v.kind for v in result.verdicts] == ["livelock"]
    v = result.verdicts[0]
    assert set(v.threads) == {"polite-1", "polite-2"}
    assert all(s >= cfg.verdict_s for s in v.evidence["no_progress_s"].values())
    assert all(n > 100 for n in v.evidence["contended_or_failed_attempts"].values())
    # It names the locks whose trylocks keep failing, and the CPU share the OS measured
    # (the threads mostly wait at the barrier: far from "busy 100%").
    assert set(v.locks) == {"alpha#1", "beta#1"}
    assert v.evidence["failing_locks"] == {"polite-1": ["beta#1"], "polite-2": ["alpha#1"]}
    assert "keep failing to take" in v.summary
    if CPU_TIMES:
        assert all(b < 0.9 for b in v.evidence["busy_fraction"].values())
    assert v.at_s < cfg.verdict_s + 2 * cfg.poll_s + SLACK_S
    assert_within_budget(mon, elapsed)


def test_long_hold_by_a_sleeping_holder(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="long-hold")
    lock = mon.spinlock("anon_vma", "anon_vma#5")
    took: list[float] = []

    def holder() -> None:
        with lock:
            took.append(mon.now_s())
            while True:  # naps, but checks for cancellation between naps
                time.sleep(0.01)
                mon.checkpoint()

    mon.spawn(holder, name="sleepy", tracked=False)
    mon.spawn(wait_then_take, lock, name="waiter", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "long-hold"
    assert v.threads == ["sleepy", "waiter"] and v.locks == ["anon_vma#5"]
    assert v.evidence["holder"] == "sleepy" and v.evidence["waiters"] == 1
    assert v.evidence["held_s"] >= fast.hold_s
    assert v.evidence["budget_s"] == fast.hold_s
    assert v.chain[0].startswith("waiter waits for anon_vma#5, held ")
    assert v.at_s - took[0] <= fast.hold_s + 2 * fast.poll_s + SLACK_S
    assert_within_budget(mon, elapsed)


def test_holder_blocked_in_c_code(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="blocked-in-c")
    lock = mon.spinlock("page_table_lock", "ptl#7")
    nap = 1.2

    def holder() -> None:
        with lock:
            time.sleep(nap)  # in C: no cancellation reaches it until it returns

    mon.spawn(holder, name="napper", tracked=False)
    mon.spawn(wait_then_take, lock, name="faulter", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "long-hold"
    assert v.evidence["holder_state"] == "blocked outside Python"
    assert "in holder: time.sleep(nap)" in v.evidence["holder_at"]
    assert "napper has run no Python code for" in v.summary
    assert v.threads == ["napper", "faulter"]
    assert result.stuck == []  # the napper woke within the grace period and left
    assert elapsed <= nap + fast.grace_s + SLACK_S
    assert_within_budget(mon, elapsed)


@pytest.mark.timeout(90)
def test_starved_waiter(monitor_factory: Any, fast: Config) -> None:
    # The hammer re-takes the lock a few bytecodes after letting it go; only a scheduler
    # that takes it off the CPU in that gap lets the victim in, and then nothing is
    # starved and nothing is named.  On a busy machine that happens now and then: each
    # attempt must then have let the victim in, and one of five must name the starvation.
    for _attempt in range(5):
        served: list[float] = []
        mon = monitor_factory(fast.replace(duration_s=3.0), name="starve")
        lock = mon.mutex("zone_lru", "lru#0", fair=False)

        def hammer(mon: Monitor = mon, lock: Any = lock) -> None:
            while True:  # re-takes the lock the moment it lets go
                with lock:
                    time.sleep(0.002)
                mon.progress()

        def victim(mon: Monitor = mon, lock: Any = lock, served: list[float] = served) -> None:
            while not lock.locked():
                time.sleep(0.001)
            with lock:
                served.append(mon.now_s())
                mon.progress()

        mon.spawn(hammer, name="hammer")
        mon.spawn(victim, name="victim", tracked=False)
        result, elapsed = timed_run(mon)
        if result.verdicts:
            break
        assert served, "neither served nor named starving"
    (v,) = result.verdicts
    assert v.kind == "starvation"
    assert v.threads[0] == "victim" and "hammer" in v.threads
    assert v.locks == ["lru#0"]
    assert v.evidence["acquisitions_by_others"] >= fast.starve_grants
    assert v.evidence["waited_s"] >= fast.verdict_s
    assert v.evidence["fair"] is False
    assert_within_budget(mon, elapsed)


def test_fair_lock_does_not_starve_anyone(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=1.5), name="fair")
    lock = mon.mutex("zone_lru", "lru#1")

    def hammer() -> None:
        while True:
            with lock:
                time.sleep(0.002)
            mon.progress()

    mon.spawn(hammer, name="hammer-1")
    mon.spawn(hammer, name="hammer-2")
    result, _ = timed_run(mon)
    assert result.verdicts == []
    assert result.stats["ops"] > 10  # both kept going (how far depends on the machine)


def test_a_thread_sleeping_outside_locks_is_never_a_stall(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast.replace(duration_s=2 * fast.verdict_s + 0.5), name="napper")
    lock = mon.spinlock("anon_vma", "anon_vma#3")

    def worker() -> None:
        with lock:
            mon.progress()
        time.sleep(2 * fast.verdict_s)  # healthy: it holds nothing and nobody needs it

    mon.spawn(worker, name="napper")
    result, _ = timed_run(mon)
    assert result.verdicts == []


def test_stall(monitor_factory: Any, fast: Config, thread: Any) -> None:
    # Nobody waits for the lock, so its long hold hangs nobody; but the worker promised
    # progress and stopped, holding a lock: a stall.
    mon = monitor_factory(fast.replace(hold_needs_waiters=True), name="stall")
    lock = mon.spinlock("anon_vma", "anon_vma#4")
    wake = threading.Event()

    def worker() -> None:
        mon.progress()
        with lock:
            wake.wait(30)  # in C: waits for nothing the harness knows, holding the lock

    def waker() -> None:  # lets the worker go once the run is cancelled, however late
        while not mon.cancelled and not wake.wait(0.01):
            pass
        wake.set()

    mon.spawn(worker, name="stuck-worker")
    thread(waker, name="waker")
    result, elapsed = timed_run(mon)
    wake.set()
    (v,) = result.verdicts
    assert v.kind == "stall"
    assert v.threads == ["stuck-worker"]
    assert "in worker: wake.wait(30)" in v.evidence["at"]["stuck-worker"]
    assert v.evidence["held"] == {"stuck-worker": ["anon_vma#4"]}
    assert v.evidence["no_progress_s"]["stuck-worker"] >= fast.verdict_s
    assert result.cancel_reason.startswith("stall")  # named before the end of the budget
    assert_within_budget(mon, elapsed)


def test_worker_that_raises(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="crash")

    def worker() -> None:
        mon.progress()
        raise ValueError("boom at step 3")

    mon.spawn(worker, name="proc-7")
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "crash" and v.source == "worker"
    assert v.summary == "proc-7 crashed: ValueError: boom at step 3"
    assert v.evidence["exception"] == "ValueError"
    assert 'raise ValueError("boom at step 3")' in "".join(v.evidence["traceback"])
    where = v.to_dict()["where"]["proc-7"]
    assert where.startswith("test_watchdog.py:") and "in worker" in where
    assert v.chain == [f"proc-7 raised ValueError: boom at step 3 at {where}"]
    assert_within_budget(mon, elapsed)


def test_defect_exception_keeps_its_kind(monitor_factory: Any, fast: Config) -> None:
    class ListCorruption(Exception):
        kind = "list-corruption"

        def __init__(self, summary: str) -> None:
            super().__init__(summary)
            self.summary = summary
            self.details = {"node": "avc-3"}

    mon = monitor_factory(fast, name="defect-exc")

    def worker() -> None:
        raise ListCorruption("list_del corruption at avc-3")

    mon.spawn(worker, name="proc-1", tracked=False)
    result, _ = timed_run(mon)
    (v,) = result.verdicts
    assert (v.kind, v.summary) == ("list-corruption", "list_del corruption at avc-3")
    assert v.evidence["details"] == {"node": "avc-3"}


def test_second_read_behind_a_queued_writer_deadlocks(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="rwsem-deadlock")
    sem = mon.rwsem("mmap_sem", "mmap_sem#1")
    first_read = threading.Event()

    def faulter() -> None:
        with sem.read():
            first_read.set()
            while not sem.waiters():  # until the writer queues up behind us
                time.sleep(0.001)
            with sem.read():  # queued behind the writer, which waits for our first read
                pass

    def mapper() -> None:
        first_read.wait(5)
        with sem.write():
            pass

    mon.spawn(faulter, name="fault-1", tracked=False)
    mon.spawn(mapper, name="mmap-1", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "deadlock"
    assert set(v.threads) == {"fault-1", "mmap-1"} and v.locks == ["mmap_sem#1", "mmap_sem#1"]
    assert {c["thread"]: c["mode"] for c in v.evidence["cycle"]} == {
        "fault-1": "read",
        "mmap-1": "write",
    }
    assert_within_budget(mon, elapsed)


class Link:
    def __init__(self, key: str) -> None:
        self.key = key
        self.next: Link | None = None


def rho_list() -> Link:
    """a -> b -> c -> d -> b: the tail points back into the middle."""
    nodes = [Link(k) for k in "abcd"]
    for x, y in itertools.pairwise(nodes):
        x.next = y
    nodes[-1].next = nodes[1]
    return nodes[0]


@pytest.mark.skipif(not CPU_TIMES, reason="needs per-thread CPU clocks (Linux)")
def test_a_holder_spinning_over_a_ring_is_a_list_loop(monitor_factory: Any, fast: Config) -> None:
    # No walk() here: the watchdog sees the holder stay in one loop while its CPU time
    # advances, and finds the ring among the loop's variables.
    mon = monitor_factory(fast, name="spin-ring")
    lock = mon.spinlock("table", "table#1")
    head = rho_list()

    def lookup(key: str) -> None:
        with lock:
            node: Any = head
            while node.key != key and not mon.cancelled:  # "z" is not there
                node = node.next

    mon.spawn(lookup, "z", name="finder", tracked=False)
    mon.spawn(wait_then_take, lock, name="waiter", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "list-loop" and v.source == "watchdog"
    assert v.locks == ["table#1"] and v.threads == ["finder", "waiter"]
    loop_line = lookup.__code__.co_firstlineno + 3
    assert v.evidence["loop"].endswith(f"test_watchdog.py:{loop_line}")
    assert v.evidence["ring"]["variable"] == "head" and v.evidence["ring"]["lead"] == 1
    assert v.evidence["ring"]["length"] == 3
    assert v.evidence["waiters"] == ["waiter"]
    assert f"finder loops at test_watchdog.py:{loop_line}" in v.summary
    assert "1 node(s) lead into a ring of 3" in v.summary
    assert v.chain[0].startswith("waiter waits for table#1, held ")
    assert_within_budget(mon, elapsed)


@pytest.mark.skipif(not CPU_TIMES, reason="needs per-thread CPU clocks (Linux)")
def test_a_holder_spinning_in_one_loop_is_a_suspected_endless_loop(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast, name="spin")
    lock = mon.spinlock("table", "table#2")

    def spinner() -> None:
        with lock:
            n = 0
            while not mon.cancelled:
                n += 1

    mon.spawn(spinner, name="spinner", tracked=False)
    mon.spawn(wait_then_take, lock, name="waiter", tracked=False)
    result, elapsed = timed_run(mon)
    (v,) = result.verdicts
    assert v.kind == "livelock"
    assert v.summary.startswith("suspected endless loop: spinner has spun at test_watchdog.py:")
    assert "holding table#2; 1 waiting" in v.summary
    assert v.evidence["cpu"] > 0.05 and v.evidence["waiters"] == ["waiter"]
    assert v.evidence["held_s"] >= fast.hold_s
    assert_within_budget(mon, elapsed)


@pytest.mark.skipif(
    not (RUN_QUEUE and hasattr(os, "sched_setaffinity")), reason="needs schedstat (Linux)"
)
def test_a_holder_that_only_lacks_a_cpu_is_no_long_hold(monitor_factory: Any, fast: Config) -> None:
    # Three busy processes share one CPU with the holder: its 0.15 s of work takes about
    # four times that, past its budget.  It waited for a CPU more than it ran: the
    # machine is overloaded, nothing hangs, and the watchdog defers instead of accusing.
    cpu = min(os.sched_getaffinity(0))
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)
    ]
    try:
        for hog in hogs:
            os.sched_setaffinity(hog.pid, {cpu})
        mon = monitor_factory(fast, name="starved")
        lock = mon.spinlock("anon_vma", "anon_vma#8")

        def holder() -> None:
            os.sched_setaffinity(threading.get_native_id(), {cpu})
            with lock:
                start = time.thread_time()
                while time.thread_time() - start < 0.15:
                    pass

        mon.spawn(holder, name="starved", tracked=False)
        mon.spawn(wait_then_take, lock, name="waiter", tracked=False)
        result, _ = timed_run(mon)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)
    assert result.verdicts == [], [v.summary for v in result.verdicts]
    assert result.stats["watchdog"]["deferred_for_overload"] > 0
    assert result.stats["lock_classes"]["anon_vma"]["longest_hold_seen_s"] > fast.hold_s


def _stretched_hold(cpu_share: float, wait_share: float, seconds: float) -> Sample:
    """A holder's history over a hold of `seconds`, 50 ms polls from t=0."""
    sample = Sample(0.0, window=200)
    polls = round(seconds / 0.05)
    cpu = wait = 0
    for i in range(polls + 1):
        sample.cpu.append((i * 0.05, cpu))
        sample.waits.append((i * 0.05, wait, i))
        cpu += int(cpu_share * 0.05e9)
        wait += int(wait_share * 0.05e9)
    return sample


def test_a_hold_stretched_by_the_machine_is_deferred_whatever_its_last_window_says() -> None:
    # A 1.6 s hold, budget 1.5 s (the load-20 case): it ran 10 % of the time and queued
    # for a CPU 60 %.  Its last window may say "running" (it just got a CPU back) or
    # "blocked"; the hold less its queueing fits the budget either way.
    sample = _stretched_hold(0.1, 0.6, 1.6)
    for word in ("running", "blocked", "not scheduled"):
        act = Activity(word, 0.5, 0.1, 0.25, 0.0)
        assert only_lacks_cpu(sample, act, 0.0, 1.6, 1.5), word


def test_a_hold_the_machine_did_not_stretch_is_not_deferred() -> None:
    blocked = Activity("blocked", 0.0, 0.0, 0.25, 1.0)
    asleep = _stretched_hold(0.0, 0.0, 1.6)  # asleep under the lock: a hang
    assert not only_lacks_cpu(asleep, blocked, 0.0, 1.6, 1.5)
    # Queued a little, but without it the hold is still past its budget.
    partly = _stretched_hold(0.05, 0.05, 2.0)
    assert not only_lacks_cpu(partly, blocked, 0.0, 2.0, 1.5)
    # Ran a budget's worth: the time went into its own work (a spin, a slow section).
    busy = _stretched_hold(0.9, 0.1, 1.8)
    assert not only_lacks_cpu(busy, Activity("not scheduled", 0.2, 0.7, 0.25, 0.0), 0.0, 1.8, 1.5)
    # And no hold is deferred for ever.
    starved = _stretched_hold(0.01, 0.9, 16.0)
    assert not only_lacks_cpu(starved, blocked, 0.0, 16.0, 1.5)


def test_a_hold_released_between_the_scan_and_the_verdict_is_no_long_hold(
    monitor_factory: Any, fast: Config
) -> None:
    # The scan saw the lock held past its budget; before the verdict was built the holder
    # let go and ended.  Once taken for "has exited without releasing it" (a soak, at a
    # load average of 11-13): the books read were those of a hold that was over.
    from stress.diagnosis import Snapshot
    from stress.threads import current
    from stress.watchdog import Watchdog

    mon = monitor_factory(fast, name="released")
    lock = mon.rwsem("mmap_sem", "p1.mmap_sem")
    scanned: list[Any] = []

    def holder() -> None:
        lock.down_read()
        scanned.extend(Watchdog(mon)._scan_holds([current()], time.perf_counter()))
        lock.up_read()

    t = threading.Thread(target=holder, name="p1/t1")
    t.start()
    t.join(10)
    assert not t.is_alive() and [(x, since) for x, _, since in scanned] == [
        (lock, scanned[0][2])
    ]
    wd = Watchdog(mon)
    later = scanned[0][2] + 10 * fast.hold_s
    wd._long_holds(scanned, Snapshot(later, mon.t0, {}), set(), set(), set())
    assert mon.verdicts == []
    # The same look at a hold that still stands is a verdict (the check can fail).
    lock.down_read()
    try:
        held = wd._scan_holds([current()], time.perf_counter())
        since = held[0][2]
        wd._long_holds(held, Snapshot(since + 10 * fast.hold_s, mon.t0, {}), set(), set(), set())
    finally:
        lock.up_read()
    assert [v.kind for v in mon.verdicts] == ["long-hold"]
