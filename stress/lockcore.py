"""What every instrumented lock shares: identity, waiting, statistics, introspection.

A thread that cannot take a lock queues a `Waiter` and sleeps on the waiter's
private C lock in bounded chunks.  Releases, hand-overs and cancellation wake it
early; the chunks only bound how long a lost wake-up could cost, so no
instrumented wait can outlive its run.  The watchdog builds its wait-for graph
from these Waiters (each serves exactly one wait).

Statistics in the style of lock_stat live on each lock (a fast path increments
at most one integer); a lock class sums its live instances on demand and keeps
the sums of instances that died, so reading them costs the run nothing.
"""

from __future__ import annotations

import _thread
import weakref
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stress.errors import Cancelled
from stress.threads import ThreadState

if TYPE_CHECKING:
    from stress.lockdep import LockClass, LockKey
    from stress.monitor import Monitor

#: Longest a waiter sleeps before looking at cancellation and deadlines again.
WAKE_CHUNK_S = 0.05

Mode = Literal["lock", "read", "write"]


# -- statistics -------------------------------------------------------------------------

#: Bucket i holds durations in [2**(i-1), 2**i) microseconds; bucket 0 is < 1 us.
#: 64 buckets cover any duration, so the timed fast path needs no bounds check.
BUCKETS = 64


def bucket(seconds: float) -> int:
    return min(int(seconds * 1e6).bit_length(), BUCKETS - 1)


class Histogram:
    """Durations in log2 microsecond buckets, plus count, total and maximum."""

    __slots__ = ("counts", "max_s", "total_s")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total_s = 0.0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bucket(seconds)] += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile_us(self, q: float) -> int:
        """Upper bound of the bucket holding quantile `q` (0..1), in microseconds.

        Never above the largest duration seen: a bucket's bound may lie far beyond it.
        """
        total = self.count
        if total == 0:
            return 0
        rank = q * total
        seen = 0
        top = max(int(round(self.max_s * 1e6, 1)), 1)  # max_us as to_dict() rounds it
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return min(1 << i, top)
        return top

    def to_dict(self) -> dict[str, Any]:
        n = self.count
        return {
            "count": n,
            "mean_us": round(self.total_s / n * 1e6, 1) if n else 0.0,
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "max_us": round(self.max_s * 1e6, 1),
            # Non-empty buckets only: {"<2us": 10, "<4us": 3, ...}
            "buckets": {f"<{1 << i}us": c for i, c in enumerate(self.counts) if c},
        }


class Counted(Protocol):
    """What a lock exposes to its class's statistics."""

    def stat_counts(self) -> tuple[int | None, int, Histogram | None, Histogram | None]:
        """(acquisitions or None if not counted, contentions, wait, hold histograms)."""


class ClassStats:
    """Sums over every lock of one class, dead or alive."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self.instances = 0
        self._acquisitions = 0
        #: False once a lock that does not count acquisitions (untimed Mutex) joins.
        self._counted = True
        self._contentions = 0
        self._wait = Histogram()
        self._hold = Histogram()
        #: Longest hold the watchdog saw (holds shorter than a poll period are unseen).
        self.longest_seen_s = 0.0

    def track(self, lock: Counted) -> None:
        self._live.add(lock)
        self.instances += 1

    def retire(self, lock: Counted) -> None:
        """Keep a dying lock's counts (called from its __del__)."""
        acq, cont, wait, hold = lock.stat_counts()
        if acq is None:
            self._counted = False
        else:
            self._acquisitions += acq
        self._contentions += cont
        if wait is not None:
            self._wait.merge(wait)
        if hold is not None:
            self._hold.merge(hold)

    def to_dict(self) -> dict[str, Any]:
        acq, cont, counted = self._acquisitions, self._contentions, self._counted
        wait, hold = Histogram(), Histogram()
        wait.merge(self._wait)
        hold.merge(self._hold)
        for lock in list(self._live):
            a, c, w, h = lock.stat_counts()
            if a is None:
                counted = False
            else:
                acq += a
            cont += c
            if w is not None:
                wait.merge(w)
            if h is not None:
                hold.merge(h)
        return {
            "instances": self.instances,
            "acquisitions": acq if counted else None,
            "contentions": cont,
            "contention_pct": round(100.0 * cont / acq, 2) if acq and counted else None,
            "wait": wait.to_dict(),
            "hold": hold.to_dict(),
            "longest_hold_seen_s": round(self.longest_seen_s, 4),
        }


