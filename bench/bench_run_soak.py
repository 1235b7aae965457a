"""Soak: 2.6.34 on real threads for minutes, case after case; defects and memory.

    python bench/bench_run_soak.py [--minutes 10] [--case-seconds 30] [--scenario FILE]
                                   [--variant 2.6.34] [--max-rss-mib 4096] [--tracemalloc]

A child process runs successive cases of the fixed kernel (scenario
lkml-2010.toml, seeds 1, 2, 3, ...), each to the end of its duration, until the
soak's time is spent, so whatever one case leaves behind must be released before
the next.  Before the first case and after each one (after gc.collect()) it
samples the process's memory: VmRSS from /proc/self/status, pymalloc's allocated
blocks (sys.getallocatedblocks), the objects the collector tracks, live threads,
threads that died holding a lock and are still registered by the harness, and
with --tracemalloc the traced Python memory (current and peak; it slows the
workload).  The table shows the samples, the defects (there must be none), the
operations done, and whether memory stays flat: the least-squares slope of RSS
after the first case (which warms caches up), in MiB per minute, and the growth
it fits over the soak.  A child whose RSS passes --max-rss-mib is stopped (the
machine is shared) and a new one goes on.

If the child dies (the harness's faulthandler backstop exits the process when a
case cannot be stopped), the incident is reported with its stderr kept in a file
and a new child goes on with the next seed: memory is then reported per child.
The machine has 2 cores and is shared with other work.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import load_at_end, number  # noqa: E402 - bench/ is the script's folder

MARK = "BENCH-SAMPLE "
SLACK_S = 60.0
#: Memory counts as flat when the fitted growth over the soak stays under both.
FLAT_MIB = 8.0
FLAT_FRACTION = 0.05


# -- the child: cases until the deadline, one JSON line per sample -----------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def sample(t0: float, **extra: Any) -> None:
    import tracemalloc

    from stress.threads import all_threads

    gc.collect()
    # Threads that died holding a lock stay registered (for diagnosis), and with them
    # everything their state reaches: the case's monitor, workers and model.
    dead = sum(not st.thread.is_alive() for st in all_threads())
    cur, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
    out = {
        "t_s": time.perf_counter() - t0,
        "rss_kib": rss_kib(),
        "blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        "threads": threading.active_count(),
        "dead_holding": dead,
        "traced_kib": cur // 1024,
        "traced_peak_kib": peak // 1024,
        **extra,
    }
    print(MARK + json.dumps(out), flush=True)


def child(
    path: str, variant: str, seconds_left: float, case_s: float, seed: int, trace: bool
) -> None:
    import tracemalloc

    from rmapsim.workload import load_scenario, run_case, watchdog_config
    from stress.errors import ConfigError

    if trace:
        tracemalloc.start()
    base = load_scenario(path)
    t0 = time.perf_counter()
    deadline = t0 + seconds_left
    sample(t0, seed=None)
    while (left := deadline - time.perf_counter()) >= 1.0:
        scn = base.override(duration_s=min(case_s, left))
        try:
            watchdog_config(scn)
        except ConfigError:
            break  # too little time left for a case the watchdog can judge
        r = run_case(scn, variant, seed)
        del scn
        sample(
            t0,
            seed=seed,
            outcome=r.outcome,
            case_s=r.duration_s,
            ops=r.stats["ops"],
            walks=r.stats["model"]["walks"],
            verdicts=[f"{v.kind}: {v.summary}" for v in r.verdicts],
            errors=r.errors,
            stuck=r.stuck,
            replay=r.meta.get("replay"),
        )
        del r
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        seed += 1


# -- the parent ---------------------------------------------------------------------------


def reader(stream: IO[str], q: queue.Queue[str | None]) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def run_child(
    args: argparse.Namespace, seconds: float, seed: int, logs: Path, t_start: float
) -> tuple[list[dict[str, Any]], str]:
    """One child until it finishes or dies: its samples, and an incident ('' if none)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        args.scenario,
        args.variant,
        str(seconds),
        str(args.case_seconds),
        str(seed),
        "1" if args.tracemalloc else "0",
    ]
    logs.mkdir(parents=True, exist_ok=True)
    err_path = logs / f"child-seed{seed}.stderr.txt"
    samples: list[dict[str, Any]] = []
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        assert proc.stdout is not None
        q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=reader, args=(proc.stdout, q), daemon=True).start()
        incident = ""
        while True:
            try:
                line = q.get(timeout=args.case_seconds + SLACK_S)
            except queue.Empty:
                proc.kill()
                incident = f"no sample for {args.case_seconds + SLACK_S:g} s: child killed"
                break
            if line is None:
                break
            if line.startswith(MARK):
                s = json.loads(line[len(MARK) :])
                samples.append(s)
                if s["seed"] is not None:
                    print(
                        f"  [{time.perf_counter() - t_start:5.0f} s] seed {s['seed']}: "
                        f"{s['outcome']}, {s['ops']:,} ops, RSS {s['rss_kib'] / 1024:.1f} MiB, "
                        f"{s['threads']} threads",
                        file=sys.stderr,
                        flush=True,
                    )
                if s["rss_kib"] > args.max_rss_mib * 1024:
                    proc.kill()  # the machine is shared: a leak must not eat it
                    incident = (
                        f"RSS {s['rss_kib'] / 1024:.0f} MiB over --max-rss-mib "
                        f"{args.max_rss_mib:g}: child stopped"
                    )
                    break
        rc = proc.wait(timeout=30)
    text = err_path.read_text(encoding="utf-8")
    if rc != 0 and not incident:
        first = next((x for x in text.splitlines() if x.startswith("Timeout (")), "")
        incident = f"child exited with status {rc} {first}".rstrip()
    if incident:
        last = samples[-1]["seed"] if samples and samples[-1]["seed"] is not None else seed - 1
        incident += (
            f" after seed {last}" if incident.startswith("RSS") else f" during seed {last + 1}"
        ) + (f" (stderr: {err_path}; command: {' '.join(cmd[:2])} --child ...)")
    elif not text.strip():
        err_path.unlink()
    return samples, incident


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f}"


