"""Per-line audits of what a line touched find exactly what whole audits find.

`run_program` audits only the components a line touched (rmapsim.audit_scope); the
reference is a whole audit after every line (`full_audits=True`).  Generated programs,
on every preset and both memory models, must give the same defects, line for line and
in the same order.  The programs mix several process families (each spawned, forked,
exited) over one small address window, and the memory recycles slab pages at once
(768-byte pages, min_partial 0), so that stale pointers of one family land in another's
objects: the case where a scope that missed a component would show.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmapsim.hunt import programs, translate
from rmapsim.program import Op, parse_program, run_program
from rmapsim.structs import PAGE_SIZE, VM_EXEC, VM_READ, VM_WRITE
from rmapsim.variants import PRESETS

BASE = 0x10000
FAMILIES = ("A", "B", "C")
PROTS = (VM_READ | VM_WRITE, VM_READ, VM_READ | VM_WRITE | VM_EXEC, 0)
KINDS = ("mmap", "touch", "touch", "mprotect", "munmap", "fork", "exit", "swapout", "swapall",
         "referenced", "migrate", "reclaim", "spawn")


@st.composite
def family_programs(draw: Any) -> list[Op]:
    """Programs over several families: spawned roots, forked children, exits, respawns."""
    ops: list[Op] = []
    alive: list[str] = []
    serial = 0
    for _ in range(draw(st.integers(10, 60))):
        kind = draw(st.sampled_from(KINDS))
        line = len(ops) + 1
        if kind == "swapall":
            ops.append(Op(line, "swapout", None))
            continue
        if kind == "reclaim":  # kswapd on one page frame, whoever maps it
            ops.append(Op(line, "reclaim", None, npages=draw(st.integers(0, 12))))
            continue
        if kind == "spawn" or not alive:
            free = [f for f in FAMILIES if f not in alive]
            if free:
                name = draw(st.sampled_from(free))
                alive.append(name)
                ops.append(Op(line, "spawn", name))
            continue
        proc = draw(st.sampled_from(alive))
        if kind == "fork":
            serial += 1
            child = f"{proc[0]}{serial}"
            alive.append(child)
            ops.append(Op(line, "fork", proc, child=child))
        elif kind == "exit":
            alive.remove(proc)
            ops.append(Op(line, "exit", proc))
        else:
            page = draw(st.integers(0, 5))
            n = draw(st.integers(1, 3))
            addr = BASE + page * PAGE_SIZE
            if kind in ("mmap", "mprotect"):
                ops.append(Op(line, kind, proc, addr, n, draw(st.sampled_from(PROTS))))
            elif kind == "touch":
                ops.append(Op(line, "touch", proc, addr, n, write=draw(st.booleans())))
            else:
                ops.append(Op(line, kind, proc, addr, n))
    return ops


def same_findings(ops: list[Op], variant: str, memory: str) -> None:
    kw: dict[str, Any] = {"slab_page_bytes": 768, "min_partial": 0}
    scoped = run_program(ops, variant, memory, **kw)
    whole = run_program(ops, variant, memory, full_audits=True, **kw)
    assert [d.to_dict() for d in scoped.defects] == [d.to_dict() for d in whole.defects], (
        "\n".join(op.render() for op in ops)
    )
    assert scoped.errors == whole.errors and scoped.ops == whole.ops


@pytest.mark.timeout(300)
@pytest.mark.parametrize("memory", ["reuse", "kasan"])
@pytest.mark.parametrize("variant", list(PRESETS))
@settings(max_examples=40, deadline=None)
@given(ops=family_programs())
def test_families_find_what_whole_audits_find(ops: list[Op], variant: str, memory: str) -> None:
    same_findings(ops, variant, memory)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant", list(PRESETS))
@settings(max_examples=40, deadline=None)
@given(raw=programs(max_ops=60))
def test_hunted_shapes_find_what_whole_audits_find(raw: list[Any], variant: str) -> None:
    same_findings(translate(raw), variant, "reuse")


def test_a_line_in_one_family_does_not_audit_the_others() -> None:
    """What makes long programs linear: the audit after a line covers its family only."""
    from rmapsim.audit_scope import LineAuditor
    from rmapsim.kernel import Kernel
    from rmapsim.sync import SingleThreadSync

    k = Kernel("2.6.34", sync=SingleThreadSync())
    auditor = LineAuditor(k)
    text = "".join(
        f"spawn P{i}\nmmap P{i} 0x10000 2 rw\ntouch P{i} 0x10000 2 w\nfork P{i} C{i}\n"
        for i in range(20)
    )
    from rmapsim.program import apply

    for op in parse_program(text):
        procs = [p for p in (op.proc, op.child) if p is not None]
        auditor.before(procs)
        apply(k, op)
        assert auditor.after(procs) == []
    families = {id(c) for c in auditor.comp_of.values()}
    assert len(families) == 20  # one component per family, parent and child together
    assert auditor.comp_of[id(k.tasks["P3"])] is auditor.comp_of[id(k.tasks["C3"])]
    assert auditor.comp_of[id(k.tasks["P3"])] is not auditor.comp_of[id(k.tasks["P4"])]
