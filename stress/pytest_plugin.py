"""pytest plugin: rmapstress scenario files as test items, one item per case.

A scenario file (a TOML file with a [scenario] table) is collected when it is named on
the command line (`pytest scenarios/ci.toml`) or listed in the `rmapstress_scenarios`
ini option; other .toml files are left alone.  Each case (variant x seed) is an item,
`ci.toml::2.6.34-rc3[seed=7]`, that runs in-process through `run_case` and passes when
its outcome matches the scenario's expectation.  A failure shows the case's headline,
its first verdicts with their chain and evidence, the work done and the replay command.

Timeouts: the item's pytest-timeout value (marker, --timeout, PYTEST_TIMEOUT, ini
`timeout`, read the way pytest-timeout reads them) becomes the case's `test_timeout_s`,
so the harness's ladder refuses a per-test timeout that would fire before the case has
run, stopped its workers and left its report.  Cases run with `on_stuck="raise"`: a case
whose threads do not stop fails its item with the stuck threads instead of ending pytest.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rmapsim.workload import Scenario, ScenarioError, load_scenario, matches, run_case
from rmapsim.workload.case import watchdog_config
from stress import CaseResult, Config, ConfigError, LadderError, RunReport, StuckThreadsError
from stress.pytest_watch import item_timeout as _read_timeout

INI_SCENARIOS = "rmapstress_scenarios"
MARKER = "rmapstress"
#: Verdicts, chain lines and evidence lines a failure shows (report.txt has them all).
MAX_VERDICTS = 3
MAX_CHAIN = 6
MAX_EVIDENCE = 12
MAX_VALUE = 200

# A TOML file that does not parse is still a scenario if it has this table header.
_SCENARIO_HEADER = re.compile(r"^\s*\[\s*scenario\s*\]", re.MULTILINE)


# -- configuration ----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rmapstress", "rmapstress scenario files as tests")
    group.addoption(
        "--rmapstress-logs",
        metavar="DIR",
        default=None,
        help="keep a run folder per scenario file under DIR (report.json, report.txt, "
        "events.jsonl, trace.json); default: a temporary folder removed at the end",
    )
    parser.addini(
        INI_SCENARIOS,
        "rmapstress scenario files (paths or globs relative to rootdir) collected as tests; "
        "added to the run when pytest takes its paths from testpaths",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a case of an rmapstress scenario file (deselect: -m 'not {MARKER}')"
    )
    if config.option.help or config.option.version:
        return
    configured = _configured_scenarios(config)
    logs = config.getoption("rmapstress_logs")
    root = Path(config.invocation_params.dir, logs) if logs else None
    config.stash[_RUNS] = Runs(root, configured)
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        # The plain `pytest` of the project: run the configured scenarios as well.
        given = [Path(config.invocation_params.dir, a).resolve() for a in config.args]
        for path in sorted(configured):
            if not any(path == g or g in path.parents for g in given):
                config.args.append(str(path))


def _configured_scenarios(config: pytest.Config) -> set[Path]:
    found: set[Path] = set()
    for pattern in config.getini(INI_SCENARIOS):
        hits = [
            p
            for p in map(Path, glob.glob(str(config.rootpath / pattern), recursive=True))
            if p.is_file()
        ]
        if not hits:
            raise pytest.UsageError(
                f"{INI_SCENARIOS}: {pattern}: no such file (relative to rootdir {config.rootpath})"
            )
        found.update(p.resolve() for p in hits)
    return found


def pytest_report_header(config: pytest.Config) -> str | None:
    runs = config.stash.get(_RUNS, None)
    if runs is None or not (runs.configured or runs.keep):
        return None
    # Shown up front: if even the faulthandler backstop has to end pytest, its stacks are there.
    where = "" if runs.keep else " (removed at the end; --rmapstress-logs DIR keeps them)"
    return (
        f"rmapstress: {len(runs.configured)} configured scenario file(s); "
        f"run folders in {runs.base}{where}"
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    runs = config.stash.get(_RUNS, None)
    if runs is not None and runs.keep and runs.reports:
        terminalreporter.write_sep("-", "rmapstress run folders")
        for report in runs.reports.values():
            terminalreporter.write_line(str(report.folder))


def pytest_unconfigure(config: pytest.Config) -> None:
    runs = config.stash.get(_RUNS, None)
    if runs is not None:
        runs.close()


# -- the run folders of a session -------------------------------------------------------


class Runs:
    """One RunReport per scenario file per session.

    Without --rmapstress-logs the folders live in a temporary place removed at the end:
    they are still needed while the session runs, as the emergency path and the
    faulthandler backstop write there, and the stuck case's result is read back from it.
    """

    def __init__(self, root: Path | None, configured: set[Path]) -> None:
        self.keep = root is not None
        self.base = (
            root
            if root is not None
            else Path(tempfile.gettempdir()) / f"rmapstress-pytest-{os.getpid()}"
        )
        self.configured = configured
        self.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.reports: dict[str, RunReport] = {}

    def report(self, scn: Scenario) -> RunReport:
        if scn.path not in self.reports:
            taken = {r.folder for r in self.reports.values()}
            folder = self.base / f"{self.stamp}-{scn.name}"
            n = 1
            while folder in taken:  # two files with one scenario name
                n += 1
                folder = self.base / f"{self.stamp}-{scn.name}-{n}"
            try:
                report = RunReport(folder, scenario=scn.name, events=self.keep)
            except OSError as exc:
                raise CaseFailure(f"--rmapstress-logs: cannot create {folder}: {exc}") from None
            self.reports[scn.path] = report
        return self.reports[scn.path]

    def kept(self, report: RunReport) -> Path | None:
        """The run folder if it outlives the session (--rmapstress-logs), else None."""
        return report.folder if self.keep else None

    def write(self, report: RunReport) -> None:
        """Write the kept folder's files after every case: nothing is lost if one hangs.

        A write error must not mask the case's own result (its failure text carries the
        essentials).
        """
        if self.keep:
            with contextlib.suppress(OSError):
                report.write()

    def close(self) -> None:
        for report in self.reports.values():
            self.write(report)
            report.close()
        self.reports.clear()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)


_RUNS = pytest.StashKey[Runs]()


# -- collection -------------------------------------------------------------------------


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix != ".toml":
        return None
    runs = parent.config.stash.get(_RUNS, None)
    configured = runs.configured if runs is not None else set()
    if not (parent.session.isinitpath(file_path) or file_path.resolve() in configured):
        return None
    if not _is_scenario(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


def _is_scenario(path: Path) -> bool:
    """Has a [scenario] table; a file that does not parse counts if it has the header."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return "scenario" in tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return _SCENARIO_HEADER.search(text) is not None


