"""The controlled scheduler on plain threaded code: strategies, logical time, the verdicts
of a run where nothing can run, replay from files, shrinking, the exploration API.

Nothing here uses the model: the scheduler is part of the generic harness.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import stress
from stress import Config, Monitor
from stress.sched import PCT, RandomWalk, Replay, RoundRobin, Scheduler, Strategy, make
from stress.sched.explore import run_schedule
from stress.sched.pool import ThreadPool
from stress.sched.repro import Reproducer, ReproducerError


class Box:
    def __init__(self, mon: Monitor) -> None:
        self.lock = mon.mutex("box")
        self.value = 0
        self.log: list[str] = []


def worker(name: str) -> Any:
    def body(box: Box) -> None:
        for i in range(4):
            with box.lock:
                box.log.append(f"{name}{i}")
            stress.yield_point(f"{name}:after")

    return body


def three() -> dict[str, Any]:
    return {"a": worker("a"), "b": worker("b"), "c": worker("c")}


def lost_update(box: Box) -> None:
    seen = box.value
    stress.yield_point("loaded")
    box.value = seen + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["pct", "random", "round-robin"])
def test_each_strategy_gives_the_same_run_for_the_same_seed(name: str) -> None:
    def once(seed: int) -> list[Any]:
        params = {"window": 40} if name == "pct" else {}
        run = run_schedule(three(), make(name, seed, **params), setup=Box, max_steps=2000)
        return [(s.task, s.point, s.n, s.to) for s in run.switches]

    first = once(5)
    assert once(5) == first
    assert first, "three threads that yield must switch at least once"
    if name != "round-robin":  # round-robin has no randomness to vary
        assert any(once(seed) != first for seed in range(6, 16))


@pytest.mark.timeout(60)
def test_round_robin_hands_over_every_quantum_points_in_creation_order() -> None:
    run = run_schedule(three(), RoundRobin(0, quantum=3), setup=Box, max_steps=2000)
    preempt = [s for s in run.switches if s.why == "preempt"]
    assert preempt
    order = ["a", "b", "c"]
    for s in preempt:
        assert s.to == order[(order.index(s.task) + 1) % 3] or s.to not in order
    # A turn is exactly `quantum` points unless the thread blocked or ended first.
    steps = [s.step for s in run.switches]
    gaps = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    assert max(gaps) <= 3 + 1


@pytest.mark.timeout(60)
def test_pct_finds_a_lost_update_in_a_few_schedules() -> None:
    class Counter:
        value = 0

    result = stress.explore(
        {"t0": lost_update, "t1": lost_update},
        setup=lambda: Counter(),
        invariant=lambda c: c.value == 2,
        schedules=20,
        seed=1,
    )
    assert not result.ok
    assert result.failure is not None
    assert result.failure.verdict.kind == "invariant"
    assert result.schedules <= 20


@pytest.mark.timeout(60)
def test_nothing_runnable_is_a_deadlock_naming_the_cycle_at_once() -> None:
    def setup(mon: Monitor) -> Any:
        return (mon.mutex("A", "lock-A"), mon.mutex("B", "lock-B"))

    def ab(locks: Any) -> None:
        with locks[0]:
            stress.yield_point("holding A")
            with locks[1]:
                pass

    def ba(locks: Any) -> None:
        with locks[1]:
            stress.yield_point("holding B")
            with locks[0]:
                pass

    # Lock order checking off: the run goes on until the threads really deadlock.
    t0 = time.perf_counter()
    for seed in range(40):
        run = run_schedule(
            {"ab": ab, "ba": ba}, RandomWalk(seed, p=0.5), setup=setup, lock_order=False
        )
        if run.verdict is not None and run.verdict.kind == "deadlock":
            break
    else:
        pytest.fail("no schedule of 40 deadlocked")
    assert time.perf_counter() - t0 < 30  # found, not timed out
    v = run.verdict
    assert set(v.threads) == {"ab", "ba"}
    assert set(v.locks) == {"lock-A", "lock-B"}
    assert "a cycle" in v.summary
    assert any("holding" in line or "waits" in line for line in v.chain)


@pytest.mark.timeout(60)
def test_a_lock_left_held_by_a_finished_thread_is_a_leaked_lock() -> None:
    def setup(mon: Monitor) -> Any:
        return mon.mutex("leak", "leaked-lock")

    def leaker(lock: Any) -> None:
        lock.acquire()  # and never releases it

    def victim(lock: Any) -> None:
        stress.yield_point("start")
        with lock:
            pass

    run = run_schedule(
        {"leaker": leaker, "victim": victim}, Strategy(0), setup=setup, lock_order=False
    )
    assert run.verdict is not None
    assert run.verdict.kind == "leaked-lock"
    assert "leaked-lock" in run.verdict.locks
    assert "leaker" in run.verdict.summary
    assert "victim" in "\n".join(run.verdict.chain)


@pytest.mark.timeout(60)
def test_waits_nobody_can_end_are_a_stall() -> None:
    def setup(mon: Monitor) -> Any:
        return {"ready": False}

    def waits(state: Any) -> None:
        from stress.sched.core import _tls

        _tls.sched.wait_until(lambda: state["ready"], "wait:ready")  # nobody sets it

    run = run_schedule({"w1": waits, "w2": waits}, Strategy(0), setup=setup)
    assert run.verdict is not None and run.verdict.kind == "stall"
    assert "no thread can run" in run.verdict.summary


@pytest.mark.timeout(60)
def test_a_timed_wait_times_out_only_when_nothing_else_can_run() -> None:
    events: list[str] = []

    def setup(mon: Monitor) -> Any:
        return mon.mutex("m", "m")

    def holder(lock: Any) -> None:
        with lock:
            for i in range(5):
                stress.yield_point("busy")
                events.append(f"holder{i}")
        events.append("released")

    def waiter(lock: Any) -> None:
        stress.yield_point("go")
        got = lock.acquire(timeout=0.001)  # logical: never before the holder is done
        events.append(f"waiter got={got}")
        if got:
            lock.release()

    run_schedule({"holder": holder, "waiter": waiter}, RoundRobin(0, quantum=1), setup=setup)
    # The holder ran on while the waiter waited: the wait never timed out.
    assert "waiter got=True" in events and "waiter got=False" not in events
    assert events.index("holder4") < events.index("waiter got=True")


@pytest.mark.timeout(60)
def test_sleep_is_logical_time() -> None:
    sched = Scheduler(Strategy(0), max_steps=100_000, steps_per_s=1000)
    mon = Monitor(Config(duration_s=1, on_stuck="raise"), scheduler=sched)
    order: list[str] = []

    def sleeper() -> None:
        mon.pause(50.0)  # fifty seconds, logically: 50,000 steps jumped, not waited
        order.append("sleeper")

    def quick() -> None:
        order.append("quick")

    mon.spawn(sleeper, name="sleeper")
    mon.spawn(quick, name="quick")
    t0 = time.perf_counter()
    result = mon.run()
    assert time.perf_counter() - t0 < 20
    assert order == ["quick", "sleeper"]
    assert result.outcome == "clean"
    assert sched.step >= 50_000


@pytest.mark.timeout(60)
def test_a_thread_that_stops_reaching_points_is_reported_with_its_stack() -> None:
    sched = Scheduler(Strategy(0), max_steps=1000)
    cfg = Config(duration_s=3, verdict_s=0.5, hold_s=0.3, walk_s=0.2, grace_s=6, on_stuck="raise")
    mon = Monitor(cfg, scheduler=sched)
    lock = mon.mutex("stuck", "stuck-lock")

    def sleepy() -> None:
        with lock:
            time.sleep(2.0)  # in C, no scheduling point: only wall time can tell

    mon.spawn(sleepy, name="sleepy")
    result = mon.run()
    assert result.outcome == "defect"
    v = result.verdicts[0]
    assert v.kind == "stall"
    assert "without reaching a scheduling point" in v.summary
    assert "stuck-lock" in v.summary
    assert any(f.func == "sleepy" for f in v.stacks["sleepy"])


@pytest.mark.timeout(60)
def test_a_busy_wait_that_never_ends_is_a_livelock() -> None:
    sched = Scheduler(Strategy(0), max_steps=100_000, spin_limit=50)
    mon = Monitor(Config(duration_s=1, on_stuck="raise"), scheduler=sched)
    flag = {"set": False}

    def spinner() -> None:
        while not flag["set"]:
            mon.relax("spin:flag")

    mon.spawn(spinner, name="spinner")
    result = mon.run()
    assert [v.kind for v in result.verdicts] == ["livelock"]
    assert "spin:flag" in result.verdicts[0].summary


def _save(tmp_path: Path, module: str) -> Path:
    path = tmp_path / "racy_mod.py"
    path.write_text(textwrap.dedent(module), encoding="utf-8")
    return path


RACY = """
    import stress

    class Counter:
        def __init__(self):
            self.value = 0

    def setup():
        return Counter()

    def bump(c):
        seen = c.value
        stress.yield_point("loaded")
        c.value = seen + 1

    def check(c):
        return c.value == 2