def memory_summary(samples: list[dict[str, Any]], label: str) -> list[str]:
    """Start, after the warm-up case, end, max; the slope after warm-up; flat or not."""
    lines = [f"  {label}: {len(samples) - 1} cases over {samples[-1]['t_s'] / 60:.1f} min"]
    if len(samples) < 2:
        return lines
    warm = samples[1:]
    rss = [s["rss_kib"] for s in samples]
    lines.append(
        f"    RSS MiB: start {mib(rss[0])}, after case 1 {mib(rss[1])}, "
        f"end {mib(rss[-1])}, max {mib(max(rss))}"
    )
    for key, name in (
        ("blocks", "pymalloc blocks"),
        ("gc_objects", "gc objects"),
        ("threads", "threads"),
        ("dead_holding", "dead threads still registered (held a lock)"),
    ):
        xs = [s[key] for s in samples]
        lines.append(
            f"    {name}: start {xs[0]:,}, after case 1 {xs[1]:,}, end {xs[-1]:,}, max {max(xs):,}"
        )
    if samples[0]["traced_peak_kib"] or samples[-1]["traced_kib"]:
        tr = [s["traced_kib"] for s in samples]
        lines.append(
            f"    tracemalloc MiB: start {mib(tr[0])}, after case 1 {mib(tr[1])}, "
            f"end {mib(tr[-1])}, peak within a case "
            f"{mib(max(s['traced_peak_kib'] for s in samples))}"
        )
    if len(warm) >= 3:
        ts = [s["t_s"] / 60 for s in warm]
        fit = statistics.linear_regression(ts, [s["rss_kib"] / 1024 for s in warm])
        bfit = statistics.linear_regression(ts, [float(s["blocks"]) for s in warm])
        span = ts[-1] - ts[0]
        growth = fit.slope * span
        limit = min(FLAT_MIB, FLAT_FRACTION * warm[0]["rss_kib"] / 1024)
        flat = growth < limit
        lines.append(
            f"    RSS slope after case 1: {fit.slope:+.2f} MiB/min (fitted growth "
            f"{growth:+.1f} MiB over {span:.1f} min; pymalloc blocks "
            f"{bfit.slope:+,.0f}/min) -> {'FLAT' if flat else 'GROWING'} "
            f"(flat: fitted growth < {limit:.1f} MiB)"
        )
    else:
        lines.append("    too few cases after warm-up for a slope")
    return lines


