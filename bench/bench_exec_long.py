"""Benchmark (not a test): `exec` on long programs, time per line as the program grows.

Three shapes of program, each at several lengths:
* spawn:    one `spawn` a line (a world that grows by one empty process a line);
* families: independent families, each spawned, mapped, touched, forked, swapped
            (a world that grows by a family every 8 lines);
* churn:    one parent that forks, works with and reaps child after child (a world
            that stays small).
For each it prints the CPU time of `run_program` (this process only, so that other work
on the machine weighs less than on the wall clock) and the wall time, as the median and
the range of the repeats, the time per line, and the growth ratio t(n) / t(n/2): 2 is
linear, 4 quadratic.  With --full it also times whole audits after every line (the old
way) on the first two lengths, for comparison.  Target: 200,000 lines in under a minute.

    .venv/bin/python bench/bench_exec_long.py [--lengths 25000,50000,100000,200000]
                                              [--repeats N] [--shapes spawn,families,churn]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import load_at_end, number

from rmapsim.program import parse_program, run_program


def spawn(n: int) -> str:
    return "".join(f"spawn P{i}\n" for i in range(n))


def families(n: int) -> str:
    out: list[str] = []
    i = 0
    while len(out) < n:
        p, c = f"P{i}", f"C{i}"
        out += [
            f"spawn {p}",
            f"mmap {p} 0x10000 4 rw",
            f"touch {p} 0x10000 4 w",
            f"fork {p} {c}",
            f"touch {c} 0x10000 2 w",
            f"swapout {p} 0x10000 4",
            f"touch {p} 0x10000 1 r",
            f"mprotect {c} 0x11000 1 r",
        ]
        i += 1
    return "\n".join(out[:n]) + "\n"


def churn(n: int) -> str:
    out = ["spawn P", "mmap P 0x10000 8 rw"]
    i = 0
    while len(out) < n:
        c = f"C{i}"
        out += [
            f"touch P {0x10000 + (i % 8) * 0x1000:#x} 1 w",
            f"fork P {c}",
            f"touch {c} 0x10000 2 w",
            f"mprotect {c} 0x11000 1 r",
            f"swapout {c} 0x10000 4",
            "touch P 0x10000 2 r",
            "referenced P 0x10000 4",
            f"exit {c}",
        ]
        i += 1
    return "\n".join(out[:n]) + "\n"


SHAPES = {"spawn": spawn, "families": families, "churn": churn}


def measure(text: str, full: bool) -> tuple[float, float]:
    ops = parse_program(text)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_program(ops, "2.6.34", full_audits=full)
    assert result.ops == len(ops) and not result.defects
    return time.process_time() - cpu, time.perf_counter() - wall


def lengths(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=lengths, default=[25_000, 50_000, 100_000, 200_000])
    ap.add_argument("--repeats", type=number(1, 20, integer=True), default=3)
    ap.add_argument("--shapes", default="spawn,families,churn")
    ap.add_argument("--full", action="store_true", help="also time whole audits (slow)")
    args = ap.parse_args()
    print(f"{'shape':<9} {'audits':<7} {'lines':>8} {'cpu s (min..max)':>22} {'wall s':>8} "
          f"{'us/line':>8} {'growth':>7}")
    for shape in args.shapes.split(","):
        modes = [False, True] if args.full else [False]
        for full in modes:
            sizes = args.lengths[:2] if full else args.lengths
            prev: float | None = None
            for n in sizes:
                text = SHAPES[shape](n)
                runs = [measure(text, full) for _ in range(int(args.repeats))]
                cpus = [c for c, _ in runs]
                cpu = statistics.median(cpus)
                wall = statistics.median(w for _, w in runs)
                growth = f"{cpu / prev:.2f}" if prev else "-"
                prev = cpu
                print(
                    f"{shape:<9} {'whole' if full else 'scoped':<7} {n:>8,} "
                    f"{cpu:>8.2f} ({min(cpus):.2f}..{max(cpus):.2f}) {wall:>8.2f} "
                    f"{1e6 * cpu / n:>8.1f} {growth:>7}",
                    flush=True,
                )
    print(load_at_end())


if __name__ == "__main__":
    main()
