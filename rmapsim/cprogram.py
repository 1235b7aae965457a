"""Concurrent programs: threads of operations and the interleaving that runs them.

The single-threaded program format (`rmapsim.program`) grows thread lanes and a
schedule.  Lines before the first ``thread`` run first, alone (the prologue); each
``thread NAME:`` section is one thread's operations, in order; ``schedule:`` says
who runs when::

    spawn P
    mmap P 0x10000 2 rw
    touch P 0x10000 1 w

    thread A:
        touch P 0x11000 1 w
    thread B:
        touch P 0x11000 1 w

    schedule:
        A until op 1 at anon_vma_prepare:before locks
        B
        A

A schedule line is ``LANE``, ``LANE until end``, ``LANE until op K`` (just before
its K-th operation starts) or ``LANE until op K at POINT`` with an optional ``(Nth)``
(the N-th time that operation reaches the scheduling point POINT): run LANE until
then, then the next line's lane runs.  After the last line, and whenever a lane
cannot go on (it waits for a lock, or ends), the lane the schedule names next runs
if it can, else the first lane that can, in the order they are written.  POINT is
a scheduling point name: a model yield point (``page_lock_anon_vma:mapping read``),
``lock:CLASS`` / ``unlock:CLASS``, ``down_read:mmap_sem`` and the like,
``walk:FUNCTION`` (one list-walk step), ``op:VERB`` (an operation's start).
Naming points within an operation keeps a schedule valid when other operations
are added or removed.

A lane named ``P/tN`` is a thread of process P: its operations wait until P exists,
and ``exit P`` waits until P's other lanes have finished, as a real process's last
thread does.  Any lane may act on any process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rmapsim.program import Op, ProgramError, parse_program, strip_comment

_LANE = re.compile(r"^thread\s+([A-Za-z_][A-Za-z0-9_./-]*)\s*:\s*$")
_SCHED_LINE = re.compile(
    r"^(?P<lane>[A-Za-z_][A-Za-z0-9_./-]*)"
    r"(?:\s+until\s+(?:(?P<end>end)|op\s+(?P<op>\d+)(?:\s+at\s+(?P<point>.+?))?))?"
    r"(?:\s+\((?P<nth>\d+)(?:st|nd|rd|th)\))?\s*$"
)
#: Scheduling points that only the workload's own loops have (not operations of the
#: kernel): a switch there is a switch before the thread's next operation.
WORKLOAD_ONLY = ("sleep", "wait:gate", "wait:gate close")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Segment:
    """Run `lane` until its `op`-th operation starts (point None), or reaches `point`
    for the `n`-th time within that operation, or (op None) until it ends."""

    lane: str
    op: int | None = None
    point: str | None = None
    n: int = 1
    line: int = 0

    def render(self) -> str:
        if self.op is None:
            return self.lane
        text = f"{self.lane} until op {self.op}"
        if self.point is not None:
            text += f" at {self.point}"
            if self.n != 1:
                text += f" ({ordinal(self.n)})"
        return text


@dataclass
class ConcurrentProgram:
    prologue: list[Op] = field(default_factory=list)
    lanes: dict[str, list[Op]] = field(default_factory=dict)
    schedule: list[Segment] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return len(self.prologue) + sum(len(ops) for ops in self.lanes.values())

    def render(self, header: str = "") -> str:
        lines = [f"# {h}" for h in header.splitlines()] if header else []
        lines += [op.render() for op in self.prologue]
        for name, ops in self.lanes.items():
            lines.append("")
            lines.append(f"thread {name}:")
            lines += [f"    {op.render()}" for op in ops]
        if self.schedule:
            lines.append("")
            lines.append("schedule:")
            lines += [f"    {seg.render()}" for seg in self.schedule]
        return "\n".join(lines) + "\n"


def is_concurrent(text: str) -> bool:
    """A program with thread lanes (else the single-threaded format)."""
    return any(_LANE.match(strip_comment(raw)) for raw in text.splitlines())


def parse_concurrent(text: str, source: str = "<program>") -> ConcurrentProgram:
    """Parse a concurrent program; raises ProgramError naming the file and line."""
    raw_lines = text.splitlines()
    section = "prologue"
    lane: str | None = None
    keep: dict[str, list[str]] = {"prologue": [""] * len(raw_lines)}
    order: list[str] = []
    sched: list[Segment] = []
    for i, raw in enumerate(raw_lines):
        stripped = strip_comment(raw)
        if not stripped:
            continue
        m = _LANE.match(stripped)
        if m:
            lane = m.group(1)
            if lane in keep:
                raise ProgramError(source, i + 1, f"thread {lane} is declared twice")
            keep[lane] = [""] * len(raw_lines)
            order.append(lane)
            section = "lane"
            continue
        if stripped == "schedule:":
            if section == "schedule":
                raise ProgramError(source, i + 1, "a second schedule: section")
            section = "schedule"
            continue
        if section == "schedule":
            sched.append(_segment(stripped, source, i + 1))
            continue
        target = "prologue" if section == "prologue" else lane
        assert target is not None
        keep[target][i] = stripped
    if not order:
        raise ProgramError(source, 1, "no thread sections (write 'thread NAME:' lines)")
    prologue = parse_program("\n".join(keep["prologue"]), source)
    # Lanes act on processes other lanes create: liveness is checked when they run.
    lanes = {
        name: parse_program("\n".join(keep[name]), source, static_procs=False) for name in order
    }
    for seg in sched:
        if seg.lane not in lanes:
            raise ProgramError(
                source, seg.line, f"schedule names thread {seg.lane!r}, which is not declared"
            )
        if seg.op is not None and not 1 <= seg.op <= len(lanes[seg.lane]):
            raise ProgramError(
                source,
                seg.line,
                f"thread {seg.lane} has {len(lanes[seg.lane])} operation(s), not an op {seg.op}",
            )
    return ConcurrentProgram(prologue, lanes, sched)


def _segment(text: str, source: str, line: int) -> Segment:
    m = _SCHED_LINE.match(text)
    if not m:
        raise ProgramError(
            source,
            line,
            f"bad schedule line {text!r} (LANE, LANE until end, LANE until op K, "
            f"LANE until op K at POINT, optionally followed by (2nd), (3rd), ...)",
        )
    nth = int(m.group("nth")) if m.group("nth") else 1
    if m.group("op") is None:
        if m.group("nth"):
            raise ProgramError(source, line, "an (Nth) needs 'until op K at POINT'")
        return Segment(m.group("lane"), line=line)
    op = int(m.group("op"))
    if op < 1:
        raise ProgramError(source, line, "operations count from 1")
    point = m.group("point")
    if point is None and m.group("nth"):
        raise ProgramError(source, line, "an (Nth) needs 'at POINT'")
    if nth < 1:
        raise ProgramError(source, line, "(Nth) counts from 1st")
    return Segment(m.group("lane"), op, point.strip() if point else None, nth, line)
