"""The checked-in programs get, variant by variant, the verdicts their headers state.

Each `tests/programs/*.rmap` names, in lines ``# expect VARIANT [MEMORY]: VERDICT``, the
first defect it must produce (``KIND [INVARIANT] at LINE``) or ``clean``.  Together they
show each April fix curing exactly the defect class it targets, and the seed patch's
verdict (hannes-merge cures the merge of bug 1, not bugs 2 and 4).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rmapsim.program import parse_program, run_program

PROGRAMS = sorted((Path(__file__).parent.parent / "programs").glob("*.rmap"))
EXPECT = re.compile(r"#\s*expect\s+(\S+)(?:\s+(reuse|kasan))?:\s*(.+?)\s*$")
VERDICT = re.compile(r"(clean)|([a-z-]+)(?:\s+(I\d))?\s+at\s+(\d+)")


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
