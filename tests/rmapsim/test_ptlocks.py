"""Split PTE locks (USE_SPLIT_PTLOCKS): one lock per page table, or mm->page_table_lock."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from rmapsim import Kernel, SingleThreadSync, audit
from rmapsim.structs import PMD_SHIFT, VM_READ, VM_WRITE
from rmapsim.sync import RwSem, SpinLock, _OneCpuLock, _OneCpuRwSem

RW = VM_READ | VM_WRITE
TABLE = 1 << PMD_SHIFT  # 2 MiB of address space per page table


class Taken(SingleThreadSync):
    """One-CPU locks that note (lock name, taking function)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []

    def spinlock(self, lock_class: str, name: str) -> SpinLock:
        log = self.log

        class Noted(_OneCpuLock):
            __slots__ = ()

            def acquire(self, blocking: bool = True) -> bool:
                log.append((self.name, sys._getframe(1).f_code.co_name))
                return super().acquire(blocking)

        return Noted(name, None)

    def rwsem(self, lock_class: str, name: str) -> RwSem:
        return _OneCpuRwSem(name, None)


def two_tables(split: bool) -> tuple[Kernel, Taken]:
    sync = Taken()
    k = Kernel("2.6.34", sync=sync, split_ptlocks=split)
    k.spawn("P")
    k.mmap("P", TABLE - 0x1000, 2, RW)  # one page on each side of a table boundary
    sync.log.clear()
    k.touch("P", TABLE - 0x1000, 2, True)
    return k, sync


def test_each_page_table_has_its_own_lock_by_default() -> None:
    k, sync = two_tables(True)
    mm = k.task("P")
    low, high = k.pte_lockptr(mm, TABLE - 0x1000), k.pte_lockptr(mm, TABLE)
    assert low is not high and low is not mm.page_table_lock
    assert k.pte_lockptr(mm, 0x1000) is low  # the same table, the same lock
    assert (low.name, high.name) == ("P.ptl[0x0]", f"P.ptl[{TABLE:#x}]")
    faults = [name for name, fn in sync.log if fn == "do_anonymous_page"]
    assert faults == [low.name, high.name]
    # anon_vma_prepare still serialises on the mm-wide lock, and only there.
    assert [fn for name, fn in sync.log if name == "P.page_table_lock"] == ["anon_vma_prepare"]
    assert audit(k) == []


def test_the_single_page_table_lock_is_an_option() -> None:
    k, sync = two_tables(False)
    mm = k.task("P")
    assert k.pte_lockptr(mm, TABLE) is mm.page_table_lock
    assert mm.ptlocks == {}
    takers = [fn for name, fn in sync.log if name == "P.page_table_lock"]
    assert takers == ["anon_vma_prepare", "do_anonymous_page", "do_anonymous_page"]


@pytest.mark.parametrize("split", [True, False])
def test_fork_zap_and_mprotect_take_each_table_lock_they_touch(split: bool) -> None:
    k, sync = two_tables(split)
    sync.log.clear()
    k.fork("P", "C")
    k.mprotect("C", TABLE - 0x1000, 2, VM_READ)
    k.exit("C")
    by: dict[str, set[str]] = {}
    for name, fn in sync.log:
        by.setdefault(fn, set()).add(name)
    if split:
        assert by["copy_page_range"] == {"C.ptl[0x0]", f"C.ptl[{TABLE:#x}]"}
        assert by["lock_nested"] == {"P.ptl[0x0]", f"P.ptl[{TABLE:#x}]"}
        assert by["change_protection"] == {"C.ptl[0x0]", f"C.ptl[{TABLE:#x}]"}
        assert by["zap_pte_range"] == {"C.ptl[0x0]", f"C.ptl[{TABLE:#x}]"}
    else:
        assert by["copy_page_range"] == {"C.page_table_lock"}
        assert by["zap_pte_range"] == {"C.page_table_lock"}
    assert audit(k) == []


def _run(program: str, **kw: Any) -> Any:
    from rmapsim import parse_program, run_program

    return run_program(parse_program(program), "2.6.34-rc3", **kw)


def test_exec_gives_the_same_verdicts_with_either_lock() -> None:
    program = "\n".join(
        [
            "spawn P",
            "mmap P 0x10000 2 rw",
            "touch P 0x10000 2 w",
            "fork P C",
            "touch C 0x10000 2 w",
            "swapout all",
            "touch C 0x10000 1 r",
            "exit C",
            "referenced P 0x10000 2",
        ]
    )
    split = _run(program).to_dict()
    single = _run(program, split_ptlocks=False).to_dict()
    assert split == single
