"""The instrumented mutex (spinlock stand-in), plain and timed.

Fast path.  The lock word is a one-element list: `pop()` takes the token,
`append()` returns it; both are single C calls, atomic under the GIL, with no
argument parsing (threading.Lock.acquire(False) costs more than both).  The taker
pushes the lock on its thread's held list, which is at once its ownership
record, the watchdog's view of what it holds and lockdep's held stack; lockdep's
known-chain cache is one set lookup, skipped when nothing else is held.  Release
pops the held list: a wrong top means an out-of-order release or a non-owner,
both handled off the fast path.

Contention.  A release leaves the lock up for grabs and wakes the first waiter,
so the releasing thread can take it again without a thread switch (strict FIFO
would make every contended acquisition wait for the GIL to move: a convoy).  A
waiter that lost the race HANDOFF_MISSES times gets the lock handed to it
directly, so waits stay bounded as with the kernel's ticket spinlocks;
fair=False never hands over, and then a waiter can starve.  Taking a lock one already holds is a
self-deadlock.

Unlocking a lock one does not hold is misuse (NotOwnerError) unless the lock
stands in for a kernel spinlock (`strict=False`): spin_unlock checks nothing, so
the unlock is recorded as a stray unlock (`Monitor.stray_unlock`) and the run
goes on; the lock the thread meant to release stays held, with no holder inside
its critical section, and the watchdog names it (see `stress.leaks`).  The books
stay straight: a stray unlock frees nothing (on a real spinlock it would free
the lock from under its holder, or upset a free ticket lock).
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress.errors import Cancelled, NotOwnerError, SelfDeadlockError
from stress.lockcore import Histogram, LockBase, Mode, Nested, Waiter, check_timeout
from stress.threads import ThreadState, _tls, held_list, holders_of, new_thread, note_failed

if TYPE_CHECKING:
    from stress.lockdep import LockKey
    from stress.monitor import Monitor

#: A waiter woken this many times only to find the lock taken again gets it handed over.
HANDOFF_MISSES = 4


class Mutex(LockBase):
    """A non-recursive mutex with a lock class and an instance name."""

    __slots__ = ("_free", "_seen", "fair", "strict")

    #: Counting every acquisition would cost the fast path a tenth of its time;
    #: TimedMutex counts them.
    counts_acquisitions = False

    def __init__(
        self,
        lock_class: str = "mutex",
        name: str | None = None,
        *,
        monitor: Monitor | None = None,
        fair: bool = True,
        subclass: int = 0,
        strict: bool = True,
    ) -> None:
        super().__init__(lock_class, name, monitor, subclass)
        self._free = [True]
        #: The watchdog's mark on the hold it saw; every acquisition clears it, so a
        #: mark still there at the next poll proves the hold never ended.
        self._seen: tuple[ThreadState, float] | None = None
        self.fair = fair
        #: False for a kernel spinlock's stand-in: an unlock by a non-holder is recorded.
        self.strict = strict

    # -- fast paths ----------------------------------------------------------------------

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            check_timeout(blocking, timeout)
        try:
            self._free.pop()
        except IndexError:
            pass  # taken: wait outside the handler, or Cancelled would chain this IndexError
        else:
            try:
                held = _tls.held
            except AttributeError:
                held = new_thread()
            if len(held) > 1 and blocking and self._key not in held[-1]._after:
                self._order(held, self._key)
            held.append(self)
            self._seen = None
            return True
        return self._contended(blocking, timeout, self._key)

    def release(self) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        top = held.pop()
        if top is not self:
            self._release_slow(held, top)
            return
        self._free.append(True)
        if self._waiters:
            self._kick()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        # release(), inlined: a with-block then costs one call less.
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        top = held.pop()
        if top is not self:
            self._release_slow(held, top)
            return
        self._free.append(True)
        if self._waiters:
            self._kick()

    def locked(self) -> bool:
        return not self._free

    def acquire_nested(self, subclass: int = 1, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock as nesting subclass `subclass` (lockdep's spin_lock_nested)."""
        if timeout != -1:
            check_timeout(blocking, timeout)
        key = self._cls.key(subclass)
        try:
            self._free.pop()
        except IndexError:
            pass
        else:
            self._took(held_list(), key, blocking)
            return True
        return self._contended(blocking, timeout, key)

    # -- slow paths ----------------------------------------------------------------------

    def _took(self, held: list[Any], key: LockKey, check: bool) -> None:
        if check and len(held) > 1 and key not in held[-1]._after:
            self._order(held, key)
        held.append(self if key is self._key else Nested(self, key))
        self._seen = None
        self._nacq += 1

    def _contended(self, blocking: bool, timeout: float, key: LockKey) -> bool:
        held = held_list()
        state: ThreadState = held[0]
        state.nslow += 1
        if not blocking:
            note_failed(state, self, perf_counter())  # a livelock verdict names the lock
            return False
        mon = self._mon
        if mon.cancelled:
            raise Cancelled(mon.cancel_reason)
        if state.holds(self):
            return self._self_deadlock(state, timeout)
        if len(held) > 1 and key not in held[-1]._after:
            self._order(held, key)  # before waiting: an inversion is named before it hangs
        mon.adopt(state)
        waiter = Waiter(state, self, "lock")
        with self._guard:
            self._waiters.append(waiter)
            state.waiting = waiter
        if not self._block(waiter, None if timeout < 0 else perf_counter() + timeout):
            note_failed(state, self, perf_counter())
            return False
        self._ncont += 1  # an acquisition that had to wait (timeouts and cancels are none)
        self._took(held, key, False)
        if mon.cancelled:
            self.release()
            raise Cancelled(mon.cancel_reason)
        return True

    def _self_deadlock(self, state: ThreadState, timeout: float) -> bool:
        if timeout >= 0:
            return False  # a bounded wait on oneself just times out
        mon = self._mon
        if not mon.running:
            raise SelfDeadlockError(self.name, state.name)
        waiter = Waiter(state, self, "lock")
        with self._guard:
            self._waiters.append(waiter)
            state.waiting = waiter
        mon.self_deadlock(state, self, waiter)
        self._block(waiter, None)  # only cancellation ends this wait
        raise Cancelled(mon.cancel_reason)  # pragma: no cover - _block raised already

    def _take_locked(self, waiter: Waiter) -> bool:
        # Newcomers may barge in, but waiters never overtake one another.
        if not self._free or self._waiters[0] is not waiter:
            return False
        self._free.pop()
        self._waiters.remove(waiter)
        return True

    def _kick(self) -> None:
        """After a release: everyone waiting saw it go by; wake or hand over."""
        with self._guard:
            for waiter in self._waiters:
                waiter.passed += 1
            self._kick_locked()

    def _kick_locked(self) -> None:
        waiters = self._waiters
        if not waiters or not self._free:
            return
        head = waiters[0]
        if self.fair and head.misses >= HANDOFF_MISSES:
            self._free.pop()
            waiters.popleft()
            head.grant_locked()
        else:
            head.signal_locked()  # up for grabs: the head competes with newcomers

    def _release_slow(self, held: list[Any], top: Any) -> bool:
        """An out-of-order release (True), or one by a thread that does not hold it (False)."""
        held.append(top)
        for i in range(len(held) - 1, 0, -1):
            if getattr(held[i], "lock", held[i]) is self:
                del held[i]
                break
        else:
            state: ThreadState = held[0]
            if self.strict:
                raise NotOwnerError(self.name, state.name, [s.name for s in holders_of(self)])
            self._mon.stray_unlock(state, self)
            return False
        self._free.append(True)
        if self._waiters:
            self._kick()
        return True

    # -- introspection -------------------------------------------------------------------

    def holders(self) -> list[tuple[ThreadState, Mode, float | None]]:
        return [(s, "lock", self._hold_since(s)) for s in holders_of(self)]

    def _hold_since(self, state: ThreadState) -> float | None:
        mark = self._seen  # set by the watchdog when it first saw this hold
        return mark[1] if mark is not None and mark[0] is state else None


