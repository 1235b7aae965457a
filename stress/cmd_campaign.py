"""rmapstress campaign: a scenario's variant x seed cases on every core or a Dask cluster.

The generic engine (stress.campaign) gets `campaign_case`, which runs one case
exactly as `run` does (real threads, one case at a time in its process) and hands
back a compact record plus, for a defect, its run folder's files.  This module
builds the case stream from the scenario files and options, keeps the campaign's
settings in campaign.json so that `--resume DIR` runs the same cases, and owns all
output: the live summary, the final table, campaign.html and the exit status.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rmapsim.errors import ModelError
from rmapsim.variants import parse_variant
from rmapsim.workload import Scenario, ScenarioError, load_scenario, matches, run_case
from rmapsim.workload.case import replay_command, watchdog_config
from rmapsim.workload.scenario import OVERRIDE_FLAGS
from stress import ConfigError, RunReport
from stress.campaign import (
    DEFAULT_RECYCLE,
    CampaignStore,
    Case,
    ClusterError,
    DaskPool,
    Executor,
    LiveDisplay,
    LocalPool,
    Runner,
    StoreError,
    summarize,
    summary_lines,
    time_spent,
    write_html,
)
from stress.campaign.text import duration_text
from stress.cli import EXIT_DEFECT, EXIT_OK, UsageError

#: The case function, as worker processes import it.
CASE_FUNCTION = "stress.cmd_campaign:campaign_case"
DEFAULT_SCENARIO = "scenarios/lkml-2010.toml"
#: argparse destination -> scenario key path (the overrides `run` has, but --seed).
OVERRIDES = {
    "duration": "duration_s",
    "audit": "audit_interval_s",
    "memory": "memory.mode",
    "processes": "threads.processes",
    "threads": "threads.threads_per_process",
    "reclaim": "threads.reclaim_walkers",
    "yield_prob": "yield.probability",
}
#: Options that define which cases a campaign runs (kept in campaign.json).
CASE_OPTIONS = ("seeds", "cases", "for_", "first_seed", "variant", *OVERRIDES, "keep_clean")
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
MAX_SEED = 2**32 - 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "campaign",
        help="run a scenario's cases over many seeds on every core or a Dask cluster",
        description="Run the variant x seed cases of scenario files (default: "
        f"{DEFAULT_SCENARIO}) in worker processes, one line per finished case in "
        "DIR/results.jsonl, a run folder per defect under DIR/cases/, and DIR/campaign.html.",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario TOML files")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--seeds", metavar="A-B", help="seeds A to B (inclusive) of every variant")
    which.add_argument("--cases", type=int, metavar="N", help="the first N cases (seed by seed)")
    which.add_argument(
        "--for", dest="for_", metavar="DURATION", help="keep starting cases until then (2h, 90m)"
    )
    p.add_argument(
        "--first-seed", type=int, metavar="N", help="first seed of --cases and --for (default 1)"
    )
    p.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: every core)")
    p.add_argument("--cluster", metavar="ADDRESS", help="an existing Dask scheduler to run on")
    p.add_argument("--out", metavar="DIR", help="campaign folder (default logs/<time>-campaign-*)")
    p.add_argument("--resume", metavar="DIR", help="go on with the campaign in DIR")
    p.add_argument(
        "--report", metavar="DIR", help="rebuild DIR/campaign.html and print the summary"
    )
    p.add_argument("--keep-clean", action="store_true", help="a run folder for clean cases too")
    p.add_argument(
        "--recycle",
        type=int,
        metavar="N",
        help=f"replace a worker process after N cases (default {DEFAULT_RECYCLE}; 0: never)",
    )
    p.add_argument(
        "--rss-warmup",
        metavar="DURATION",
        default="5m",
        help="a worker's RSS baseline is taken this far into its life (default 5m)",
    )
    p.add_argument("--no-progress", action="store_true", help="status lines, not a live panel")
    p.add_argument("--variant", help="run these variants instead (comma-separated)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds per case")
    p.add_argument("--memory", choices=("reuse", "kasan"))
    p.add_argument("--processes", type=int, metavar="N", help="live processes kept")
    p.add_argument("--threads", type=int, metavar="N", help="threads per process")
    p.add_argument("--reclaim", type=int, metavar="N", help="reclaim walker threads")
    p.add_argument("--audit", type=float, metavar="S", help="audit I1-I7 every S seconds (0: off)")
    p.add_argument("--yield-prob", type=float, metavar="P", help="yield probability at races")


# -- parsing ------------------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str = "--for") -> float:
    """'2h', '90m', '1h30m', '45s', '600' (seconds) -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    elif re.fullmatch(r"(\d+(\.\d+)?[smhd])+", t):
        seconds = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhd])", t))
    else:
        raise UsageError(
            f"{option}: expected a duration such as 2h, 90m, 1h30m or 45s, got {text!r}"
        )
    if seconds <= 0:
        raise UsageError(f"{option}: must be more than 0, got {text!r}")
    return seconds


