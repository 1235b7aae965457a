"""Soak as a campaign: 2.6.34 on every core for an hour; defects and worker memory.

    python bench/bench_campaign_soak.py [--minutes 60] [--case-seconds 30] [--jobs 2]
                                        [--warmup-minutes 5] [--recycle 0] [--out DIR]

Runs the real command,

    rmapstress campaign scenarios/lkml-2010.toml --variant 2.6.34 --duration 30 --for 60m
                        --jobs 2 --recycle 0 --rss-warmup 5m

then reads results.jsonl: cases, operations, defects (there must be none: the fixed
kernel is clean) and, per worker process, its RSS after each case.  The growth that
counts is the least-squares fit over the samples taken after the first
--warmup-minutes of the worker's life, in percent of the RSS at that point (target:
under 5%), and whether it levels off (the campaign's own verdict, as the summary and
the page show it).  --recycle 0 keeps each worker for the whole soak, so the figure
is a worker's own growth, not hidden by recycling.  The machine has 2 cores and is
shared with other work: see the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder

from stress.campaign import summarize  # noqa: E402

TARGET_PCT = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=number(0.5, 24 * 60), default=60.0)
    parser.add_argument("--case-seconds", type=number(2.0, 3600), default=30.0)
    parser.add_argument("--jobs", type=number(1, 256, integer=True), default=2)
    parser.add_argument("--warmup-minutes", type=number(0.0, 600), default=5.0)
    parser.add_argument("--recycle", type=number(0, 1_000_000, integer=True), default=0)
    parser.add_argument("--scenario", default="scenarios/lkml-2010.toml")
    parser.add_argument("--variant", default="2.6.34")
    parser.add_argument("--out", help="campaign folder (default: a new temporary folder)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-soak-")) / "c"
    cmd = [
        sys.executable, "-m", "stress", "campaign", args.scenario,
        "--variant", args.variant, "--duration", f"{args.case_seconds:g}",
        "--for", f"{args.minutes * 60:g}s", "--jobs", str(args.jobs),
        "--recycle", str(args.recycle), "--rss-warmup", f"{args.warmup_minutes * 60:g}s",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    load0 = os.getloadavg()[0]
    print(
        f"soak: {args.variant} from {args.scenario}, {args.minutes:g} min of "
        f"{args.case_seconds:g} s cases on {args.jobs} worker(s), recycle {args.recycle}; "
        f"2-core machine shared with other work (load average at start {load0:.1f})\n"
        f"  {' '.join(cmd[2:])}",
        flush=True,
    )
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"campaign failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x]
    defects = [x for x in recs if x["outcome"] != "clean"]
    ops = sum(x.get("ops") or 0 for x in recs)
    case_time = sum(x.get("duration_s") or 0 for x in recs)
    print(
        f"\n  cases: {len(recs)} in {wall / 60:.1f} min ({case_time / 60:.1f} min of case time); "
        f"ops {ops:,} ({ops / max(case_time, 1e-9):,.0f}/s per case, "
        f"{ops / max(wall, 1e-9):,.0f}/s in all)"
    )
    print(f"  defects: {len(defects)} (must be 0)")
    for x in defects[:10]:
        sig = (x.get("signatures") or [{}])[0]
        print(f"    seed {x['seed']}: {x['outcome']}: {sig.get('kind')}: {sig.get('summary')}")
        print(f"      replay: {x.get('replay')}")
    summary = summarize(recs, warmup_s=args.warmup_minutes * 60)
    print(f"  worker RSS (growth fitted after the first {args.warmup_minutes:g} min of each):")
    worst = None
    for m in summary.workers:
        growth = "-" if m.growth_pct is None else f"{m.growth_pct:+.2f}%"
        slope = "-" if m.slope_kib_per_min is None else f"{m.slope_kib_per_min / 1024:+.3f}"
        base = "-" if m.baseline_kib is None else f"{m.baseline_kib / 1024:.1f}"
        print(
            f"    {m.worker}: {m.cases} cases over {(m.last_at - m.first_at) / 60:.1f} min, "
            f"RSS start {m.start_kib / 1024:.1f}, at warm-up {base}, end {m.end_kib / 1024:.1f}, "
            f"max {m.max_kib / 1024:.1f} MiB; growth after warm-up {growth} "
            f"({slope} MiB/min): {m.verdict}"
        )
        if m.growth_pct is not None:
            worst = m.growth_pct if worst is None else max(worst, m.growth_pct)
    if worst is None:
        print("  RSS growth: too few samples after the warm-up for a figure")
    else:
        met = worst < TARGET_PCT and not defects
        print(
            f"  largest RSS growth after warm-up: {worst:+.2f}% (target < {TARGET_PCT:g}%, "
            f"0 defects): {'met' if met else 'NOT met'}"
        )
    print(f"  campaign folder: {out} (campaign.html)")
    print(f"  {load_at_end()}")


if __name__ == "__main__":
    main()