class ScenarioFile(pytest.File):
    """A scenario file: one item per case; a bad file is a one-line collection error."""

    def collect(self) -> Iterator[ScenarioItem]:
        try:
            scn = load_scenario(self._shown_path())
            watchdog_config(scn)
        except (ScenarioError, ConfigError) as exc:
            raise self.CollectError(str(exc)) from None
        for variant, seed in scn.cases():
            yield ScenarioItem.from_parent(
                self, name=f"{variant}[seed={seed}]", scenario=scn, variant=variant, seed=seed
            )

    def _shown_path(self) -> str:
        """The path as the user would type it from where pytest runs (errors, replay)."""
        rel = os.path.relpath(self.path, self.config.invocation_params.dir)
        return str(self.path) if rel.startswith("..") else rel


# -- items ------------------------------------------------------------------------------


class CaseFailure(Exception):
    """An item failed for a reason the plugin explains in full (no traceback)."""


class ScenarioItem(pytest.Item):
    """One case of a scenario: a kernel variant and a seed."""

    def __init__(self, *, scenario: Scenario, variant: str, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.variant = variant
        self.seed = seed
        self.add_marker(MARKER)

    def case_config(self) -> Config:
        """The case's settings, with this item's pytest-timeout as the ladder's outer rung."""
        timeout, source = item_timeout(self)
        extra: dict[str, Any] = {"on_stuck": "raise"}
        if timeout is not None:
            extra["test_timeout_s"] = timeout
        try:
            return watchdog_config(self.scenario, **extra)
        except LadderError as exc:
            if "test_timeout_s" not in exc.settings:
                raise CaseFailure(str(exc)) from None
            cfg = watchdog_config(self.scenario)
            raise CaseFailure(
                f"{exc}\n"
                f"test_timeout_s is this test's pytest-timeout ({source} = {timeout:g} s); "
                f"duration_s = {cfg.duration_s:g} s comes from {self.scenario.path} "
                f"(scenario.duration_s), grace_s = {cfg.grace_s:g} s and backstop_s = "
                f"{cfg.backstop_s:g} s from its [watchdog] table or the defaults.  Raise the "
                f"timeout above {cfg.backstop_at_s:g} s or shorten the case."
            ) from None
        except ConfigError as exc:
            raise CaseFailure(str(exc)) from None

    def runtest(self) -> None:
        cfg = self.case_config()
        runs = self.config.stash[_RUNS]
        report = runs.report(self.scenario)
        before = len(report.cases)
        try:
            case = run_case(self.scenario, self.variant, self.seed, report=report, config=cfg)
        except StuckThreadsError as exc:
            added = report.cases[before:]
            text = describe(added[-1], runs.kept(report)) if added else ""
            raise CaseFailure(
                f"hung: {len(exc.names)} thread(s) did not stop within "
                f"grace_s ({cfg.grace_s:g} s) of cancellation: {', '.join(exc.names)}\n{text}"
            ) from None
        finally:
            runs.write(report)
        expected = case.meta.get("expected")
        self.user_properties += [
            ("outcome", case.outcome),
            ("expected", expected or "clean"),
            ("first_defect_s", case.first_defect_s),
            ("replay", case.meta.get("replay")),
        ]
        text = describe(case, runs.kept(report))
        if not matches(case.outcome, expected):
            # The first line is what `-ra` shows: the mismatch and how to run it again.
            raise CaseFailure(
                f"expected {expected or 'clean'}, got {case.outcome}; "
                f"replay: {case.meta.get('replay')}\n{text}"
            )
        self.add_report_section("call", "rmapstress", text)  # shown by -rP

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.scenario.name}: {self.variant} seed {self.seed}"


