"""Lock order between two locks of one class, per instance (stress.tsync's locks).

Lockdep orders classes, and two locks of one class nested is, to it, possible recursive
locking unless annotated.  Code that was not written for the harness nests locks of one
class all the time - a parent's and a child's, two accounts' - so the watch mode orders
them per instance instead: taking one while holding the other is fine as long as no
thread ever took them the other way round; then it is a lock-order verdict, with where
each order was first taken.  Each lock keeps the serials of those validated after it,
so a known pair costs the fast path one set lookup.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

from stress.lockdep import Edge, Lockdep
from stress.threads import ThreadState, capture_current, where
from stress.verdicts import Verdict

#: Instance-order dependencies kept per run (then no new ones are recorded).
MAX_INSTANCE_EDGES = 100_000


class _Instances:
    """Per run: which lock instance was taken while holding which, within one class."""

    def __init__(self) -> None:
        self.after: dict[int, set[int]] = {}
        self.edges: dict[tuple[int, int], Edge] = {}


_instances: weakref.WeakKeyDictionary[Lockdep, _Instances] = weakref.WeakKeyDictionary()


def instance_order(lock: Any, prev: Any, held: list[Any]) -> None:
    """Two locks of one class nested: an inversion only if both orders were taken."""
    graph = lock.lock_class.graph
    with graph._lock:
        book = _instances.get(graph)
        if book is None:
            book = _instances[graph] = _Instances()
        a, b = prev._serial, lock._serial
        if b in book.after.get(a, ()):
            prev._later.add(b)
            return
        path = _path(book, b, a)
        if len(book.edges) >= MAX_INSTANCE_EDGES and path is None:
            return
        state: ThreadState = held[0]
        stack = capture_current(skip=4)
        mon = graph.monitor
        book.after.setdefault(a, set()).add(b)
        if path is None:
            prev._later.add(b)  # the fast path may skip this pair from now on
        book.edges[(a, b)] = Edge(
            prev.name, lock.name, state.name, prev.name, lock.name, stack, mon.now_s()
        )
    if path is not None:
        mon.record(_inversion(state, prev, lock, path, stack, mon.now_s()))


def _path(book: _Instances, start: int, goal: int) -> list[Edge] | None:
    parent: dict[int, int] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            edges: list[Edge] = []
            while node != start:
                before = parent[node]
                edges.append(book.edges[(before, node)])
                node = before
            edges.reverse()
            return edges
        for nxt in book.after.get(node, ()):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


def _inversion(
    state: ThreadState,
    prev: Any,
    lock: Any,
    path: list[Edge],
    stack: list[Any],
    at_s: float,
) -> Verdict:
    order = " -> ".join([path[0].before] + [e.after for e in path])
    new = f"{state.name} takes {lock.name} while holding {prev.name} at {where(stack)}"
    stacks = {state.name: stack}
    for edge in path:
        stacks.setdefault(f"{edge.thread} (first {edge.before} -> {edge.after})", edge.stack)
    cls = lock.lock_class.name
    return Verdict(
        kind="lock-order",
        summary=(
            f"possible deadlock: {state.name} takes {lock.name} while holding {prev.name} "
            f"(two locks of class {cls}), but the opposite order {order} was taken before "
            f"(first by {path[0].thread})"
        ),
        source="lockdep",
        threads=list(dict.fromkeys([state.name] + [e.thread for e in path])),
        locks=list(
            dict.fromkeys([prev.name, lock.name] + [n for e in path for n in (e.before, e.after)])
        ),
        lock_classes=[cls],
        chain=[f"new:      {new}"] + [f"existing: {e.describe()}" for e in path],
        stacks=stacks,
        evidence={
            "new_dependency": f"{prev.name} -> {lock.name}",
            "existing_chain": [e.describe() for e in path],
            "cycle": " -> ".join([prev.name, *[e.before for e in path], prev.name]),
            "held": [getattr(e, "lock", e).name for e in state.held[1:]],
            "class": cls,
        },
        culprits=[state.name],
        at_s=at_s,
    )
