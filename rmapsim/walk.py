"""The one list walk: list_for_each_entry and friends, bounded and observable.

Every walk in the model (the rmap walkers, anon_vma_clone, unlink_anon_vmas,
anon_vma_merge) goes through `Walks`.  A walk:

* counts its steps and stops believing in its list once it has taken more steps
  than there are live objects in kernel memory (plus one): a list that long must
  revisit a node, i.e. it is a ring that no longer passes through its head.  It
  then extracts the cycle (Brent's algorithm) and raises `ListLoop` with the lock
  the walker holds, the head it started from and the nodes of the cycle;
* calls a per-step hook when one is installed (the harness uses it for progress,
  cancellation and yield points), and an ``on_loop`` hook that may keep the walker
  spinning the way the real CPU did, instead of raising at once.

The bare loop is what `list_for_each_entry` compiles to; the bookkeeping is one
counter compare per step and one test for the hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from rmapsim.atomic import atomic_inc, atomic_read, atomic_t
from rmapsim.errors import KernelOops, ListCorruption, ListLoop
from rmapsim.lists import BadAddress, ListHead, Member, describe_node


class WalkState:
    """What a walk is doing, for the hooks (and the harness's evidence)."""

    __slots__ = ("bound", "handle", "head", "lock", "member", "steps", "what")

    def __init__(self, what: str, head: ListHead, member: Member, lock: Any, bound: int) -> None:
        self.what = what
        self.head = head
        self.member = member
        self.lock = lock
        self.bound = bound
        self.steps = 0
        #: What a tracker made of this walk (the harness's walk record), if any.
        self.handle: Any = None

    def describe(self) -> str:
        return (
            f"{self.what}: walking {describe_node(self.head)}, step {self.steps:,} "
            f"of a bound of {self.bound:,}"
        )


StepHook = Callable[[WalkState], None]


class WalkHandle(Protocol):
    """What a tracker returns for a walk: told of every step and of the end."""

    def step(self) -> None: ...
    def end(self, error: BaseException | None = None) -> None: ...


#: Called when a walk starts; the handle it returns sees every step and the end.
Tracker = Callable[[WalkState], WalkHandle]
#: Called when a walk trips its bound (and after every further lap); returning True
#: keeps the walker going, as the real CPU would, until a step hook stops it.
LoopHook = Callable[[WalkState, ListLoop], bool]


def find_cycle(start: Any, limit: int, direction: str = "next") -> list[Any]:
    """The nodes of the cycle reached by following `direction` from `start` (Brent)."""
    power = lam = 1
    tortoise = start
    hare = getattr(start, direction)
    steps = 0
    while tortoise is not hare:
        if power == lam:
            tortoise, power, lam = hare, power * 2, 0
        hare = getattr(hare, direction)
        lam += 1
        steps += 1
        if steps > limit:
            return []
    cycle = [tortoise]
    node = getattr(tortoise, direction)
    while node is not tortoise and len(cycle) <= limit:
        cycle.append(node)
        node = getattr(node, direction)
    return cycle


def _bad_entry(pos: BadAddress, member: Member) -> KernelOops | ListCorruption:
    """The fault a walker takes on reaching a poisoned or wild list pointer."""
    exc = pos._fault("next")
    exc.details["entry"] = f"{member.struct} containing {pos.describe()}"
    return exc


class Walks:
    """The list walks of one modelled kernel."""

    __slots__ = ("_count", "mem", "on_loop", "step_hook", "tracker")

    def __init__(
        self,
        mem: Any,
        step_hook: StepHook | None = None,
        on_loop: LoopHook | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.mem = mem
        self.step_hook = step_hook
        self.on_loop = on_loop
        self.tracker = tracker
        self._count = atomic_t(0)

    @property
    def count(self) -> int:
        """Walks started."""
        return atomic_read(self._count)

    def container_of(self, pos: Any, member: Member) -> Any:
        """list_entry(): the structure whose `member` is `pos` (a view if it is not one)."""
        if pos.member is member:
            return pos.owner
        return self.mem.cast(pos.addr - member.offset, self.mem.structs[member.struct])

    def _tripped(self, st: WalkState, direction: str, draining: bool = False) -> bool:
        cycle = find_cycle(st.head, 4 * st.bound + 16, direction)
        nodes = [describe_node(n) for n in cycle]
        lock = (getattr(st.lock, "name", None) or describe_node(st.lock)) if st.lock else None
        if draining:
            why = "the first entry never leaves the list"
        elif any(n is st.head for n in cycle):
            why = f"the list grows under the walker ({len(cycle) - 1} entries and counting)"
        else:
            why = f"trapped in a {len(cycle)}-node ring that does not pass through the head"
        exc = ListLoop(
            f"endless list_for_each_entry in {st.what}: {st.steps:,} steps over "
            f"{describe_node(st.head)} (bound {st.bound:,}), {why}"
            + (f", holding {lock}" if lock else ""),
            walker=st.what,
            head=describe_node(st.head),
            lock=lock,
            steps=st.steps,
            bound=st.bound,
            cycle=nodes,
        )
        if self.on_loop is not None and self.on_loop(st, exc):
            return True
        raise exc

    def _start(self, head: ListHead, member: Member, what: str, lock: Any) -> WalkState:
        """Count a walk, size its bound, and tell the tracker (if any) it began."""
        atomic_inc(self._count)
        st = WalkState(what, head, member, lock, self.mem.live_objects + 1)
        st.handle = self.tracker(st) if self.tracker is not None else None
        return st

    def _step(self, st: WalkState, direction: str, draining: bool = False) -> None:
        """One node: the tracker and step hook see it, then the bound is checked."""
        st.steps += 1
        if st.handle is not None:
            st.handle.step()
        if self.step_hook is not None:
            self.step_hook(st)
        if st.steps > st.bound and (st.steps - 1) % st.bound == 0:
            self._tripped(st, direction, draining)

    def _walk(
        self, head: ListHead, member: Member, what: str, lock: Any, direction: str, safe: bool
    ) -> Iterator[Any]:
        """Every other walk: reverse, safe, or watched by a step hook or tracker."""
        st = self._start(head, member, what, lock)
        forward = direction == "next"
        error: BaseException | None = None
        try:
            pos = head.next if forward else head.prev
            while pos is not head:
                self._step(st, direction)
                if type(pos) is ListHead and pos.member is member:
                    entry = pos.owner
                else:
                    entry = self._entry(pos, member)
                if safe:
                    nxt = pos.next if forward else pos.prev
                    yield entry
                    pos = nxt
                else:
                    yield entry
                    pos = pos.next if forward else pos.prev
        except GeneratorExit:
            raise  # the walker broke out of its loop: a normal end
        except BaseException as exc:
            error = exc
            raise
        finally:
            if st.handle is not None:
                st.handle.end(error)

    def _entry(self, pos: Any, member: Member) -> Any:
        try:
            return self.container_of(pos, member)
        except (KernelOops, ListCorruption):
            raise _bad_entry(pos, member) from None

    def _forward(self, head: ListHead, member: Member, what: str, lock: Any) -> Iterator[Any]:
        """The hot path: list_for_each_entry with no hook, as lean as bookkeeping allows.

        The step bound is the length of a C-level range; past it the walk is trapped.
        """
        if self.step_hook is not None or self.tracker is not None:
            yield from self._walk(head, member, what, lock, "next", False)
            return
        atomic_inc(self._count)
        bound = self.mem.live_objects + 1
        pos = head.next
        for _ in range(bound):
            if pos is head:
                return
            try:
                mine = pos.member is member
            except (KernelOops, ListCorruption):
                raise _bad_entry(pos, member) from None
            yield pos.owner if mine else self._entry(pos, member)
            pos = pos.next
        st = WalkState(what, head, member, lock, bound)
        st.steps = bound
        while pos is not head:  # goes on only while on_loop says so (asked every lap)
            st.steps += 1
            if (st.steps - 1) % bound == 0:
                self._tripped(st, "next")
            yield pos.owner if pos.member is member else self._entry(pos, member)
            pos = pos.next

    def for_each_entry(
        self, head: ListHead, member: Member, *, what: str, lock: Any = None
    ) -> Iterator[Any]:
        """list_for_each_entry(pos, head, member)."""
        return self._forward(head, member, what, lock)

    def for_each_entry_reverse(
        self, head: ListHead, member: Member, *, what: str, lock: Any = None
    ) -> Iterator[Any]:
        """list_for_each_entry_reverse(pos, head, member)."""
        return self._walk(head, member, what, lock, "prev", False)

    def for_each_entry_safe(
        self, head: ListHead, member: Member, *, what: str, lock: Any = None
    ) -> Iterator[Any]:
        """list_for_each_entry_safe(pos, n, head, member): the body may delete pos."""
        return self._walk(head, member, what, lock, "next", True)

    def drain(
        self, head: ListHead, member: Member, *, what: str, lock: Any = None
    ) -> Iterator[Any]:
        """while (!list_empty(head)) take list_first_entry(): the body must remove it."""
        st = self._start(head, member, what, lock)
        error: BaseException | None = None
        try:
            while head.next is not head:
                self._step(st, "next", draining=True)
                pos = head.next
                yield pos.owner if pos.member is member else self._entry(pos, member)
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if st.handle is not None:
                st.handle.end(error)

    def bare_chase(self, head: ListHead) -> int:
        """The uninstrumented pointer chase (benchmark baseline): steps to return to head."""
        n = 0
        pos = head.next
        while pos is not head:
            n += 1
            pos = pos.next
        return n
