"""What the CLI tests share: the real command in a subprocess, and its bad-input rule."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def rmapstress(
    *args: str, cwd: Path | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`rmapstress ARGS...` as a user runs it, with its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "stress", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Bad input: exit 2, one line on stderr naming what is wrong, nothing run."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert re.match(r"rmapstress( [a-z]+)?: error: ", lines[0]), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert r.stdout == ""  # nothing ran
    return lines[0]
