"""rmapstress replay FILE: run a reproducer's schedule again and say what it finds.

Exit status: 1 when the run finds a defect (the recorded one, or - said loudly -
another), 0 when it runs clean, 2 when the file is bad, or when the code changed
since it was recorded and the schedule no longer fits it (the changed files are
named).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rmapsim.errors import ModelError
from rmapsim.workload import ScenarioError, run_case, watchdog_config
from rmapsim.workload.case import schedule_sources
from rmapsim.workload.scenario import scenario_from_raw
from stress.cli import EXIT_DEFECT, EXIT_OK, EXIT_USAGE, UsageError
from stress.errors import ConfigError
from stress.report import CaseResult
from stress.sched.repro import Reproducer, ReproducerError, verdict_record


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="run a reproducer file's schedule again",
        description="Rerun a reproducer written by a controlled run, hunt or exploration: the "
        "same workload or program under the same thread interleaving, switch for switch. "
        "Exit 1 when it finds a defect, 0 when clean, 2 on a bad or mismatched file.",
    )
    p.add_argument("file", metavar="FILE", help="reproducer file (JSON)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _load(path: str) -> Reproducer:
    try:
        return Reproducer.load(path)
    except ReproducerError as exc:
        raise UsageError(str(exc)) from None


def _run_workload(rep: Reproducer, path: str) -> CaseResult:
    t = rep.target
    try:
        raw, variant, seed = t["scenario"], t["variant"], t["seed"]
        scn = scenario_from_raw(raw, str(t.get("scenario_path") or path))
        cfg = watchdog_config(scn)
    except KeyError as exc:
        raise UsageError(f"{path}: target: missing {exc.args[0]!r}") from None
    except (ScenarioError, ConfigError, ModelError, TypeError) as exc:
        raise UsageError(f"{path}: target: {exc}") from None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"{path}: target.seed: expected a whole number, got {seed!r}")
    return run_case(scn, str(variant), seed, config=cfg, replay=rep)


def cmd_replay(args: argparse.Namespace) -> int:
    rep = _load(args.file)
    stale = rep.staleness(schedule_sources()) if rep.kind == "workload" else []
    if rep.kind == "workload":
        result = _run_workload(rep, args.file)
        diverged = list(result.stats.get("schedule", {}).get("diverged", []))
    elif rep.kind == "program":
        from stress.cmd_programs import replay_program

        result, diverged = replay_program(rep, args.file)
    else:
        from stress.sched.explore import replay_function

        try:
            result, diverged, stale = replay_function(rep, args.file)
        except ReproducerError as exc:
            raise UsageError(str(exc)) from None
    recorded = rep.verdict
    verdicts = sorted(result.verdicts, key=lambda v: v.at_s)
    got = verdict_record(verdicts[0]) if verdicts else None
    same = got is not None and (got["kind"], got["signature"]) == (
        recorded.get("kind"),
        recorded.get("signature"),
    )
    mismatched = bool(stale) and not same
    out = {
        "file": args.file,
        "outcome": result.outcome,
        "reproduced": same,
        "same_objects": same and got is not None and got["objects"] == recorded.get("objects"),
        "verdicts": [verdict_record(v) for v in verdicts],
        "recorded": recorded,
        "steps": result.stats.get("schedule", {}).get("steps"),
        "diverged": diverged,
        "stale": stale,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(rep, result, out)
    for line in stale:
        sys.stderr.write(f"rmapstress replay: warning: recorded on other code: {line}\n")
    if mismatched:
        sys.stderr.write(
            f"rmapstress replay: error: {args.file} no longer fits this code "
            f"({'diverged at ' + diverged[0] if diverged else 'the recorded defect is gone'}); "
            f"changed since it was recorded: {', '.join(stale)}\n"
        )
        return EXIT_USAGE
    if result.outcome == "error":
        return 3
    return EXIT_DEFECT if result.outcome == "defect" else EXIT_OK


def _print(rep: Reproducer, result: CaseResult, out: dict[str, Any]) -> None:
    target = rep.target
    what = (
        f"{target.get('variant')} seed {target.get('seed')} ({rep.kind})"
        if rep.kind != "function"
        else str(target.get("function"))
    )
    print(f"replay of {what}: {result.outcome}, {out['steps']} scheduling steps")
    recorded = out["recorded"]
    if out["reproduced"]:
        objects = "same objects" if out["same_objects"] else "OTHER objects than recorded"
        print(f"reproduced: {recorded.get('kind')} ({objects})")
    elif result.verdicts:
        print(f"a DIFFERENT defect than recorded ({recorded.get('kind')}: "
              f"{str(recorded.get('summary'))[:100]})")
    else:
        print(f"NOT reproduced: the recorded {recorded.get('kind')} did not happen")
    for v in sorted(result.verdicts, key=lambda v: v.at_s)[:3]:
        print()
        print(v.text_block() if hasattr(v, "text_block") else "\n".join(v.text()))
    for note in out["diverged"]:
        print(f"diverged: {note}")
