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
import contextlib
import itertools
import weakref
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled
from stress.lockcore import WAKE_CHUNK_S, Histogram, LockBase, Mode, Waiter
from stress.lockdep import LockClass, LockKey
from stress.sites import Site, creation_site
from stress.threads import (
    ThreadState,
    _tls,
    held_list,
    new_thread,
    note_failed,
)
from stress.tsync_order import instance_order

if TYPE_CHECKING:
    from stress.monitor import Monitor

#: A waiter woken this many times only to lose the lock again gets it handed over.
HANDOFF_MISSES = 4

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
        # No watchdog mark to clear (Mutex clears its own): a mark names the acquisition
        # (count) it was made for, so a new hold never inherits an old one's start.
        held.append(self)
        self._owner = state
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
        if mon.running and mon.cancelled:
            # Got it as the run was cancelled: a contended wait after cancellation ends
            # in Cancelled, however the race between the wake-ups went.
            self._give_back_taken(held)
            raise Cancelled(mon.cancel_reason)
        return True

    def _give_back_taken(self, held: list[Any]) -> None:
        if held[-1] is self:
            held.pop()
        self._owner = None
        self._word.release()
        if self._waiters:
            self._kick()

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
            instance_order(self, prev_lock, held)
            return
        self._cls.graph.check(held, key, self)

    # -- introspection -------------------------------------------------------------

    def holders(self) -> list[tuple[ThreadState, Mode, float | None]]:
        owner = self._owner
        if owner is None or not self._word.locked():
            return []
        mark = self._seen
        since = (
            mark[1]
            if mark is not None and mark[0] is owner and mark[2:] in ((), (self._nacq,))
            else None
        )
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

    __slots__ = ("_released",)

    leak_on_exit = "never"  # released by another thread is legal: no owner

    def __init__(self, *, monitor: Monitor | None = None, site: Site | None = None) -> None:
        super().__init__(monitor, site)
        #: Whether release() was ever called: until then only with-blocks end its
        #: holds, and a block's exit is its own taker's.
        self._released = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            _check_timeout(blocking, timeout)
        if self._word.acquire(False):
            try:
                held = _tls.held
            except AttributeError:
                held = new_thread()
            state = held[0]
            prev = held[-1]
            if prev is not state and blocking and timeout < 0:
                key = self._key
                if self._serial not in prev._later if prev._key is key else key not in prev._after:
                    self._order(held, key)
            # _took(), inlined: the fast path is what a lock-heavy test pays for.
            held.append(self)
            self._owner = state
            self._nacq += 1
            if state.trying:
                state.trying.pop(self, None)
            return True
        return self._slow_acquire(held_list(), blocking, timeout)

    def __enter__(self) -> bool:
        # acquire() with its defaults, inlined once more: a with-block is the common case.
        if self._word.acquire(False):
            try:
                held = _tls.held
            except AttributeError:
                held = new_thread()
            state = held[0]
            prev = held[-1]
            if prev is not state:  # something held: check the order
                key = self._key
                # A known order costs one set lookup: two locks of one class (instances),
                # or of two classes.
                if self._serial not in prev._later if prev._key is key else key not in prev._after:
                    self._order(held, key)
            held.append(self)
            self._owner = state
            self._nacq += 1
            if state.trying:
                state.trying.pop(self, None)
            return True
        return self._slow_acquire(held_list(), True, -1)

    def release(self) -> None:
        self._released = True
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

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        # release(), inlined for the common case: a block ending normally, its lock the
        # innermost hold.  Of a lock only ever taken and given back by with-blocks, the
        # block's own thread is the owner: its held list is reached through the owner,
        # not the thread-local (a lookup a lock-heavy test would pay twice per lock).
        # A lock released by a call may have been handed to another thread inside the
        # block: a signal, which the general path below tells apart.
        owner = self._owner
        if owner is not None and exc_type is None and not self._released:
            held = owner.held
            if held[-1] is self:
                held.pop()
                self._owner = None
                self._word.release()
                if self._waiters:
                    self._kick()
                return
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
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
    leak_on_exit = "waited"

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
            if len(held) > 1 and blocking and timeout < 0:
                prev = held[-1]
                key = self._key
                if self._serial not in prev._later if prev._key is key else key not in prev._after:
                    self._order(held, key)
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
        # release(), inlined: a Condition's with-block is an RLock's.
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        if self._owner is held[0]:
            self._count -= 1
            if not self._count:
                self._give_back(held)
        elif not self._exit_failed(exc_type):
            raise RuntimeError("cannot release un-acquired lock")

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
