"""Time to first defect of each pre-fix kernel on real threads, over many seeds.

    python bench/bench_run_defects.py [--seeds 1-10] [--duration S] [--clean-seeds 1,2]
                                      [--scenario FILE ...] [--variants V,...] [--fixed V]
                                      [--schedule controlled[:pct|random|round-robin]]

For each scenario (default: scenarios/lkml-2010.toml, KASAN memory, and
scenarios/lkml-2010-reuse.toml, reuse memory) and each pre-fix variant
(2.6.34-rc3, rik-v2, rik-v2-dst, hannes-merge), one case per seed runs to its
first defect or the end of its duration; 2.6.34 runs for a couple of seeds and
must stay clean.  The table shows, per variant: seeds that found a defect, the
median time to first defect with clean seeds counted as never (so a median of
">D" means most seeds stayed clean for D seconds), min/median/max over the seeds
that found one, and the kinds of the first verdicts with their counts.  Target
(KASAN): median under 2 s for every pre-fix kernel.  Later kernels: e.g.
``--scenario scenarios/root-lock-hang.toml --variants 2.6.35 --fixed 2.6.36
--clean-seeds 1-10``.

Each case runs in its own child process: a case whose harness hangs or dies
(faulthandler backstop) is reported as such, with its stderr kept in a folder,
instead of taking the benchmark down.  Cases run one after another; the machine
is shared, so wall-clock figures carry other people's load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder

PRE_FIX = ("2.6.34-rc3", "rik-v2", "rik-v2-dst", "hannes-merge")
FIXED = "2.6.34"
SCENARIOS = ("scenarios/lkml-2010.toml", "scenarios/lkml-2010-reuse.toml")
MARK = "BENCH-RESULT "
#: How the parent tells its children the --schedule to run under.
SCHEDULE_ENV = "RMAPSTRESS_BENCH_SCHEDULE"
#: Seconds a child may take past its case's duration (grace, backstop, start-up).
SLACK_S = 45.0
TARGET_MEDIAN_S = 2.0


# -- the child: one case, one JSON line ---------------------------------------------------


def child(path: str, variant: str, seed: int, duration: float | None) -> None:
    from rmapsim.workload import load_scenario, run_case

    scn = load_scenario(path)
    if duration is not None:
        scn = scn.override(duration_s=duration)
    schedule = os.environ.get(SCHEDULE_ENV)
    if schedule:  # --schedule controlled[:strategy]
        mode, _, strategy = schedule.partition(":")
        scn = scn.override(**{"schedule.mode": mode, "schedule.strategy": strategy or "pct"})
    r = run_case(scn, variant, seed)
    verdicts = sorted(r.verdicts, key=lambda v: v.at_s)
    out = {
        "outcome": r.outcome,
        "first_defect_s": r.first_defect_s,
        "duration_s": r.duration_s,
        "verdicts": [{"kind": v.kind, "summary": v.summary, "at_s": v.at_s} for v in verdicts],
        "errors": r.errors,
        "stuck": r.stuck,
        "cancel_reason": r.cancel_reason,
        "ops": r.stats.get("ops", 0),
    }
    print(MARK + json.dumps(out), flush=True)


# -- the parent ---------------------------------------------------------------------------


@dataclass
class Case:
    variant: str
    seed: int
    outcome: str  # clean | defect | error | died (the child did not report)
    first_defect_s: float | None = None
    kinds: list[str] = field(default_factory=list)
    first: str = ""  # "kind: head of the summary" of the earliest verdict
    note: str = ""
    wall_s: float = 0.0
    stderr_noise: int = 0  # "Exception ignored in thread started by" tracebacks


def head(summary: str) -> str:
    """The stable part of a summary: addresses, object numbers and details cut off."""
    text = re.split(r" at (?:0x)?[0-9a-f]{4,}|@0x| on | \(|, ", summary, maxsplit=1)[0]
    return re.sub(r"#\d+", "#N", text)[:72]


def run_one(path: str, variant: str, seed: int, duration: float, keep: Path) -> Case:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        path,
        variant,
        str(seed),
        str(duration),
    ]
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + SLACK_S, cwd=ROOT, check=False
        )
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = None
    wall = time.perf_counter() - t
    noise = err.count("Exception ignored in thread started by")
    line = next((x for x in out.splitlines() if x.startswith(MARK)), None)
    if line is None or rc != 0:
        keep.mkdir(parents=True, exist_ok=True)
        log = keep / f"{Path(path).stem}-{variant}-{seed}.stderr.txt"
        log.write_text(
            f"$ {' '.join(cmd)}\nexit status: {rc}\n--- stdout\n{out}\n--- stderr\n{err}",
            encoding="utf-8",
        )
        first_err = next(
            (x for x in err.splitlines() if x.startswith("Timeout (")),
            err.strip().splitlines()[-1] if err.strip() else "",
        )
        why = "killed after timeout" if rc is None else f"exit {rc}"
        if line is None:
            return Case(
                variant,
                seed,
                "died",
                note=f"{why}: {first_err} [{log}]",
                wall_s=wall,
                stderr_noise=noise,
            )
    res: dict[str, Any] = json.loads(line[len(MARK) :])
    verdicts = res["verdicts"]
    case = Case(
        variant,
        seed,
        res["outcome"],
        res["first_defect_s"],
        kinds=list(dict.fromkeys(v["kind"] for v in verdicts)),
        first=f"{verdicts[0]['kind']}: {head(verdicts[0]['summary'])}" if verdicts else "",
        wall_s=wall,
        stderr_noise=noise,
    )
    if res["errors"] or res["stuck"]:
        case.note = f"errors={res['errors']} stuck={res['stuck']}"
    return case


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def censored_median(cases: list[Case], duration: float) -> str:
    """Median time to first defect, a clean seed counting as 'not within the duration'."""
    known = [c for c in cases if c.outcome in ("clean", "defect")]
    if not known:
        return "-"
    xs = [c.first_defect_s if c.first_defect_s is not None else float("inf") for c in known]
    m = statistics.median(xs)
    return f">{duration:g}" if m == float("inf") else f"{m:.3f}"


def table(title: str, duration: float, rows: dict[str, list[Case]]) -> list[str]:
    lines = [
        title,
        f"  {'variant':<13} {'found':>6} {'median*':>8} {'min':>7} {'med':>7} {'max':>7}"
        f"  kinds (cases)",
    ]
    for variant, cases in rows.items():
        found = [c.first_defect_s for c in cases if c.first_defect_s is not None]
        kinds = Counter(k for c in cases for k in c.kinds)
        other = Counter(c.outcome for c in cases if c.outcome not in ("clean", "defect"))
        extra = "".join(f", {n} {o}" for o, n in other.items())
        lines.append(
            f"  {variant:<13} {len(found):>3}/{len(cases):<2} {censored_median(cases, duration):>8}"
            f" {fmt_s(min(found, default=None)):>7}"
            f" {fmt_s(statistics.median(found) if found else None):>7}"
            f" {fmt_s(max(found, default=None)):>7}  "
            + (", ".join(f"{k} x{n}" for k, n in kinds.most_common()) or "none")
            + f"{extra}"
        )
    lines.append(
        "  found: seeds with a defect; median*: over all seeds, a clean seed counting as "
        "never; min/med/max: over the seeds that found one (seconds)"
    )
    return lines


def first_verdicts(rows: dict[str, list[Case]]) -> list[str]:
    lines = ["  first verdict of each defect case (kind: summary head) x cases:"]
    for variant, cases in rows.items():
        got = Counter(c.first for c in cases if c.first)
        if got:
            lines.append(f"    {variant}:")
            lines.extend(f"      {n:>2} x {what}" for what, n in got.most_common())
    return lines


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seeds like 1-10 or 1,4,7, got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected non-negative seeds, got {text!r}")
    return seeds


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=list(range(1, 11)),
        help="seeds of the pre-fix kernels (default 1-10)",
    )
    parser.add_argument(
        "--clean-seeds",
        type=parse_seeds,
        default=[1, 2],
        help="seeds of 2.6.34, which must stay clean (default 1,2)",
    )
    parser.add_argument(
        "--duration",
        type=number(0.1, 3600),
        default=None,
        help="seconds per case (default: each scenario's own duration_s)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="scenario file (repeatable; default: lkml-2010 and its reuse twin)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(PRE_FIX),
        help="comma-separated pre-fix variants (default: the four of the thread)",
    )
    parser.add_argument(
        "--fixed",
        default=FIXED,
        help=f"the fixed kernel, which must stay clean (default {FIXED})",
    )
    parser.add_argument(
        "--schedule",
        default="",
        metavar="MODE[:STRATEGY]",
        help="run the cases under this schedule (e.g. controlled:random; default: the "
        "scenario's)",
    )
    args = parser.parse_args()
    fixed = args.fixed
    if args.schedule:
        os.environ[SCHEDULE_ENV] = args.schedule

    from rmapsim.workload import ScenarioError, load_scenario, watchdog_config
    from stress.errors import ConfigError

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    paths = [str(Path(p).resolve()) for p in args.scenario or [ROOT / p for p in SCENARIOS]]
    scenarios = []
    for p in paths:
        try:
            scn = load_scenario(p)
            scn.override(variants=[*variants, fixed])  # refuses an unknown variant
            scn = scn.override(duration_s=args.duration) if args.duration else scn
            watchdog_config(scn)  # refuses a duration too short for the watchdog's verdicts
            scenarios.append(scn)
        except (ScenarioError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    keep = Path(tempfile.gettempdir()) / f"bench-run-defects-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    print(
        f"time to first defect: {len(args.seeds)} seeds ({args.seeds[0]}..{args.seeds[-1]}) "
        f"per pre-fix kernel, one case at a time in a child process; 2-core machine "
        f"shared with other work (load average at start {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    report: list[str] = []
    every: list[Case] = []
    for scn in scenarios:
        rows: dict[str, list[Case]] = {}
        for variant in [*variants, fixed]:
            seeds = args.clean_seeds if variant == fixed else args.seeds
            rows[variant] = []
            for seed in seeds:
                c = run_one(scn.path, variant, seed, scn.duration_s, keep)
                rows[variant].append(c)
                print(
                    f"  [{time.perf_counter() - t0:6.0f} s] {scn.name} {variant} seed {seed}: "
                    f"{c.outcome} {fmt_s(c.first_defect_s)} {c.first} {c.note}".rstrip(),
                    file=sys.stderr,
                    flush=True,
                )
        title = (
            f"{scn.name} ({scn.memory.mode} memory, {scn.duration_s:g} s per case, "
            f"{Path(scn.path).name}):"
        )
        report += ["", *table(title, scn.duration_s, rows), *first_verdicts(rows)]
        pre = {v: rows[v] for v in variants}
        if scn.memory.mode == "kasan":
            verdict = [f"{v} {censored_median(cs, scn.duration_s)}" for v, cs in pre.items()]
            met = all(_below(cs, scn.duration_s) for cs in pre.values())
            report.append(
                f"  target median < {TARGET_MEDIAN_S:g} s for every pre-fix kernel: "
                f"{'MET' if met else 'NOT MET'} ({'; '.join(verdict)})"
            )
        clean = rows[fixed]
        bad = [c for c in clean if c.outcome != "clean"]
        report.append(
            f"  {fixed} seeds {','.join(str(c.seed) for c in clean)}: "
            + (
                "clean"
                if not bad
                else "NOT CLEAN: "
                + "; ".join(f"seed {c.seed} {c.outcome} {c.first} {c.note}" for c in bad)
            )
        )
        for cs in rows.values():
            for c in cs:
                if c.note:
                    report.append(f"  note: {c.variant} seed {c.seed}: {c.outcome}: {c.note}")
        every += [c for cs in rows.values() for c in cs]
    print("\n".join(report))
    noisy = [c for c in every if c.stderr_noise]
    if noisy:
        print(
            f"\nharness noise: {len(noisy)} of {len(every)} cases printed "
            f"{sum(c.stderr_noise for c in noisy)} 'Exception ignored in thread started by' "
            f"tracebacks (KeyError in threading._bootstrap_inner) on stderr"
        )
    print(
        f"\ntotal wall time {time.perf_counter() - t0:.0f} s, {load_at_end()}"
        + (f"; stderr of failed children kept in {keep}" if keep.exists() else "")
    )


def _below(cases: list[Case], duration: float) -> bool:
    m = censored_median(cases, duration)
    return not m.startswith(">") and m != "-" and float(m) < TARGET_MEDIAN_S


if __name__ == "__main__":
    main()
