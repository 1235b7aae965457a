"""Audits after every line of a program, each over what the line can have changed.

`rmapstress exec` audits the invariants after every line.  A whole audit costs as much
as the world is big, so a program that keeps adding processes took time quadratic in its
length.  `LineAuditor` audits instead the *components* a line touched, and finds exactly
the violations a whole audit would find that were not there before.

A component is a set of processes and of everything reachable from them by a stored
pointer (peek: vmas, anon_vma_chains, both sides of every list node, anon_vmas, the
pages their PTEs map and those pages' anon_vmas), plus the live objects that became
unreachable (a leaked anon_vma_chain stays where it was).  Components only merge: when
an audit reaches an object of another component, the two become one; a fork puts child
and parent in one.  What a line can change is what its kernel code can reach: the
processes it names, and through them their component; objects it allocates or frees;
objects it writes through a stale pointer (the memory words of a recycled slab page).
The memory's journal (`Memory.journal`) lists the last two, so the components to audit
are those of the named processes (before and after the line) and of every journaled
object.  Everything else stored the same values after the line as before, so its
violations are the ones already reported.  `swapout all` reaches every page: it
audits everything.

`tests/rmapsim/test_audit_scope.py` checks on generated programs that the findings are
those of a whole audit after every line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rmapsim.audit import Violation, audit, audit_part
from rmapsim.lists import ListHead
from rmapsim.slab import LIVE, peek_list
from rmapsim.stale import LIVE_CLASS
from rmapsim.structs import AnonVma, AnonVmaChain, Kind, MmStruct, Page, PteKind, SlabObject

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

#: Per object class: (its structure's class, the raw slot descriptors of its pointer
#: fields, those of its list fields) - stored values, past any stale or poisoned view.
_Edges = tuple[type, tuple[Any, ...], tuple[Any, ...]]
_EDGES: dict[type, _Edges] = {}


def _edges(cls: type) -> _Edges:
    found = _EDGES.get(cls)
    if found is None:
        live: type[SlabObject] = LIVE_CLASS[cls]

        def slot(name: str) -> Any:
            return next(c.__dict__[name] for c in live.__mro__ if name in c.__dict__)

        found = (
            live,
            tuple(slot(f.name) for f in live.LAYOUT if f.kind is Kind.PTR),
            tuple(slot(f.name) for f in live.LAYOUT if f.kind is Kind.LIST),
        )
        _EDGES[cls] = found
    return found


class _Component:
    __slots__ = ("members", "mms")

    def __init__(self) -> None:
        #: id -> object, for everything reached at its last audit.
        self.members: dict[int, Any] = {}
        #: id -> process (mm_struct) of the component.
        self.mms: dict[int, MmStruct] = {}


class LineAuditor:
    """Audit a single-threaded kernel after each line, over the components it touched."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.comp_of: dict[int, _Component] = {}
        self.journal: list[Any] = []
        self._before: list[_Component] = []
        k.mem.journal = self.journal

    def close(self) -> None:
        if self.k.mem.journal is self.journal:
            self.k.mem.journal = None

    def before(self, procs: Iterable[str]) -> None:
        """Call before a line that names `procs` runs."""
        self.journal.clear()
        self._before = [
            c
            for name in procs
            if (mm := self.k.tasks.get(name)) is not None
            and (c := self.comp_of.get(id(mm))) is not None
        ]

    def after(self, procs: Iterable[str], *, everything: bool = False) -> list[Violation]:
        """Call after the line: the violations in what it touched (all of them if
        `everything`)."""
        k = self.k
        dirty: dict[int, _Component] = {id(c): c for c in self._before}
        roots: list[Any] = [mm for name in procs if (mm := k.tasks.get(name)) is not None]
        if everything:
            dirty.update((id(c), c) for c in self.comp_of.values())
            roots = list(k.tasks.values())
        for obj in self.journal:
            c = self.comp_of.get(id(obj))
            if c is not None:
                dirty[id(c)] = c
            elif obj.state == LIVE:
                roots.append(obj)
        self.journal.clear()
        reached = self._close(roots, dirty)
        comp = _Component()
        comp.members = reached
        mms: list[MmStruct] = []
        avcs: list[AnonVmaChain] = []
        avs: list[AnonVma] = []
        for oid, obj in reached.items():
            self.comp_of[oid] = comp
            if isinstance(obj, MmStruct):
                if k.tasks.get(obj.comm) is obj:
                    mms.append(obj)
                    comp.mms[oid] = obj
            elif isinstance(obj, AnonVmaChain):
                if obj.state == LIVE:
                    avcs.append(obj)
            elif isinstance(obj, AnonVma) and obj.state == LIVE:
                avs.append(obj)
        return audit_part(k, mms, avcs, avs)

    def _close(self, roots: list[Any], dirty: dict[int, _Component]) -> dict[int, Any]:
        """Everything reachable from `roots` and the dirty components' live members,
        merging every component met on the way."""
        k = self.k
        reached: dict[int, Any] = {}
        stack = list(roots)
        taken: set[int] = set()
        merged: list[_Component] = []

        def take(c: _Component) -> None:
            taken.add(id(c))
            merged.append(c)
            stack.extend(m for m in c.mms.values() if k.tasks.get(m.comm) is m)
            stack.extend(
                o for o in c.members.values() if isinstance(o, SlabObject) and o.state == LIVE
            )

        for c in dirty.values():
            take(c)
        while stack:
            obj = stack.pop()
            oid = id(obj)
            if oid in reached:
                continue
            reached[oid] = obj
            owner = self.comp_of.get(oid)
            if owner is not None and id(owner) not in taken:
                take(owner)
            if isinstance(obj, Page):
                if obj.mapping is not None:
                    stack.append(obj.mapping)
                continue
            if not isinstance(obj, SlabObject) or type(obj) not in LIVE_CLASS:
                continue
            live, ptrs, lists = _edges(type(obj))
            for field in ptrs:
                try:
                    target = field.__get__(obj, live)
                except AttributeError:
                    continue
                if isinstance(target, SlabObject):
                    stack.append(target)
            for field in lists:
                try:
                    head = field.__get__(obj, live)
                except AttributeError:
                    continue
                if isinstance(head, ListHead):
                    for node in peek_list(head):
                        if isinstance(node, ListHead) and node.owner is not None:
                            stack.append(node.owner)
            if isinstance(obj, MmStruct):
                for pte in obj.ptes.values():
                    if pte.kind is PteKind.PRESENT and pte.page is not None:
                        stack.append(pte.page)
        # What the merged components held and no longer reach belongs nowhere now: a
        # recycled object starts afresh instead of dragging its old component along.
        for c in merged:
            for oid in c.members:
                if oid not in reached and self.comp_of.get(oid) is c:
                    del self.comp_of[oid]
        return reached


class FullAuditor:
    """The reference: a whole audit after every line (what LineAuditor must equal)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def before(self, procs: Iterable[str]) -> None:
        pass

    def after(self, procs: Iterable[str], *, everything: bool = False) -> list[Violation]:
        return audit(self.k)

    def close(self) -> None:
        pass
