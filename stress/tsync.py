"""threading.Lock and threading.RLock, instrumented: drop-in types with threading's rules.

`stress.Mutex` is the kernel's spinlock: only its owner may release it, and taking it
twice is a self-deadlock.  `threading.Lock` is not: any thread may release it, taking it
again blocks until somebody does, a non-blocking try on a held lock just says False,
and Python's own code relies on all of it (Condition's waiter locks, Thread's state
lock, locks used as signals).  These types keep threading's contract - CPython's
Lib/test/lock_tests.py runs against them in the test suite - and add what the harness
needs: a lock class, lockdep, holders and waiters the watchdog can see, statistics.

Lock classes are keyed by creation site, as lockdep keys them by their static key:
every lock made at `bank.py:12` is one class, named by that site; an instance is named
after what it was assigned to, `self.lock@bank.py:12#3`.  Locks made inside the standard
library on behalf of user code (a Queue's mutex) name the user's line too.

What threading allows and lockdep must not misread:
- A lock released by a thread other than its taker is a signal, not a critical
  section: from then on neither it nor its class takes part in lock ordering, and a
  thread waiting for it while "holding" it is waiting for a signal, not deadlocked.
- Waiting for a lock the waiter itself holds blocks until another thread releases it:
  it becomes a self-deadlock verdict only after verdict_s, and never for a signal.
- Two locks of one class nested (parent and child nodes, say) are ordered per
  instance: only taking two of them in both orders is an inversion.
- A timed or non-blocking acquisition cannot hang for ever: it orders nothing.

Waits wake to look at cancellation, but only while their monitor runs: objects made
during a watched test keep working, as plain threading objects, after it ended.
"""

from __future__ import annotations

import _thread
import ast
import contextlib
import itertools
import linecache
import os
import sys
import sysconfig
import weakref
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled
from stress.lockcore import WAKE_CHUNK_S, Histogram, LockBase, Mode, Waiter
from stress.lockdep import Edge, LockClass, Lockdep, LockKey
from stress.threads import (
    ThreadState,
    _tls,
    capture_current,
    held_list,
    new_thread,
    note_failed,
    where,
)
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.monitor import Monitor

#: A waiter woken this many times only to lose the lock again gets it handed over.
HANDOFF_MISSES = 4
#: Instance-order dependencies kept per run (then no new ones are recorded).
MAX_INSTANCE_EDGES = 100_000

_serials = itertools.count(1)
#: Monitors of the instrument_threading blocks in force, innermost last.
_active: list[Monitor] = []
#: Lock classes some lock of which was released by a thread that did not take it, by
#: id (a dict lookup is what the ordering path can afford), with a check against reuse.
_signal_classes: dict[int, weakref.ref[LockClass]] = {}


def _signal_class(cls: Any) -> bool:
    ref = _signal_classes.get(id(cls))
    return ref is not None and ref() is cls


def active_monitor() -> Monitor:
    """The monitor of the innermost instrument_threading block, else the default one."""
    if _active:
        return _active[-1]
    from stress.monitor import default_monitor

    return default_monitor()


# -- creation sites -------------------------------------------------------------------

_STDLIB = os.path.normpath(sysconfig.get_paths()["stdlib"]) + os.sep
_PURELIB = os.path.normpath(sysconfig.get_paths()["purelib"]) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: (id of the code object, instruction) -> (the code object, its site).  Not keyed by the
#: code object itself: code objects compare by value, and two files may hold equal ones.
_sites: dict[tuple[int, int], tuple[Any, tuple[str, str, bool]]] = {}
_counts: dict[str, int] = {}


def _short(path: str) -> str:
    path = os.path.normpath(path)
    for base in (_STDLIB, _PURELIB):
        if path.startswith(base):
            return path[len(base) :]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _target(line: str, col: int) -> str:
    """What the call at column `col` of `line` is assigned to (`self.lock`), if anything."""
    text = line.strip()
    indent = len(line) - len(line.lstrip())
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return ""
    col -= indent
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    for t, v in zip(target.elts, value.elts, strict=False):
                        if v.col_offset <= col < (v.end_col_offset or 0):
                            return ast.unparse(t)
                elif value.col_offset <= col < (value.end_col_offset or 0):
                    return ast.unparse(target)
    return ""


def _site(code: Any, lasti: int) -> tuple[str, str, bool]:
    """(class name, what the lock is assigned to, whether the site is library code) of
    the instruction at `lasti` of `code`; computed once per site."""
    key = (id(code), lasti)
    cached = _sites.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    filename = code.co_filename
    lineno, col = 0, -1
    for i, pos in enumerate(code.co_positions()):
        if i == lasti // 2:
            lineno = pos[0] or 0
            col = pos[2] if pos[2] is not None else -1
            break
    line = linecache.getline(filename, lineno)
    target = _target(line, col) if col >= 0 else ""
    path = os.path.normpath(os.path.abspath(filename))
    library = path.startswith((_STDLIB, _PURELIB, _HERE))
    known = (f"{_short(filename)}:{lineno}", target, library)
    _sites[key] = (code, known)
    return known