def parse_seeds(text: str) -> tuple[int, int]:
    """'A-B' (or 'A') -> (A, B), whole numbers in [0, 2**32)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise UsageError(f"--seeds: expected A-B with whole numbers A <= B, got {text!r}")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if a > b:
        raise UsageError(f"--seeds: {a}-{b}: the first seed must not exceed the last")
    if b > MAX_SEED:
        raise UsageError(f"--seeds: seeds must be below 2**32, got {b}")
    return a, b


@dataclass
class Plan:
    """Which cases a campaign runs, as campaign.json keeps it."""

    scenarios: list[str]
    overrides: dict[str, Any]
    seeds: tuple[int, int] | None
    cases: int | None
    for_s: float | None
    first_seed: int
    keep_clean: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "scenarios": self.scenarios,
            "overrides": self.overrides,
            "seeds": list(self.seeds) if self.seeds else None,
            "cases": self.cases,
            "for_s": self.for_s,
            "first_seed": self.first_seed,
            "keep_clean": self.keep_clean,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Plan:
        seeds = doc.get("seeds")
        return Plan(
            scenarios=list(doc["scenarios"]),
            overrides=dict(doc.get("overrides") or {}),
            seeds=(int(seeds[0]), int(seeds[1])) if seeds else None,
            cases=doc.get("cases"),
            for_s=doc.get("for_s"),
            first_seed=int(doc.get("first_seed", 1)),
            keep_clean=bool(doc.get("keep_clean", False)),
        )


def _plan_from_args(args: argparse.Namespace) -> Plan:
    for name in ("duration", "audit", "yield_prob"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')}: must not be negative, got {value:g}")
    for name in ("processes", "threads", "reclaim"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name}: must not be negative, got {value}")
    if args.cases is not None and args.cases < 1:
        raise UsageError(f"--cases: must be at least 1, got {args.cases}")
    if args.first_seed is not None and not 0 <= args.first_seed <= MAX_SEED:
        raise UsageError(f"--first-seed: must be between 0 and 2**32-1, got {args.first_seed}")
    if args.first_seed is not None and args.seeds is not None:
        raise UsageError("--first-seed: goes with --cases or --for, not with --seeds")
    overrides: dict[str, Any] = {
        OVERRIDES[k]: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None
    }
    if args.variant is not None:
        overrides["variants"] = [v.strip() for v in args.variant.split(",") if v.strip()]
    paths = args.scenarios or [str(_default_scenario())]
    return Plan(
        scenarios=[str(p) for p in paths],
        overrides=overrides,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
        cases=args.cases,
        for_s=parse_duration(args.for_) if args.for_ is not None else None,
        first_seed=args.first_seed if args.first_seed is not None else 1,
        keep_clean=bool(args.keep_clean),
    )


def _default_scenario() -> Path:
    here = Path(DEFAULT_SCENARIO)
    if here.is_file():
        return here
    return Path(__file__).resolve().parent.parent / DEFAULT_SCENARIO


def _flag_text(text: str) -> str:
    for key, flag in OVERRIDE_FLAGS.items():
        text = text.replace(f"override: scenario.{key}:", f"{flag}:").replace(
            f"override: {key}:", f"{flag}:"
        )
    return text


def load_scenarios(plan: Plan) -> list[Scenario]:
    out: list[Scenario] = []
    for path in plan.scenarios:
        try:
            scn = load_scenario(path)
            if plan.overrides:
                scn = scn.override(**plan.overrides)
        except ScenarioError as exc:
            raise UsageError(_flag_text(str(exc))) from None
        try:
            watchdog_config(scn)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if any(s.name == scn.name for s in out):
            raise UsageError(f"{path}: another scenario is also named {scn.name!r}")
        out.append(scn)
    return out


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the cases ----------------------------------------------------------------------------


def _variant_name(variant: str) -> str:
    try:
        return parse_variant(variant).name
    except ModelError:  # pragma: no cover - scenarios are validated before
        return variant


def make_case(scn: Scenario, variant: str, seed: int, *, keep_clean: bool, many: bool) -> Case:
    name = _variant_name(variant)
    expected = scn.expected(variant) or "clean"
    return Case(
        key=f"{scn.name}/{name}/{seed}",
        args=(scn, variant, seed, keep_clean),
        info={
            "scenario": scn.name,
            "group": f"{scn.name}: {name}" if many else name,
            "variant": name,
            "seed": seed,
            "expected": expected,
            "replay": replay_command(scn, variant, seed),
        },
    )


def case_stream(scenarios: list[Scenario], plan: Plan) -> tuple[Iterator[Case], int | None]:
    """The campaign's cases in order (seed by seed), and how many there are (None: endless)."""
    many = len(scenarios) > 1

    def per_seed(seeds: Iterator[int]) -> Iterator[Case]:
        for seed in seeds:
            for scn in scenarios:
                for v in scn.variants:
                    yield make_case(scn, v, seed, keep_clean=plan.keep_clean, many=many)

    if plan.seeds is not None:
        a, b = plan.seeds
        return per_seed(iter(range(a, b + 1))), (b - a + 1) * sum(
            len(s.variants) for s in scenarios
        )
    if plan.cases is not None:
        return itertools.islice(per_seed(itertools.count(plan.first_seed)), plan.cases), plan.cases
    if plan.for_s is not None:
        return per_seed(itertools.count(plan.first_seed)), None

    def own() -> Iterator[Case]:
        for scn in scenarios:
            for v, seed in scn.cases():
                yield make_case(scn, v, seed, keep_clean=plan.keep_clean, many=many)

    return own(), sum(len(s.cases()) for s in scenarios)


