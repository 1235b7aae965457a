"""What the instrumentation costs a stress case: throughput with it on against off.

    python bench/bench_run_overhead.py [--rounds 5] [--seconds 5] [--scenario FILE]
                                       [--memory kasan|reuse] [--variant 2.6.34]

Each round runs the same case (same scenario, variant and seed) twice, in
alternating order: once with all instrumentation on (`run_case(...,
instrumented=True)`: the monitor's locks with holders, waiters, lockdep and
lock_stat, tracked walks, timing and the trace ring) and once off (plain locks,
untracked walks, no timing or tracing; the watchdog still polls).  The variant is
2.6.34, which never stops early, so every case runs its full duration.  Throughput
is operations/s (the workers' progress count) and walks/s (every list walk of the
model), each over the case's own duration.  The table shows medians and [min, max]
over the rounds, and the on/off ratio per round.  Target: instrumentation costs at
most 30 % of throughput (on/off >= 0.70).

Each case runs in its own child process, one at a time; the machine has 2 cores
and is shared, so absolute figures carry other people's load (the paired ratio
less so).
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
SLACK_S = 45.0
TARGET_COST = 0.30


def child(
    path: str, variant: str, seed: int, seconds: float, memory: str, instrumented: bool
) -> None:
    from rmapsim.workload import load_scenario, run_case

    scn = load_scenario(path).override(**{"duration_s": seconds, "memory.mode": memory or None})
    r = run_case(scn, variant, seed, instrumented=instrumented)
    out = {
        "outcome": r.outcome,
        "duration_s": r.duration_s,
        "ops": r.stats["ops"],
        "walks": r.stats["model"]["walks"],
        "tracked_walks": r.stats["walks"],
        "threads": r.stats["threads"],
        "verdicts": [f"{v.kind}: {v.summary}" for v in r.verdicts],
        "errors": r.errors,
        "watchdog_busy_pct": r.stats["watchdog"]["busy_pct"],
    }
    print(MARK + json.dumps(out), flush=True)


def run_one(args: argparse.Namespace, seed: int, instrumented: bool) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        args.scenario,
        args.variant,
        str(seed),
        str(args.seconds),
        args.memory or "",
        "on" if instrumented else "off",
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            timeout=args.seconds + SLACK_S,
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"killed after {args.seconds + SLACK_S:g} s: {' '.join(cmd)}"}
    line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None or proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[:2])
        return {"failed": f"exit {proc.returncode}: {tail}: {' '.join(cmd)}"}
    res: dict[str, Any] = json.loads(line[len(MARK) :])
    return res


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    if not xs:
        return "-"
    return (
        f"{format(statistics.median(xs), fmt):>9}  [{format(min(xs), fmt)}, {format(max(xs), fmt)}]"
    )


def main() -> None:
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(a[0], a[1], int(a[2]), float(a[3]), a[4], a[5] == "on")
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rounds", type=number(1, 100, integer=True), default=5, help="on/off pairs (default 5)"
    )
    parser.add_argument(
        "--seconds", type=number(0.5, 600), default=5.0, help="per case (default 5)"
    )
    parser.add_argument("--scenario", default=str(ROOT / "scenarios/lkml-2010.toml"))
    parser.add_argument(
        "--memory",
        choices=("kasan", "reuse"),
        default=None,
        help="memory mode (default: the scenario's)",
    )
    parser.add_argument(
        "--variant", default="2.6.34", help="a variant that stays clean (default 2.6.34)"
    )
    args = parser.parse_args()

    from rmapsim.workload import ScenarioError, load_scenario, watchdog_config
    from stress.errors import ConfigError

    try:
        scn = load_scenario(Path(args.scenario).resolve()).override(
            **{"memory.mode": args.memory, "variants": [args.variant]}
        )
        watchdog_config(scn.override(duration_s=args.seconds))  # too short for verdicts?
    except (ScenarioError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args.scenario = scn.path

    print(
        f"instrumentation cost: {args.variant}, {scn.name} ({scn.memory.mode} memory), "
        f"{args.rounds} rounds of {args.seconds:g} s on and off, alternating order, one child "
        f"process per case; 2-core machine shared with other work (load average at start "
        f"{os.getloadavg()[0]:.1f})",
        flush=True,
    )
    rate: dict[bool, dict[str, list[float]]] = {m: {"ops": [], "walks": []} for m in (True, False)}
    ratio: dict[str, list[float]] = {"ops": [], "walks": []}
    per_op: dict[bool, list[float]] = {True: [], False: []}
    problems: list[str] = []
    busy: dict[bool, list[float]] = {True: [], False: []}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        seed = r + 1
        order = (True, False) if r % 2 == 0 else (False, True)
        got: dict[bool, dict[str, Any]] = {}
        for mode in order:
            res = run_one(args, seed, mode)
            label = "on " if mode else "off"
            if "failed" in res:
                problems.append(f"round {r + 1} {label}: {res['failed']}")
                print(f"  round {r + 1} {label}: FAILED {res['failed']}", file=sys.stderr)
                continue
            if res["outcome"] != "clean":
                problems.append(
                    f"round {r + 1} {label} seed {seed}: {res['outcome']}: "
                    f"{res['verdicts'][:2]} {res['errors'][:2]}"
                )
            got[mode] = res
            d = res["duration_s"]
            rate[mode]["ops"].append(res["ops"] / d)
            rate[mode]["walks"].append(res["walks"] / d)
            per_op[mode].append(res["walks"] / max(res["ops"], 1))
            busy[mode].append(res["watchdog_busy_pct"])
            print(
                f"  [{time.perf_counter() - t0:4.0f} s] round {r + 1} seed {seed} "
                f"instrumentation {label}: {res['ops'] / d:9,.0f} ops/s "
                f"{res['walks'] / d:9,.0f} walks/s  ({res['outcome']}, {res['threads']} "
                f"threads)",
                file=sys.stderr,
                flush=True,
            )
        if len(got) == 2:
            for what in ("ops", "walks"):
                on_rate = got[True][what] / got[True]["duration_s"]
                off_rate = got[False][what] / got[False]["duration_s"]
                if off_rate > 0:
                    ratio[what].append(on_rate / off_rate)

    print(f"\n  {'':<26} {'median':>9}  [min, max]")
    for mode in (True, False):
        label = "on " if mode else "off"
        print(f"  ops/s,   instrumentation {label} {spread(rate[mode]['ops'])}")
    for mode in (True, False):
        label = "on " if mode else "off"
        print(f"  walks/s, instrumentation {label} {spread(rate[mode]['walks'])}")
    for mode in (True, False):
        label = "on " if mode else "off"
        print(f"  walks per op, instr. {label}    {spread(per_op[mode], '.3f')}")
    for mode in (True, False):
        label = "on " if mode else "off"
        print(f"  watchdog busy %, instr. {label} {spread(busy[mode], '.1f')}")
    for what in ("ops", "walks"):
        xs = ratio[what]
        print(f"  {what + '/s on/off (paired)':<26} {spread(xs, '.3f')}")
    if ratio["ops"]:
        cost = 1 - statistics.median(ratio["ops"])
        wcost = 1 - statistics.median(ratio["walks"]) if ratio["walks"] else float("nan")
        met = cost <= TARGET_COST and wcost <= TARGET_COST
        print(
            f"  cost of instrumentation: {100 * cost:.0f} % of ops/s, {100 * wcost:.0f} % of "
            f"walks/s (median of pairs); target <= {100 * TARGET_COST:.0f} %: "
            f"{'MET' if met else 'NOT MET'}"
        )
    for p in problems:
        print(f"  PROBLEM: {p}")
    print(f"  total wall time {time.perf_counter() - t0:.0f} s, {load_at_end()}")


if __name__ == "__main__":
    main()
