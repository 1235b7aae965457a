"""The checked-in programs get, variant by variant, the verdicts their headers state.

Each `tests/programs/*.rmap` names, in lines ``# expect VARIANT [MEMORY]: VERDICT``, the
first defect it must produce (``KIND [INVARIANT] at LINE``; for a concurrent program,
``KIND in LANE``) or ``clean``.  A concurrent program runs under its own schedule, which
must still fit the code.  Together they
show each April fix curing exactly the defect class it targets, and the seed patch's
verdict (hannes-merge cures the merge of bug 1, not bugs 2 and 4).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rmapsim.cprogram import is_concurrent, parse_concurrent
from rmapsim.program import parse_program, run_program
from rmapsim.workload.lanes import run_concurrent

PROGRAMS = sorted((Path(__file__).parent.parent / "programs").glob("*.rmap"))
EXPECT = re.compile(r"#\s*expect\s+(\S+)(?:\s+(reuse|kasan))?:\s*(.+?)\s*$")
VERDICT = re.compile(r"(clean)|([a-z-]+)(?:\s+(I\d))?\s+at\s+(\d+)")
LANE_VERDICT = re.compile(r"(clean)|([a-z-]+)\s+in\s+(\S+)")


def expectations() -> list[tuple[Path, str, str, str]]:
    out = []
    for path in PROGRAMS:
        for line in path.read_text().splitlines():
            m = EXPECT.match(line)
            if m:
                out.append((path, m.group(1), m.group(2) or "reuse", m.group(3)))
    return out


CASES = expectations()


def test_every_program_states_expectations() -> None:
    assert PROGRAMS, "no programs under tests/programs"
    for path in PROGRAMS:
        assert any(c[0] == path for c in CASES), f"{path.name} has no '# expect' line"


@pytest.mark.parametrize(
    ("path", "variant", "memory", "verdict"),
    CASES,
    ids=[f"{c[0].stem}-{c[1]}-{c[2]}" for c in CASES],
)
def test_program_verdict(path: Path, variant: str, memory: str, verdict: str) -> None:
    text = path.read_text()
    if is_concurrent(text):
        check_concurrent(path, text, variant, memory, verdict)
        return
    m = VERDICT.fullmatch(verdict)
    assert m, f"bad expectation {verdict!r} in {path.name}"
    result = run_program(parse_program(path.read_text(), str(path)), variant, memory)
    if m.group(1):
        assert result.outcome == "clean", [d.to_dict() for d in result.defects]
        return
    assert result.defects, f"{path.name} on {variant}: expected {verdict}, got clean"
    first = result.defects[0]
    got = f"{first.kind}{' ' + first.invariant if first.invariant else ''} at {first.line}"
    assert got == verdict, f"{path.name} on {variant} ({memory}): got {got}: {first.detail}"


def check_concurrent(path: Path, text: str, variant: str, memory: str, verdict: str) -> None:
    m = LANE_VERDICT.fullmatch(verdict)
    assert m, f"bad expectation {verdict!r} in {path.name} (KIND in LANE, or clean)"
    result = run_concurrent(parse_concurrent(text, str(path)), variant, memory)
    assert not result.diverged, f"{path.name}: its schedule no longer fits: {result.diverged}"
    if m.group(1):
        assert result.outcome == "clean", [v.summary for v in result.verdicts]
        return
    first = result.first
    assert first is not None, f"{path.name} on {variant}: expected {verdict}, got clean"
    lane = str(first.evidence.get("while", "")).split(":")[0]
    assert (first.kind, lane) == (m.group(2), m.group(3)), f"{path.name}: {first.summary}"
