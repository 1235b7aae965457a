"""Benchmark (not a test): the single-threaded model.

Reports, in one run on this machine:
* exec throughput: operations per second of `run_program` on hunted-style programs,
  with and without the per-line audit;
* the cost of one step of a page_referenced_anon walk against a bare pointer chase over
  the same anon_vma list (target: at most 3x).

Each figure is the median of several repeats, with min and max.  Run:
    .venv/bin/python bench/bench_rmapsim.py [--repeats N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from rmapsim.hunt import _OP_NAMES, PROCS, PROTS, WINDOW_PAGES, translate
from rmapsim.kernel import Kernel
from rmapsim.program import run_program
from rmapsim.rmap import page_referenced
from rmapsim.structs import AVC_SAME_ANON_VMA, VM_READ, VM_WRITE
from rmapsim.sync import SingleThreadSync


def timed(fn: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    xs = [fn() for _ in range(repeats)]
    return statistics.median(xs), min(xs), max(xs)


def exec_ops_per_s(check: bool) -> float:
    rnd = random.Random(7)
    programs = []
    for _ in range(300):
        raw = [
            (
                rnd.choice(_OP_NAMES),
                rnd.randrange(len(PROCS)),
                rnd.randrange(WINDOW_PAGES),
                rnd.randint(1, 3),
                rnd.randrange(len(PROTS)),
                rnd.random() < 0.5,
                0,
            )
            for _ in range(20)
        ]
        programs.append(translate(raw))
    n = sum(len(p) for p in programs)
    t = time.perf_counter()
    for p in programs:
        run_program(p, "2.6.34", check=check)
    return n / (time.perf_counter() - t)


def shared_page_kernel(children: int) -> tuple[Kernel, object, object]:
    """A page mapped by a parent and `children` forked children: one long anon_vma list."""
    k = Kernel("2.6.34", sync=SingleThreadSync())
    k.spawn("P")
    k.mmap("P", 0x10000, 1, VM_READ | VM_WRITE)
    k.touch("P", 0x10000, 1, True)
    for i in range(children):
        k.fork("P", f"C{i}")
    page = k.task("P").ptes[0x10000].page
    return k, page, page.mapping  # type: ignore[union-attr]


def iterate(k: Kernel, head: object) -> int:
    n = 0
    for _ in k.walks.for_each_entry(head, AVC_SAME_ANON_VMA, what="bench"):  # type: ignore[arg-type]
        n += 1
    return n


def walk_vs_chase(children: int, reps: int) -> tuple[float, float, float]:
    """(page_referenced_anon ns/step, walk iterator ns/step, bare chase ns/step)."""
    k, page, av = shared_page_kernel(children)
    steps = k.walks.bare_chase(av.head)  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(reps):
        k.walks.bare_chase(av.head)  # type: ignore[attr-defined]
    chase = (time.perf_counter() - t) / (reps * steps)
    t = time.perf_counter()
    for _ in range(reps):
        iterate(k, av.head)  # type: ignore[attr-defined]
    it = (time.perf_counter() - t) / (reps * steps)
    t = time.perf_counter()
    for _ in range(reps):
        page_referenced(k, page)  # type: ignore[arg-type]
    walk = (time.perf_counter() - t) / (reps * steps)
    return walk * 1e9, it * 1e9, chase * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    r = args.repeats
    print("rmapsim benchmark (median [min, max] of", r, "repeats)")
    for check in (True, False):
        med, lo, hi = timed(lambda c=check: exec_ops_per_s(c), r)
        print(f"  exec ops/s, audit {'on ' if check else 'off'}: {med:9.0f}  [{lo:.0f}, {hi:.0f}]")
    for children in (8, 64):
        rows = [walk_vs_chase(children, 300) for _ in range(r)]
        chase = statistics.median(x[2] for x in rows)
        it_ratio = [x[1] / x[2] for x in rows]
        walk_ratio = [x[0] / x[2] for x in rows]
        print(f"  anon_vma list of {children + 1} entries: bare pointer chase {chase:5.1f} ns/step")
        print(
            f"    walk iterator step (bound, cycle trip, hook test): "
            f"{statistics.median(x[1] for x in rows):6.1f} ns = "
            f"{statistics.median(it_ratio):4.1f}x [{min(it_ratio):.1f}, {max(it_ratio):.1f}]"
        )
        print(
            f"    page_referenced_anon step (+ vma_address, PTE lookup under page_table_lock): "
            f"{statistics.median(x[0] for x in rows):6.1f} ns = "
            f"{statistics.median(walk_ratio):4.1f}x [{min(walk_ratio):.1f}, {max(walk_ratio):.1f}]"
        )


if __name__ == "__main__":
    main()