class TimedMutex(Mutex):
    """A Mutex that times every hold: acquisitions, hold histograms, holds in trace.json.

    Its fast paths are Mutex's, inlined, plus two clock reads, a histogram bucket
    and one append to the run's trace ring.
    """

    __slots__ = ("_ring", "_site", "_t0")

    counts_acquisitions = True

    def __init__(
        self,
        lock_class: str = "mutex",
        name: str | None = None,
        *,
        monitor: Monitor | None = None,
        fair: bool = True,
        subclass: int = 0,
        strict: bool = True,
    ) -> None:
        super().__init__(
            lock_class, name, monitor=monitor, fair=fair, subclass=subclass, strict=strict
        )
        self._hold = Histogram()
        self._ring = self._mon.trace_ring
        self._t0 = 0.0
        #: (frame, line) that took the lock, kept while it is held (where a leaked lock was
        #: taken); the line is read at once, as the frame goes on executing afterwards.
        self._site: Any = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            check_timeout(blocking, timeout)
        try:
            self._free.pop()
        except IndexError:
            pass
        else:
            try:
                held = _tls.held
            except AttributeError:
                held = new_thread()
            if len(held) > 1 and blocking and self._key not in held[-1]._after:
                self._order(held, self._key)
            held.append(self)
            self._seen = None
            self._nacq += 1
            f = sys._getframe(1)
            self._site = (f, f.f_lineno)
            self._t0 = perf_counter()
            return True
        if self._contended(blocking, timeout, self._key):
            f = sys._getframe(1)
            self._site = (f, f.f_lineno)
            self._t0 = perf_counter()
            return True
        return False

    __enter__ = acquire

    def acquire_nested(self, subclass: int = 1, blocking: bool = True, timeout: float = -1) -> bool:
        if Mutex.acquire_nested(self, subclass, blocking, timeout):
            f = sys._getframe(1)
            self._site = (f, f.f_lineno)
            self._t0 = perf_counter()
            return True
        return False

    def release(self) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        t0 = self._t0
        top = held.pop()
        if top is not self:
            if not self._release_slow(held, top):
                return  # a stray unlock: nothing was held, nothing to time
            self._site = None
        else:
            self._site = None
            self._free.append(True)
            if self._waiters:
                self._kick()
        t1 = perf_counter()
        hold = self._hold
        assert hold is not None
        span = t1 - t0
        hold.counts[int(span * 1e6).bit_length()] += 1
        hold.total_s += span
        if span > hold.max_s:
            hold.max_s = span
        ring = self._ring
        if ring is not None:
            ring.append(("L", held[0].tid, self.name, self._cls.name, t0, t1))

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _hold_since(self, state: ThreadState) -> float | None:
        return self._t0
