"""rmapstress run: scenario files on real threads, a table, a run folder, an exit code."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmapsim.workload import Scenario, ScenarioError, load_scenario, matches, run_case
from rmapsim.workload.case import watchdog_config
from rmapsim.workload.scenario import OVERRIDE_FLAGS
from stress import CaseResult, ConfigError, Interrupts, RunReport, Status
from stress.cli import EXIT_DEFECT, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError
from stress.runfiles import new_run_folder

DEFAULT_SCENARIO = "scenarios/lkml-2010.toml"

#: argparse destination -> scenario key path
OVERRIDES = {
    "duration": "duration_s",
    "audit": "audit_interval_s",
    "memory": "memory.mode",
    "processes": "threads.processes",
    "threads": "threads.threads_per_process",
    "reclaim": "threads.reclaim_walkers",
    "yield_prob": "yield.probability",
    "schedule": "schedule.mode",
    "strategy": "schedule.strategy",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="put kernel variants under load on real threads",
        description="Run scenario files (default: scenarios/lkml-2010.toml): each variant and "
        "seed is a case that stops at its first defect or at the end of its duration.",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario TOML files")
    p.add_argument("--variant", help="run these variants instead (comma-separated)")
    p.add_argument("--seed", help="run these seeds instead (comma-separated whole numbers)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds per case")
    p.add_argument(
        "--memory",
        choices=("reuse", "kasan"),
        help="memory model instead of the scenario's memory.mode: 'reuse' recycles freed "
        "objects as SLUB does, 'kasan' poisons them and names the bad access",
    )
    p.add_argument("--processes", type=int, metavar="N", help="live processes kept")
    p.add_argument("--threads", type=int, metavar="N", help="threads per process")
    p.add_argument("--reclaim", type=int, metavar="N", help="reclaim walker threads")
    p.add_argument(
        "--audit",
        type=float,
        metavar="S",
        help="stop the world and audit I1-I9 every S seconds (0: off)",
    )
    p.add_argument(
        "--yield-prob", type=float, metavar="P", help="yield probability at race windows"
    )
    p.add_argument(
        "--schedule",
        choices=("free", "controlled"),
        help="who switches threads: the OS (free) or the harness, one thread at a time, "
        "replayable exactly (controlled)",
    )
    p.add_argument(
        "--strategy",
        choices=("pct", "random", "round-robin"),
        help="controlled scheduling strategy (default: the scenario's, else pct)",
    )
    p.add_argument(
        "--reproduce",
        type=float,
        default=60.0,
        metavar="S",
        help="after a free-running case finds a defect, spend up to S seconds finding a "
        "controlled schedule that replays it exactly (0: do not; default: 60)",
    )
    p.add_argument("--logs", metavar="DIR", default="logs", help="where the run folder goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, status lines only")


def default_scenario() -> Path:
    here = Path(DEFAULT_SCENARIO)
    if here.is_file():
        return here
    return Path(__file__).resolve().parent.parent / DEFAULT_SCENARIO


def _load(args: argparse.Namespace) -> list[Scenario]:
    paths = [Path(p) for p in args.scenarios] or [default_scenario()]
    changes: dict[str, Any] = {OVERRIDES[k]: getattr(args, k) for k in OVERRIDES}
    if args.variant is not None:
        changes["variants"] = _items("--variant", args.variant)
    if args.seed is not None:
        try:
            changes["seeds"] = [int(s, 0) for s in _items("--seed", args.seed)]
        except ValueError:
            raise UsageError(f"--seed: expected whole numbers, got {args.seed!r}") from None
    out = []
    for path in paths:
        try:
            scn = load_scenario(path)
            if any(v is not None for v in changes.values()):
                scn = scn.override(**changes)
        except ScenarioError as exc:
            text = str(exc)
            for key, flag in OVERRIDE_FLAGS.items():
                text = text.replace(f"override: scenario.{key}:", f"{flag}:").replace(
                    f"override: {key}:", f"{flag}:"
                )
            raise UsageError(text) from None
        try:
            watchdog_config(scn)
        except ConfigError as exc:
            text = str(exc)
            if args.duration is not None:  # the option broke the ladder: name it first
                text = f"--duration {args.duration:g}: too short for {text}"
            raise UsageError(text) from None
        out.append(scn)
    return out


def _items(option: str, text: str) -> list[str]:
    """The comma-separated items of an option; an empty one is a mistake, not a skip."""
    items = [t.strip() for t in text.split(",")]
    if len(items) > 1 and not all(items):
        raise UsageError(f"{option}: empty item in {text!r}")
    return [t for t in items if t]


class Progress:
    """A progress bar on a terminal (rich), else a status line every few seconds."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.total = total
        self.bar: Any = None
        self.task: Any = None
        self.last_line = 0.0
        self.case = ""
        self.duration = 1.0
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self.bar.start()

    def start_case(self, index: int, label: str, duration: float) -> None:
        self.case = f"[{index}/{self.total}] {label}"
        self.duration = duration
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(self.case, total=duration, status="starting")
        else:
            print(f"{self.case}: running (up to {duration:g} s)", flush=True)
            self.last_line = time.monotonic()

    def status(self, st: Status) -> None:
        text = (
            f"{st.ops_per_s:,.0f} ops/s, {st.walks_per_s:,.0f} walks/s, "
            f"{st.verdicts} defect{'s' if st.verdicts != 1 else ''}"
        )
        if self.bar is not None:
            self.bar.update(self.task, completed=min(st.elapsed_s, self.duration), status=text)
        elif time.monotonic() - self.last_line >= 3.0:
            self.last_line = time.monotonic()
            print(f"{self.case}: {st.elapsed_s:.1f} s, {text}", flush=True)

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _evidence(case: CaseResult) -> str:
    if not case.verdicts:
        return "-"
    return case.verdicts[0].summary


