"""What controlled scheduling costs: scheduling points per second, and controlled / free
throughput on the same workload, in the same run.

    python bench/bench_sched_overhead.py [--rounds 5] [--seconds 4] [--variant 2.6.34]
                                         [--scenario scenarios/lkml-2010.toml]

Each round runs the scenario's workload for --seconds of wall time free-running, then
controlled (pct, then random) with a step budget that takes about as long, each in a
child process, paired in time so that the machine's load hits both alike.  Reported
per mode: operations per second of wall time, scheduling points per second
(controlled), and the ratio free / controlled (how many times slower control makes the
workload; the aim is at most 3x).  Medians and [min, max] over the rounds.
"""

from __future__ import annotations

import argparse
import json
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

MARK = "BENCH-RESULT "


def child(scenario: str, variant: str, mode: str, seconds: float, seed: int) -> None:
    from rmapsim.workload import load_scenario, run_case, watchdog_config

    scn = load_scenario(scenario)
    over: dict[str, Any] = {"variants": [variant]}
    if mode == "free":
        over["duration_s"] = seconds
    else:
        # A generous logical budget; the wall-clock cap below ends the case.
        over.update({"schedule.mode": "controlled", "schedule.strategy": mode, "duration_s": 600})
    scn = scn.override(**over)
    cfg = watchdog_config(scn, on_stuck="raise")
    if mode != "free":
        # The run stops after `seconds` of wall time, like the free one: a timer cancels
        # the case's Monitor (captured as it is made).
        from threading import Timer

        t0 = time.perf_counter()
        holder: dict[str, Any] = {}

        def stop() -> None:
            mon = holder.get("mon")
            if mon is not None:
                mon.cancel(f"bench: {seconds:g} s of wall time")

        import stress.monitor as monitor_mod

        real_init = monitor_mod.Monitor.__init__

        def init(self: Any, *a: Any, **k: Any) -> None:
            real_init(self, *a, **k)
            holder["mon"] = self

        monitor_mod.Monitor.__init__ = init  # type: ignore[method-assign]
        timer = Timer(seconds, stop)
        timer.start()
        r = run_case(scn, variant, seed, config=cfg)
        timer.cancel()
        wall = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        r = run_case(scn, variant, seed, config=cfg)
        wall = time.perf_counter() - t0
    sched = r.stats.get("schedule", {})
    print(
        MARK
        + json.dumps(
            {
                "outcome": r.outcome,
                "ops": r.stats["ops"],
                "wall_s": wall,
                "steps": sched.get("steps", 0),
                "switches": sched.get("switches", 0),
            }
        ),
        flush=True,
    )


def run_one(args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", args.scenario, args.variant, mode,
           str(args.seconds), str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120,
                          cwd=ROOT, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise SystemExit(f"child failed ({mode}): {proc.stderr.strip().splitlines()[-3:]}")
    out: dict[str, Any] = json.loads(line[len(MARK):])
    return out


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(xs):{fmt}} [{min(xs):{fmt}}, {max(xs):{fmt}}]"


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=number(1, 100, integer=True), default=5)
    ap.add_argument("--seconds", type=number(1, 600), default=4.0)
    ap.add_argument("--variant", default="2.6.34")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "lkml-2010.toml"))
    args = ap.parse_args()
    modes = ("free", "pct", "random")
    rate: dict[str, list[float]] = {m: [] for m in modes}
    points: dict[str, list[float]] = {m: [] for m in modes[1:]}
    ratio: dict[str, list[float]] = {m: [] for m in modes[1:]}
    print(f"{args.rounds} rounds of {args.seconds:g} s per mode, {args.variant}, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    for rnd in range(int(args.rounds)):
        got = {m: run_one(args, m, rnd + 1) for m in modes}
        for m in modes:
            rate[m].append(got[m]["ops"] / got[m]["wall_s"])
        for m in modes[1:]:
            points[m].append(got[m]["steps"] / got[m]["wall_s"])
            ratio[m].append(rate["free"][-1] / max(rate[m][-1], 1e-9))
        print(f"  round {rnd + 1}: " + ", ".join(f"{m} {rate[m][-1]:,.0f} ops/s" for m in modes),
              file=sys.stderr, flush=True)
    print(f"free:        {spread(rate['free'])} ops/s")
    for m in modes[1:]:
        print(f"controlled {m}: {spread(rate[m])} ops/s, {spread(points[m])} scheduling "
              f"points/s; free / controlled {spread(ratio[m], '.2f')} (aim <= 3)")
    print(load_at_end())


if __name__ == "__main__":
    main()
