"""2.6.34 keeps every invariant over random programs (Hypothesis stateful testing).

Profiles: HYPOTHESIS_PROFILE=ci (default) or long.  The machine drives a real
kernel single-threaded and audits I1..I7 after every step.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rmapsim.audit import audit
from rmapsim.kernel import Kernel
from rmapsim.program import prot_text
from rmapsim.structs import PAGE_SIZE, VM_EXEC, VM_READ, VM_WRITE
from rmapsim.sync import SingleThreadSync

BASE = 0x10000
PAGES = 6
NAMES = ("P", "C", "D")
prots = st.sampled_from([VM_READ | VM_WRITE, VM_READ, VM_READ | VM_WRITE | VM_EXEC, 0])
pages = st.integers(0, PAGES - 1)
counts = st.integers(1, 3)


class KernelMachine(RuleBasedStateMachine):
    variant = "2.6.34"
    memory = "reuse"

    def __init__(self) -> None:
        super().__init__()
        self.k = Kernel(self.variant, memory=self.memory, sync=SingleThreadSync())
        self.log: list[str] = []

    def alive(self) -> list[str]:
        return [n for n in NAMES if n in self.k.tasks]

    def target(self, p: str, page: int) -> int:
        """A page the process maps (so that the search lands on shared memory)."""
        mapped = []
        vma = self.k.task(p).mmap
        while vma is not None:
            mapped.extend(range(vma.vm_start, vma.vm_end, PAGE_SIZE))
            vma = vma.vm_next
        return mapped[page % len(mapped)] if mapped else BASE + page * PAGE_SIZE

    @rule(name=st.sampled_from(NAMES))
    def spawn(self, name: str) -> None:
        if name not in self.k.tasks:
            self.k.spawn(name)
            self.log.append(f"spawn {name}")

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2), page=pages, n=counts, prot=prots)
    def mmap(self, i: int, page: int, n: int, prot: int) -> None:
        p = self.alive()[i % len(self.alive())]
        self.log.append(f"mmap {p} {BASE + page * PAGE_SIZE:#x} {n} {prot_text(prot)}")
        self.k.mmap(p, BASE + page * PAGE_SIZE, n, prot)

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2), page=pages, n=counts, prot=prots)
    def mprotect(self, i: int, page: int, n: int, prot: int) -> None:
        p = self.alive()[i % len(self.alive())]
        addr = self.target(p, page)
        self.log.append(f"mprotect {p} {addr:#x} {n} {prot_text(prot)}")
        self.k.mprotect(p, addr, n, prot)

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2), page=pages, n=counts)
    def munmap(self, i: int, page: int, n: int) -> None:
        p = self.alive()[i % len(self.alive())]
        addr = self.target(p, page)
        self.log.append(f"munmap {p} {addr:#x} {n}")
        self.k.munmap(p, addr, n)

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2), page=pages, n=counts, write=st.booleans())
    def touch(self, i: int, page: int, n: int, write: bool) -> None:
        p = self.alive()[i % len(self.alive())]
        addr = self.target(p, page)
        self.log.append(f"touch {p} {addr:#x} {n} {'w' if write else 'r'}")
        self.k.touch(p, addr, n, write)

    @precondition(lambda self: self.alive() and len(self.alive()) < len(NAMES))
    @rule(i=st.integers(0, 2))
    def fork(self, i: int) -> None:
        p = self.alive()[i % len(self.alive())]
        child = next(n for n in NAMES if n not in self.k.tasks)
        self.log.append(f"fork {p} {child}")
        self.k.fork(p, child)

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2))
    def exit(self, i: int) -> None:
        p = self.alive()[i % len(self.alive())]
        self.log.append(f"exit {p}")
        self.k.exit(p)

    @rule()
    def swapout_all(self) -> None:
        self.log.append("swapout all")
        self.k.swapout(None)

    @precondition(lambda self: self.alive())
    @rule(i=st.integers(0, 2), page=pages, n=counts)
    def referenced(self, i: int, page: int, n: int) -> None:
        p = self.alive()[i % len(self.alive())]
        addr = self.target(p, page)
        self.log.append(f"referenced {p} {addr:#x} {n}")
        self.k.referenced(p, addr, n)

    @invariant()
    def reverse_map_is_sound(self) -> None:
        self.k.mem.quiesce()
        bad = audit(self.k)
        assert not bad, "\n".join([*self.log, *(f"{v.title}: {v.summary}" for v in bad)])


class Final(KernelMachine):
    variant = "2.6.34"


class FinalKasan(KernelMachine):
    variant = "2.6.34"
    memory = "kasan"


class FinalWithHannesMerge(KernelMachine):
    """The seed patch on top of the released kernel: its merge must be harmless there."""

    variant = "2.6.34+hannes-merge"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "machine", [Final, FinalKasan, FinalWithHannesMerge], ids=lambda m: m.__name__
)
def test_invariants_hold(machine: type[KernelMachine]) -> None:
    run = settings(stateful_step_count=40)(machine).TestCase
    run("runTest").runTest()
