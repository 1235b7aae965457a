"""Intrusive doubly linked lists: include/linux/list.h and lib/list_debug.c.

A `ListHead` is the 16 bytes embedded in a structure: two pointers and nothing
else.  It knows the object it is embedded in (`owner`), which member of it it is
(`member`) and its address, because `container_of` needs them and because a
report must say which node of which object a pointer names.

Deleted entries are poisoned with LIST_POISON1/2; NULL list pointers are the
`NULL_LIST` bad address.  Both are `BadAddress` objects: touching any field of one
raises the oops the kernel would take, so a walk over a corrupted list fails
exactly where the kernel's would, with no check on the fast path.

The primitives call the kernel's yield hook between their pointer stores, so that
real-thread runs can widen the windows in which a concurrent unlocked update tears
a list (the race windows of the 2010 hunt).  With no hook set they cost one test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rmapsim.errors import KernelOops, ListCorruption, ListCorruptionWarning

# x86-64 CONFIG_ILLEGAL_POINTER_VALUE plus the generic offsets (include/linux/poison.h).
POISON_POINTER_DELTA = 0xDEAD000000000000
LIST_POISON1_ADDR = 0x00100100 + POISON_POINTER_DELTA
LIST_POISON2_ADDR = 0x00200200 + POISON_POINTER_DELTA


class Member:
    """Which list_head member of which structure a node is (for container_of)."""

    __slots__ = ("field", "offset", "struct")

    def __init__(self, struct: str, field: str, offset: int) -> None:
        self.struct = struct
        self.field = field
        self.offset = offset

    def __repr__(self) -> str:
        return f"{self.struct}.{self.field}"


class ListHead:
    """struct list_head embedded at `addr` in `owner` as its `member`."""

    __slots__ = ("addr", "member", "next", "owner", "prev")

    next: Any
    prev: Any

    def __init__(self, owner: Any, member: Member, addr: int) -> None:
        self.owner = owner
        self.member = member
        self.addr = addr
        # Fresh memory is zero: a list head that nobody initialised holds NULLs.
        self.next = NULL_LIST
        self.prev = NULL_LIST

    def describe(self) -> str:
        name = getattr(self.owner, "name", None) or f"{self.member.struct}@{self.addr:#x}"
        return f"{name}.{self.member.field}"

    def __repr__(self) -> str:
        return f"<list_head {self.describe()} @{self.addr:#x}>"


class BadAddress:
    """A pointer value that maps nothing: NULL, LIST_POISON or a wild value.

    Reading or writing a field through it raises the oops the kernel would take
    there ("unable to handle kernel paging request at ...").
    """

    __slots__ = ("_addr", "_why")

    def __init__(self, addr: int, why: str) -> None:
        object.__setattr__(self, "_addr", addr)
        object.__setattr__(self, "_why", why)

    @property
    def address(self) -> int:
        return int(object.__getattribute__(self, "_addr"))

    def _fault(self, field: str) -> ListCorruption | KernelOops:
        addr: int = object.__getattribute__(self, "_addr")
        why: str = object.__getattribute__(self, "_why")
        offset = 8 if field == "prev" else 0
        where = addr + offset
        if addr in (LIST_POISON1_ADDR, LIST_POISON2_ADDR):
            return ListCorruption(
                f"unable to handle kernel paging request at {where:#018x}: "
                f"{why} (->{field} of an entry already removed by list_del)",
                address=where,
                pointer=why,
            )
        if addr == 0:
            return KernelOops(
                f"BUG: unable to handle kernel NULL pointer dereference at {where:#018x} "
                f"(->{field} through {why})",
                address=where,
                pointer=why,
            )
        return KernelOops(
            f"unable to handle kernel paging request at {where:#018x} (->{field} through {why})",
            address=where,
            pointer=why,
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._fault(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._fault(name)

    def describe(self) -> str:
        return f"{object.__getattribute__(self, '_why')} ({self.address:#x})"

    def __repr__(self) -> str:
        return f"<bad pointer {self.describe()}>"


LIST_POISON1 = BadAddress(LIST_POISON1_ADDR, "LIST_POISON1")
LIST_POISON2 = BadAddress(LIST_POISON2_ADDR, "LIST_POISON2")
NULL_LIST = BadAddress(0, "NULL")

YieldHook = Callable[[str], None]
WarnHook = Callable[[ListCorruptionWarning], None]


def describe_node(node: Any) -> str:
    """A short name for whatever a list pointer points at (node, view, bad address)."""
    describe = getattr(type(node), "describe", None)
    if describe is not None:
        return str(describe(node))
    return repr(node)


class ListOps:
    """The list primitives of one modelled kernel.

    Holds the two things the primitives need from their kernel: whether
    CONFIG_DEBUG_LIST is on (and where its WARNs go) and the yield hook.
    """

    __slots__ = ("debug_list", "on_warn", "yield_point")

    def __init__(
        self,
        *,
        debug_list: bool = False,
        yield_point: YieldHook | None = None,
        on_warn: WarnHook | None = None,
    ) -> None:
        self.debug_list = debug_list
        self.yield_point = yield_point
        self.on_warn = on_warn

    # -- lib/list_debug.c -------------------------------------------------------------

    def _warn(self, message: str, **details: Any) -> None:
        warning = ListCorruptionWarning(f"WARNING: {message}", **details)
        if self.on_warn is None:
            raise warning
        self.on_warn(warning)

    def _check_add(self, new: ListHead, prev: ListHead, next: ListHead) -> None:
        if next.prev is not prev:
            self._warn(
                f"list_add corruption. next->prev should be prev ({describe_node(prev)}), "
                f"but was {describe_node(next.prev)}. (next={describe_node(next)}).",
                node=describe_node(new),
            )
        if prev.next is not next:
            self._warn(
                f"list_add corruption. prev->next should be next ({describe_node(next)}), "
                f"but was {describe_node(prev.next)}. (prev={describe_node(prev)}).",
                node=describe_node(new),
            )

    def _check_del(self, entry: ListHead) -> None:
        if entry.prev.next is not entry:
            self._warn(
                f"list_del corruption. prev->next should be {describe_node(entry)}, "
                f"but was {describe_node(entry.prev.next)}",
                node=describe_node(entry),
            )
        if entry.next.prev is not entry:
            self._warn(
                f"list_del corruption. next->prev should be {describe_node(entry)}, "
                f"but was {describe_node(entry.next.prev)}",
                node=describe_node(entry),
            )

    # -- include/linux/list.h ---------------------------------------------------------

    @staticmethod
    def INIT_LIST_HEAD(head: ListHead) -> None:
        head.next = head
        head.prev = head

    def __list_add(self, new: ListHead, prev: ListHead, next: ListHead) -> None:
        if self.debug_list:
            self._check_add(new, prev, next)
        y = self.yield_point
        next.prev = new
        if y is not None:
            y("__list_add:next->prev")
        new.next = next
        new.prev = prev
        if y is not None:
            y("__list_add:new linked")
        prev.next = new

    def list_add(self, new: ListHead, head: ListHead) -> None:
        """Insert `new` right after `head` (stack order)."""
        self.__list_add(new, head, head.next)

    def list_add_tail(self, new: ListHead, head: ListHead) -> None:
        """Insert `new` right before `head` (queue order)."""
        self.__list_add(new, head.prev, head)

    def __list_del(self, prev: ListHead, next: ListHead) -> None:
        next.prev = prev
        y = self.yield_point
        if y is not None:
            y("__list_del:next->prev")
        prev.next = next

    def list_del(self, entry: ListHead) -> None:
        """Unlink `entry` and poison it, so a later walk through it oopses."""
        if self.debug_list:
            self._check_del(entry)
        self.__list_del(entry.prev, entry.next)
        entry.next = LIST_POISON1
        entry.prev = LIST_POISON2

    def list_move_tail(self, entry: ListHead, head: ListHead) -> None:
        self.__list_del(entry.prev, entry.next)
        self.list_add_tail(entry, head)

    @staticmethod
    def list_empty(head: ListHead) -> bool:
        return head.next is head

    @staticmethod
    def list_is_singular(head: ListHead) -> bool:
        return head.next is not head and head.next is head.prev
