"""Lock-order checking in the style of the kernel's lockdep.

Locks belong to classes (every anon_vma lock is one class).  When a thread takes
a lock of class B while its most recent held lock is of class A, the dependency
A -> B is recorded with where it was first taken.  A new dependency that closes a
cycle in the class graph is a `lock-order` verdict at once, before anything
deadlocks, showing the new dependency and the existing chain it closes.

The cache: each class key keeps the set of keys already validated after it, so a
known (previous class -> class) pair costs the lock fast path one set lookup
(and taking a lock while holding none costs no lookup at all); only a
first-seen pair comes here.  Two locks of one class may nest only under a
nesting annotation (a subclass key, like spin_lock_nested), else the nesting is
reported as possible recursive locking.
"""

from __future__ import annotations

import _thread
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stress.lockcore import ClassStats
from stress.threads import Frame, ThreadState, capture_current, where
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.monitor import Monitor


class LockKey:
    """A node of the lock-order graph: a lock class, or one nesting subclass of it."""

    __slots__ = ("after", "cls", "edges", "label", "sub")

    def __init__(self, cls: LockClass, sub: int) -> None:
        self.cls = cls
        self.sub = sub
        self.label = cls.name if sub == 0 else f"{cls.name}/{sub}"
        #: Keys validated to be taken after this one (the fast path's cache).
        self.after: set[LockKey] = set()
        self.edges: dict[LockKey, Edge] = {}

    def __repr__(self) -> str:
        return f"<LockKey {self.label}>"


@dataclass(frozen=True)
class Edge:
    """A dependency `before -> after` and where it was first taken."""

    before: str
    after: str
    thread: str
    held: str
    taken: str
    stack: list[Frame]
    at_s: float

    def describe(self) -> str:
        return (
            f"{self.before} -> {self.after}: first taken by {self.thread}, which took "
            f"{self.taken} while holding {self.held}, at {where(self.stack)} "
            f"({self.at_s:.3f} s)"
        )


class LockClass:
    """All locks playing one role; carries the class's keys, hold budget and statistics."""

    def __init__(self, name: str, graph: Lockdep, budget_s: float) -> None:
        self.name = name
        self.graph = graph
        self.budget_s = budget_s
        self.stats = ClassStats()
        self._keys: list[LockKey] = []
        self.key(0)

    def key(self, sub: int = 0) -> LockKey:
        """The lock-order key of nesting subclass `sub` (0 is the class itself)."""
        if sub < 0 or sub > 7:
            raise ValueError(f"lock subclass must be 0..7, got {sub}")
        while len(self._keys) <= sub:
            self._keys.append(LockKey(self, len(self._keys)))
        return self._keys[sub]

    @property
    def keys(self) -> list[LockKey]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"<LockClass {self.name} budget={self.budget_s:g}s>"


class Lockdep:
    """The lock-order graph of one run."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.classes: dict[str, LockClass] = {}
        self._lock = _thread.allocate_lock()
        #: How often the slow path ran: a known chain must not come here again.
        self.slow_checks = 0

    def lock_class(self, name: str, budget_s: float) -> LockClass:
        with self._lock:
            cls = self.classes.get(name)
            if cls is None:
                cls = self.classes[name] = LockClass(name, self, budget_s)
            return cls

    def check(self, held: list[Any], key: LockKey, lock: Any) -> None:
        """Validate taking `lock` under `key` after the thread's most recent held lock."""
        self.slow_checks += 1
        prev = held[-1]
        state: ThreadState = held[0]
        prev_key: LockKey = prev._key
        if prev_key.cls.graph is not self:
            return  # locks of two runs do not order each other
        held_name: str = getattr(prev, "lock", prev).name
        with self._lock:
            if key in prev_key.after:
                return
            path = [] if key is prev_key else self._path(key, prev_key)
            stack = capture_current(skip=3)
            prev_key.edges[key] = Edge(
                prev_key.label,
                key.label,
                state.name,
                held_name,
                lock.name,
                stack,
                self.monitor.now_s(),
            )
            prev_key.after.add(key)
        if path is not None:
            self.monitor.record(self._verdict(state, held, prev_key, key, lock, path, stack))

    def _path(self, start: LockKey, goal: LockKey) -> list[Edge] | None:
        """Edges of a dependency path start -> ... -> goal, if any (breadth first)."""
        parent: dict[LockKey, LockKey] = {start: start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node is goal:
                edges: list[Edge] = []
                while node is not start:
                    before = parent[node]
                    edges.append(before.edges[node])
                    node = before
                edges.reverse()
                return edges
            for nxt in node.after:
                if nxt not in parent:
                    parent[nxt] = node
                    queue.append(nxt)
        return None

    def _verdict(
        self,
        state: ThreadState,
        held: list[Any],
        prev_key: LockKey,
        key: LockKey,
        lock: Any,
        path: list[Edge],
        stack: list[Frame],
    ) -> Verdict:
        prev_lock = getattr(held[-1], "lock", held[-1])
        held_names = [getattr(e, "lock", e).name for e in held[1:]]
        new = (
            f"{state.name} takes {lock.name} ({key.label}) while holding {prev_lock.name} "
            f"({prev_key.label}) at {where(stack)}"
        )
        if not path:
            summary = (
                f"possible recursive locking: {state.name} takes {lock.name} while "
                f"holding {prev_lock.name}, both of class {key.label}; if this nesting "
                f"is intended, take the inner one with acquire_nested()"
            )
            cycle = f"{key.label} -> {key.label}"
        else:
            order = " -> ".join([path[0].before] + [e.after for e in path])
            summary = (
                f"possible deadlock: {state.name} takes {key.label} while holding "
                f"{prev_key.label}, but the opposite order {order} was taken before "
                f"(first by {path[0].thread})"
            )
            cycle = " -> ".join([prev_key.label] + [e.before for e in path] + [prev_key.label])
        chain = [f"new:      {new}"] + [f"existing: {e.describe()}" for e in path]
        stacks = {state.name: stack}
        for edge in path:
            stacks.setdefault(f"{edge.thread} (first {edge.before} -> {edge.after})", edge.stack)
        threads = [state.name] + [e.thread for e in path if e.thread != state.name]
        locks = [prev_lock.name, lock.name] + [n for e in path for n in (e.held, e.taken)]
        return Verdict(
            kind="lock-order",
            summary=summary,
            source="lockdep",
            threads=list(dict.fromkeys(threads)),
            locks=list(dict.fromkeys(locks)),
            lock_classes=[prev_key.cls.name, key.cls.name]
            + [n.split("/")[0] for e in path for n in (e.before, e.after)],
            chain=chain,
            stacks=stacks,
            evidence={
                "new_dependency": f"{prev_key.label} -> {key.label}",
                "existing_chain": [e.describe() for e in path],
                "cycle": cycle,
                "held": held_names,
            },
            culprits=[state.name],
            at_s=self.monitor.now_s(),
        )