def campaign_case(
    scn: Scenario, variant: str, seed: int, keep_clean: bool = False
) -> dict[str, Any]:
    """One case in a worker process, as `run` runs it; a defect's run folder comes back as files."""
    with tempfile.TemporaryDirectory(prefix="rmapstress-case-") as tmp:
        report = RunReport(tmp, scenario=scn.name)
        try:
            case = run_case(scn, variant, seed, report=report)
            keep = keep_clean or case.outcome != "clean"
            if keep:
                report.write()
        finally:
            report.close()
        files: dict[str, str] = {}
        if keep:
            for p in sorted(Path(tmp).iterdir()):
                if p.is_file():
                    files[p.name] = p.read_text(encoding="utf-8", errors="replace")
    stats = case.stats
    out: dict[str, Any] = {
        "outcome": case.outcome,
        "expected": case.meta.get("expected") or "clean",
        "matched": matches(case.outcome, case.meta.get("expected")),
        "first_defect_s": None if case.first_defect_s is None else round(case.first_defect_s, 4),
        "duration_s": round(case.duration_s, 3),
        "ops": stats.get("ops"),
        "ops_per_s": stats.get("ops_per_s"),
        "walks": stats.get("walks"),
        "kinds": list(dict.fromkeys(v.kind for v in case.verdicts)),
        "signatures": [
            {
                "id": v.signature_id,
                "kind": v.kind,
                "summary": v.summary,
                "count": v.count,
                "at_s": round(v.at_s, 4),
                "signature": v.signature,
            }
            for v in case.verdicts
        ],
        "memory": case.meta.get("memory"),
        "cancel_reason": case.cancel_reason,
        "replay": case.meta.get("replay"),
    }
    if "cause_replay" in case.meta:
        out["cause_replay"] = case.meta["cause_replay"]
    if case.errors:
        out["errors"] = [e.splitlines()[0] for e in case.errors[:5] if e]
    if case.stuck:
        out["stuck"] = list(case.stuck)
    if files:
        out["files"] = files
    return out


# -- the command --------------------------------------------------------------------------


def _facts(manifest: dict[str, Any], store: CampaignStore) -> list[tuple[str, str]]:
    sessions = manifest.get("sessions") or []
    facts = [
        ("command", str(manifest.get("command", ""))),
        ("folder", str(store.folder)),
        ("scenarios", ", ".join(manifest.get("plan", {}).get("scenarios", []))),
    ]
    for i, s in enumerate(sessions):
        when = datetime.fromtimestamp(s.get("started_at", 0)).strftime("%Y-%m-%d %H:%M:%S")
        facts.append(
            (f"session {i + 1}", f"{when} on {s.get('where', '?')} ({s.get('host', '?')})")
        )
    return facts