def _table(scn: Scenario, cases: list[CaseResult], width: int) -> str:
    rows = [
        ("variant", "seed", "memory", "outcome", "expected", "first defect", "kinds", "evidence")
    ]
    for c in cases:
        expected = c.meta.get("expected") or "clean"
        if c.outcome == "interrupted":
            mark = "?"  # cut short: it never matches, but it did not fail either
        else:
            mark = "ok" if matches(c.outcome, c.meta.get("expected")) else "MISMATCH"
        first = f"{c.first_defect_s:.3f} s" if c.first_defect_s is not None else "-"
        kinds = ", ".join(dict.fromkeys(v.kind for v in c.verdicts)) or "-"
        rows.append(
            (
                str(c.meta.get("variant")),
                str(c.meta.get("seed")),
                str(c.meta.get("memory")),
                c.outcome,
                f"{expected} {mark}",
                first,
                kinds,
                _evidence(c),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    lines = []
    for r in rows:
        head = "  ".join(x.ljust(w) for x, w in zip(r[:7], widths, strict=True))
        room = max(width - len(head) - 2, 30)
        ev = r[7] if len(r[7]) <= room else r[7][: room - 3] + "..."
        lines.append(f"{head}  {ev}".rstrip())
    return "\n".join(lines)


def determinize(
    scn: Scenario,
    variant: str,
    seed: int,
    case: CaseResult,
    budget_s: float,
    progress: Any,
    interrupts: Interrupts | None = None,
) -> None:
    """Turn a free-running defect into a controlled reproducer of the same verdict."""
    from rmapsim.workload.determinize import find_controlled

    first = min(case.verdicts, key=lambda v: v.at_s)
    progress.print(f"{progress.case}: looking for a controlled schedule that shows it ...")
    found = find_controlled(
        scn,
        variant,
        seed,
        first.kind,
        first.signature,
        budget_s=budget_s,
        within_s=3 * (case.first_defect_s or 0.0) + 1.0,
        interrupts=interrupts,
    )
    if found.result is not None and found.result.reproducer is not None:
        case.reproducer = found.result.reproducer
        case.meta["reproduced"] = {
            "attempts": found.attempts,
            "seconds": round(found.seconds, 2),
            "strategy": found.result.meta.get("strategy"),
        }
        progress.print(
            f"{progress.case}: reproduced deterministically ({found.attempts} controlled "
            f"run(s), {found.seconds:.1f} s)"
        )
    else:
        case.meta["reproduced"] = None
        progress.print(
            f"{progress.case}: not reproduced deterministically in {found.seconds:.0f} s "
            f"({found.attempts} controlled runs)"
        )


def save_reproducer(case: CaseResult, folder: Path) -> None:
    """Write a controlled case's reproducer into the run folder; note its path in the case."""
    case.meta["reproducer"] = None
    if case.reproducer is None:
        return
    variant = re.sub(r"[^A-Za-z0-9._+-]", "_", str(case.meta.get("variant", "case")))
    rel = Path("reproducers") / f"{variant}-seed{case.meta.get('seed')}.json"
    case.reproducer.save(folder / rel)
    case.meta["reproducer"] = str(rel)
    command = shlex.join(["rmapstress", "replay", str(folder / rel)])
    case.meta["rerun"] = case.meta.get("replay")
    case.meta["replay"] = command
    for v in case.verdicts:
        v.replay = command


@dataclass
class _Run:
    """One scenario's part of the command: its run folder and the cases that ran."""

    scn: Scenario
    report: RunReport
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.report.folder


def _check_options(args: argparse.Namespace) -> None:
    for name in ("duration", "audit", "yield_prob"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')}: must not be negative, got {value:g}")
    for name in ("processes", "threads", "reclaim"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name}: must not be negative, got {value}")
    if not args.logs.strip():
        raise UsageError("--logs: must name a folder, got ''")


def _open_run(scn: Scenario, logs: str) -> _Run:
    try:
        folder = new_run_folder(logs, scn.name)
        return _Run(scn, RunReport(folder, scenario=scn.name))
    except OSError as exc:
        where = exc.filename or logs
        raise UsageError(f"--logs: cannot create a run folder in {where}: {exc.strerror}") from None


def _say_stopping(signum: int, count: int) -> None:
    """A later Ctrl-C is acknowledged, never acted on: the report is being written."""
    if count > 1:
        name = signal.Signals(signum).name
        os.write(
            2,
            f"rmapstress run: already stopping ({name} received {count} times): finishing "
            "the case cut short and writing the report\n".encode(),
        )


def cmd_run(args: argparse.Namespace) -> int:
    _check_options(args)
    scenarios = _load(args)
    total = sum(len(s.cases()) for s in scenarios)
    interactive = sys.stdout.isatty() and not args.no_progress
    runs: list[_Run] = []
    write_error: str | None = None
    index = 0
    with Interrupts(on_signal=_say_stopping, then_ignore=True) as stop:
        progress = Progress(interactive, total)
        try:
            for scn in scenarios:
                if stop.signum is not None or write_error:
                    break
                run = _open_run(scn, args.logs)
                runs.append(run)
                for variant, seed in scn.cases():
                    if stop.signum is not None:
                        break
                    index += 1
                    progress.start_case(index, f"{scn.name}: {variant} seed {seed}", scn.duration_s)
                    case = run_case(
                        scn,
                        variant,
                        seed,
                        report=run.report,
                        on_status=progress.status,
                        interrupts=stop,
                    )
                    if (
                        not scn.schedule.controlled
                        and case.verdicts
                        and case.outcome != "interrupted"
                        and args.reproduce > 0
                        and stop.signum is None
                    ):
                        determinize(scn, variant, seed, case, args.reproduce, progress, stop)
                    run.cases.append(case)
                    progress.print(f"{progress.case}: {case.headline()}")
                    try:
                        save_reproducer(case, run.folder)
                        run.report.write()  # after every case: a later one may never end
                    except OSError as exc:
                        write_error = _write_failure(run, exc)
                        break
                    if run.report.events_error is not None:
                        write_error = _write_failure(run, run.report.events_error, "events.jsonl")
                        break
        finally:
            progress.stop()
            # Written once each, whatever happened above; signals from here on are only
            # acknowledged (see _say_stopping).
            for run in runs:
                complete = len(run.cases) == len(run.scn.cases()) and not any(
                    c.outcome == "interrupted" for c in run.cases
                )
                try:
                    run.report.finish(
                        complete=complete, interrupted=None if complete else stop.name
                    )
                except OSError as exc:
                    write_error = write_error or _write_failure(run, exc)
        code = _print_results(runs)
        if write_error:
            sys.stderr.write(f"rmapstress run: error: {write_error}\n")
            code = max(code, EXIT_USAGE) if code != EXIT_INTERNAL else code
        if stop.signum is not None:
            ran = [c for r in runs for c in r.cases]
            cut = sum(c.outcome == "interrupted" for c in ran)
            sys.stderr.write(
                f"rmapstress run: interrupted by {stop.name}: {len(ran)} of {total} case(s) "
                f"ran, {cut} of them cut short; every case that ran is in the run folder\n"
            )
            return stop.exit_code
    return code


def _write_failure(run: _Run, exc: OSError, name: str | None = None) -> str:
    where = name or (Path(exc.filename).name if exc.filename else "the report")
    return (
        f"--logs: cannot write {where} in {run.folder}: {exc.strerror or exc}; "
        "the files there keep the last version that could be written, and no further "
        "case was run"
    )


def _print_results(runs: list[_Run]) -> int:
    """The tables, each defect with its replay command, the run folders; the exit code."""
    width = 160
    code = EXIT_OK
    for run in runs:
        scn, cases = run.scn, run.cases
        print()
        print(f"scenario {scn.name} ({scn.path}): {scn.description}".rstrip(": "))
        print(_table(scn, cases, width))
        for c in cases:
            if c.verdicts and c.outcome in ("defect", "interrupted"):
                v = c.verdicts[0]
                found = " (found before the interruption)" if c.outcome == "interrupted" else ""
                print(
                    f"\n{c.meta['variant']} seed {c.meta['seed']}: {v.kind}: {v.summary}{found}"
                )
                if v.evidence.get("kernel_path"):
                    print(f"  kernel path: {v.evidence['kernel_path']}")
                for line in v.chain[:4]:
                    print(f"  {line}")
                print(f"  replay: {c.meta['replay']}")
                if "cause_replay" in c.meta:
                    print(f"  cause (KASAN): {c.meta['cause_replay']}")
            elif c.outcome == "error":
                print(f"\n{c.meta['variant']} seed {c.meta['seed']}: internal error")
                for e in c.errors[:3]:
                    print("  " + e.splitlines()[0])
                print(f"  replay: {c.meta['replay']}")
            if c.outcome == "error":
                code = EXIT_INTERNAL
            elif not matches(c.outcome, c.meta.get("expected")) and code == EXIT_OK:
                code = EXIT_DEFECT
        print(f"\nrun folder: {run.folder}")
    sys.stdout.flush()
    return code
