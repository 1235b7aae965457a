"""The timeout ladder: a per-test timeout must outlast the case and its way out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rmapsim.workload import load_scenario

Inner = Callable[..., pytest.RunResult]
ROOT = Path(__file__).resolve().parents[2]

# Items of a.toml get a 5 s marker, of c.toml a 30 s one; b.toml has only --timeout.
CONFTEST = """\
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if item.nodeid.startswith("a.toml"):
            item.add_marker(pytest.mark.timeout(5))
        elif item.nodeid.startswith("c.toml"):
            item.add_marker(pytest.mark.timeout(timeout=30))
"""


@pytest.mark.timeout(90)
def test_timeout_too_short_for_the_case_is_refused_naming_both_settings(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    pytester.makeconftest(CONFTEST)
    write_scenario("a.toml", ["2.6.34"], duration_s=2.0, expect={"2.6.34": "clean"})
    write_scenario("b.toml", ["2.6.34"], duration_s=2.0, expect={"2.6.34": "clean"})
    write_scenario("c.toml", ["2.6.34"], duration_s=1.0, expect={"2.6.34": "clean"})
    result = inner("a.toml", "b.toml", "c.toml", "--timeout", "3")
    result.assert_outcomes(failed=2, passed=1)
    why = "must be less than test_timeout_s"
    result.stdout.fnmatch_lines(
        [
            f"FAILED a.toml::2.6.34[[]seed=1] - a.toml: watchdog: duration_s + grace_s + "
            f"backstop_s (6 s) {why} (5 s)*",
            f"FAILED b.toml::2.6.34[[]seed=1] - b.toml: watchdog: duration_s + grace_s + "
            f"backstop_s (6 s) {why} (3 s)*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        [
            "test_timeout_s is this test's pytest-timeout (timeout marker = 5 s); "
            "duration_s = 2 s comes from a.toml (scenario.duration_s)*",
        ]
    )
    result.stdout.fnmatch_lines(["*(--timeout = 3 s); duration_s = 2 s comes from b.toml*"])
    # Refused before running: no case output for the refused items.
    assert "variant=2.6.34 seed=1: clean" not in result.stdout.str()


@pytest.mark.timeout(60)
def test_ini_timeout_is_the_outer_rung_too(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    pytester.makefile(".ini", pytest="[pytest]\ntimeout = 4\naddopts = -p no:cacheprovider\n")
    write_scenario("d.toml", ["2.6.34"], duration_s=1.0)
    result = inner("d.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*backstop_s (5 s) must be less than test_timeout_s (4 s)*",
            "*(ini option timeout = 4 s)*",
        ]
    )


@pytest.mark.timeout(60)
def test_project_ci_check_is_in_the_default_run() -> None:
    """The plain `pytest` of this repository runs scenarios/ci.toml (issue 4, item 7)."""
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "rmapstress",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    ids = [line for line in proc.stdout.splitlines() if line.startswith("scenarios/")]
    assert ids == [
        f"scenarios/ci.toml::{v}[seed=7]"
        for v in ("2.6.34-rc3", "rik-v2", "rik-v2-dst", "hannes-merge", "2.6.34", "2.6.36")
    ], proc.stdout
    scn = load_scenario(ROOT / "scenarios" / "ci.toml")
    assert {v: scn.expected(v) for v in scn.variants} == {
        "2.6.34-rc3": "defect",
        "rik-v2": "defect",
        "rik-v2-dst": "defect",
        "hannes-merge": "defect",
        "2.6.34": "clean",
        "2.6.36": "clean",
    }
    # A few seconds per variant, well inside the suite's per-test timeout.
    assert scn.duration_s <= 5.0
