"""Concurrent programs: the format (thread lanes, schedule lines), parsed and rendered."""

from __future__ import annotations

import pytest

from rmapsim.cprogram import Segment, is_concurrent, parse_concurrent
from rmapsim.program import ProgramError, parse_program

PROGRAM = """\
# two threads fault the same page of one process
spawn P
mmap P 0x10000 2 rw

thread A:
    touch P 0x10000 1 w     # a comment
thread B:
    touch P 0x10000 1 w
    reclaim page#0

schedule:
    A until op 1 at anon_vma_prepare:before locks
    B until op 2 at lock:page_lock (2nd)
    A until end
    B
"""


def test_a_program_with_threads_parses_into_prologue_lanes_and_schedule() -> None:
    assert is_concurrent(PROGRAM)
    prog = parse_concurrent(PROGRAM, "p.rmap")
    assert [op.render() for op in prog.prologue] == ["spawn P", "mmap P 0x10000 2 rw"]
    assert list(prog.lanes) == ["A", "B"]
    assert [op.render() for op in prog.lanes["B"]] == ["touch P 0x10000 1 w", "reclaim page#0"]
    assert prog.schedule[0] == Segment("A", 1, "anon_vma_prepare:before locks", 1, 12)
    assert prog.schedule[1].point == "lock:page_lock" and prog.schedule[1].n == 2
    assert prog.schedule[2] == Segment("A", None, None, 1, 14)
    assert prog.operations == 5


def test_rendering_round_trips() -> None:
    prog = parse_concurrent(PROGRAM, "p.rmap")
    again = parse_concurrent(prog.render(), "again")
    assert again.render() == prog.render()
    assert "B until op 2 at lock:page_lock (2nd)" in prog.render()


def test_a_hash_inside_a_word_is_not_a_comment() -> None:
    ops = parse_program("reclaim page#7  # kswapd\n", "x")
    assert ops[0].npages == 7 and ops[0].render() == "reclaim page#7"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spawn P\nthread A:\n  touch P 0x10000 1 w\nschedule:\n  C\n", "names thread 'C'"),
        ("spawn P\nthread A:\n  touch P 0x10000 1 w\nschedule:\n  A until op 5\n", "not an op 5"),
        ("thread A:\n  touch P 0x10000 1 w\nschedule:\n  A until wat\n", "bad schedule line"),
        ("thread A:\n  touch P 0x10000 1 w\nthread A:\n  touch P 0x10000 1 r\n", "declared twice"),
        ("thread A:\n  touch P 0x10001 1 w\n", "not page-aligned"),
        ("thread A:\n  touch P 0x10000 1 w\nschedule:\n  A (2nd)\n", "needs"),
    ],
)
def test_bad_programs_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ProgramError, match=message) as info:
        parse_concurrent(text, "bad.rmap")
    assert str(info.value).startswith("bad.rmap:")


def test_lanes_may_name_processes_other_lanes_create() -> None:
    prog = parse_concurrent("thread A:\n  spawn Q\nthread B:\n  touch Q 0x10000 1 w\n", "x")
    assert prog.lanes["B"][0].proc == "Q"
