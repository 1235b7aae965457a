"""No false alarm: a healthy threaded workload under the watch mode, for ten minutes.

    python bench/bench_watch_soak.py [--duration 600] [--busy 2]

The workload is what a test suite's threads do, all of it healthy: producers and
consumers over bounded queue.Queues, a ThreadPoolExecutor (map, submit, as_completed,
wait), threading.Timers setting Events, a bounded buffer on a Condition (wait_for and
notify_all), threads that sleep outside any lock, an RLock taken re-entrantly, a
BoundedSemaphore and a Barrier.  It runs inside stress.instrument_threading() with the
settings of `pytest --rmapstress-watch` (stress.watch_config()) and counts verdicts:
the target is zero.  `--busy N` runs N processes spinning on a CPU beside it, so that
its threads are often not scheduled (this machine has 2 cores).

Prints the operations done per kind, the verdicts (with their summaries), the
watchdog's polls, busy share and deferrals for overload, and the load average.  Exit
status 1 if there was any verdict.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from _common import load_at_end, number

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stress

counts: Counter[str] = Counter()
_counts_lock = threading.Lock()  # made before the watch: a plain lock


def tally(kind: str, n: int = 1) -> None:
    with _counts_lock:
        counts[kind] += n


def pipeline(stop: threading.Event) -> None:
    jobs: queue.Queue[int | None] = queue.Queue(maxsize=16)
    results: queue.Queue[int] = queue.Queue()

    def consume() -> None:
        while (item := jobs.get()) is not None:
            results.put(item * 2)
            jobs.task_done()
        jobs.task_done()

    while not stop.is_set():
        workers = [threading.Thread(target=consume, name="consumer") for _ in range(3)]
        for w in workers:
            w.start()
        for i in range(500):
            jobs.put(i)
        for _ in workers:
            jobs.put(None)
        jobs.join()
        for w in workers:
            w.join()
        got = sum(results.get() for _ in range(500))
        assert got == 2 * sum(range(500))
        tally("queue items", 500)


def pool(stop: threading.Event) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        while not stop.is_set():
            assert sum(ex.map(lambda x: x * x, range(100))) == sum(x * x for x in range(100))
            futures = [ex.submit(time.sleep, 0.005) for _ in range(8)]
            concurrent.futures.wait(futures)
            more = [ex.submit(lambda n: n + 1, i) for i in range(20)]
            assert sum(f.result() for f in concurrent.futures.as_completed(more)) == 210
            tally("pool tasks", 128)


def timers(stop: threading.Event) -> None:
    while not stop.is_set():
        fired = threading.Event()
        timer = threading.Timer(0.02, fired.set)
        timer.start()
        never = threading.Timer(60, fired.clear)
        never.start()
        never.cancel()
        assert fired.wait(30)
        timer.join()
        never.join()
        tally("timers")


class BoundedBuffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[int] = []
        self.cond = threading.Condition()

    def put(self, item: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) < self.size)
            self.items.append(item)
            self.cond.notify_all()

    def take(self) -> int:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.items))
            item = self.items.pop(0)
            self.cond.notify_all()
            return item


def conditions(stop: threading.Event) -> None:
    while not stop.is_set():
        buf = BoundedBuffer(4)
        got: list[int] = []

        def take_all(b: BoundedBuffer = buf, into: list[int] = got) -> None:
            into.extend(b.take() for _ in range(300))

        taker = threading.Thread(target=take_all, name="taker")
        taker.start()
        for i in range(300):
            buf.put(i)
        taker.join()
        assert sum(got) == sum(range(300))
        tally("buffer items", 300)


def sleepers(stop: threading.Event) -> None:
    lock = threading.RLock()
    shared = [0]
    rng = random.Random(7)

    def nap() -> None:
        time.sleep(rng.uniform(0.1, 2.5))  # long naps, outside any lock
        with lock, lock:
            shared[0] += 1
            time.sleep(0.001)

    while not stop.is_set():
        threads = [threading.Thread(target=nap, name="napper") for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tally("naps", 4)


def limits(stop: threading.Event) -> None:
    gate = threading.BoundedSemaphore(2)
    guard = threading.Lock()
    inside = [0]

    def work(line: threading.Barrier) -> None:
        line.wait()
        with gate:
            with guard:
                inside[0] += 1
                assert inside[0] <= 2
            time.sleep(0.01)
            with guard:
                inside[0] -= 1

    while not stop.is_set():
        line = threading.Barrier(5)
        threads = [threading.Thread(target=work, args=(line,), name="gated") for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tally("gated", 5)


WORKLOADS: list[Callable[[threading.Event], None]] = [
    pipeline,
    pool,
    timers,
    conditions,
    sleepers,
    limits,
]


def busy_processes(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=number(1, 86_400), default=600.0)
    parser.add_argument("--busy", type=number(0, 64, integer=True), default=0)
    args = parser.parse_args(argv)
    hogs = busy_processes(int(args.busy))
    errors: list[str] = []
    start = time.monotonic()
    try:
        with stress.instrument_threading(stress.watch_config(), name="soak") as watch:
            stop = threading.Event()

            def guarded(fn: Callable[[threading.Event], None]) -> None:
                try:
                    fn(stop)
                except BaseException as exc:  # the bench reports, it does not hide
                    errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
                    raise

            runners = [
                threading.Thread(target=guarded, args=(w,), name=w.__name__) for w in WORKLOADS
            ]
            for r in runners:
                r.start()
            deadline = start + args.duration
            while time.monotonic() < deadline and not watch.hung:
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
            stop.set()
            for r in runners:
                r.join(60)
        elapsed = time.monotonic() - start
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)
    result = watch.result
    assert result is not None
    wd = result.stats["watchdog"]
    print(
        f"healthy workload under the watch mode: {elapsed:.0f} s, "
        f"{len(hogs)} busy processes beside it"
    )
    for kind, n in sorted(counts.items()):
        print(f"  {kind:<14}{n:>12,}")
    print(
        f"  threads watched: {watch.started:,}; lock classes: "
        f"{len(result.stats['lock_classes'])}; watchdog: {wd['polls']:,} polls, "
        f"busy {wd['busy_pct']:.2f}% of the time ({wd['cpu_pct']:.2f}% of a CPU), "
        f"{wd['deferred_for_overload']:,} checks "
        f"deferred for overload"
    )
    print(f"verdicts: {len(watch.verdicts)}")
    for v in watch.verdicts:
        print(f"  {v.kind}: {v.summary}")
    for err in errors + [f"{name}: {exc!r}" for name, exc in watch.thread_errors]:
        print(f"  error: {err}")
    print(load_at_end())
    return 1 if watch.verdicts or errors or watch.thread_errors else 0


if __name__ == "__main__":
    sys.exit(main())
