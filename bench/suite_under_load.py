"""The whole test suite with busy processes beside it: does it still pass, and how long?

Starts `--busy` processes that spin on the CPU (2 by default: as many as this machine's
cores), runs pytest `--runs` times in a row, and prints for each run its outcome, its
wall time and the tests that failed; the busy processes are stopped at the end whatever
happens.  The suite must pass every time: its tests check order and outcome, not wall
time, and where they need a margin it is generous.

    .venv/bin/python bench/suite_under_load.py [--runs 3] [--busy 2] [--timeout-s 1800]
                                               [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load_at_end, number

ROOT = Path(__file__).resolve().parent.parent
BUSY = "while True:\n    pass\n"


def start_busy(n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.DEVNULL)
        for _ in range(n)
    ]


def stop_busy(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(10)


def run_suite(
    pytest_args: list[str], timeout_s: float, log: Path
) -> tuple[str, float, list[str], str]:
    """(outcome, seconds, failed test ids, pytest's summary line); the output goes to `log`."""
    pytest = ROOT / ".venv" / "bin" / "pytest"
    cmd = [str(pytest) if pytest.exists() else "pytest", "-q", "-p", "no:cacheprovider"]
    start = time.monotonic()
    try:
        r = subprocess.run(
            [*cmd, *pytest_args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return "TIMEOUT", time.monotonic() - start, [], f"no result within {timeout_s:g} s"
    elapsed = time.monotonic() - start
    log.write_text(r.stdout + r.stderr)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", r.stdout, re.M)
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else r.stderr.strip()[-200:]
    return ("pass" if r.returncode == 0 else f"FAIL ({r.returncode})"), elapsed, failed, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=number(1, 20, integer=True), default=3)
    ap.add_argument("--busy", type=number(0, 64, integer=True), default=2)
    ap.add_argument("--timeout-s", type=number(60, 7200), default=1800.0)
    ap.add_argument(
        "--logs", default=tempfile.gettempdir(), help="folder for each run's pytest output"
    )
    ap.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = ap.parse_args()
    print(f"{int(args.busy)} busy process(es) beside the suite, {os.cpu_count()} CPU(s); "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    busy = start_busy(int(args.busy))
    results = []
    try:
        for n in range(1, int(args.runs) + 1):
            log = Path(args.logs) / f"suite-under-load-{os.getpid()}-{n}.log"
            outcome, seconds, failed, summary = run_suite(args.pytest_args, args.timeout_s, log)
            results.append(outcome)
            print(f"run {n}: {outcome} in {seconds:.0f} s ({seconds / 60:.1f} min): {summary} "
                  f"(output: {log})", flush=True)
            for test in failed:
                print(f"  failed: {test}", flush=True)
    finally:
        stop_busy(busy)
    print(load_at_end())
    return 0 if all(r == "pass" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