# -- waiting ----------------------------------------------------------------------------


class Waiter:
    """One thread waiting for one lock, for one wait only."""

    __slots__ = (
        "_evt",
        "granted",
        "lock",
        "misses",
        "mode",
        "passed",
        "sched",
        "since",
        "state",
        "timed",
        "woken",
    )

    def __init__(self, state: ThreadState, lock: Any, mode: Mode) -> None:
        self.state = state
        #: The controlled scheduler of the lock's run, if any: it parks and wakes us.
        self.sched = lock._mon.scheduler
        self.lock = lock
        self.mode = mode
        self.since = perf_counter()
        #: Releases of the lock this waiter saw go by without getting it.
        self.passed = 0
        #: Times it was woken to compete for the lock and lost the race.
        self.misses = 0
        self.granted = False
        self.woken = False
        #: A wait with a timeout: it ends by itself, so it closes no deadlock.
        self.timed = False
        self._evt = _thread.allocate_lock()
        self._evt.acquire()

    def signal_locked(self) -> None:
        """Wake the waiter (caller holds the lock's guard)."""
        if self.sched is not None:
            self.sched.wake(self)
            return
        if not self.woken:
            self.woken = True
            self._evt.release()

    def grant_locked(self) -> None:
        """Hand the lock over and wake the waiter (caller holds the lock's guard)."""
        self.granted = True
        self.signal_locked()

    def wake(self) -> None:
        """Wake the waiter to look at cancellation (from any thread)."""
        with self.lock._guard:
            self.signal_locked()

    def sleep(self, seconds: float) -> bool:
        """Sleep until signalled (True) or `seconds` passed (False)."""
        if self._evt.acquire(True, max(seconds, 0.0)):
            with self.lock._guard:
                self.woken = False  # re-arm: the next signal must wake us again
            return True
        return False

    def __repr__(self) -> str:
        return f"<Waiter {self.state.name} {self.mode} {self.lock.name}>"


class Nested:
    """Held-list entry of a lock taken under a nesting subclass."""

    __slots__ = ("_after", "_key", "lock")

    def __init__(self, lock: Any, key: LockKey) -> None:
        self.lock = lock
        self._key = key
        self._after = key.after