def item_timeout(item: pytest.Item) -> tuple[float | None, str]:
    """The item's pytest-timeout (stress.pytest_watch reads it); a bad one fails the case."""
    return _read_timeout(item, CaseFailure)


# -- the failure text -------------------------------------------------------------------


def describe(case: CaseResult, folder: Path | None = None) -> str:
    """The case's report summary: headline, first verdicts, work done, replay commands."""
    st = case.stats
    lines = [
        case.headline(),
        f"ran {case.duration_s:.2f} s; stopped because: {case.cancel_reason or 'n/a'}",
    ]
    for n, v in enumerate(case.verdicts[:MAX_VERDICTS], 1):
        repeat = f", seen {v.count} times" if v.count > 1 else ""
        lines.append(
            f"verdict {n} of {len(case.verdicts)}: {v.kind} at {v.at_s:.3f} s{repeat}: {v.summary}"
        )
        if v.chain:
            lines.append("  who waits for whom:")
            lines += [f"    {c}" for c in v.chain[:MAX_CHAIN]]
            if len(v.chain) > MAX_CHAIN:
                lines.append(f"    ... {len(v.chain) - MAX_CHAIN} more")
        if v.evidence:
            lines.append("  evidence:")
            items = list(v.evidence.items())
            lines += [f"    {k}: {_short(val)}" for k, val in items[:MAX_EVIDENCE]]
            if len(items) > MAX_EVIDENCE:
                lines.append(f"    ... {len(items) - MAX_EVIDENCE} more in report.txt")
    if len(case.verdicts) > MAX_VERDICTS:
        lines.append(f"... {len(case.verdicts) - MAX_VERDICTS} more verdict(s) in report.txt")
    for detail in case.stuck_detail:
        lines.append(f"stuck: {detail.get('doing', detail.get('thread'))}")
        for frame in detail.get("stack", [])[-3:]:
            lines.append(
                f"    {os.path.basename(frame['file'])}:{frame['line']} in "
                f"{frame['func']}: {frame['code']}"
            )
    lines += [f"internal error: {e.splitlines()[0]}" for e in case.errors[:3] if e]
    lines.append(
        f"stats: {st.get('ops', 0):,} operations ({st.get('ops_per_s', 0):,.0f}/s), "
        f"{st.get('walks', 0):,} walks ({st.get('walks_per_s', 0):,.0f}/s), "
        f"{st.get('walk_steps', 0):,} walk steps, {st.get('threads', 0):,} threads over the run"
    )
    lines.append(f"replay: {case.meta.get('replay')}")
    if "cause_replay" in case.meta:
        lines.append(f"cause (KASAN): {case.meta['cause_replay']}")
    if folder is not None:
        lines.append(f"report: {folder / 'report.txt'}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = ", ".join(_short(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."
