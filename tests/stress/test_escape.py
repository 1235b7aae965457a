"""Getting out: the emergency exit and the faulthandler backstop, in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from stress import EXIT_BACKSTOP, EXIT_EMERGENCY, Config, Monitor, StuckThreadsError

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def run_child(
    tmp_path: Path, body: str, limit: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=limit,
    )
    return proc, time.monotonic() - start


def test_worker_stuck_in_c_ends_in_the_emergency_exit(tmp_path: Path) -> None:
    proc, elapsed = run_child(
        tmp_path,
        """
        import sys, time
        from stress import Config, Monitor

        cfg = Config(poll_s=0.02, walk_s=0.1, hold_s=0.2, verdict_s=0.5, duration_s=1.0,
                     grace_s=0.5, backstop_s=10)
        mon = Monitor(cfg, name="stuck", emergency_dir=sys.argv[1],
                      meta={"variant": "demo", "seed": 3, "replay": "child.py --seed 3"})
        lock = mon.spinlock("anon_vma", "anon_vma#4")

        def sleeper():
            with lock:
                time.sleep(60)  # in C: cancellation cannot reach it

        def waiter():
            time.sleep(0.05)
            with lock:
                pass

        mon.spawn(sleeper, name="sleeper", tracked=False)
        mon.spawn(waiter, name="waiter", tracked=False)
        mon.run()
        print("not reached")
    """,
        limit=60,
    )
    folder = tmp_path / "run"
    assert proc.returncode == EXIT_EMERGENCY, proc.stderr
    assert "not reached" not in proc.stdout
    # The long hold is named at ~0.2 s and cancels the run; the sleeper then gets grace_s,
    # and the process leaves long before the sleeper's 60 s are up.
    assert elapsed < 30
    assert "stress: emergency (exit status 124): 1 thread(s) did not stop" in proc.stderr
    assert "sleeper" in proc.stderr and str(folder / "report.txt") in proc.stderr
    text = (folder / "report.txt").read_text()
    assert "EMERGENCY EXIT: these threads did not stop after cancellation: sleeper" in text
    assert "LONG-HOLD" in text and "time.sleep(60)" in text
    case = json.loads((folder / "report.json").read_text())["cases"][0]
    assert case["stuck_threads"] == ["sleeper"]
    assert case["outcome"] == "defect" and case["variant"] == "demo"
    assert [v["kind"] for v in case["verdicts"]] == ["long-hold"]
    stacks = (folder / "emergency-stacks.txt").read_text()
    assert "in sleeper" in stacks and "Thread" in stacks


def test_backstop_fires_when_nothing_can_take_the_gil(tmp_path: Path) -> None:
    proc, elapsed = run_child(
        tmp_path,
        """
        import re, sys
        from stress import Config, Monitor

        cfg = Config(poll_s=0.02, walk_s=0.1, hold_s=0.2, verdict_s=0.5, duration_s=0.6,
                     grace_s=0.3, backstop_s=0.5)
        mon = Monitor(cfg, name="gil", emergency_dir=sys.argv[1])

        def hog():
            # Catastrophic backtracking: the regex engine holds the GIL for minutes.
            re.match(r"(a+)+$", "a" * 40 + "b")

        mon.spawn(hog, name="hog", tracked=False)
        mon.run()
        print("not reached")
    """,
        limit=60,
    )
    assert proc.returncode == EXIT_BACKSTOP, proc.stderr
    assert elapsed < 30  # the regex alone would hold the GIL for minutes
    stacks = (tmp_path / "run" / "backstop-stacks.txt").read_text()
    assert "Timeout" in stacks and "in hog" in stacks


def test_on_stuck_raise_writes_the_report_and_raises(tmp_path: Path) -> None:
    cfg = Config(
        poll_s=0.02,
        walk_s=0.1,
        hold_s=0.2,
        verdict_s=0.5,
        duration_s=0.3,
        grace_s=0.3,
        on_stuck="raise",
    )
    mon = Monitor(cfg, name="raise", emergency_dir=tmp_path)
    release = threading.Event()
    worker = mon.spawn(lambda: release.wait(10), name="deaf", tracked=False)
    start = time.monotonic()
    with pytest.raises(StuckThreadsError) as err:
        mon.run()
    elapsed = time.monotonic() - start
    release.set()
    worker.thread.join(5)
    assert err.value.names == ["deaf"]
    assert err.value.report_path == str(tmp_path / "report.txt")
    assert elapsed < 8  # not the 10 s the deaf worker would take
    assert "deaf" in (tmp_path / "report.txt").read_text()
    result = mon.result()
    assert result.stuck == ["deaf"] and result.outcome == "error"
    assert not mon.running
