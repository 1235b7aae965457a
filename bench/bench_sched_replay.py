"""Exact replay, measured: controlled defects replay identically, on an idle or a loaded
machine; free-running defects get a deterministic reproducer.

    python bench/bench_sched_replay.py [--seeds 1-10] [--replays 20] [--busy 2]
                                       [--variants 2.6.34-rc3,rik-v2,rik-v2-dst,hannes-merge]
                                       [--convert-seeds 1-10] [--convert-budget 60]

Part 1.  For each pre-fix kernel and seed, a controlled case of scenarios/lkml-2010.toml
(random strategy) runs in a child process and writes its reproducer; `rmapstress replay
--json` then runs it --replays times, in fresh processes, half of them with --busy
pure-Python loops running beside it (a loaded machine), and compares each replay's first
verdict - kind, signature and the objects it names - with the recording.

Part 2.  Each seed of the default scenario runs free (the OS switching threads); for every
defect found, the same workload is searched under controlled schedules until a verdict of
the same kind and signature shows (rmapsim.workload.determinize), within
--convert-budget seconds.  Reported: how many defects got a reproducer, and how long it took.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
from bench_run_defects import parse_seeds  # noqa: E402

MARK = "BENCH-RESULT "
SCENARIO = ROOT / "scenarios" / "lkml-2010.toml"


def busy() -> None:  # pragma: no cover - a load generator
    x = 0
    while True:
        x = (x * 31 + 7) % 1_000_003


def record(variant: str, seed: int, out: str) -> None:
    from rmapsim.workload import load_scenario, run_case, watchdog_config

    scn = load_scenario(str(SCENARIO)).override(
        **{"schedule.mode": "controlled", "schedule.strategy": "random", "variants": [variant]}
    )
    r = run_case(scn, variant, seed, config=watchdog_config(scn, on_stuck="raise"))
    if r.reproducer is not None:
        r.reproducer.save(out)
    print(MARK + json.dumps({"outcome": r.outcome}), flush=True)


def convert(seed: int, budget: float) -> None:
    from rmapsim.workload import load_scenario, run_case, watchdog_config
    from rmapsim.workload.determinize import find_controlled

    scn = load_scenario(str(SCENARIO))
    rows = []
    for variant in scn.variants:
        one = scn.override(variants=[variant])
        r = run_case(one, variant, seed, config=watchdog_config(one, on_stuck="raise"))
        if not r.verdicts:
            continue
        first = min(r.verdicts, key=lambda v: v.at_s)
        found = find_controlled(
            one, variant, seed, first.kind, first.signature, budget_s=budget,
            within_s=3 * (r.first_defect_s or 0.0) + 1.0,
        )
        rows.append(
            {"variant": variant, "kind": first.kind, "found": found.found,
             "seconds": found.seconds, "attempts": found.attempts}
        )
    print(MARK + json.dumps(rows), flush=True)


def child(args: list[str], timeout: float) -> Any:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
        cwd=ROOT, check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"child {args} failed: {proc.stderr.strip().splitlines()[-2:]}")
    return json.loads(line[len(MARK):])


def replay(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "stress", "replay", str(path), "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--record":
        record(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--convert":
        convert(int(sys.argv[2]), float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=parse_seeds, default=list(range(1, 11)))
    ap.add_argument("--replays", type=number(1, 1000, integer=True), default=20)
    ap.add_argument("--busy", type=number(0, 64, integer=True), default=2)
    ap.add_argument("--variants", default="2.6.34-rc3,rik-v2,rik-v2-dst,hannes-merge")
    ap.add_argument("--convert-seeds", type=parse_seeds, default=list(range(1, 11)))
    ap.add_argument("--convert-budget", type=number(1, 3600), default=60.0)
    ap.add_argument("--skip-replay", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sched-replay-"))
    print(f"load average at start {os.getloadavg()[0]:.1f}; files in {work}", flush=True)
    if not args.skip_replay:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            same = total = defects = 0
            loaded_same = loaded_total = 0
            for seed in args.seeds:
                path = work / f"{variant}-{seed}.json"
                child(["--record", variant, str(seed), str(path)], 600)
                if not path.exists():
                    continue
                defects += 1
                recorded = json.loads(path.read_text())["verdict"]
                want = (recorded["kind"], recorded["signature"], recorded["objects"])
                for i in range(int(args.replays)):
                    loaded = i % 2 == 1 and args.busy > 0
                    hogs = [multiprocessing.Process(target=busy, daemon=True)
                            for _ in range(int(args.busy) if loaded else 0)]
                    for h in hogs:
                        h.start()
                    try:
                        doc = replay(path)
                    finally:
                        for h in hogs:
                            h.terminate()
                    v = doc["verdicts"][0] if doc["verdicts"] else None
                    ok = v is not None and (v["kind"], v["signature"], v["objects"]) == want
                    total += 1
                    same += ok
                    if loaded:
                        loaded_total += 1
                        loaded_same += ok
                print(f"  {variant} seed {seed}: {same}/{total} identical so far",
                      file=sys.stderr, flush=True)
            print(f"{variant}: {defects}/{len(args.seeds)} seeds found a defect under control; "
                  f"replays identical (kind, signature, objects): {same}/{total}, of which "
                  f"with {args.busy} busy processes beside them: {loaded_same}/{loaded_total}",
                  flush=True)
    rows = []
    for seed in args.convert_seeds:
        got = child(["--convert", str(seed), str(args.convert_budget)],
                    args.convert_budget * 8 + 600)
        rows += got
        for r in got:
            print(f"  seed {seed} {r['variant']}: {r['kind']} -> "
                  f"{'reproducer' if r['found'] else 'NOT reproduced'} in {r['seconds']:.1f} s "
                  f"({r['attempts']} controlled runs)", file=sys.stderr, flush=True)
    found = [r for r in rows if r["found"]]
    secs = [r["seconds"] for r in found]
    print(f"free-running defects made deterministic: {len(found)}/{len(rows)} "
          f"({100.0 * len(found) / max(len(rows), 1):.0f}%), within "
          f"{args.convert_budget:g} s each; time to the reproducer "
          f"{statistics.median(secs) if secs else 0:.1f} s median "
          f"[{min(secs, default=0):.1f}, {max(secs, default=0):.1f}]")
    print(load_at_end())



if __name__ == "__main__":
    main()
