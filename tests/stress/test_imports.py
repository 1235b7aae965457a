"""The line between the generic harness and the application: every stress module but the
application's (CLI, commands, scenario plugin) imports with rmapsim unavailable."""

from __future__ import annotations

import subprocess
import sys

import pytest

APPLICATION = {
    "cli",
    "cmd_campaign",
    "cmd_campaign_cases",
    "cmd_model",
    "cmd_programs",
    "cmd_replay",
    "cmd_run",
    "pytest_plugin",
    "__main__",
}

CODE = """
import importlib, pkgutil, sys
sys.modules["rmapsim"] = None  # any import of the model fails
import stress
names = sorted(m.name for m in pkgutil.iter_modules(stress.__path__))
for name in names:
    if name not in {application!r}:
        importlib.import_module("stress." + name)
print(" ".join(n for n in names if n not in {application!r}))
"""


@pytest.mark.timeout(60)
def test_the_generic_harness_never_imports_the_model() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CODE.format(application=APPLICATION)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.split()
    assert {"instrument", "pytest_watch", "tsync", "tsync_cond", "watchdog"} <= set(imported)
