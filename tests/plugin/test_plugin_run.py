"""Running cases: pass on the expected outcome, fail with the report summary and replay."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Inner = Callable[..., pytest.RunResult]
RMAPSTRESS = str(Path(sys.executable).with_name("rmapstress"))


@pytest.mark.timeout(90)
def test_case_matching_its_expectation_passes_and_leaves_a_run_folder(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    write_scenario("ok.toml", ["2.6.34"], expect={"2.6.34": "clean"})
    result = inner("ok.toml", "--rmapstress-logs", "runs", "-rP")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["variant=2.6.34 seed=1: clean (expected: clean)"])
    [report] = list((pytester.path / "runs").glob("*-ok/report.json"))
    body = json.loads(report.read_text(encoding="utf-8"))
    assert [(c["variant"], c["seed"], c["outcome"]) for c in body["cases"]] == [
        ("2.6.34", 1, "clean")
    ]
    assert (report.parent / "report.txt").is_file()


@pytest.mark.timeout(90)
def test_wrong_expectation_fails_with_the_replay_command(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    write_scenario("wrong.toml", ["2.6.34"], expect={"2.6.34": "defect"}, memory="reuse")
    result = inner("wrong.toml")
    result.assert_outcomes(failed=1)
    replay = "rmapstress run wrong.toml --variant 2.6.34 --seed 1"
    result.stdout.fnmatch_lines(
        [
            f"FAILED wrong.toml::2.6.34[[]seed=1] - expected defect, got clean; replay: {replay}",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "variant=2.6.34 seed=1: clean (expected: defect)",
            "stats: * operations (*/s), * walks (*/s), * walk steps, *",
            f"replay: {replay}",
            f"cause (KASAN): {replay} --memory kasan",
        ]
    )
    # The command is exact: run as printed, it finds the same mismatch (exit 1).
    again = pytester.run(RMAPSTRESS, *shlex.split(replay)[1:], "--no-progress", timeout=60)
    assert again.ret == 1, again.stdout.str() + again.stderr.str()
    again.stdout.fnmatch_lines(["*2.6.34*clean*defect MISMATCH*"])


@pytest.mark.timeout(90)
def test_unexpected_defect_fails_with_verdicts_chain_and_evidence(
    inner: Inner, write_scenario: Callable[..., None]
) -> None:
    # hannes-merge under KASAN shows its use-after-free within ~0.1 s (ci.toml's seed).
    write_scenario(
        "defect.toml",
        ["hannes-merge"],
        seeds=[7],
        duration_s=4.0,
        expect={"hannes-merge": "clean"},
    )
    result = inner("defect.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "expected clean, got defect; replay: rmapstress run defect.toml "
            "--variant hannes-merge --seed 7",
            "variant=hannes-merge seed=7: DEFECT after * s (*) (expected: clean)",
            "verdict 1 of *: * at * s*: *",
            "  who waits for whom:",
            "    * found it at *",
            "  evidence:",
            "    object: *",
        ]
    )
    result.stdout.fnmatch_lines(["stats: *", "replay: rmapstress run defect.toml *"])


# A fault put into the inner session: kswapd-0 of scenario "hung" spins for ever without
# ever reaching an instrumented point, so it cannot see the cancellation, the way a
# thread stuck in an endless uninstrumented loop would.  Real threads, real harness.
HANG = """\
import time

from rmapsim.workload import actors

_kswapd = actors.World.kswapd


def kswapd(self, index):
    while index == 0 and self.scn.name == "hung":
        time.sleep(0.005)  # never calls progress() or checkpoint()
    return _kswapd(self, index)


actors.World.kswapd = kswapd
"""


@pytest.mark.timeout(90)
def test_hung_case_fails_its_item_and_the_session_goes_on(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    pytester.makeconftest(HANG)
    watchdog = "\n[watchdog]\ngrace_s = 0.5\n"
    write_scenario("hung.toml", ["2.6.34"], duration_s=2.0, extra=watchdog)
    write_scenario("after.toml", ["2.6.34"], duration_s=1.0)
    result = inner("hung.toml", "after.toml", "-v")
    # The stuck thread is abandoned; the next case runs in the same session and passes.
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["hung.toml::2.6.34[[]seed=1] FAILED*", "after.toml::2.6.34[[]seed=1] PASSED*"]
    )
    result.stdout.fnmatch_lines(
        [
            "hung: 1 thread(s) did not stop within grace_s (0.5 s) of cancellation: kswapd-0",
            "variant=2.6.34 seed=1: *",
            "*",
            # It sleeps outside any lock: no verdict calls it a stall, but it never stops.
            "stuck: kswapd-0*",
            "    conftest.py:* in kswapd: time.sleep(0.005)*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["replay: rmapstress run hung.toml --variant 2.6.34 --seed 1"])
