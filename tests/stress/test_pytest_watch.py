"""pytest --rmapstress-watch, run for real on small test files (pytester, in process)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

#: In-process runs see the harness already imported (not assertion-rewritten): say nothing.
QUIET = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")

#: Quicker thresholds for these tests (the defaults are for users' suites).
FAST_INI = """
[pytest]
rmapstress_watch_settings =
    hold_s = 0.4
    verdict_s = 0.8
"""

ABBA = """
import threading, time

def cross(first, second):
    with first:
        time.sleep(0.05)
        with second:
            pass

def test_abba():
    a = threading.Lock()
    b = threading.Lock()
    t1 = threading.Thread(target=cross, args=(a, b), name="a-then-b")
    t2 = threading.Thread(target=cross, args=(b, a), name="b-then-a")
    t1.start(); t2.start(); t1.join(); t2.join()
"""


def test_a_deadlocked_test_fails_with_its_verdict_and_the_session_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(FAST_INI)
    pytester.makepyfile(test_abba=ABBA + "\n\ndef test_after():\n    assert True\n")
    result = pytester.runpytest("--rmapstress-watch", *QUIET)
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    # The headline, the blocker chain, the stacks with their source lines, the replay.
    assert re.search(r"rmapstress watch: deadlock: .* waits for b@test_abba.py:11", out)
    assert "Who waits for whom:" in out
    assert "in cross: with second:" in out
    assert 'File "' in out and "with second:" in out
    assert "Run it again: pytest test_abba.py::test_abba --rmapstress-watch" in out
    assert "LOCK-ORDER at" in out  # the inversion behind it, where each edge was taken
    assert re.search(r"=+ 1 failed, 1 passed in [\d.]+s", out)


# The inner sessions run in this process: when this suite is itself watched, threading is
# already replaced around them; the tests that look at threading as it is are not watched.
@pytest.mark.rmapstress(watch=False)
def test_without_the_flag_nothing_is_instrumented(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import _thread, threading

        def test_plain():
            assert type(threading.Lock()) is _thread.LockType
        """
    )
    pytester.runpytest(*QUIET).assert_outcomes(passed=1)


def test_a_lock_order_inversion_fails_a_test_that_did_not_hang(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(FAST_INI)
    pytester.makepyfile(
        """
        import threading
        import pytest

        def inverted():
            a = threading.Lock()
            b = threading.Lock()
            with a, b:
                pass
            def other_way():
                with b, a:
                    pass
            t = threading.Thread(target=other_way)
            t.start(); t.join()

        def test_fails():
            inverted()

        @pytest.mark.rmapstress(lock_order="warn")
        def test_warns():
            inverted()
        """
    )
    result = pytester.runpytest("--rmapstress-watch", *QUIET, "-rA")
    result.assert_outcomes(failed=1, passed=1, warnings=1)
    out = result.stdout.str()
    assert "rmapstress watch: lock-order: possible deadlock:" in out
    assert "RmapstressWatchWarning" in out


def test_an_exception_in_a_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading
        import pytest

        def boom():
            raise KeyError("missing")

        def test_fails():
            t = threading.Thread(target=boom, name="loader")
            t.start(); t.join()

        @pytest.mark.rmapstress(thread_errors="warn")
        def test_warns():
            t = threading.Thread(target=boom, name="loader")
            t.start(); t.join()
        """
    )
    result = pytester.runpytest("--rmapstress-watch", *QUIET)
    result.assert_outcomes(failed=1, passed=1, warnings=3)  # pytest's two, and ours
    out = result.stdout.str()
    assert "rmapstress watch: crash: loader crashed: KeyError: 'missing'" in out
    assert "RmapstressWatchWarning: rmapstress watch: crash: loader crashed" in out


@pytest.mark.rmapstress(watch=False)
def test_marker_ini_and_fixture_turn_the_watch_on_and_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrmapstress_watch = true\n")
    pytester.makepyfile(
        """
        import _thread, threading
        import pytest
        import stress

        def test_watched_by_the_ini():
            assert isinstance(threading.Lock(), stress.Lock)

        @pytest.mark.rmapstress(watch=False)
        def test_left_alone():
            assert type(threading.Lock()) is _thread.LockType

        def test_fixture(stress_monitor):
            assert threading.Lock().monitor is stress_monitor
            assert stress_monitor.running
        """
    )
    pytester.runpytest(*QUIET).assert_outcomes(passed=3)


def test_bad_settings_are_one_line_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrmapstress_watch_settings =\n    hold_z = 2\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*QUIET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "rmapstress_watch_settings: hold_z: unknown setting" in result.stderr.str()


def test_a_timeout_too_short_for_a_verdict_fails_at_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--rmapstress-watch", "--timeout", "2", *QUIET)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "this test's pytest-timeout (--timeout = 2 s) leaves no time to name a hang" in out
    assert "verdict_s = 1.5 s" in out


def test_a_test_blocked_past_its_budget_fails_before_pytest_timeout(
    pytester: pytest.Pytester,
) -> None:
    # Nothing here is a hang the watchdog can name (a sleep, no lock): at the end of the
    # budget the watch fails the test, before pytest-timeout would, with where it was.
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.mark.timeout(4)
        def test_sleeps():
            time.sleep(60)
        """
    )
    start = time.monotonic()
    result = pytester.runpytest("--rmapstress-watch", *QUIET)
    assert time.monotonic() - start < 30
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "rmapstress watch: the test ran past its budget (2.5 s" in out
    assert "Timeout" not in out  # pytest-timeout did not have to fire


def test_stuck_threads_do_not_hold_the_session_at_exit(pytester: pytest.Pytester) -> None:
    # A real process: its exit must not wait for the non-daemon thread asleep for 60 s.
    pytester.makepyfile(
        """
        import threading, time

        def test_sleep_under_lock():
            lock = threading.Lock()
            def refresh():
                with lock:
                    time.sleep(60)
            t = threading.Thread(target=refresh, name="refresher")
            t.start()
            time.sleep(0.1)
            with lock:
                pass
        """
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--rmapstress-watch", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - start < 50, "the process waited for the stuck thread"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rmapstress watch: long-hold:" in proc.stdout
    assert "1 thread(s) did not stop within grace_s" in proc.stdout
    assert re.search(r"refresher holds lock@test_\w+\.py:\d+, has run no Python code", proc.stdout)
    assert re.search(r"=+ 1 failed in [\d.]+s", proc.stdout)


def test_examples_dir_is_not_collected_by_the_suite() -> None:
    # The hanging examples run only when asked for (tests/stress/test_watch_examples.py).
    root = Path(__file__).resolve().parents[2]
    assert (root / "examples" / "conftest.py").exists()
    assert "examples" not in (root / "pyproject.toml").read_text().split("testpaths")[1][:40]
