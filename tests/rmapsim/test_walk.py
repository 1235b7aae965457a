"""The one list walk: bounded, cycle-reporting, hookable."""

from __future__ import annotations

import pytest

from rmapsim.errors import KernelOops, ListCorruption, ListLoop
from rmapsim.kernel import Kernel
from rmapsim.structs import AVC_SAME_ANON_VMA, AnonVma, AnonVmaChain
from rmapsim.sync import SingleThreadSync
from rmapsim.walk import WalkState


def setup(n: int, **kw: object) -> tuple[Kernel, AnonVma, list[AnonVmaChain]]:
    k = Kernel("2.6.34", sync=SingleThreadSync(), **kw)  # type: ignore[arg-type]
    av = k.mem.alloc(k.anon_vma_cachep)
    avcs = []
    for _ in range(n):
        avc = k.mem.alloc(k.anon_vma_chain_cachep)
        avc.anon_vma = av
        k.lists.list_add_tail(avc.same_anon_vma, av.head)
        avcs.append(avc)
    return k, av, avcs


def test_walk_visits_in_order_and_reverse() -> None:
    k, av, avcs = setup(4)
    assert list(k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t")) == avcs
    assert list(k.walks.for_each_entry_reverse(av.head, AVC_SAME_ANON_VMA, what="t")) == avcs[::-1]


def test_safe_walk_allows_deleting_the_current_entry() -> None:
    k, av, avcs = setup(3)
    seen = []
    for avc in k.walks.for_each_entry_safe(av.head, AVC_SAME_ANON_VMA, what="t"):
        seen.append(avc)
        k.lists.list_del(avc.same_anon_vma)
    assert seen == avcs
    assert k.lists.list_empty(av.head)


def test_unsafe_walk_after_delete_oopses_on_the_poison() -> None:
    k, av, _avcs = setup(3)
    with pytest.raises(ListCorruption, match="LIST_POISON1"):
        for avc in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            k.lists.list_del(avc.same_anon_vma)


def test_ring_without_head_is_a_list_loop_with_its_cycle_and_lock() -> None:
    k, av, (_a, b, c) = setup(3)
    c.same_anon_vma.next = b.same_anon_vma  # b -> c -> b ..., never back to head
    av.lock.acquire()
    with pytest.raises(ListLoop) as info:
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="walker", lock=av.lock):
            pass
    exc = info.value
    assert exc.kind == "list-loop"
    assert exc.details["steps"] == exc.details["bound"] + 1
    assert exc.details["bound"] == k.mem.live_objects + 1
    assert sorted(exc.details["cycle"]) == sorted(
        [b.same_anon_vma.describe(), c.same_anon_vma.describe()]
    )
    assert exc.details["lock"] == av.lock.name
    assert "does not pass through the head" in exc.summary


def test_a_list_that_grows_under_the_walker_is_a_loop_too() -> None:
    k, av, (_a,) = setup(1)
    with pytest.raises(ListLoop, match="grows under the walker"):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            new = k.mem.alloc(k.anon_vma_chain_cachep)
            k.lists.list_add_tail(new.same_anon_vma, av.head)


def test_step_hook_sees_every_step_and_can_stop_the_walk() -> None:
    seen: list[int] = []

    class Stop(Exception):
        pass

    def hook(st: WalkState) -> None:
        seen.append(st.steps)
        if st.steps == 2:
            raise Stop

    k, av, _avcs = setup(5, walk_step=hook)
    with pytest.raises(Stop):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass
    assert seen == [1, 2]


def test_on_loop_hook_can_keep_the_walker_spinning() -> None:
    calls: list[int] = []

    def on_loop(st: WalkState, exc: ListLoop) -> bool:
        calls.append(st.steps)
        return len(calls) < 3  # keep going twice, then let it raise

    k, av, (a, b) = setup(2, on_loop=on_loop)
    b.same_anon_vma.next = a.same_anon_vma
    with pytest.raises(ListLoop):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass
    bound = k.mem.live_objects + 1
    assert calls == [bound + 1, 2 * bound + 1, 3 * bound + 1]


def test_wild_pointer_in_a_list_oopses() -> None:
    k, av, (a, _b) = setup(2)
    a.same_anon_vma.next = k.mem.listptr(0x1234)
    with pytest.raises(KernelOops, match=r"paging request at 0x0+1234"):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass


def test_drain_stops_when_the_body_never_removes_the_entry() -> None:
    k, av, _avcs = setup(2)
    with pytest.raises(ListLoop, match="first entry never leaves"):
        for _ in k.walks.drain(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass


class Handle:
    def __init__(self, st: WalkState, log: list[tuple[str, object]]) -> None:
        self.st, self.log = st, log

    def step(self) -> None:
        self.log.append(("step", self.st.steps))

    def end(self, error: BaseException | None = None) -> None:
        self.log.append(("end", type(error).__name__ if error else None))


def test_tracker_sees_every_step_and_the_end_of_the_walk() -> None:
    log: list[tuple[str, object]] = []
    k, av, avcs = setup(3, walk_tracker=lambda st: Handle(st, log))
    assert list(k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t")) == avcs
    assert log == [("step", 1), ("step", 2), ("step", 3), ("end", None)]


def test_tracker_sees_a_break_as_a_normal_end_and_an_oops_as_an_error() -> None:
    log: list[tuple[str, object]] = []
    k, av, (_a, b, _c) = setup(3, walk_tracker=lambda st: Handle(st, log))
    for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
        break
    assert log == [("step", 1), ("end", None)]
    log.clear()
    b.same_anon_vma.next = k.mem.listptr(0x1234)
    with pytest.raises(KernelOops):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass
    assert log[-1] == ("end", "KernelOops")


def test_tripped_walk_hands_its_tracker_handle_to_on_loop() -> None:
    seen: list[object] = []

    def on_loop(st: WalkState, exc: ListLoop) -> bool:
        seen.append(st.handle)
        return False

    log: list[tuple[str, object]] = []
    k, av, (a, b) = setup(2, walk_tracker=lambda st: Handle(st, log), on_loop=on_loop)
    b.same_anon_vma.next = a.same_anon_vma
    with pytest.raises(ListLoop):
        for _ in k.walks.for_each_entry(av.head, AVC_SAME_ANON_VMA, what="t"):
            pass
    assert isinstance(seen[0], Handle)
    assert log[-1] == ("end", "ListLoop")