class LockBase:
    """Identity, lockdep hook, statistics, the wait loop and introspection."""

    __slots__ = (
        "__weakref__",
        "_after",
        "_cls",
        "_guard",
        "_hold",
        "_key",
        "_mon",
        "_nacq",
        "_ncont",
        "_wait",
        "_waiters",
        "name",
    )

    #: Whether `_nacq` counts every acquisition (the plain Mutex skips it for speed).
    counts_acquisitions = True
    #: When a thread that exits holding the lock leaked it: "always" for the harness's
    #: kernel-style locks; "waited" (once someone waits for it) for threading's RLock,
    #: which a program may leave held with nobody the worse; "never" for threading's
    #: Lock, which any thread may release, so its taker's exit proves nothing.
    leak_on_exit: str = "always"

    def __init__(
        self, lock_class: str, name: str | None, monitor: Monitor | None, subclass: int
    ) -> None:
        if monitor is None:
            from stress.monitor import default_monitor

            monitor = default_monitor()
        self._mon = monitor
        self._cls: LockClass = monitor.lock_class(lock_class)
        self._key = self._cls.key(subclass)
        self._after = self._key.after
        self.name = name or f"{lock_class}@{id(self):#x}"
        #: Guards the wait queue and hand-overs (never held while blocking).
        self._guard = _thread.allocate_lock()
        self._waiters: deque[Waiter] = deque()
        self._nacq = 0
        self._ncont = 0
        self._wait: Histogram | None = None
        self._hold: Histogram | None = None
        self._cls.stats.track(self)

    def __del__(self) -> None:
        # Half-built, or at interpreter shutdown (when even contextlib may be gone).
        try:
            self._cls.stats.retire(self)
        except Exception:
            return

    @property
    def lock_class(self) -> LockClass:
        return self._cls

    @property
    def monitor(self) -> Monitor:
        return self._mon

    def stat_counts(self) -> tuple[int | None, int, Histogram | None, Histogram | None]:
        acquisitions = self._nacq if self.counts_acquisitions else None
        return acquisitions, self._ncont, self._wait, self._hold

    def _order(self, held: list[Any], key: LockKey) -> None:
        self._cls.graph.check(held, key, self)

    def _note_hold(self, seconds: float) -> None:
        if self._hold is None:
            self._hold = Histogram()
        self._hold.add(seconds)

    def _block(self, waiter: Waiter, deadline: float | None) -> bool:
        """Sleep until the lock is ours (True), the deadline passed (False) or cancellation."""
        mon = self._mon
        sched = mon.scheduler
        if sched is not None and sched.controls_caller():
            try:
                return bool(sched.lock_wait(self, waiter, deadline))
            finally:
                if self._wait is None:
                    self._wait = Histogram()
                self._wait.add(perf_counter() - waiter.since)
        signalled = False
        try:
            while True:
                with self._guard:
                    if waiter.granted or self._take_locked(waiter):
                        return True
                    if signalled:
                        waiter.misses += 1
                    if mon.cancelled or (deadline is not None and perf_counter() >= deadline):
                        self._waiters.remove(waiter)
                        self._kick_locked()  # pass any wake-up on to the next waiter
                        if mon.cancelled:
                            raise Cancelled(mon.cancel_reason)
                        return False
                chunk = WAKE_CHUNK_S
                if deadline is not None:
                    chunk = min(chunk, deadline - perf_counter())
                signalled = waiter.sleep(chunk)
        finally:
            waiter.state.waiting = None
            if self._wait is None:
                self._wait = Histogram()
            self._wait.add(perf_counter() - waiter.since)

    def _take_locked(self, waiter: Waiter) -> bool:
        """Take the lock for `waiter` if it is free now (caller holds the guard)."""
        raise NotImplementedError

    def _kick_locked(self) -> None:
        """Wake or hand over to the next waiter after a release (caller holds the guard)."""
        raise NotImplementedError

    # -- introspection -------------------------------------------------------------------

    def holders(self) -> list[tuple[ThreadState, Mode, float | None]]:
        """Who holds the lock now: (thread, mode, perf_counter time since, if known)."""
        raise NotImplementedError

    def blockers(self, waiter: Waiter) -> list[tuple[ThreadState, str, float | None]]:
        """Who keeps `waiter` waiting: (thread, "lock"/"read"/"write"/"queued", since)."""
        return list(self.holders())

    def waiters(self) -> list[Waiter]:
        """Who waits for the lock now, in queue order."""
        return [w for w in list(self._waiters) if not w.granted]

    def info(self) -> dict[str, Any]:
        now = perf_counter()
        return {
            "name": self.name,
            "class": self._cls.name,
            "holders": [
                {"thread": s.name, "mode": m, "held_s": None if t is None else round(now - t, 4)}
                for s, m, t in self.holders()
            ],
            "waiters": [
                {"thread": w.state.name, "mode": w.mode, "waited_s": round(now - w.since, 4)}
                for w in self.waiters()
            ],
            "acquisitions": self._nacq if self.counts_acquisitions else None,
            "contentions": self._ncont,
        }

    def __repr__(self) -> str:
        now = perf_counter()
        parts = []
        for state, mode, since in self.holders():
            how = "held" if mode == "lock" else f"{mode}-held"
            dur = "" if since is None else f" for {max(now - since, 0.0):.1f} s"
            parts.append(f"{how} by {state.name}{dur}")
        waiting = len(self.waiters())
        text = ", ".join(parts) or "free"
        if waiting:
            text += f", {waiting} waiter{'s' if waiting > 1 else ''}"
        return f"<{self.name} class={self._cls.name} {text}>"


def check_timeout(blocking: bool, timeout: float) -> None:
    """The same rules and messages as threading.Lock.acquire."""
    if not blocking and timeout != -1:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0 and timeout != -1:
        raise ValueError("timeout value must be a non-negative number")
