"""examples/ under pytest --rmapstress-watch: each hang fails its plain test with the right
verdict kind, the healthy program passes, the session ends with its usual summary."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "test_abba_deadlock.py": "deadlock",
    "test_list_loop.py": "list-loop",
    "test_trylock_livelock.py": "livelock",
    "test_sleep_under_lock.py": "long-hold",
    "test_latent_inversion.py": "lock-order",
}
#: Generous for a loaded machine; bench/ and the docs give the measured times (about
#: 0.1 s for a deadlock, 1 to 1.6 s for a long-hold or a livelock).
VERDICT_WITHIN_S = 5.0


@pytest.mark.timeout(170)
def test_each_example_fails_with_its_verdict_and_the_healthy_one_passes() -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--rmapstress-watch", "examples", "-rA"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    elapsed = time.monotonic() - start
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"^=+ 5 failed, 1 passed in [\d.]+s =+$", out, re.MULTILINE), out
    assert "PASSED examples/test_healthy.py::test_everything_makes_progress" in out
    sections = re.split(r"^_{3,} (\S+) _{3,}$", out, flags=re.MULTILINE)
    failures = dict(zip(sections[1::2], sections[2::2], strict=True))
    for filename, kind in EXPECTED.items():
        found = re.search(rf"^FAILED examples/{filename}::(\w+)", out, re.MULTILINE)
        assert found is not None, (filename, out[-2000:])
        text = failures[found.group(1)]
        headline = text.strip().splitlines()[0]
        assert headline.startswith(f"rmapstress watch: {kind}:"), (filename, headline)
        first = re.search(r"^\[1\] ([A-Z-]+) at ([\d.]+) s", text, re.MULTILINE)
        assert first is not None and first.group(1) == kind.upper(), (filename, text[:400])
        assert float(first.group(2)) < VERDICT_WITHIN_S, (filename, first.group(0))
        assert f"Run it again: pytest examples/{filename}::" in text
    assert elapsed < 150
