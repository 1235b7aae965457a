"""The program format: parsing, static checks, and the single-threaded runner."""

from __future__ import annotations

import pytest

from rmapsim.program import ProgramError, parse_program, render_program, run_program
from rmapsim.structs import VM_EXEC, VM_READ, VM_WRITE

GOOD = """
# a comment line
spawn P            # trailing comment
mmap P 0x10000 4 rw
mprotect P 65536 2 r
touch P 0x10000 4 w
fork P C
touch C 0x10000 1 r
swapout P 0x10000 4
swapout all
referenced C 0x10000 1
migrate C 0x10000 1
munmap P 0x10000 4
exit C
"""


def test_parses_every_operation_with_lines_and_values() -> None:
    ops = parse_program(GOOD, "good.rmap")
    assert [o.name for o in ops] == [
        "spawn",
        "mmap",
        "mprotect",
        "touch",
        "fork",
        "touch",
        "swapout",
        "swapout",
        "referenced",
        "migrate",
        "munmap",
        "exit",
    ]
    assert ops[0].line == 3
    assert (ops[1].addr, ops[1].npages, ops[1].prot) == (0x10000, 4, VM_READ | VM_WRITE)
    assert ops[2].addr == 0x10000 and ops[2].prot == VM_READ
    assert ops[3].write and not ops[5].write
    assert ops[4].child == "C"
    assert ops[7].proc is None


def test_render_round_trips() -> None:
    ops = parse_program(GOOD)
    again = parse_program(render_program(ops))
    assert [o.render() for o in again] == [o.render() for o in ops]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spawn P\nmigrate P 0x10000", "f.rmap:2: migrate takes 3 argument(s): migrate P ADDR"),
        ("spawn P\nmmap P 0x10001 1 rw", "f.rmap:2: address 0x10001 is not page-aligned"),
        ("spawn P\nmmap P 0x10000 1 rq", "f.rmap:2: prot must be letters of 'rwx'"),
        ("spawn P\nmmap P 0x10000 1 rr", "f.rmap:2: prot must be letters of 'rwx' (each once)"),
        ("spawn P\nmmap P zz 1 rw", "f.rmap:2: address must be a decimal or 0x-hex number"),
        (
            "spawn P\nmmap P 0x10000 rw",
            "f.rmap:2: mmap takes 4 argument(s): mmap P ADDR NPAGES PROT",
        ),
        ("touch P 0x10000 1 w", "f.rmap:1: no process P (spawn or fork it first)"),
        ("spawn P\nspawn P", "f.rmap:2: process P already exists"),
        ("spawn P\nexit P\ntouch P 0x10000 1 r", "f.rmap:3: no process P"),
        ("spawn P\nfork P P", "f.rmap:2: process P already exists"),
        ("spawn P\ntouch P 0x10000 1 x", "f.rmap:2: touch access must be r or w"),
        ("frobnicate P", "f.rmap:1: unknown operation 'frobnicate'"),
        ("spawn all", "f.rmap:1: bad process name 'all'"),
        ("spawn P\nswapout P", "f.rmap:2: swapout takes 3 argument(s)"),
        ("spawn P\nmmap P -4096 1 rw", "f.rmap:2: address must not be negative: -4096"),
    ],
)
def test_malformed_lines_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ProgramError) as info:
        parse_program(text, "f.rmap")
    assert str(info.value).startswith(message)


def test_refused_calls_are_errors_not_defects() -> None:
    ops = parse_program(
        "spawn P\n"
        "mprotect P 0x10000 1 r\n"  # nothing mapped: ENOMEM
        "mmap P 0x10000 1 r\n"
        "touch P 0x10000 1 w\n"  # no write permission: SIGSEGV
        "touch P 0x20000 1 r\n"  # no vma: SIGSEGV
        "mmap P 0x0 1 rw\n"  # below mmap_min_addr: EPERM
        "mmap P 0x10000 0 rw\n"  # zero length: EINVAL
    )
    for variant in ("2.6.34-rc3", "2.6.34"):
        r = run_program(ops, variant)
        assert r.outcome == "clean"
        assert [(e["line"], e["error"]) for e in r.errors] == [
            (2, "ENOMEM"),
            (4, "EFAULT"),
            (5, "EFAULT"),
            (6, "EPERM"),
            (7, "EINVAL"),
        ]


def test_fatal_defect_stops_the_run_but_invariants_do_not() -> None:
    ops = parse_program(
        "spawn P\nmmap P 0x10000 1 rw\ntouch P 0x10000 1 w\nmmap P 0x11000 1 rwx\n"
        "touch P 0x11000 1 w\ntouch P 0x10000 1 r\n"
    )
    r = run_program(ops, "rik-v2")
    assert r.ops == 5  # the BUG on line 5 stops the CPU
    assert [(d.kind, d.line) for d in r.defects] == [("crash", 5)]
    assert "BUG_ON(!anon_vma)" in r.defects[0].detail
    assert r.to_dict()["reconstructed"] == ["rik-v2"]


def test_json_shape() -> None:
    ops = parse_program("spawn P\nmmap P 0x10000 1 rw\ntouch P 0x10000 1 w\n")
    doc = run_program(ops, "2.6.34", "kasan").to_dict()
    assert {k: doc[k] for k in ("outcome", "variant", "memory", "ops", "defects")} == {
        "outcome": "clean",
        "variant": "2.6.34",
        "memory": "kasan",
        "ops": 3,
        "defects": [],
    }


def test_prot_letters_any_order() -> None:
    (op,) = parse_program("spawn P\nmmap P 0x10000 1 xwr")[1:]
    assert op.prot == VM_READ | VM_WRITE | VM_EXEC
    (op,) = parse_program("spawn P\nmmap P 0x10000 1 -")[1:]
    assert op.prot == 0
