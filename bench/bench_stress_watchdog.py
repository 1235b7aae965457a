"""What the watchdog costs the workers: throughput with it polling against without it.

    python bench/bench_stress_watchdog.py [--rounds 7] [--seconds 2] [--threads 6]

Each round runs the same workload twice, back to back and in alternating order:
once under a started Monitor (watchdog polling at the default period, backstop
armed) and once with the same locks and walks but no watchdog.  Workers take a
lock, walk a short list under it, and report progress, like a model's
operations.  The cost is 1 - with/without per round; the table shows its median
and spread, and the watchdog's own busy time.  Target: <= 5 %.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stress import Cancelled, Config, Monitor


def workload(mon: Monitor, threads: int, seconds: float, watched: bool) -> tuple[float, float]:
    """Operations per second of `threads` workers; and the watchdog's busy share."""
    locks = [mon.spinlock("anon_vma", f"anon_vma#{i}") for i in range(4)]
    stop = threading.Event()
    counts = [0] * threads

    def worker(i: int) -> None:
        lock = locks[i % len(locks)]
        n = 0
        try:
            while not stop.is_set():
                with lock, mon.walk("page_referenced_anon", lock.name, lock=lock, bound=64) as w:
                    for _ in range(16):
                        w.step()
                mon.progress()
                n += 1
        except Cancelled:
            pass
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    if watched:
        mon.start()
    start = perf_counter()
    for t in pool:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in pool:
        t.join(10)
    elapsed = perf_counter() - start
    result = mon.stop()
    busy = result.stats["watchdog"]["busy_pct"] if watched else 0.0
    return sum(counts) / elapsed, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=6)
    args = parser.parse_args()
    cfg = Config(duration_s=args.seconds * 10, stop_on=frozenset())
    costs: list[float] = []
    busy: list[float] = []
    rates: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        got: dict[bool, float] = {}
        for watched in order:
            rate, pct = workload(
                Monitor(cfg, name=f"bench-{r}"), args.threads, args.seconds, watched
            )
            got[watched] = rate
            rates[watched].append(rate)
            if watched:
                busy.append(pct)
        costs.append(100.0 * (1 - got[True] / got[False]))
    print(
        f"Watchdog cost at poll_s={cfg.poll_s * 1000:.0f} ms, {args.threads} workers, "
        f"{args.rounds} rounds of {args.seconds:g} s each way"
    )
    print(f"  ops/s without watchdog: median {statistics.median(rates[False]):,.0f}")
    print(f"  ops/s with watchdog:    median {statistics.median(rates[True]):,.0f}")
    print(
        f"  throughput cost:        median {statistics.median(costs):.2f} %  "
        f"(min {min(costs):.2f} %, max {max(costs):.2f} %)"
    )
    print(f"  watchdog busy time:     median {statistics.median(busy):.2f} % of wall time")


if __name__ == "__main__":
    main()