class Site:
    """Where a lock was made: its class name, and the name of this instance."""

    __slots__ = ("cls", "name")

    def __init__(self, cls: str, name: str) -> None:
        self.cls = cls
        self.name = name


def creation_site(depth: int, kind: str) -> Site:
    """The site of the caller `depth` frames up (1: the caller of the function calling this)."""
    frame: Any = sys._getframe(depth + 1)
    cls, target, library = _site(frame.f_code, frame.f_lasti)
    label = f"{target or kind}@{cls}"
    if library:
        # A lock the standard library makes for the user: say for which line of theirs.
        outer = frame.f_back
        while outer is not None and _site(outer.f_code, outer.f_lasti)[2]:
            outer = outer.f_back
        if outer is not None and outer.f_code.co_name != "<module>":
            label += f" (for {_site(outer.f_code, outer.f_lasti)[0]})"
    n = _counts[label] = _counts.get(label, 0) + 1
    return Site(cls, label if n == 1 else f"{label}#{n}")


#: (id of the monitor, class name) -> (the monitor, weakly, its LockClass).
_classes: dict[tuple[int, str], tuple[weakref.ref[Any], LockClass]] = {}


def _class_of(mon: Monitor, name: str) -> LockClass:
    key = (id(mon), name)
    known = _classes.get(key)
    if known is not None and known[0]() is mon:
        return known[1]
    cls = mon.lock_class(name)
    if len(_classes) > 50_000:
        _classes.clear()  # old runs' entries: start over
    _classes[key] = (weakref.ref(mon), cls)
    return cls


def _check_timeout(blocking: bool, timeout: float) -> None:
    """threading.Lock.acquire's rules and messages."""
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > _thread.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")


# -- the shared machinery -------------------------------------------------------------


