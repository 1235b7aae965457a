"""What --rmapstress-watch costs a lock-heavy test: its time watched over its time plain.

    python bench/bench_watch_overhead.py [--rounds 9]

Each round runs bench/watch_workload/test_lock_heavy.py twice in fresh pytest processes,
plain and with --rmapstress-watch, back to back (the order alternates), and takes the
test's own duration (setup + call + teardown, from the JUnit XML report) so pytest's
start-up is not counted.  The ratio is taken per round; the table shows the median and
the spread (min..max).  Target: at most 2x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from _common import load_at_end, number

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "bench" / "watch_workload" / "test_lock_heavy.py"


def run_once(watch: bool, folder: Path) -> float:
    report = folder / f"junit-{'watch' if watch else 'plain'}.xml"
    args = [sys.executable, "-m", "pytest", str(WORKLOAD), "-q", "-p", "no:cacheprovider"]
    args += [f"--junitxml={report}", "-o", "junit_duration_report=total"]
    if watch:
        args.append("--rmapstress-watch")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(
            f"bench_watch_overhead: the workload failed ({'watched' if watch else 'plain'}):\n"
            + proc.stdout[-3000:]
            + proc.stderr[-2000:]
        )
    case = ET.parse(report).getroot().find(".//testcase")
    assert case is not None
    return float(case.attrib["time"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=number(1, 100, integer=True), default=9)
    args = parser.parse_args(argv)
    plain: list[float] = []
    watched: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(int(args.rounds)):
            order = (False, True) if i % 2 == 0 else (True, False)
            times = {w: run_once(w, folder) for w in order}
            plain.append(times[False])
            watched.append(times[True])
            ratios.append(times[True] / times[False])
            print(
                f"round {i + 1}: plain {times[False]:.3f} s, watched {times[True]:.3f} s, "
                f"ratio {ratios[-1]:.2f}",
                flush=True,
            )

    def spread(xs: list[float], fmt: str) -> str:
        return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}..{max(xs):{fmt}})"

    print()
    print(f"lock-heavy test, {int(args.rounds)} rounds: median (min..max)")
    print(f"  plain             {spread(plain, '.3f')} s")
    print(f"  --rmapstress-watch {spread(watched, '.3f')} s")
    print(f"  ratio             {spread(ratios, '.2f')}   (target <= 2.0)")
    print(load_at_end())
    return 0


if __name__ == "__main__":
    sys.exit(main())
