"""Worker allocator: PYTHONMALLOC=malloc (the campaign's default) against pymalloc.

    python bench/bench_campaign_malloc.py [--rounds 2] [--cases 12] [--duration 3]

Each round runs the same campaign twice through the real command, one worker that
is never recycled (`--jobs 1 --recycle 0`, 2.6.34, seeds 1..N, clean cases of
--duration seconds), once with PYTHONMALLOC=malloc and once with pymalloc, in
alternating order.  From results.jsonl: the worker's RSS after its first case and
after its last, the least-squares RSS slope per case, and the median ops/s of a
case.  Both run with MALLOC_ARENA_MAX=2 and malloc_trim after each case.  pymalloc
keeps a 1 MiB arena while one object in it lives, and a few objects outlive each
case; glibc gives free pages back at malloc_trim.  The machine is shared: see the
load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder


def one(args: argparse.Namespace, allocator: str, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "stress", "campaign", "scenarios/lkml-2010.toml",
        "--variant", "2.6.34", "--duration", f"{args.duration:g}", "--cases", str(args.cases),
        "--jobs", "1", "--recycle", "0", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONMALLOC": allocator}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if r.returncode not in (0, 1):
        raise SystemExit(f"campaign failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x]
    recs.sort(key=lambda x: x["finished_at"])
    rss = [x["rss_kib"] / 1024 for x in recs]
    slope = statistics.linear_regression(range(len(rss) - 1), rss[1:]).slope
    return {
        "first": rss[0],
        "last": rss[-1],
        "slope": slope,
        "ops": statistics.median(x["ops_per_s"] for x in recs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=number(1, 50, integer=True), default=2)
    parser.add_argument("--cases", type=number(4, 10_000, integer=True), default=12)
    parser.add_argument("--duration", type=number(1.0, 600), default=3.0)
    args = parser.parse_args()
    print(
        f"worker allocator: {args.cases} clean 2.6.34 cases of {args.duration:g} s in one "
        f"worker, {args.rounds} round(s); load average at start {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  {'round':>5} {'allocator':>9} {'RSS after 1st':>13} {'RSS at end':>10} "
        f"{'MiB/case':>8} {'ops/s med':>9}"
    )
    speed: dict[str, list[float]] = {"malloc": [], "pymalloc": []}
    slopes: dict[str, list[float]] = {"malloc": [], "pymalloc": []}
    with tempfile.TemporaryDirectory(prefix="bench-malloc-") as tmp:
        for n in range(1, args.rounds + 1):
            order = ("malloc", "pymalloc") if n % 2 else ("pymalloc", "malloc")
            for alloc in order:
                res = one(args, alloc, Path(tmp) / f"r{n}-{alloc}")
                speed[alloc].append(res["ops"])
                slopes[alloc].append(res["slope"])
                print(
                    f"  {n:>5} {alloc:>9} {res['first']:>10.1f} MiB {res['last']:>6.1f} MiB "
                    f"{res['slope']:>+8.2f} {res['ops']:>9,.0f}",
                    flush=True,
                )
    ratio = [m / p for m, p in zip(speed["malloc"], speed["pymalloc"], strict=True)]
    print(
        f"\n  RSS slope, MiB per case: malloc median {statistics.median(slopes['malloc']):+.2f}, "
        f"pymalloc median {statistics.median(slopes['pymalloc']):+.2f}\n"
        f"  ops/s malloc / pymalloc per round: median {statistics.median(ratio):.2f}x "
        f"({min(ratio):.2f}..{max(ratio):.2f})"
    )
    print(f"  {load_at_end()}")


if __name__ == "__main__":
    main()
