"""Conformance of the list primitives with include/linux/list.h and lib/list_debug.c."""

from __future__ import annotations

import pytest

from rmapsim.errors import KernelOops, ListCorruption, ListCorruptionWarning
from rmapsim.lists import LIST_POISON1, LIST_POISON2, NULL_LIST, ListHead, ListOps, Member

M = Member("thing", "node", 0)


def node(i: int) -> ListHead:
    return ListHead(f"n{i}", M, 0x1000 + 16 * i)


def forward(head: ListHead) -> list[ListHead]:
    out, pos = [], head.next
    while pos is not head:
        out.append(pos)
        pos = pos.next
        assert len(out) < 100
    return out


def backward(head: ListHead) -> list[ListHead]:
    out, pos = [], head.prev
    while pos is not head:
        out.append(pos)
        pos = pos.prev
        assert len(out) < 100
    return out


@pytest.fixture(params=[False, True], ids=["plain", "debug_list"])
def L(request: pytest.FixtureRequest) -> ListOps:
    return ListOps(debug_list=request.param)


def make(L: ListOps, n: int) -> tuple[ListHead, list[ListHead]]:
    head = node(99)
    L.INIT_LIST_HEAD(head)
    nodes = [node(i) for i in range(n)]
    for x in nodes:
        L.list_add_tail(x, head)
    return head, nodes


def test_fresh_list_head_holds_null(L: ListOps) -> None:
    h = node(0)
    assert h.next is NULL_LIST and h.prev is NULL_LIST
    with pytest.raises(KernelOops, match="NULL pointer"):
        h.next.next  # noqa: B018


def test_init_is_empty_and_not_singular(L: ListOps) -> None:
    head, _ = make(L, 0)
    assert L.list_empty(head)
    assert not L.list_is_singular(head)


def test_add_is_stack_order_add_tail_is_queue_order(L: ListOps) -> None:
    head = node(99)
    L.INIT_LIST_HEAD(head)
    a, b, c = node(1), node(2), node(3)
    L.list_add(a, head)
    L.list_add(b, head)
    L.list_add_tail(c, head)
    assert forward(head) == [b, a, c]
    assert backward(head) == [c, a, b]
    assert not L.list_empty(head)


def test_singular(L: ListOps) -> None:
    head, _nodes = make(L, 1)
    assert L.list_is_singular(head)
    L.list_add(node(5), head)
    assert not L.list_is_singular(head)


def test_del_unlinks_and_poisons(L: ListOps) -> None:
    head, (a, b, c) = make(L, 3)
    L.list_del(b)
    assert forward(head) == [a, c]
    assert backward(head) == [c, a]
    assert b.next is LIST_POISON1 and b.prev is LIST_POISON2


def test_walking_into_a_deleted_entry_oopses_at_the_poison(L: ListOps) -> None:
    _head, (_a, b, _c) = make(L, 3)
    L.list_del(b)
    with pytest.raises(ListCorruption, match="0xdead000000100100"):
        b.next.next  # noqa: B018


def test_move_tail(L: ListOps) -> None:
    h1, (a, b) = make(L, 2)
    h2, (c,) = make(L, 1)
    L.list_move_tail(a, h2)
    assert forward(h1) == [b]
    assert forward(h2) == [c, a]
    assert backward(h2) == [a, c]


def test_double_del_oopses_without_debug_list() -> None:
    L = ListOps(debug_list=False)
    _head, (a, _b) = make(L, 2)
    L.list_del(a)
    with pytest.raises(ListCorruption):
        L.list_del(a)


def test_debug_list_warns_on_del_of_unlinked_neighbour_and_goes_on() -> None:
    warnings: list[ListCorruptionWarning] = []
    L = ListOps(debug_list=True, on_warn=warnings.append)
    _head, (a, b, c) = make(L, 3)
    a.next = c  # b dropped out of the forward chain by hand
    L.list_del(b)
    assert len(warnings) == 1
    assert "list_del corruption. prev->next should be" in warnings[0].summary
    assert not warnings[0].fatal


def test_debug_list_warns_on_add_with_stale_neighbours() -> None:
    warnings: list[ListCorruptionWarning] = []
    L = ListOps(debug_list=True, on_warn=warnings.append)
    head, (a, b) = make(L, 2)
    b.prev = head  # a->next still b, b->prev wrong
    L.list_add(node(7), a)
    assert any("list_add corruption. next->prev should be prev" in w.summary for w in warnings)


def test_debug_list_without_sink_raises_the_warning() -> None:
    L = ListOps(debug_list=True)
    _head, (a, b, c) = make(L, 3)
    a.next = c
    with pytest.raises(ListCorruptionWarning):
        L.list_del(b)


def test_readding_a_linked_node_at_head_makes_a_ring_without_the_head(L: ListOps) -> None:
    """The DEBUG_LIST blind spot (anon-vma-2010.md §7.1): not caught at add time."""
    head, (_a, b, _c) = make(L, 3)
    L.list_add(b, head)  # b is already linked between a and c
    assert head.next is b
    ring, pos = [], b.next
    for _ in range(10):
        ring.append(pos)
        pos = pos.next
    assert head not in ring


def test_yield_hook_sees_every_window() -> None:
    seen: list[str] = []
    L = ListOps(yield_point=seen.append)
    head, (a,) = make(L, 1)
    seen.clear()
    L.list_add(node(3), head)
    L.list_del(a)
    assert seen == ["__list_add:next->prev", "__list_add:new linked", "__list_del:next->prev"]
