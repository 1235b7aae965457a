"""Detection latency: from the onset of each hang to its verdict, at the default poll period.

    python bench/bench_stress_latency.py [--trials 30]

Each trial starts a fresh Monitor with the default Config, waits a random
fraction of a poll period (so onsets fall anywhere between two polls), then
injects one hang and notes its onset:
  list-loop  the step at which a walk over a ring that skips its head passes its bound;
  deadlock   the moment the second of two threads blocks in an ABBA pair;
  long-hold  the moment the holder's hold reaches its class budget.
The latency is verdict time minus onset.  Targets: list-loop and deadlock within
2 poll periods at p90; long-hold within its budget plus 2 poll periods (so the
latency past the budget within 2 periods).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from time import perf_counter
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stress import Config, Monitor

CFG = Config(duration_s=5.0, stop_on=None)


class Node:
    def __init__(self) -> None:
        self.next: Node = self


def list_loop_trial(rng: random.Random) -> float:
    mon = Monitor(CFG, name="loop")
    lock = mon.spinlock("anon_vma", "anon_vma#1")
    head, a, b = Node(), Node(), Node()
    head.next, a.next, b.next = a, b, a
    bound = 96
    onset: list[float] = []

    def walker() -> None:
        time.sleep(rng.uniform(0, CFG.poll_s))
        with lock, mon.walk("page_referenced_anon", "anon_vma#1", lock=lock, bound=bound) as w:
            node = head.next
            while node is not head:
                w.step()
                if w.n == bound + 1:
                    onset.append(perf_counter())
                node = node.next

    mon.spawn(walker, name="walker", tracked=False)
    return _latency(mon, "list-loop", onset)


def deadlock_trial(rng: random.Random) -> float:
    mon = Monitor(CFG.replace(stop_on=frozenset({"deadlock"})), name="deadlock")
    a, b = mon.spinlock("alpha", "a"), mon.spinlock("beta", "b")
    both = threading.Barrier(2)
    blocked: list[float] = []
    delay = rng.uniform(0, CFG.poll_s)

    def take(first: Any, second: Any, late: bool) -> None:
        with first:
            both.wait()
            if late:
                time.sleep(delay)
            blocked.append(perf_counter())
            with second:
                pass

    mon.spawn(take, a, b, False, name="one", tracked=False)
    mon.spawn(take, b, a, True, name="two", tracked=False)
    onset: list[float] = []
    result = _latency(mon, "deadlock", onset, lambda: [max(blocked)] if len(blocked) == 2 else [])
    return result


def long_hold_trial(rng: random.Random) -> float:
    mon = Monitor(CFG, name="hold")
    lock = mon.spinlock("anon_vma", "anon_vma#2")
    onset: list[float] = []

    def holder() -> None:
        time.sleep(rng.uniform(0, CFG.poll_s))
        with lock:
            onset.append(perf_counter() + lock.lock_class.budget_s)
            mon.pause(CFG.hold_s * 4)

    mon.spawn(holder, name="holder", tracked=False)
    return _latency(mon, "long-hold", onset)


def _latency(mon: Monitor, kind: str, onset: list[float], late_onset: Any = None) -> float:
    result = mon.run()
    verdict = next(v for v in result.verdicts if v.kind == kind)
    if late_onset is not None:
        onset = late_onset()
    return mon.t0 + verdict.at_s - onset[0]


def describe(samples: list[float], poll: float) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    med, worst = statistics.median(ordered), ordered[-1]
    return (
        f"{med * 1000:7.1f} {p90 * 1000:7.1f} {worst * 1000:7.1f}   "
        f"{med / poll:5.2f} {p90 / poll:5.2f} {worst / poll:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    poll = CFG.poll_s
    print(
        f"Detection latency, {args.trials} trials each, poll_s={poll * 1000:.0f} ms, "
        f"hold budget {CFG.hold_s:g} s"
    )
    print(f"{'hang':28} {'median':>7} {'p90':>7} {'max':>7}   {'(in poll periods)':>17}")
    for label, trial in (
        ("list-loop (onset->verdict)", list_loop_trial),
        ("deadlock (onset->verdict)", deadlock_trial),
        ("long-hold (budget->verdict)", long_hold_trial),
    ):
        samples = [trial(rng) for _ in range(args.trials)]
        print(f"{label:28} {describe(samples, poll)}   ms / periods")


if __name__ == "__main__":
    main()
