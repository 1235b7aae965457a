"""Case functions for the engine's tests: imported by name in real worker processes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "tests.stress.campaign.campaign_support"


def numbered(n: int, delay: float = 0.0) -> dict[str, Any]:
    """Multiples of 3 are 'defects' (with a file), the rest clean; two signatures by parity."""
    time.sleep(delay)
    defect = n % 3 == 0
    out: dict[str, Any] = {
        "outcome": "defect" if defect else "clean",
        "expected": "defect" if defect else "clean",
        "matched": True,
        "first_defect_s": n / 10 if defect else None,
        "duration_s": delay,
        "ops_per_s": 1000.0 + n,
        "signatures": (
            [{"id": f"sig-{n % 2}", "kind": "demo", "summary": f"parity {n % 2}", "count": 2}]
            if defect
            else []
        ),
        "replay": f"demo --n {n}",
        "pid": os.getpid(),
    }
    if defect:
        out["files"] = {"report.txt": f"case {n}\n", "../escape.txt": "kept inside\n"}
    return out


def die(code: int) -> dict[str, Any]:
    """Leave a file in the case's temporary folder, then end the process as the harness would."""
    with open(Path(tempfile.mkdtemp(prefix="case-")) / "report.txt", "w") as f:
        f.write("written before the emergency exit\n")
    os._exit(code)


def boom() -> dict[str, Any]:
    raise ValueError("boom")


def by_kind(kind: str, n: int) -> dict[str, Any]:
    """One function for a mixed stream: 'die' ends the process with status n."""
    if kind == "die":
        return die(n)
    return numbered(n)
