"""Campaign throughput: `--jobs 2` against `--jobs 1`, side by side, round after round.

    python bench/bench_campaign_jobs.py [--rounds 3] [--seeds 1-4] [--duration 2]
                                        [--scenario scenarios/lkml-2010.toml] [--jobs 2]

Each round runs the same cases (every variant of the scenario x the seeds, each
case capped at --duration seconds) twice through the real command, once with
`--jobs 1` and once with `--jobs N`, in alternating order so that machine noise hits
both alike.  From results.jsonl: cases per second (cases / the span from the first
case's start to the last case's end, so interpreter start-up and the HTML page are
left out), operations per second summed over the workers, and the cores the run
actually got (CPU seconds of the command and its workers per second of wall time).
A clean case runs its whole duration however fast its CPU is, so cases/s of clean
cases scale with workers by construction; ops/s shows whether the cores really did
twice the work.  The
table gives each round's ratio and their median and spread; target: cases/s ratio
>= 1.8 on this 2-core machine (shared with other work: see the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder

TARGET = 1.8


def one(args: argparse.Namespace, jobs: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "stress",
        "campaign",
        args.scenario,
        "--seeds",
        args.seeds,
        "--duration",
        f"{args.duration:g}",
        "--jobs",
        str(jobs),
        "--out",
        str(out),
        "--no-progress",
    ]
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if r.returncode not in (0, 1):
        raise SystemExit(f"campaign failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x]
    span = max(x["finished_at"] for x in recs) - min(x["started_at"] for x in recs)
    ops = sum(x.get("ops") or 0 for x in recs)
    return {
        "jobs": jobs,
        "cases": len(recs),
        "span_s": span,
        "wall_s": wall,
        # CPU seconds of the command and its workers per second of wall time: how many
        # cores it actually got (a loaded machine gives --jobs 2 less than two).
        "cores": cpu / wall,
        "cases_per_s": len(recs) / span,
        "ops_per_s": ops / span,
        "defects": sum(x["outcome"] == "defect" for x in recs),
        "workers": len({x["worker"] for x in recs}),
    }


def spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f}x ({min(xs):.2f}..{max(xs):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=number(1, 100, integer=True), default=3)
    parser.add_argument("--seeds", default="1-4")
    parser.add_argument("--duration", type=number(1.0, 600), default=2.0)
    parser.add_argument("--scenario", default="scenarios/lkml-2010.toml")
    parser.add_argument("--jobs", type=number(2, 256, integer=True), default=2)
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    print(
        f"campaign throughput: {args.scenario} seeds {args.seeds}, cases capped at "
        f"{args.duration:g} s, --jobs 1 vs --jobs {args.jobs}, {args.rounds} round(s); "
        f"{os.cpu_count()} cores shared with other work (load average at start {load0:.1f})",
        flush=True,
    )
    print(
        f"  {'round':>5} {'jobs':>4} {'cases':>5} {'defects':>7} {'span s':>7} {'wall s':>7} "
        f"{'cases/s':>8} {'ops/s':>9} {'cores':>5}"
    )
    case_ratios: list[float] = []
    ops_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        for n in range(1, args.rounds + 1):
            order = (1, args.jobs) if n % 2 else (args.jobs, 1)
            got: dict[int, dict[str, Any]] = {}
            for jobs in order:
                got[jobs] = res = one(args, jobs, Path(tmp) / f"r{n}-j{jobs}")
                print(
                    f"  {n:>5} {jobs:>4} {res['cases']:>5} {res['defects']:>7} "
                    f"{res['span_s']:>7.1f} {res['wall_s']:>7.1f} {res['cases_per_s']:>8.3f} "
                    f"{res['ops_per_s']:>9,.0f} {res['cores']:>5.2f}",
                    flush=True,
                )
            case_ratios.append(got[args.jobs]["cases_per_s"] / got[1]["cases_per_s"])
            ops_ratios.append(got[args.jobs]["ops_per_s"] / got[1]["ops_per_s"])
    verdict = "met" if statistics.median(case_ratios) >= TARGET else "NOT met"
    print(
        f"\n  --jobs {args.jobs} / --jobs 1, per round:\n"
        f"    cases/s {spread(case_ratios)}  -> target >= {TARGET}x: {verdict}\n"
        f"    ops/s   {spread(ops_ratios)}"
    )
    print(f"  {load_at_end()}")


if __name__ == "__main__":
    main()