def main() -> None:
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(a[0], a[1], float(a[2]), float(a[3]), int(a[4]), a[5] == "1")
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=number(0.05, 24 * 60), default=10.0)
    parser.add_argument("--case-seconds", type=number(1.0, 3600), default=30.0)
    parser.add_argument("--scenario", default=str(ROOT / "scenarios/lkml-2010.toml"))
    parser.add_argument("--variant", default="2.6.34")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument(
        "--max-rss-mib",
        type=number(64, 1 << 20),
        default=4096.0,
        help="stop a child whose RSS passes this and go on in a new one",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace Python memory (slows the workload)"
    )
    args = parser.parse_args()

    from rmapsim.workload import ScenarioError, load_scenario, watchdog_config
    from stress.errors import ConfigError

    try:
        scn = load_scenario(Path(args.scenario).resolve())
        scn = scn.override(**{"variants": [args.variant]})
        watchdog_config(scn.override(duration_s=args.case_seconds))  # too short for verdicts?
    except (ScenarioError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    args.scenario = scn.path
    logs = Path(tempfile.gettempdir()) / f"bench-run-soak-{time.strftime('%Y%m%d-%H%M%S')}"
    load0 = os.getloadavg()
    print(
        f"soak: {args.variant}, {scn.name} ({scn.memory.mode} memory), {args.minutes:g} min "
        f"of {args.case_seconds:g} s cases from seed {args.first_seed}; 2-core machine shared "
        f"with other work (load average at start {load0[0]:.1f})",
        flush=True,
    )
    t_start = time.perf_counter()
    budget = args.minutes * 60
    seed = args.first_seed
    children: list[list[dict[str, Any]]] = []
    incidents: list[str] = []
    while (left := budget - (time.perf_counter() - t_start)) >= 1.0:
        samples, incident = run_child(args, left, seed, logs, t_start)
        children.append(samples)
        if incident:
            incidents.append(incident)
            print(f"  INCIDENT: {incident}", file=sys.stderr, flush=True)
        done = [s["seed"] for s in samples if s["seed"] is not None]
        died = incident and not incident.startswith("RSS")
        seed = (max(done) if done else seed - 1) + (2 if died else 1)
        if not incident:
            break
    wall = time.perf_counter() - t_start

    cases = [s for samples in children for s in samples if s["seed"] is not None]
    defects = [s for s in cases if s["outcome"] != "clean"]
    ops = sum(s["ops"] for s in cases)
    walks = sum(s["walks"] for s in cases)
    case_time = sum(s["case_s"] for s in cases)
    print("\n  samples (after gc.collect(); t from the child's start):")
    print(
        f"  {'child':>5} {'t min':>6} {'seed':>5} {'outcome':>8} {'ops':>9} {'RSS MiB':>8} "
        f"{'blocks':>9} {'gc objs':>8} {'threads':>7} {'dead+lock':>9}"
    )
    for n, samples in enumerate(children, 1):
        step = max(1, len(samples) // 12)
        shown = [s for i, s in enumerate(samples) if i % step == 0 or i == len(samples) - 1]
        for s in shown:
            print(
                f"  {n:>5} {s['t_s'] / 60:6.2f} {s['seed'] or '-':>5} "
                f"{s.get('outcome', 'start'):>8} {s.get('ops', 0):>9,} {mib(s['rss_kib']):>8} "
                f"{s['blocks']:>9,} {s['gc_objects']:>8,} {s['threads']:>7} "
                f"{s['dead_holding']:>9}"
            )
    print(
        f"\n  cases: {len(cases)} ({case_time / 60:.1f} min of case time in "
        f"{wall / 60:.1f} min), ops {ops:,} ({ops / max(case_time, 1e-9):,.0f}/s), "
        f"walks {walks:,}"
    )
    print(
        f"  defects: {len(defects)} (must be 0)"
        + "".join(
            f"\n    seed {s['seed']}: {s['outcome']}: {s['verdicts'][:2]} {s['errors'][:2]} "
            f"stuck={s['stuck']} replay: {s['replay']}"
            for s in defects
        )
    )
    print(
        f"  child processes: {len(children)}; incidents: {len(incidents)}"
        + "".join(f"\n    {i}" for i in incidents)
    )
    for n, samples in enumerate(children, 1):
        if samples:
            print("\n".join(memory_summary(samples, f"memory, child {n}")))
    print(f"  {load_at_end()}")


if __name__ == "__main__":
    main()
