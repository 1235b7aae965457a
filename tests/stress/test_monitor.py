"""The Monitor's life: budgets, cancellation, defects from outside, status ticks, isolation."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from stress import Cancelled, Config, Monitor, Status

pytestmark = pytest.mark.timeout(30)


def test_clean_run_ends_at_its_budget(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=0.6), name="clean")
    lock = mon.spinlock("anon_vma", "anon_vma#1")

    def worker() -> None:
        while True:
            with lock:
                pass
            mon.progress()

    mon.spawn(worker, name="w0")
    mon.spawn(worker, name="w1")
    start = time.monotonic()
    result = mon.run()
    elapsed = time.monotonic() - start
    assert result.outcome == "clean" and result.verdicts == []
    assert result.cancel_reason == "end of budget (0.6 s)"
    assert elapsed >= 0.55 and result.stuck == []  # ran its budget out, then every worker left
    assert result.stats["ops"] > 100 and result.stats["ops_per_s"] > 0
    assert result.stats["threads"] == 2


def test_the_watchdog_polls_while_the_run_goes_on(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="polled")

    def worker() -> None:  # ends the run once the watchdog has looked three times
        while mon.stats()["watchdog"]["polls"] < 3:
            mon.pause(0.01)

    mon.spawn(worker, name="w", tracked=False)
    result = mon.run()
    assert result.cancel_reason == "every worker finished"  # not the end of the budget
    assert result.stats["watchdog"]["polls"] >= 3
    assert result.stats["watchdog"]["period_s"] == fast.poll_s


def test_run_ends_when_every_worker_finished(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="short")
    done = mon.spawn(lambda: 42, name="quick", tracked=False)
    start = time.monotonic()
    result = mon.run()
    # Ended by its worker, not by its budget (6 s): the reason says so, the clock agrees.
    assert time.monotonic() - start < fast.duration_s
    assert result.cancel_reason == "every worker finished"
    assert done.result == 42 and result.outcome == "clean"


def test_every_cancellation_point_raises(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=1.0, stop_on=frozenset()), name="cancel")
    lock = mon.spinlock("anon_vma", "anon_vma#1")
    sem = mon.rwsem("mmap_sem", "mmap_sem#1")
    stopped: dict[str, str] = {}
    held = threading.Event()

    def record(name: str, fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except Cancelled as exc:
                stopped[name] = exc.reason
                raise

        return run

    def holder() -> None:
        with lock, sem.write():
            held.set()
            mon.pause(60)

    def mutex_waiter() -> None:
        held.wait(5)
        lock.acquire()

    def rwsem_waiter() -> None:
        held.wait(5)
        sem.down_read()

    def walker() -> None:
        with mon.walk("endless", "ring", bound=None) as w:
            while True:
                w.step()

    def progressing() -> None:
        while True:
            mon.progress()

    def checkpointing() -> None:
        while True:
            mon.checkpoint()

    for name, fn in [
        ("holder", holder),
        ("mutex-waiter", mutex_waiter),
        ("rwsem-waiter", rwsem_waiter),
        ("walker", walker),
        ("progressing", progressing),
        ("checkpointing", checkpointing),
    ]:
        mon.spawn(record(name, fn), name=name, tracked=False)
    result = mon.run()
    assert result.stuck == []  # every one stopped within grace_s (else StuckThreadsError)
    assert set(stopped) == {
        "holder",
        "mutex-waiter",
        "rwsem-waiter",
        "walker",
        "progressing",
        "checkpointing",
    }
    # The endless walk and the long holds were named, but stop_on is empty: the run went on.
    kinds = {v.kind for v in result.verdicts}
    assert "list-loop" in kinds and "long-hold" in kinds
    assert result.cancel_reason == "end of budget (1 s)"
    assert set(stopped.values()) == {"end of budget (1 s)"}
    assert not lock.locked() and not sem.locked()


def test_report_defect_goes_through_the_verdict_stream(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(
        fast, name="defects", meta={"variant": "v1", "seed": 7, "replay": "demo run --seed 7"}
    )
    lock = mon.spinlock("anon_vma", "anon_vma#3")

    def find_it() -> None:
        with lock:
            mon.report_defect(
                "use-after-free",
                "page maps freed anon_vma#3",
                evidence={"object": "anon_vma#3", "freed_by": ("proc-2", 17)},
                locks=[lock],
                stop=False,
            )

    def faulting_worker() -> None:
        find_it()
        find_it()  # the same defect from the same place: counted, not re-reported
        mon.progress()

    mon.spawn(faulting_worker, name="kswapd-0")
    result = mon.run()
    (v,) = result.verdicts
    assert v.kind == "use-after-free" and v.source == "defect"
    assert v.count == 2
    assert v.threads == ["kswapd-0"] and v.locks == ["anon_vma#3"]
    assert v.lock_classes == ["anon_vma"]
    assert v.evidence == {
        "object": "anon_vma#3",
        "freed_by": ["proc-2", 17],
        "held": ["anon_vma#3"],
    }
    assert "in find_it" in v.to_dict()["where"]["kswapd-0"]
    assert v.replay == "demo run --seed 7"
    assert result.cancel_reason == "every worker finished"  # stop=False: did not stop it


def test_a_defect_stops_the_run_by_default(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="stop")

    def worker() -> None:
        mon.progress()
        mon.report_defect("invariant", "I3 broken: vma not on its anon_vma list")
        while True:
            mon.progress()

    mon.spawn(worker, name="proc-0")
    start = time.monotonic()
    result = mon.run()
    assert time.monotonic() - start < fast.duration_s  # stopped by the defect, not the budget
    assert result.cancel_reason == "invariant: I3 broken: vma not on its anon_vma list"
    assert result.outcome == "defect"
    assert result.first_defect_s is not None and result.first_defect_s < 1.0


def test_linger_delays_cancellation(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(linger_s=0.3), name="linger")

    def worker() -> None:
        mon.report_defect("invariant", "broken")
        while True:
            mon.progress()

    mon.spawn(worker, name="proc-0")
    result = mon.run()
    (v,) = result.verdicts
    assert mon.cancelled_at is not None
    lingered = mon.cancelled_at - mon.t0 - v.at_s
    assert 0.25 <= lingered < 0.3 + 1.0


def test_verdicts_after_cancellation_are_kept_apart(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast.replace(duration_s=0.3), name="late")

    def worker() -> None:
        try:
            while True:
                mon.progress()
        except Cancelled:
            raise RuntimeError("cleanup failed after cancellation") from None

    mon.spawn(worker, name="proc-0")
    result = mon.run()
    assert result.verdicts == [] and result.outcome == "clean"
    assert [v.kind for v in result.late] == ["crash"]
    assert "cleanup failed" in result.late[0].summary


def test_status_ticks(monitor_factory: Any, fast: Config) -> None:
    ticks: list[Status] = []
    mon = monitor_factory(fast.replace(status_every_s=0.25), name="ticks", on_status=ticks.append)

    def worker() -> None:
        while len(ticks) < 4:  # the run ends after four ticks, however slow they come
            with mon.walk("scan", "list", bound=10) as w:
                for _ in range(5):
                    w.step()
            mon.progress()

    mon.spawn(worker, name="w")
    result = mon.run()
    assert result.outcome == "clean" and result.cancel_reason == "every worker finished"
    assert len(ticks) >= 4
    # A tick at most every status_every_s: never two for one period.
    gaps = [b.elapsed_s - a.elapsed_s for a, b in itertools.pairwise(ticks)]
    assert all(g >= 0.25 - 0.002 for g in gaps), gaps
    assert all(t.case == "ticks" for t in ticks)
    assert [t.ops for t in ticks] == sorted(t.ops for t in ticks)
    assert ticks[-1].ops > 0 and ticks[-1].ops_per_s > 0
    assert ticks[-1].walks > 0 and ticks[-1].walk_steps >= 5 * ticks[-1].walks - 5
    assert ticks[-1].verdicts == 0


def test_a_failing_status_callback_is_an_error_not_a_crash(
    monitor_factory: Any, fast: Config
) -> None:
    def broken(status: Status) -> None:
        raise KeyError("no such column")

    mon = monitor_factory(
        fast.replace(duration_s=0.4, status_every_s=0.1), name="cb", on_status=broken
    )
    mon.spawn(lambda: mon.pause(10), name="idle", tracked=False)
    result = mon.run()
    assert result.outcome == "error"
    assert result.errors and "status callback: KeyError" in result.errors[0]


def test_nothing_leaks_from_one_run_into_the_next(fast: Config) -> None:
    first = Monitor(fast.replace(duration_s=0.3), name="first")
    a = first.spinlock("anon_vma", "anon_vma#1")

    def crash() -> None:
        with a:
            raise ValueError("first run only")

    first.spawn(crash, name="w", tracked=False)
    first.register_thread()
    first.progress(5)
    r1 = first.run()
    assert [v.kind for v in r1.verdicts] == ["crash"]

    second = Monitor(fast.replace(duration_s=0.3), name="second")
    second.register_thread()
    second.progress()
    second.spawn(lambda: None, name="w", tracked=False)
    r2 = second.run()
    assert r2.verdicts == [] and r2.outcome == "clean"
    assert r2.stats["ops"] == 1  # the main thread's count started again from zero
    assert "anon_vma" not in r2.stats["lock_classes"]
    assert not second.cancelled or second.cancel_reason == "every worker finished"


def test_a_monitor_that_is_not_started_records_but_never_cancels() -> None:
    mon = Monitor(Config(timing=False), name="idle")
    a, b = mon.spinlock("alpha", "a"), mon.spinlock("beta", "b")
    with a, b:
        pass
    with b, a:
        pass
    assert [v.kind for v in mon.verdicts] == ["lock-order"]
    assert not mon.cancelled
    with a:  # locks go on working
        pass
    mon.stop()


def test_spawn_after_start_runs_at_once(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="late-spawn")
    ran = threading.Event()
    with mon:
        worker = mon.spawn(ran.set, name="late", tracked=False)
        assert ran.wait(5)
        worker.thread.join(5)
    assert mon.result().outcome == "clean"


def test_walk_without_a_with_block(monitor_factory: Any, fast: Config) -> None:
    mon = monitor_factory(fast, name="hooked-walk")
    lock = mon.spinlock("anon_vma", "anon_vma#1")
    with mon:
        with lock:
            walk = mon.walk("page_referenced_anon", "anon_vma#1", lock=lock, bound=8).begin()
            for _ in range(5):  # as a per-step hook of someone else's iterator would
                walk.step()
            walk.end()
        assert walk.state.walks == [] and walk.state.steps == 5 and walk.state.nwalks == 1
    assert mon.result().outcome == "clean"


def test_the_monitor_is_a_sync_factory() -> None:
    mon = Monitor(Config(timing=False), name="factory")
    spin = mon.spinlock("page_table_lock", "mm#1.page_table_lock")
    sem = mon.rwsem("mmap_sem", "mm#1.mmap_sem")
    assert spin.acquire(blocking=True) is True and spin.locked()
    spin.release()
    assert sem.down_read_trylock() is True
    sem.up_read()
    sem.down_write()
    assert sem.locked() and not sem.down_read_trylock()
    sem.up_write()
    assert (spin.name, sem.name) == ("mm#1.page_table_lock", "mm#1.mmap_sem")
    assert {c for c in mon.lockdep.classes} == {"page_table_lock", "mmap_sem"}
    mon.stop()


def test_report_defect_with_an_exception_proves_it_with_the_raise_site(
    monitor_factory: Any,
) -> None:
    mon = monitor_factory()

    def deep_model_function() -> None:
        raise ValueError("the model found something")

    try:
        deep_model_function()
    except ValueError as exc:
        verdict = mon.report_defect("crash", "found", exc=exc, stop=False)
    (stack,) = verdict.stacks.values()
    assert stack[-1].func == "deep_model_function"
    assert "deep_model_function" in verdict.chain[0]


# Not under pytest --rmapstress-watch: the watch's own monitor and watchdog let go of a
# finished thread (and so of this run) only at their next prune, up to a second later.
@pytest.mark.rmapstress(watch=False)
@pytest.mark.timeout(30)
def test_a_finished_run_is_let_go_even_if_a_thread_died_holding_a_lock(fast: Config) -> None:
    """A worker that oopses keeps its lock (like the kernel); the run must still be freed."""
    import gc
    import weakref

    def one_run() -> weakref.ref[Monitor]:
        mon = Monitor(fast.replace(duration_s=0.5))
        lock = mon.mutex("anon_vma", "anon_vma#1")

        def dies_holding() -> None:
            lock.acquire()
            raise Cancelled("stop here, lock held")

        mon.spawn(dies_holding, name="oops")
        mon.run()
        return weakref.ref(mon)

    ref = one_run()
    gc.collect()
    assert ref() is None


@pytest.mark.timeout(30)
def test_short_lived_threads_are_pruned_and_still_counted(fast: Config) -> None:
    mon = Monitor(fast.replace(duration_s=30.0))
    children = [mon.spawn(lambda: mon.progress(), name="child") for _ in range(3)]

    def spawner() -> None:
        for _ in range(150):
            children.append(mon.spawn(lambda: mon.progress(), name="child"))
            mon.pause(0.002)
        while not all(c.finished for c in children):
            mon.pause(0.01)
        # The run lets go of finished threads (about once a second): wait until it has.
        while len(mon.states()) > 3:
            mon.pause(0.05)

    mon.spawn(spawner, name="spawner", tracked=False)
    result = mon.run()
    assert result.cancel_reason == "every worker finished"  # pruned long before the budget
    assert result.stats["threads"] >= 153  # every child counted ...
    assert result.stats["ops"] >= 153
    assert len(mon.states()) <= 3  # ... but none of them kept


def test_the_harness_runs_with_threading_replaced(
    fast: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Code under test may replace threading's primitives (the watch mode does): the
    # monitor, its watchdog and lockdep must not use them, and threads threading does
    # not know (started with _thread) must get no _DummyThread that lives for ever.
    import _thread

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the harness used a threading primitive")

    for name in ("Lock", "RLock", "Condition", "Event", "Semaphore", "Barrier"):
        monkeypatch.setattr(threading, name, refuse)
    dummies = sum(isinstance(t, threading._DummyThread) for t in threading.enumerate())
    mon = Monitor(fast.replace(stop_on=frozenset({"deadlock"})), name="replaced")
    a, b = mon.spinlock("alpha", "alpha#1"), mon.spinlock("beta", "beta#1")
    ended = _thread.allocate_lock()
    ended.acquire()
    gone: list[str] = []

    def cross(first: Any, second: Any) -> None:
        try:
            with first:
                while not (a.locked() and b.locked()):
                    time.sleep(0.001)
                with second:
                    pass
        except Cancelled:
            gone.append("cancelled")
        finally:
            if len(gone) == 2:
                ended.release()

    with mon:
        _thread.start_new_thread(cross, (a, b))
        _thread.start_new_thread(cross, (b, a))
        assert ended.acquire(True, 10), "the deadlock was not broken"
    kinds = sorted({v.kind for v in mon.verdicts})
    assert kinds == ["deadlock", "lock-order"]
    deadlock = next(v for v in mon.verdicts if v.kind == "deadlock")
    assert all(name.startswith("foreign-") for name in deadlock.threads)
    monkeypatch.undo()
    assert sum(isinstance(t, threading._DummyThread) for t in threading.enumerate()) == dummies



def test_interrupt_marks_the_run_cut_short_and_keeps_its_verdicts(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast.replace(duration_s=20.0, stop_on=frozenset()), name="cut")
    found = threading.Event()

    def worker() -> None:
        mon.report_defect("use-after-free", "anon_vma#3 read after free", stop=False)
        found.set()
        while True:
            mon.progress()
            mon.pause(0.001)

    mon.spawn(worker, name="w0")
    threading.Thread(
        target=lambda: found.wait(10) and mon.interrupt("interrupted by SIGINT"),
        name="interrupter",
        daemon=True,
    ).start()
    result = mon.run()
    assert result.outcome == "interrupted"
    assert [v.kind for v in result.verdicts] == ["use-after-free"]
    assert result.cancel_reason == "interrupted by SIGINT"
    assert result.to_dict()["outcome"] == "interrupted"
    assert "INTERRUPTED after " in result.headline() and "(1 verdict before)" in result.headline()


def test_interrupt_after_a_stopping_verdict_keeps_the_defect(
    monitor_factory: Any, fast: Config
) -> None:
    mon = monitor_factory(fast.replace(duration_s=20.0, linger_s=10.0), name="decided")
    found = threading.Event()

    def worker() -> None:
        mon.report_defect("crash", "BUG_ON(!anon_vma)")
        found.set()
        while True:
            mon.progress()
            mon.pause(0.001)

    mon.spawn(worker, name="w0")
    threading.Thread(
        target=lambda: found.wait(10) and mon.interrupt("interrupted by SIGTERM"),
        name="interrupter",
        daemon=True,
    ).start()
    result = mon.run()
    # The verdict had decided the case; the signal only cut its linger.
    assert result.outcome == "defect" and result.cancel_reason == "interrupted by SIGTERM"
    assert not mon.interrupted
