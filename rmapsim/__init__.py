"""rmapsim: the Linux 2.6.34 anonymous reverse map and every kernel variant of the April
2010 thread, as a model that computes and never prints.

    from rmapsim import Kernel, parse_program, run_program

    result = run_program(parse_program(open("bug4.rmap").read()), "2.6.34-rc3", "kasan")
    result.outcome, result.defects

See docs/model.md for what is modelled and how.
"""

from rmapsim.audit import Violation, audit
from rmapsim.errors import (
    DEFECT_KINDS,
    InvariantViolation,
    KernelBug,
    KernelDefect,
    KernelOops,
    ListCorruption,
    ListLoop,
    Lockup,
    ModelError,
    UseAfterFree,
)
from rmapsim.hunt import HuntResult, hunt
from rmapsim.kernel import Kernel
from rmapsim.program import Defect, ExecResult, Op, ProgramError, parse_program, run_program
from rmapsim.slab import Memory
from rmapsim.sync import SingleThreadSync, SyncFactory, ThreadingSync
from rmapsim.variants import PATCHES, PRESETS, Patch, Variant, parse_variant

__all__ = [
    "DEFECT_KINDS",
    "PATCHES",
    "PRESETS",
    "Defect",
    "ExecResult",
    "HuntResult",
    "InvariantViolation",
    "Kernel",
    "KernelBug",
    "KernelDefect",
    "KernelOops",
    "ListCorruption",
    "ListLoop",
    "Lockup",
    "Memory",
    "ModelError",
    "Op",
    "Patch",
    "ProgramError",
    "SingleThreadSync",
    "SyncFactory",
    "ThreadingSync",
    "UseAfterFree",
    "Variant",
    "Violation",
    "audit",
    "hunt",
    "parse_program",
    "parse_variant",
    "run_program",
]