class _ThreadingLock(LockBase):
    """What Lock and RLock share: a C lock as the lock word, an owner, waiting, ordering."""

    __slots__ = ("_later", "_owner", "_seen", "_serial", "_signal", "_word")

    counts_acquisitions = True
    #: A success forgets the taker's failed tries (so a livelock is provable).
    clears_failures = True
    kind = "Lock"

    def __init__(self, monitor: Monitor | None, site: Site | None) -> None:
        if site is None:
            site = creation_site(2, self.kind)
        mon = monitor or active_monitor()
        # LockBase.__init__'s fields, with the class looked up once per run and site:
        # threading objects are made by the thousand (a Future, a Thread, a Queue).
        self._mon = mon
        self._cls = cls = _class_of(mon, site.cls)
        self._key = cls.key(0)
        self._after = self._key.after
        self.name = site.name
        self._guard = _thread.allocate_lock()
        self._waiters = deque()
        self._nacq = 0
        self._ncont = 0
        self._wait = None
        self._hold = None
        cls.stats.track(self)
        self._word = _thread.allocate_lock()
        self._owner: ThreadState | None = None
        self._seen: tuple[ThreadState, float] | None = None
        self._signal = False
        self._serial = next(_serials)
        #: Serials of locks of its own class already validated as taken after it.
        self._later: set[int] = set()

    # -- taking --------------------------------------------------------------------

    def _took(self, held: list[Any], state: ThreadState) -> None:
        held.append(self)
        self._owner = state
        self._seen = None
        self._nacq += 1
        if state.trying:
            state.trying.pop(self, None)

    def _slow_acquire(self, held: list[Any], blocking: bool, timeout: float) -> bool:
        state: ThreadState = held[0]
        state.nslow += 1
        mon = self._mon
        stop = mon.running and mon.cancelled
        if not blocking:
            note_failed(state, self, perf_counter())
            if stop:  # a thread retrying for ever stops at its next failed try
                raise Cancelled(mon.cancel_reason)
            return False
        if stop:
            raise Cancelled(mon.cancel_reason)
        if timeout < 0 and len(held) > 1 and self._key not in held[-1]._after:
            self._order(held, self._key)  # before waiting: named before it hangs
        if mon.running:
            mon.adopt(state)
        waiter = Waiter(state, self, "lock")
        waiter.timed = timeout >= 0
        with self._guard:
            self._waiters.append(waiter)
            state.waiting = waiter
        if not self._block(waiter, None if timeout < 0 else perf_counter() + timeout):
            note_failed(state, self, perf_counter())
            return False
        self._ncont += 1
        self._took(held, state)
        return True

    def _block(self, waiter: Waiter, deadline: float | None) -> bool:
        """Sleep until the lock word is ours (True) or the deadline passed (False).

        Raises Cancelled when the run is cancelled while it runs; an exception raised
        in the sleep (a signal handler's) leaves the queue in order and the lock free.
        """
        mon = self._mon
        signalled = False
        try:
            while True:
                with self._guard:
                    if waiter.granted or self._take_locked(waiter):
                        return True
                    if signalled:
                        waiter.misses += 1
                    stop = mon.running and mon.cancelled
                    if stop or (deadline is not None and perf_counter() >= deadline):
                        self._waiters.remove(waiter)
                        self._kick_locked()
                        if stop:
                            raise Cancelled(mon.cancel_reason)
                        return False
                chunk = WAKE_CHUNK_S
                if deadline is not None:
                    chunk = min(chunk, deadline - perf_counter())
                try:
                    signalled = waiter.sleep(chunk)
                except BaseException:
                    self._abandon(waiter)
                    raise
        finally:
            waiter.state.waiting = None
            if self._wait is None:
                self._wait = Histogram()
            self._wait.add(perf_counter() - waiter.since)

    def _abandon(self, waiter: Waiter) -> None:
        with self._guard:
            if waiter.granted:
                self._word.release()  # handed over to a wait that is going away
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._kick_locked()

    def _take_locked(self, waiter: Waiter) -> bool:
        # Newcomers may barge in, but waiters never overtake one another.
        if self._waiters[0] is not waiter or not self._word.acquire(False):
            return False
        self._waiters.popleft()
        return True

    def _kick(self) -> None:
        with self._guard:
            for waiter in self._waiters:
                waiter.passed += 1
            self._kick_locked()

    def _kick_locked(self) -> None:
        waiters = self._waiters
        if not waiters or self._word.locked():
            return
        head = waiters[0]
        if head.misses >= HANDOFF_MISSES and self._word.acquire(False):
            waiters.popleft()
            head.grant_locked()
        else:
            head.signal_locked()

    # -- giving back ---------------------------------------------------------------

    def _drop(self, held: list[Any]) -> None:
        """Take the lock off the held list it is on: ours, or its taker's."""
        if not self._word.locked():
            raise RuntimeError("release unlocked lock")
        for i in range(len(held) - 1, 0, -1):
            if held[i] is self:
                del held[i]
                return
        owner = self._owner
        if owner is not None and owner is not held[0]:
            # Released by a thread that did not take it: a signal, not a critical section.
            self._signal = True
            _signal_classes[id(self._cls)] = weakref.ref(self._cls)
            with contextlib.suppress(ValueError):
                owner.held.remove(self)

    def _exit_failed(self, exc_type: type[BaseException] | None) -> bool:
        """Whether a with-block may end without the lock: while Cancelled unwinds it (a
        Condition's wait raised before it took the lock back)."""
        return exc_type is not None and issubclass(exc_type, Cancelled)

    # -- ordering ------------------------------------------------------------------

    def _order(self, held: list[Any], key: LockKey) -> None:
        prev = held[-1]
        prev_lock = getattr(prev, "lock", prev)
        if prev_lock._key is key and self._serial in prev_lock._later:
            return  # this pair of one class, in this order, is known
        if (
            self._signal
            or getattr(prev_lock, "_signal", False)
            or _signal_class(self._cls)
            or _signal_class(getattr(prev_lock, "lock_class", None))
        ):
            return
        if prev_lock is self:
            return  # taking it again: a wait for another thread's release, not an order
        if getattr(prev, "_key", None) is key and isinstance(prev_lock, _ThreadingLock):
            _instance_order(self, prev_lock, held)
            return
        self._cls.graph.check(held, key, self)

    # -- introspection -------------------------------------------------------------

    def holders(self) -> list[tuple[ThreadState, Mode, float | None]]:
        owner = self._owner
        if owner is None or not self._word.locked():
            return []
        mark = self._seen
        since = mark[1] if mark is not None and mark[0] is owner else None
        return [(owner, "lock", since)]

    def blockers(self, waiter: Waiter) -> list[tuple[ThreadState, str, float | None]]:
        holders = self.holders()
        if holders and holders[0][0] is waiter.state:
            # Waiting for a lock it holds: threading allows it (another thread may
            # release it), so it is a self-deadlock only after verdict_s, and never for
            # a lock used as a signal.
            waited = perf_counter() - waiter.since
            if self._signal or _signal_class(self._cls):
                return []
            if waited < self._mon.config.verdict_s:
                return []
        return list(holders)

    def locked(self) -> bool:
        return self._word.locked()

    def _at_fork_reinit(self) -> None:
        self._word = _thread.allocate_lock()
        self._guard = _thread.allocate_lock()
        self._waiters = deque()
        self._owner = None
        held = held_list()
        if self in held[1:]:
            held.remove(self)

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        holders = self.holders()
        now = perf_counter()
        who = ""
        if holders:
            owner, _, since = holders[0]
            dur = "" if since is None else f" for {now - since:.1f} s"
            who = f" held by {owner.name}{dur}"
        waiting = len(self.waiters())
        if waiting:
            who += f", {waiting} waiter{'s' if waiting > 1 else ''}"
        return self._repr(state, who)

    def _repr(self, state: str, who: str) -> str:
        return f"<{state} stress.{self.kind} object {self.name}{who} at {id(self):#x}>"