"""


def _explore_module(tmp_path: Path) -> Path:
    """Explore a module on disk in a child process (so it can be imported back)."""
    _save(tmp_path, RACY)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import stress, racy_mod
        r = stress.explore([racy_mod.bump, racy_mod.bump], setup=racy_mod.setup,
                           invariant=racy_mod.check, schedules=50, seed=3,
                           save={str(tmp_path / "repro.json")!r})
        print("FAILED" if r.failure else "OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert "FAILED" in proc.stdout, proc.stderr
    return tmp_path / "repro.json"


def _replay(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stress", "replay", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(120)
def test_a_saved_failure_replays_the_same_every_time(tmp_path: Path) -> None:
    path = _explore_module(tmp_path)
    rep = Reproducer.load(path)
    assert rep.kind == "function"
    assert rep.target["threads"]["t0"]["qualname"] == "bump"
    results = []
    for _ in range(5):
        proc = _replay(path)
        assert proc.returncode == 1, proc.stderr
        results.append(json.loads(proc.stdout))
    assert all(r["reproduced"] and r["same_objects"] for r in results)
    assert len({json.dumps(r["verdicts"]) for r in results}) == 1


@pytest.mark.timeout(120)
def test_replay_on_changed_code_names_what_changed(tmp_path: Path) -> None:
    path = _explore_module(tmp_path)
    # Fix the race: the recorded failure can no longer happen, and the file is stale.
    _save(tmp_path, RACY.replace("seen = c.value", "seen = c.value\n        c.value = seen + 1")
          .replace("c.value = seen + 1\n\n    def check", "pass\n\n    def check"))
    proc = _replay(path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "racy_mod.py (changed)" in proc.stderr
    assert "no longer fits this code" in proc.stderr


def test_a_bad_reproducer_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "stress-reproducer", "version": 99}), encoding="utf-8")
    proc = _replay(bad)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "version 99 is not supported" in proc.stderr
    with pytest.raises(ReproducerError, match="not valid JSON"):
        (tmp_path / "x.json").write_text("{", encoding="utf-8")
        Reproducer.load(tmp_path / "x.json")


@pytest.mark.timeout(60)
def test_shrinking_keeps_the_failure_with_fewer_preemptions() -> None:
    class Counter:
        value = 0

    def slow_bump(c: Any) -> None:
        for i in range(6):
            stress.yield_point(f"noise{i}")
        lost_update(c)

    r = stress.explore(
        {"t0": slow_bump, "t1": slow_bump},
        setup=lambda: Counter(),
        invariant=lambda c: c.value == 2,
        strategy="random",
        schedules=200,
        seed=2,
    )
    assert r.failure is not None
    f = r.failure
    after = sum(1 for s in f.run.switches if s.why == "preempt")
    assert after <= f.original_preemptions
    assert after <= 2
    assert f.run.verdict is not None and f.run.verdict.kind == "invariant"
    # The shrunk schedule still fails when replayed.
    again = run_schedule(
        {"t0": slow_bump, "t1": slow_bump},
        Replay(f.run.switches),
        setup=lambda: Counter(),
        invariant=lambda c: c.value == 2,
    )
    assert again.key == f.run.key


@pytest.mark.timeout(60)
def test_the_report_shows_the_interleaving_with_source_lines() -> None:
    class Counter:
        value = 0

    r = stress.explore(
        {"t0": lost_update, "t1": lost_update},
        setup=lambda: Counter(),
        invariant=lambda c: c.value == 2,
        schedules=50,
    )
    text = r.report()
    assert "Interleaving:" in text
    assert "test_sched.py:" in text and "in lost_update" in text
    assert "loaded" in text


@pytest.mark.timeout(60)
def test_pooled_threads_are_reused_across_runs() -> None:
    pool = ThreadPool()
    for seed in range(20):
        run_schedule(three(), PCT(seed, window=50), setup=Box, pool=pool)
    assert pool.threads <= 3


@pytest.mark.timeout(60)
def test_a_clean_function_explores_every_schedule_asked() -> None:
    def safe(box: Box) -> None:
        with box.lock:
            box.value += 1

    r = stress.explore(
        {"a": safe, "b": safe}, setup=Box, invariant=lambda b: b.value == 2, schedules=100
    )
    assert r.ok and r.schedules == 100
