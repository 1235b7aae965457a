"""What the model raises when the modelled kernel goes wrong.

Every defect the model can find on its own is an exception carrying the evidence a
kernel developer would want: the kind (the names the reports use), a one-line
summary and a dict of details.  The exec runner and the stress harness turn them
into reports; the model itself never prints.
"""

from __future__ import annotations

from typing import Any

#: Defect kinds the model reports (the stress watchdog adds its own).
KIND_INVARIANT = "invariant"
KIND_UAF = "use-after-free"
KIND_LIST_LOOP = "list-loop"
KIND_LIST_CORRUPTION = "list-corruption"
KIND_CRASH = "crash"

DEFECT_KINDS = (KIND_INVARIANT, KIND_UAF, KIND_LIST_LOOP, KIND_LIST_CORRUPTION, KIND_CRASH)


class ModelError(Exception):
    """A mistake in how the model is driven (bad argument), never a kernel defect."""


class KernelDefect(Exception):
    """The modelled kernel did something the real one would oops, hang or warn on."""

    kind: str = KIND_CRASH
    #: A fatal defect leaves the modelled CPU unusable (oops, endless loop).
    fatal: bool = True

    def __init__(self, summary: str, **details: Any) -> None:
        super().__init__(summary)
        self.summary = summary
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": self.summary, **self.details}


class KernelOops(KernelDefect):
    """An oops: NULL or wild pointer dereference, paging request to unmapped memory."""

    kind = KIND_CRASH


class KernelBug(KernelDefect):
    """A BUG_ON / VM_BUG_ON that fired."""

    kind = KIND_CRASH


class Lockup(KernelDefect):
    """A CPU that would spin for ever: a spinlock that can never be taken.

    In the kernel this is a soft lockup; the model raises instead of spinning so
    that a single-threaded run always ends.
    """

    kind = KIND_CRASH


class ListCorruption(KernelDefect):
    """A list pointer that cannot be right: LIST_POISON reached, or a DEBUG_LIST check."""

    kind = KIND_LIST_CORRUPTION


class ListCorruptionWarning(ListCorruption):
    """CONFIG_DEBUG_LIST in 2.6.34 only WARNs: the operation goes on."""

    fatal = False


class ListLoop(KernelDefect):
    """A list walk that would never come back to its head.

    Carries the lock the walker holds, the head it started from and the nodes of the
    cycle it is trapped in (as descriptions, so the evidence survives the objects).
    """

    kind = KIND_LIST_LOOP


class UseAfterFree(KernelDefect):
    """KASAN-style report: an access through a pointer to a freed object."""

    kind = KIND_UAF


class InvariantViolation(KernelDefect):
    """An invariant (I1..I7) of the reverse map does not hold."""

    kind = KIND_INVARIANT
    fatal = False