def _warmup(manifest: dict[str, Any]) -> float:
    return float(manifest.get("rss_warmup_s", 300.0))


def _report(store: CampaignStore, manifest: dict[str, Any], *, interrupted: bool = False) -> Path:
    records = store.load()
    return write_html(
        store.folder / "campaign.html",
        records,
        title=str(manifest.get("title", store.folder.name)),
        facts=_facts(manifest, store),
        warmup_s=_warmup(manifest),
        interrupted=interrupted,
    )


def _print_summary(store: CampaignStore, manifest: dict[str, Any], where: str) -> bool:
    records = store.load()
    summary = summarize(records, warmup_s=_warmup(manifest))
    print()
    for line in summary_lines(
        summary, title=str(manifest.get("title", "")), where=where, folder=str(store.folder)
    ):
        print(line)
    return summary.ok


def cmd_report(folder: str) -> int:
    store = CampaignStore(folder)
    try:
        manifest = store.manifest()
    except StoreError as exc:
        raise UsageError(f"--report: {exc}") from None
    page = _report(store, manifest)
    _print_summary(store, manifest, "")
    print(f"\nresults: {store.results_path}\nreport:  {page}")
    return EXIT_OK


def _given(args: argparse.Namespace) -> list[str]:
    return [
        o
        for o in CASE_OPTIONS
        if getattr(args, o, None) is not None and getattr(args, o) is not False
    ]


def command_line(plan: Plan) -> str:
    """The command that starts this campaign afresh."""
    cmd = ["rmapstress", "campaign", *plan.scenarios]
    if plan.seeds is not None:
        cmd += ["--seeds", f"{plan.seeds[0]}-{plan.seeds[1]}"]
    elif plan.cases is not None:
        cmd += ["--cases", str(plan.cases)]
    elif plan.for_s is not None:
        cmd += ["--for", f"{plan.for_s:g}s"]
    if plan.first_seed != 1:
        cmd += ["--first-seed", str(plan.first_seed)]
    for key, value in plan.overrides.items():
        flag = OVERRIDE_FLAGS.get(key)
        if flag is None:
            continue
        text = (
            ",".join(value)
            if isinstance(value, list)
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )
        cmd += [flag, text]
    if plan.keep_clean:
        cmd.append("--keep-clean")
    return shlex.join(cmd)


def _check_resume_args(args: argparse.Namespace, plan: Plan) -> None:
    given = _given(args)
    if args.scenarios or given:
        mine = _plan_from_args(args)
        if args.scenarios:
            same = [str(Path(p).resolve()) for p in mine.scenarios] == [
                str(Path(p).resolve()) for p in plan.scenarios
            ]
        else:
            same = True
        if not same or (given and mine.to_json() | {"scenarios": plan.scenarios} != plan.to_json()):
            raise UsageError(
                "--resume: the campaign's cases are set by its campaign.json; give the same "
                "scenarios and options, or none"
            )


def _executor(args: argparse.Namespace, store: CampaignStore, recycle: int) -> Executor:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs: must be at least 1, got {args.jobs}")
    if args.cluster:
        try:
            return DaskPool(args.cluster, CASE_FUNCTION, limit=args.jobs)
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
    return LocalPool(
        args.jobs or os.cpu_count() or 1,
        CASE_FUNCTION,
        recycle=recycle,
        scratch=store.folder / ".scratch",
        logs=store.folder / "workers",
    )


