"""The cases of `rmapstress campaign`: parsing its options, the case stream, the case function.

`campaign_case` is what worker processes (local or on a Dask cluster) import by name
and run: one case exactly as `rmapstress run` runs it, handed back as a compact
record plus, for a defect, its run folder's files.  `case_stream` turns scenario
files and a `Plan` (seeds A-B, N cases, or a duration) into the engine's cases, seed
by seed; the scenario object itself travels with each case, so every scenario setting
reaches the worker untouched.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmapsim.errors import ModelError
from rmapsim.variants import parse_variant
from rmapsim.workload import Scenario, ScenarioError, load_scenario, matches, run_case
from rmapsim.workload.case import replay_command, watchdog_config
from rmapsim.workload.scenario import OVERRIDE_FLAGS
from stress import ConfigError, RunReport
from stress.campaign import Case
from stress.cli import UsageError

#: The case function, as worker processes import it.
CASE_FUNCTION = "stress.cmd_campaign_cases:campaign_case"
DEFAULT_SCENARIO = "scenarios/lkml-2010.toml"
MAX_SEED = 2**32 - 1


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


def default_scenario() -> Path:
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
            text = str(exc)
            duration = plan.overrides.get("duration_s") if plan.overrides else None
            if duration is not None:  # the option broke the ladder: name it first
                text = f"--duration {duration:g}: too short for {text}"
            raise UsageError(text) from None
        if any(s.name == scn.name for s in out):
            raise UsageError(f"{path}: another scenario is also named {scn.name!r}")
        out.append(scn)
    return out


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
            case.meta["reproducer"] = None
            if case.reproducer is not None:  # a controlled case: it replays exactly
                case.reproducer.save(Path(tmp) / "reproducer.json")
                case.meta["reproducer"] = "reproducer.json"
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
        "reproducer": case.meta.get("reproducer"),
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