class Lock(_ThreadingLock):
    """threading.Lock with a lock class (its creation site), lockdep, holders, waiters."""

    __slots__ = ()

    def __init__(self, *, monitor: Monitor | None = None, site: Site | None = None) -> None:
        super().__init__(monitor, site)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            _check_timeout(blocking, timeout)
        if self._word.acquire(False):
            try:
                held = _tls.held
            except AttributeError:
                held = new_thread()
            if len(held) > 1 and blocking and timeout < 0 and self._key not in held[-1]._after:
                self._order(held, self._key)
            # _took(), inlined: the fast path is what a lock-heavy test pays for.
            held.append(self)
            state = held[0]
            self._owner = state
            self._seen = None
            self._nacq += 1
            if state.trying:
                state.trying.pop(self, None)
            return True
        return self._slow_acquire(held_list(), blocking, timeout)

    __enter__ = acquire

    def release(self) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        if held[-1] is self:
            held.pop()
        else:
            self._drop(held)
        self._owner = None
        self._word.release()
        if self._waiters:
            self._kick()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        if held[-1] is self:  # release(), inlined
            held.pop()
            self._owner = None
            self._word.release()
            if self._waiters:
                self._kick()
            return
        if self._exit_failed(exc_type) and self._owner is not held[0]:
            return  # its wait raised before it took the lock back: not ours to release
        self.release()

    def _is_owned(self) -> bool:
        # threading.Condition's rule for a plain Lock: "owned" means locked by anyone.
        return self._word.locked()


class RLock(_ThreadingLock):
    """threading.RLock with a lock class (its creation site), lockdep, holders, waiters."""

    __slots__ = ("_count",)

    kind = "RLock"

    def __init__(self, *, monitor: Monitor | None = None, site: Site | None = None) -> None:
        super().__init__(monitor, site)
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            _check_timeout(blocking, timeout)
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        state = held[0]
        if self._owner is state:
            self._count += 1
            return True
        if self._word.acquire(False):
            if len(held) > 1 and blocking and timeout < 0 and self._key not in held[-1]._after:
                self._order(held, self._key)
            self._took(held, state)
            self._count = 1
            return True
        if self._slow_acquire(held, blocking, timeout):
            self._count = 1
            return True
        return False

    __enter__ = acquire

    def release(self) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        if self._owner is not held[0]:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count:
            return
        self._give_back(held)

    def _give_back(self, held: list[Any]) -> None:
        if held[-1] is self:
            held.pop()
        else:
            self._drop(held)
        self._owner = None
        self._word.release()
        if self._waiters:
            self._kick()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.release()
        except RuntimeError:
            if not self._exit_failed(exc_type):
                raise

    def _is_owned(self) -> bool:
        return self._owner is held_list()[0]

    def _release_save(self) -> tuple[int, int | None]:
        held = held_list()
        state: ThreadState = held[0]
        if self._owner is not state:
            raise RuntimeError("cannot release un-acquired lock")
        count, self._count = self._count, 0
        self._give_back(held)
        return count, state.ident

    def _acquire_restore(self, saved: tuple[int, int | None]) -> None:
        self.acquire()
        self._count = saved[0]

    def _recursion_count(self) -> int:
        return self._count if self._owner is held_list()[0] else 0

    def _at_fork_reinit(self) -> None:
        super()._at_fork_reinit()
        self._count = 0

    def _repr(self, state: str, who: str) -> str:
        owner = self._owner
        ident = owner.ident if owner is not None and self.locked() else 0
        return (
            f"<{state} stress.RLock object {self.name}{who} owner={ident} "
            f"count={self._count} at {id(self):#x}>"
        )


# -- ordering two locks of one class ----------------------------------------------------


class _Instances:
    """Per run: which lock instance was taken while holding which, within one class."""

    def __init__(self) -> None:
        self.after: dict[int, set[int]] = {}
        self.edges: dict[tuple[int, int], Edge] = {}


_instances: weakref.WeakKeyDictionary[Lockdep, _Instances] = weakref.WeakKeyDictionary()


def _instance_order(lock: _ThreadingLock, prev: _ThreadingLock, held: list[Any]) -> None:
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
    prev: _ThreadingLock,
    lock: _ThreadingLock,
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
