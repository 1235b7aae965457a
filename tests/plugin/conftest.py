"""Fixtures of the plugin tests: tiny scenario files and a bounded pytest in a subprocess.

Every inner run is a real pytest in its own process (`runpytest_subprocess`): the harness
arms process-wide faulthandler timers and changes the switch interval, which must not
leak into this session.  The pytester fixture comes from `-p pytester` in addopts
(pyproject.toml): `pytest_plugins` is refused in a conftest below the rootdir.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

#: Inner runs never take longer than this; the outer tests' own timeouts are above it.
INNER_TIMEOUT_S = 60

# The inner pytest: thread-method timeouts as in the project, so a stuck case is ours to
# report, and a bound on every inner test.
INI = """\
[pytest]
timeout = 45
timeout_method = thread
addopts = -p no:cacheprovider -W ignore::pytest.PytestUnraisableExceptionWarning
"""


def scenario(
    variants: Sequence[str],
    *,
    expect: dict[str, str] | None = None,
    seeds: Sequence[int] = (1,),
    duration_s: float = 1.0,
    memory: str = "kasan",
    extra: str = "",
) -> str:
    """The text of a small scenario file (the thread's workload, sized down)."""
    lines = [
        "[scenario]",
        "variants = [" + ", ".join(f'"{v}"' for v in variants) + "]",
        "seeds = [" + ", ".join(str(s) for s in seeds) + "]",
        f"duration_s = {duration_s}",
        "",
        "[memory]",
        f'mode = "{memory}"',
        "slab_page_bytes = 768",
        "min_partial = 0",
        "",
        "[expect]",
        *(f'"{v}" = "{o}"' for v, o in (expect or {}).items()),
        "",
    ]
    return "\n".join(lines) + extra


@pytest.fixture
def write_scenario(pytester: pytest.Pytester) -> Callable[..., None]:
    """write_scenario(path, variants, **scenario_kwargs): a scenario file in pytester's folder."""

    def write(path: str, variants: Sequence[str], **kwargs: Any) -> None:
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(scenario(variants, **kwargs), encoding="utf-8")

    return write


@pytest.fixture
def inner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pytest.RunResult]:
    """inner(*args): pytest in a subprocess of pytester's folder, bounded in time."""
    pytester.makefile(".ini", pytest=INI)
    # Wide lines and no CI mode, so short-summary lines come out whole and alike everywhere.
    monkeypatch.setenv("COLUMNS", "400")
    for name in ("CI", "BUILD_NUMBER", "PYTEST_ADDOPTS", "PYTEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, **kwargs: Any) -> pytest.RunResult:
        return pytester.runpytest_subprocess(*args, timeout=INNER_TIMEOUT_S, **kwargs)

    return run
