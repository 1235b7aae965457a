"""The harness's generic modules know nothing of the model: they import without rmapsim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = {"cli", "pytest_plugin", "__main__"}


@pytest.mark.timeout(60)
def test_every_generic_stress_module_imports_with_rmapsim_unavailable() -> None:
    names = sorted(
        p.stem
        for p in (ROOT / "stress").glob("*.py")
        if p.stem not in APPLICATION and not p.stem.startswith("cmd_")
    )
    assert {"leaks", "spins", "watchdog", "monitor"} <= set(names)
    code = (
        "import sys, importlib\n"
        "sys.modules['rmapsim'] = None  # any import of it fails\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('stress' if name == '__init__' else 'stress.' + name)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
