"""The released kernel under load: 2.6.34 must show no defect, in both memory modes.

    python bench/bench_run_clean_under_load.py [--seeds 1-20] [--duration 30]
                                               [--busy 2] [--variant 2.6.34]

Two busy processes (pure-Python loops, one per core of this machine) run beside
the cases the whole time, as on an ordinary CI box: that is what exposed the
swap-cache reference race ("freeing page twice") that existed only in the model.
Each case of scenarios/lkml-2010.toml (KASAN memory) and
scenarios/lkml-2010-reuse.toml (reuse memory) runs to the end of its duration in
its own child process; the table shows, per memory mode, the cases, the defects
found (must be 0), and operations per second (median [min, max]).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder
from bench_run_defects import parse_seeds  # noqa: E402

SCENARIOS = ("scenarios/lkml-2010.toml", "scenarios/lkml-2010-reuse.toml")
MARK = "BENCH-RESULT "
SLACK_S = 60.0


def child(path: str, variant: str, seed: int, duration: float) -> None:
    from rmapsim.workload import load_scenario, run_case

    scn = load_scenario(path).override(duration_s=duration)
    r = run_case(scn, variant, seed)
    out = {
        "outcome": r.outcome,
        "verdicts": [f"{v.kind}: {v.summary}" for v in r.verdicts],
        "ops_per_s": r.stats.get("ops_per_s", 0.0),
        "errors": [e.splitlines()[0] for e in r.errors],
        "stuck": r.stuck,
    }
    print(MARK + json.dumps(out), flush=True)


def busy() -> None:  # pragma: no cover - a load generator
    x = 0
    while True:
        x = (x * 31 + 7) % 1_000_003


def run_one(path: str, variant: str, seed: int, duration: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", path, variant, str(seed), str(duration)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + SLACK_S, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"outcome": "died", "verdicts": ["child killed after timeout"], "ops_per_s": 0.0}
    line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return {"outcome": "died", "verdicts": [f"exit {proc.returncode}: {tail[0]}"]}
    result: dict[str, Any] = json.loads(line[len(MARK) :])
    return result


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=list(range(1, 21)))
    parser.add_argument("--duration", type=number(1, 3600), default=30.0, help="s per case")
    parser.add_argument("--busy", type=number(0, 64, integer=True), default=2)
    parser.add_argument("--variant", default="2.6.34")
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(int(args.busy))]
    for h in hogs:
        h.start()
    t0 = time.perf_counter()
    print(
        f"{args.variant}: {len(args.seeds)} seeds x {args.duration:g} s per memory mode, "
        f"{len(hogs)} busy processes beside it (load average at start "
        f"{os.getloadavg()[0]:.1f})",
        flush=True,
    )
    lines = []
    try:
        for rel in SCENARIOS:
            path = str(ROOT / rel)
            rates: list[float] = []
            bad: list[str] = []
            for seed in args.seeds:
                res = run_one(path, args.variant, seed, args.duration)
                rates.append(float(res.get("ops_per_s", 0.0)))
                if res["outcome"] != "clean":
                    bad.append(f"seed {seed}: {res['outcome']}: {'; '.join(res['verdicts'][:2])}")
                print(
                    f"  [{time.perf_counter() - t0:6.0f} s] {Path(rel).stem} seed {seed}: "
                    f"{res['outcome']}, {rates[-1]:,.0f} ops/s",
                    file=sys.stderr,
                    flush=True,
                )
            med = statistics.median(rates)
            lines.append(
                f"{Path(rel).stem}: {len(args.seeds)} cases, {len(bad)} with a defect, "
                f"{med:,.0f} ops/s median [{min(rates):,.0f}, {max(rates):,.0f}]"
            )
            lines += [f"  {b}" for b in bad]
    finally:
        for h in hogs:
            h.terminate()
    print("\n".join(lines))
    print(f"total wall time {time.perf_counter() - t0:.0f} s, {load_at_end()}")


if __name__ == "__main__":
    main()