def cmd_campaign(args: argparse.Namespace) -> int:
    if args.report is not None:
        others = [o for o in ("resume", "out", "cluster", "jobs") if getattr(args, o) is not None]
        if args.scenarios or others:
            raise UsageError(
                "--report DIR rebuilds a finished campaign's page; it takes nothing else"
            )
        return cmd_report(args.report)
    if args.recycle is not None and args.recycle < 0:
        raise UsageError(f"--recycle: must not be negative, got {args.recycle}")
    warmup_s = parse_duration(args.rss_warmup, "--rss-warmup") if args.rss_warmup else 300.0
    if args.resume is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise UsageError("--out: a resumed campaign stays in its folder; leave --out out")
        store = CampaignStore(args.resume)
        try:
            manifest = store.manifest()
        except StoreError as exc:
            raise UsageError(f"--resume: {exc}") from None
        try:
            plan = Plan.from_json(manifest["plan"])
        except (KeyError, TypeError, ValueError, IndexError):
            where = store.manifest_path
            raise UsageError(f"--resume: {where}: not an rmapstress campaign") from None
        _check_resume_args(args, plan)
        base = manifest.get("cwd", "")
        if base and Path(base) != Path.cwd():
            plan.scenarios = [str(Path(base, p)) for p in plan.scenarios]
        scenarios = load_scenarios(plan)
        for path, digest in zip(plan.scenarios, manifest.get("sha256", []), strict=False):
            if _sha256(path) != digest:
                raise UsageError(f"{path}: changed since the campaign started; start a new one")
        recycle = (
            args.recycle if args.recycle is not None else manifest.get("recycle", DEFAULT_RECYCLE)
        )
    else:
        plan = _plan_from_args(args)
        scenarios = load_scenarios(plan)
        name = "+".join(s.name for s in scenarios)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        store = CampaignStore(args.out or Path("logs") / f"{stamp}-campaign-{name}")
        recycle = args.recycle if args.recycle is not None else DEFAULT_RECYCLE
        manifest = {
            "title": name,
            "command": command_line(plan),
            "cwd": str(Path.cwd()),
            "plan": plan.to_json(),
            "sha256": [_sha256(p) for p in plan.scenarios],
            "recycle": recycle,
            "rss_warmup_s": warmup_s,
            "case_function": CASE_FUNCTION,
        }
        try:
            store.create(manifest)
        except StoreError as exc:
            raise UsageError(f"--out: {exc}") from None
        manifest = store.manifest()
    try:
        previous = store.load()
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if store.repaired:
        print(
            f"{store.results_path}: cut off a torn last line ({len(store.repaired)}); "
            "its case runs again",
            file=sys.stderr,
        )
    return _run(args, store, manifest, plan, scenarios, previous, recycle)


def _run(
    args: argparse.Namespace,
    store: CampaignStore,
    manifest: dict[str, Any],
    plan: Plan,
    scenarios: list[Scenario],
    previous: list[dict[str, Any]],
    recycle: int,
) -> int:
    cases, total = case_stream(scenarios, plan)
    done = {r["key"] for r in previous}
    deadline = None
    if plan.for_s is not None:
        left = plan.for_s - time_spent(previous, manifest.get("sessions") or [])
        deadline = time.monotonic() + max(left, 0.0)
    executor = _executor(args, store, recycle)
    session = len(manifest.get("sessions") or [])
    manifest.setdefault("sessions", []).append(
        {
            "started_at": round(time.time(), 3),
            "where": executor.description,
            "host": os.uname().nodename if hasattr(os, "uname") else "",
            "pid": os.getpid(),
        }
    )
    store.write_manifest(manifest)
    title = str(manifest.get("title", ""))
    interactive = sys.stdout.isatty() and not args.no_progress
    live = LiveDisplay(title=title, interactive=interactive, previous=previous)
    scope = f"{total} cases" if total is not None else f"cases for {duration_text(plan.for_s or 0)}"
    resumed = f", resuming with {len(previous)} finished" if previous else ""
    print(f"campaign {title}: {scope} on {executor.description}{resumed}", flush=True)
    print(f"folder: {store.folder}", flush=True)
    runner = Runner(store, executor, session=session, observer=live)
    live.start()
    try:
        outcome = runner.run(cases, done=done, total=total, deadline=deadline)
    finally:
        live.stop()
        store.close()
    page = _report(store, manifest, interrupted=outcome.interrupted)
    ok = _print_summary(store, manifest, executor.description)
    print(f"\nresults: {store.results_path}\nreport:  {page}")
    if outcome.interrupted:
        finished = len(previous) + len(outcome.records)
        print(
            f"\ninterrupted ({outcome.signal_name}): {finished} case(s) finished"
            + (f" of {total}" if total is not None else "")
            + f" ({len(outcome.records)} in this session); "
            f"{len(outcome.in_flight_dropped)} running case(s) stopped and not recorded; "
            f"go on with: rmapstress campaign --resume {shlex.quote(str(store.folder))}",
            flush=True,
        )
        return EXIT_TERMINATED if outcome.signal_name == "SIGTERM" else EXIT_INTERRUPTED
    return EXIT_OK if ok else EXIT_DEFECT
