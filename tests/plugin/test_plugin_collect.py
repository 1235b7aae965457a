"""Collection: which files become items, their ids, and one-line errors for bad files."""

from __future__ import annotations

from collections.abc import Callable

import pytest

Inner = Callable[..., pytest.RunResult]


def _ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if "::" in line]


@pytest.mark.timeout(60)
def test_named_scenario_file_gives_one_item_per_case(
    inner: Inner, write_scenario: Callable[..., None]
) -> None:
    write_scenario("tiny.toml", ["2.6.34", "rik-v2"], seeds=[1, 7])
    result = inner("--collect-only", "-q", "tiny.toml")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert _ids(result) == [
        "tiny.toml::2.6.34[seed=1]",
        "tiny.toml::2.6.34[seed=7]",
        "tiny.toml::rik-v2[seed=1]",
        "tiny.toml::rik-v2[seed=7]",
    ]


@pytest.mark.timeout(60)
def test_bad_scenario_files_are_one_line_collection_errors(
    inner: Inner, pytester: pytest.Pytester
) -> None:
    good = '[scenario]\nvariants = ["2.6.34"]\nduration_s = 1.0\n'
    pytester.makefile(".toml", range=good + "[threads]\nprocesses = 0\n")
    pytester.makefile(".toml", unknown=good + "[threads]\nprocess = 2\n")
    pytester.makefile(".toml", syntax='[scenario]\nvariants = ["2.6.34"\n')
    pytester.makefile(".toml", ladder=good + "[watchdog]\nwalk_s = 0.6\n")
    result = inner("range.toml", "unknown.toml", "syntax.toml", "ladder.toml")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    assert "Traceback" not in out and "rmapsim/" not in out, out
    # Each error: its section header, then the one line naming the file, key and reason.
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting range.toml*",
            "range.toml: threads.processes: must be between 1 and 64, got 0",
            "*ERROR collecting unknown.toml*",
            "unknown.toml: threads.process: unknown key (known: processes, *)",
            "*ERROR collecting syntax.toml*",
            "syntax.toml: invalid TOML: *",
            "*ERROR collecting ladder.toml*",
            "ladder.toml: watchdog: walk_s (0.6 s) must be less than hold_s (0.5 s): *",
            "*short test summary info*",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(["*Interrupted: 4 errors during collection*"])


@pytest.mark.timeout(60)
def test_other_toml_files_are_left_alone(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nrmapstress_scenarios = *.toml\n")
    pytester.makefile(".toml", pyproject='[project]\nname = "x"\n')
    pytester.makefile(".toml", other="[tool.other]\nscenario_like = true\n")
    pytester.makefile(".toml", broken="a = [\n")  # not TOML, no [scenario] header
    write_scenario("real.toml", ["2.6.34"])
    result = inner("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert _ids(result) == ["real.toml::2.6.34[seed=1]"]
    # Named on the command line, a non-scenario file is still not ours.
    named = inner("--collect-only", "-q", "other.toml")
    assert named.ret == pytest.ExitCode.USAGE_ERROR, named.stdout.str()
    assert _ids(named) == []
    assert "rmapstress" not in named.stdout.str() + named.stderr.str()


@pytest.mark.timeout(90)
def test_ini_option_adds_scenarios_to_the_default_run(
    inner: Inner, pytester: pytest.Pytester, write_scenario: Callable[..., None]
) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\ntestpaths = tests\nrmapstress_scenarios = ci/*.toml\n"
        "timeout = 45\ntimeout_method = thread\naddopts = -p no:cacheprovider\n",
    )
    pytester.mkdir("tests")
    pytester.makefile(".py", **{"tests/test_unit": "def test_unit():\n    assert True\n"})
    write_scenario("ci/check.toml", ["2.6.34"], expect={"2.6.34": "clean"})
    plain = inner("-v")
    assert plain.ret == pytest.ExitCode.OK, plain.stdout.str()
    plain.stdout.fnmatch_lines(
        ["tests/test_unit.py::test_unit PASSED*", "ci/check.toml::2.6.34[[]seed=1] PASSED*"]
    )
    plain.assert_outcomes(passed=2)
    # Paths named on the command line are the whole run, as with testpaths.
    only_tests = inner("tests")
    only_tests.assert_outcomes(passed=1)
    # Scenario items carry the rmapstress marker, so a run can leave them out.
    unit_only = inner("-m", "not rmapstress")
    unit_only.assert_outcomes(passed=1, deselected=1)


@pytest.mark.timeout(60)
def test_ini_option_naming_a_missing_file_is_a_usage_error(
    inner: Inner, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nrmapstress_scenarios = scenarios/gone.toml\n")
    result = inner("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*rmapstress_scenarios: scenarios/gone.toml: no such file*"])
