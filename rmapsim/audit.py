"""The invariants of the reverse map (anon-vma-2010.md §2.6), checked stop-the-world.

* I1 reachability: every vma mapping a page is on the list of page->mapping, at
  the address vma_address() computes;
* I2 liveness: a mapped page's anon_vma is not freed (nor freed and reused);
* I3 edge consistency: each live anon_vma_chain is on exactly one same_vma list
  (its vma's) and one same_anon_vma list (its anon_vma's), and points at live objects;
* I4 own anon_vma in own chain;
* I5 same anon_vma => same chain (what 2.6.34's anon_vma_merge relies on; not
  checked for hannes-merge, whose merge does not rely on it);
* I6 order: the tail of a vma's chain is its oldest ancestor (only for variants
  with oldest-anon-vma, which rely on it);
* I7 list well-formedness: every list returns to its head, x->next->prev == x;
* I8 no migration entry outside a migration: between operations every migration
  entry has been turned back into a PTE (one left behind faults into a BUG);
* I9 swap accounting: every swap PTE names a slot in use, and a slot counts exactly
  the swap PTEs that name it (all of them lie in one audited part: only fork shares
  a slot).  A slot counted short is freed while a PTE still names it, and once it is
  handed out again a fault there maps another address's page.

The audit reads stored values (`peek`), never through stale views, so it never
trips KASAN itself and never follows a wild pointer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rmapsim.lists import ListHead, describe_node
from rmapsim.slab import LIVE, peek, peek_list
from rmapsim.structs import (
    AVC_SAME_ANON_VMA,
    AVC_SAME_VMA,
    PAGE_SHIFT,
    AnonVma,
    AnonVmaChain,
    MmStruct,
    Page,
    PteKind,
    VmArea,
)

if TYPE_CHECKING:
    from rmapsim.kernel import Kernel

NAMES = {
    "I1": "reachability",
    "I2": "page mapped while its anon_vma is freed",
    "I3": "edge consistency",
    "I4": "own anon_vma in own chain",
    "I5": "same anon_vma, same chain",
    "I6": "chain tail is the oldest ancestor",
    "I7": "list well-formedness",
    "I8": "migration entry left behind",
    "I9": "swap accounting",
}


@dataclass(frozen=True)
class Violation:
    invariant: str
    summary: str
    page: str | None = None
    vma: str | None = None
    anon_vma: str | None = None
    key: tuple[Any, ...] = field(default=(), compare=True)

    @property
    def title(self) -> str:
        return f"{self.invariant} ({NAMES[self.invariant]})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "name": NAMES[self.invariant],
            "page": self.page,
            "vma": self.vma,
            "anon_vma": self.anon_vma,
        }


def _site(site: Any) -> str:
    if isinstance(site, tuple) and len(site) == 2:
        return f"line {site[0]}"
    return str(site) if site else "?"


def av_name(av: Any) -> str:
    if isinstance(av, AnonVma):
        if av.state != LIVE:
            return f"{av.name} (freed at {_site(av.free_site)})"
        return av.name
    return describe_node(av) if av is not None else "NULL"


def vma_name(vma: VmArea) -> str:
    mm = peek(vma, "vm_mm")
    comm = getattr(mm, "comm", "?")
    return f"{vma.name} {comm}:[{peek(vma, 'vm_start', 0):#x}-{peek(vma, 'vm_end', 0):#x})"


def _find_vma_raw(mm: MmStruct, addr: int, bound: int) -> VmArea | None:
    vma = peek(mm, "mmap")
    while isinstance(vma, VmArea) and bound > 0:
        if peek(vma, "vm_end", 0) > addr:
            return vma
        vma = peek(vma, "vm_next")
        bound -= 1
    return None


def walk_raw(head: ListHead, bound: int) -> tuple[list[ListHead], str | None]:
    """The nodes of a list by stored pointers, and what is wrong with it (None if fine)."""
    nodes: list[ListHead] = []
    node, _ = peek_list(head)
    prev = head
    while node is not head:
        if not isinstance(node, ListHead):
            return nodes, f"{describe_node(prev)}->next is {describe_node(node)}"
        if peek_list(node)[1] is not prev:
            return nodes, (
                f"{describe_node(node)}->prev is {describe_node(peek_list(node)[1])}, "
                f"not {describe_node(prev)}"
            )
        nodes.append(node)
        if len(nodes) > bound:
            return (
                nodes,
                f"does not return to its head within {bound} steps (a ring without its head)",
            )
        prev, node = node, peek_list(node)[0]
    if peek_list(head)[1] is not prev:
        return nodes, f"head->prev is {describe_node(peek_list(head)[1])}, not the last node"
    return nodes, None


def _serial(obj: Any) -> int:
    return int(obj.serial)


class _Audit:
    """One audit over given processes and live anon_vma_chains and anon_vmas.

    Objects are checked in allocation order (serial), so an audit of part of the world
    finds what the whole audit finds there, in the same order.
    """

    def __init__(
        self,
        k: Kernel,
        mms: list[MmStruct],
        avcs: list[AnonVmaChain],
        avs: list[AnonVma],
    ) -> None:
        self.k = k
        self.mms = sorted(mms, key=_serial)
        self.avcs = sorted(avcs, key=_serial)
        self.avs = sorted(avs, key=_serial)
        self.out: list[Violation] = []
        self.bound = k.mem.live_objects + 1

    def add(self, inv: str, summary: str, key: tuple[Any, ...], **names: str | None) -> None:
        self.out.append(Violation(inv, summary, key=(inv, *key), **names))

    def run(self) -> list[Violation]:
        k = self.k
        avcs, avs, mms = self.avcs, self.avs, self.mms
        vmas: list[VmArea] = []
        for mm in mms:
            vma = peek(mm, "mmap")
            seen = 0
            while isinstance(vma, VmArea) and seen <= self.bound:
                vmas.append(vma)
                vma = peek(vma, "vm_next")
                seen += 1
        # I7 and I3 over every chain and every anon_vma list.
        on_vma_lists: dict[int, int] = {}
        on_av_lists: dict[int, int] = {}
        chain_of: dict[int, list[AnonVmaChain]] = {}
        list_of: dict[int, list[AnonVmaChain]] = {}
        for vma in vmas:
            chain_of[id(vma)] = self.check_list(
                peek(vma, "anon_vma_chain"), AVC_SAME_VMA, "vma", vma, on_vma_lists
            )
        for av in avs:
            list_of[id(av)] = self.check_list(
                peek(av, "head"), AVC_SAME_ANON_VMA, "anon_vma", av, on_av_lists
            )
        live_vma_ids = {id(v) for v in vmas}
        for avc in avcs:
            n_vma, n_av = on_vma_lists.get(id(avc), 0), on_av_lists.get(id(avc), 0)
            vma, av = peek(avc, "vma"), peek(avc, "anon_vma")
            if n_vma != 1 or n_av != 1:
                self.add(
                    "I3",
                    f"{avc.name} is on {n_vma} same_vma list(s) and {n_av} same_anon_vma list(s) "
                    f"(each must be exactly 1)",
                    (avc.serial,),
                    anon_vma=av_name(av),
                )
            if isinstance(vma, VmArea) and id(vma) not in live_vma_ids:
                self.add(
                    "I3",
                    f"{avc.name}->vma is {vma.name}, which is "
                    + ("freed" if vma.state != LIVE else "in no address space"),
                    (avc.serial, "vma"),
                    vma=vma.name,
                    anon_vma=av_name(av),
                )
        for vma in vmas:
            av = peek(vma, "anon_vma")
            chain = chain_of.get(id(vma), [])
            if av is not None and not any(peek(a, "anon_vma") is av for a in chain):
                self.add(
                    "I4",
                    f"{vma_name(vma)} has anon_vma {av_name(av)} but no anon_vma_chain on it",
                    (vma.serial, getattr(av, "serial", 0)),
                    vma=vma_name(vma),
                    anon_vma=av_name(av),
                )
        if not k.variant.hannes_merge:
            self.check_i5(vmas, chain_of)
        if k.variant.oldest_anon_vma:
            self.check_i6(vmas, chain_of)
        self.check_pages(mms, list_of)
        return self.out

    def check_list(
        self, head: ListHead, member: Any, what: str, owner: Any, counts: dict[int, int]
    ) -> list[AnonVmaChain]:
        nodes, problem = walk_raw(head, self.bound)

        def name() -> str:  # formatted only for a violation: most lists have none
            return vma_name(owner) if what == "vma" else av_name(owner)

        if problem is not None:
            self.add(
                "I7",
                f"the list of {name()} is broken: {problem}",
                (what, owner.serial),
                **({"vma": name()} if what == "vma" else {"anon_vma": name()}),
            )
        entries = []
        for node in nodes:
            avc = node.owner
            if node.member is not member or not isinstance(avc, AnonVmaChain):
                self.add(
                    "I3",
                    f"the list of {name()} holds {describe_node(node)}, which is not an "
                    f"anon_vma_chain.{member.field}",
                    (what, owner.serial, "foreign"),
                )
                continue
            if avc.state != LIVE:
                self.add(
                    "I3",
                    f"the list of {name()} holds {avc.name}, freed at {_site(avc.free_site)}",
                    (what, owner.serial, "freed", avc.serial),
                    **({"vma": name()} if what == "vma" else {"anon_vma": name()}),
                )
                continue
            field = "vma" if what == "vma" else "anon_vma"
            back = peek(avc, field)
            if back is not owner:
                self.add(
                    "I3",
                    f"{avc.name} is on the list of {name()} but its ->{field} is "
                    f"{describe_node(back) if back is not None else 'NULL'}",
                    (what, owner.serial, "back", avc.serial),
                )
            counts[id(avc)] = counts.get(id(avc), 0) + 1
            entries.append(avc)
        return entries

    def check_i5(self, vmas: list[VmArea], chain_of: dict[int, list[AnonVmaChain]]) -> None:
        by_mm_av: dict[tuple[int, int], list[VmArea]] = {}
        for vma in vmas:
            av = peek(vma, "anon_vma")
            if av is not None:
                by_mm_av.setdefault((id(peek(vma, "vm_mm")), id(av)), []).append(vma)
        for group in by_mm_av.values():
            sets = [
                frozenset(id(peek(a, "anon_vma")) for a in chain_of.get(id(v), [])) for v in group
            ]
            for v, s in zip(group[1:], sets[1:], strict=True):
                if s != sets[0]:
                    av = peek(v, "anon_vma")
                    self.add(
                        "I5",
                        f"{vma_name(group[0])} and {vma_name(v)} share anon_vma {av_name(av)} but "
                        f"their chains differ ({len(sets[0])} vs {len(s)} anon_vmas): merging them "
                        f"drops the difference",
                        (group[0].serial, v.serial),
                        vma=vma_name(v),
                        anon_vma=av_name(av),
                    )

    def check_i6(self, vmas: list[VmArea], chain_of: dict[int, list[AnonVmaChain]]) -> None:
        for vma in vmas:
            chain = chain_of.get(id(vma), [])
            av = peek(vma, "anon_vma")
            if not chain or av is None:
                continue
            root = peek(vma, "shadow_oldest")
            tail = peek(chain[-1], "anon_vma")
            if root is not None and tail is not root:
                self.add(
                    "I6",
                    f"the chain of {vma_name(vma)} ends with {av_name(tail)}, not its oldest "
                    f"ancestor {av_name(root)}: a page shared with an ancestor would get the wrong "
                    f"anon_vma",
                    (vma.serial,),
                    vma=vma_name(vma),
                    anon_vma=av_name(tail),
                )

    def check_pages(self, mms: list[MmStruct], list_of: dict[int, list[AnonVmaChain]]) -> None:
        named: dict[int, list[str]] = {}  # swap slot -> where the swap PTEs naming it are
        for mm in mms:
            for address, pte in sorted(mm.ptes.items()):
                if pte.kind is PteKind.SWAP:
                    named.setdefault(pte.slot, []).append(f"{mm.comm} at {address:#x}")
                    continue
                if pte.kind is PteKind.MIGRATION and pte.page is not None:
                    where = f"{mm.comm} at {address:#x}"
                    self.add(
                        "I8",
                        f"the PTE of {where} is still a migration entry for {pte.page.name} "
                        f"after its migration ended: the second rmap walk missed it, and the "
                        f"next fault there hits BUG_ON(!PageLocked) in migration_entry_to_page",
                        (mm.comm, address, pte.page.pfn),
                        page=f"{pte.page.name} (migration entry of {where})",
                    )
                    continue
                if pte.kind is not PteKind.PRESENT or pte.page is None:
                    continue
                page = pte.page
                self.check_mapping(mm, address, page, list_of)
        self.check_swap(named)

    def check_swap(self, named: dict[int, list[str]]) -> None:
        slots = self.k.swap.map
        for slot, where in sorted(named.items()):
            s = slots.get(slot)
            count = 0 if s is None else s.count
            if count == len(where):
                continue
            ptes = ", ".join(where[:3]) + (", ..." if len(where) > 3 else "")
            if s is None:
                summary = (
                    f"the swap PTE of {where[0]} names swap slot {slot}, which is free "
                    f"(\"Unused swap offset entry\"): once the slot is handed out again, a "
                    f"fault there maps another page"
                )
            else:
                summary = (
                    f"swap slot {slot} counts {count} swap PTE(s), but {len(where)} name it "
                    f"({ptes})"
                    + (": it will be freed while one still does" if count < len(where) else "")
                )
            self.add("I9", summary, (slot,), page=f"swap slot {slot} ({ptes})")

    def check_mapping(
        self, mm: MmStruct, address: int, page: Page, list_of: dict[int, list[AnonVmaChain]]
    ) -> None:
        vma = _find_vma_raw(mm, address, self.bound)
        av = page.mapping
        if (
            isinstance(av, AnonVma)
            and av.state == LIVE
            and av.gen == page.mapping_gen
            and vma is not None
            and peek(vma, "vm_start", 0) <= address
            and any(peek(a, "vma") is vma for a in list_of.get(id(av), []))
            and peek(vma, "vm_start", 0) + ((page.index - peek(vma, "vm_pgoff", 0)) << PAGE_SHIFT)
            == address
        ):
            return  # the common case, before any name is formatted
        where = f"{page.name} (mapped by {mm.comm} at {address:#x})"
        vname = vma_name(vma) if vma is not None else None
        if av is None:
            self.add("I1", f"{where} has no anon_vma", (page.pfn, address), page=where, vma=vname)
            return
        if not isinstance(av, AnonVma) or av.state != LIVE or av.gen != page.mapping_gen:
            reused = isinstance(av, AnonVma) and av.state == LIVE
            self.add(
                "I2",
                f"{where} points to {av.name} (freed and reused since)"
                if reused
                else f"{where} points to {av_name(av)} while still mapped",
                (page.pfn, getattr(av, "serial", 0)),
                page=where,
                vma=vname,
                anon_vma=av_name(av),
            )
            return
        if vma is None or peek(vma, "vm_start", 0) > address:
            self.add("I1", f"{where} lies in no vma", (page.pfn, address), page=where)
            return
        on_list = any(peek(a, "vma") is vma for a in list_of.get(id(av), []))
        expected = peek(vma, "vm_start", 0) + (
            (page.index - peek(vma, "vm_pgoff", 0)) << PAGE_SHIFT
        )
        if not on_list:
            self.add(
                "I1",
                f"{where} has anon_vma {av_name(av)}, but {vname} is not on its list: "
                f"the rmap cannot find this mapping",
                (page.pfn, vma.serial, av.serial),
                page=where,
                vma=vname,
                anon_vma=av_name(av),
            )
        elif expected != address:
            self.add(
                "I1",
                f"{where}: vma_address() in {vname} gives {expected:#x} "
                f"(page->index {page.index:#x}), so the rmap looks for it at the wrong address",
                (page.pfn, vma.serial, "index"),
                page=where,
                vma=vname,
                anon_vma=av_name(av),
            )


def audit(k: Kernel) -> list[Violation]:
    """Every invariant violation now (stop the world first in multi-threaded use)."""
    live = list(k.mem.allocated.values())
    return audit_part(
        k,
        list(k.tasks.values()),
        [o for o in live if isinstance(o, AnonVmaChain)],
        [o for o in live if isinstance(o, AnonVma)],
    )


def audit_part(
    k: Kernel, mms: list[MmStruct], avcs: list[AnonVmaChain], avs: list[AnonVma]
) -> list[Violation]:
    """The violations among these processes and live objects (`rmapsim.audit_scope` picks
    a part closed under every pointer, so that nothing outside it is involved)."""
    return _Audit(k, mms, avcs, avs).run()
