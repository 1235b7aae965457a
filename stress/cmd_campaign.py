"""rmapstress campaign: a scenario's variant x seed cases on every core or a Dask cluster.

The generic engine (stress.campaign) gets `cmd_campaign_cases.campaign_case`, which
runs one case exactly as `run` does (real threads, one case at a time in its
process).  This module parses the command line, keeps the campaign's settings in
campaign.json so that `--resume DIR` runs the same cases, picks the executor (local
worker processes or a Dask cluster), and owns all output: the live summary, the
final table, campaign.html and the exit status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rmapsim.workload import Scenario
from stress.campaign import (
    DEFAULT_RECYCLE,
    CampaignStore,
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
from stress.cli import EXIT_DEFECT, EXIT_INTERNAL, EXIT_OK, UsageError
from stress.cmd_campaign_cases import (
    CASE_FUNCTION,
    DEFAULT_SCENARIO,
    MAX_SEED,
    Plan,
    case_stream,
    command_line,
    default_scenario,
    load_scenarios,
    parse_duration,
    parse_seeds,
    sha256,
)
from stress.cmd_run import OVERRIDES  # the overrides `run` has (--seed aside)

#: Options that define which cases a campaign runs (kept in campaign.json).
CASE_OPTIONS = ("seeds", "cases", "for_", "first_seed", "variant", *OVERRIDES, "keep_clean")
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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
    p.add_argument("--audit", type=float, metavar="S", help="audit I1-I9 every S seconds (0: off)")
    p.add_argument("--yield-prob", type=float, metavar="P", help="yield probability at races")
    p.add_argument(
        "--schedule",
        choices=("free", "controlled"),
        help="who switches threads: the OS, or the harness (each case then replays exactly)",
    )
    p.add_argument(
        "--strategy", choices=("pct", "random", "round-robin"), help="controlled strategy"
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
    paths = args.scenarios or [str(default_scenario())]
    return Plan(
        scenarios=[str(p) for p in paths],
        overrides=overrides,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
        cases=args.cases,
        for_s=parse_duration(args.for_) if args.for_ is not None else None,
        first_seed=args.first_seed if args.first_seed is not None else 1,
        keep_clean=bool(args.keep_clean),
    )


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
            if sha256(path) != digest:
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
            "sha256": [sha256(p) for p in plan.scenarios],
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
    if outcome.broken:
        sys.stdout.flush()
        sys.stderr.write(
            f"rmapstress campaign: error: the campaign stopped: {outcome.broken}; the cases "
            "it could not run are not recorded: once fixed, go on with: rmapstress campaign "
            f"--resume {shlex.quote(str(store.folder))}\n"
        )
        return EXIT_INTERNAL
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
