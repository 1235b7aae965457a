"""Instrumented locks against threading.Lock: uncontended cost and contended throughput.

    python bench/bench_stress_locks.py [--rounds 15] [--n 200000]

Uncontended: each round times the same loop over threading.Lock and over each
instrumented kind, back to back, so machine noise hits all of them alike; the
ratio is taken per round and the table shows its median and spread (min..max).
"net" subtracts the cost of the empty loop, so it is the ratio of the lock
operations alone (stricter than the raw ratio).  Target: Mutex acquire+release
net ratio <= 2.5.

Contended: 2, 4 and 8 threads each take the lock, do a little work and release,
for a fixed count; the table shows operations per second (median of rounds) and
the ratio to threading.Lock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stress import Config, Monitor, Mutex, RWSem


def loop_empty(lock: Any, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        pass
    return perf_counter() - start


def loop_calls(lock: Any, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return perf_counter() - start


def loop_with(lock: Any, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        with lock:
            pass
    return perf_counter() - start


def loop_rwsem_read(sem: Any, n: int) -> float:
    start = perf_counter()
    for _ in range(n):
        sem.down_read()
        sem.up_read()
    return perf_counter() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f}  ({min(values):.2f}..{max(values):.2f})"


def uncontended(rounds: int, n: int) -> None:
    mon = Monitor(Config(timing=False), name="bench")
    timed_mon = Monitor(Config(timing=True), name="bench-timed")
    base = threading.Lock()
    cases: list[tuple[str, Callable[[Any, int], float], Any, Callable[[Any, int], float], Any]] = [
        ("Mutex acquire()+release()", loop_calls, mon.mutex("b", "b#1"), loop_calls, base),
        ("Mutex with-statement", loop_with, mon.mutex("b", "b#2"), loop_with, base),
        (
            "TimedMutex acquire()+release()",
            loop_calls,
            timed_mon.mutex("b", "b#3"),
            loop_calls,
            base,
        ),
        (
            "Mutex (unfair) acquire()+release()",
            loop_calls,
            mon.mutex("b", "b#4", fair=False),
            loop_calls,
            base,
        ),
        (
            "RWSem down_read()+up_read()",
            loop_rwsem_read,
            RWSem("s", "s#1", monitor=mon),
            loop_calls,
            base,
        ),
    ]
    raw: dict[str, list[float]] = {c[0]: [] for c in cases}
    net: dict[str, list[float]] = {c[0]: [] for c in cases}
    ns: dict[str, list[float]] = {c[0]: [] for c in cases}
    base_ns: list[float] = []
    for _ in range(rounds):
        empty = loop_empty(None, n)
        for label, fn, lock, base_fn, base_lock in cases:
            t_base = base_fn(base_lock, n)
            t_lock = fn(lock, n)
            raw[label].append(t_lock / t_base)
            net[label].append((t_lock - empty) / max(t_base - empty, 1e-9))
            ns[label].append((t_lock - empty) / n * 1e9)
            if fn is loop_calls and label.startswith("Mutex acquire"):
                base_ns.append((t_base - empty) / n * 1e9)
    print(
        f"Uncontended, {rounds} rounds of {n:,} operations "
        f"(threading.Lock acquire()+release(): {statistics.median(base_ns):.0f} ns net)"
    )
    print(
        f"{'operation':38} {'ns net':>7}  {'net ratio, median (min..max)':>30}  {'raw ratio':>22}"
    )
    for label in raw:
        print(
            f"{label:38} {statistics.median(ns[label]):7.0f}  {spread(net[label]):>30}  "
            f"{spread(raw[label]):>22}"
        )
    mon.stop()
    timed_mon.stop()


def contended_ops(lock: Any, threads: int, per_thread: int) -> float:
    shared = [0]
    go = threading.Barrier(threads + 1)

    def work() -> None:
        go.wait()
        for _ in range(per_thread):
            lock.acquire()
            shared[0] += 1
            lock.release()

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    go.wait()
    start = perf_counter()
    for t in pool:
        t.join(120)
    elapsed = perf_counter() - start
    assert shared[0] == threads * per_thread
    return threads * per_thread / elapsed


def contended(rounds: int, per_thread: int) -> None:
    print()
    print(
        f"Contended: each thread does {per_thread:,} acquire/+1/release; "
        f"ops/s median of {rounds} rounds (ratio to threading.Lock)"
    )
    kinds: list[tuple[str, Callable[[], Any]]] = [
        ("threading.Lock", threading.Lock),
        ("Mutex (fair)", lambda: Mutex("c", "c", monitor=mon)),
        ("Mutex (unfair)", lambda: Mutex("c", "c", monitor=mon, fair=False)),
        ("TimedMutex (fair)", lambda: timed.mutex("c", "c")),
    ]
    mon = Monitor(Config(timing=False), name="bench-c")
    timed = Monitor(Config(timing=True), name="bench-ct")
    print(f"{'threads':>7}  " + "  ".join(f"{k:>26}" for k, _ in kinds))
    for threads in (2, 4, 8):
        results: dict[str, list[float]] = {k: [] for k, _ in kinds}
        for _ in range(rounds):
            for label, make in kinds:
                results[label].append(contended_ops(make(), threads, per_thread))
        base = statistics.median(results["threading.Lock"])
        cells = []
        for label, _ in kinds:
            med = statistics.median(results[label])
            cells.append(f"{med:>14,.0f} ({med / base:4.2f}x)")
        print(f"{threads:>7}  " + "  ".join(f"{c:>26}" for c in cells))
    mon.stop()
    timed.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--contended-rounds", type=int, default=5)
    parser.add_argument("--per-thread", type=int, default=20_000)
    args = parser.parse_args()
    uncontended(args.rounds, args.n)
    contended(args.contended_rounds, args.per_thread)


if __name__ == "__main__":
    main()
