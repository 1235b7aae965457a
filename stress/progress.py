"""The watchdog's checks that need a thread's history: starvation, livelock and stall.

starvation   a waiter passed over while the lock changed hands starve_grants times
livelock     a thread whose trylocks on a lock keep failing while the lock changes
             hands (locks that forget a thread's failures when it succeeds prove it:
             stress.tsync's do); a tracked thread busy (on a CPU, retrying, stepping)
             with no operation done
stall        a tracked thread holding or waiting for a lock of the run that neither
             runs nor completes anything, unexplained; a thread asleep outside any
             lock is never one, and neither is one that only lacks a CPU
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from stress import diagnosis
from stress.diagnosis import Snapshot, waiting_on
from stress.lockcore import Waiter
from stress.samples import Sample
from stress.threads import ThreadState

if TYPE_CHECKING:
    from stress.monitor import Monitor

#: A lock whose trylocks by one thread failed this often, with none succeeding while it
#: changed hands, over verdict_s, is a livelock.
LIVELOCK_FAILURES = 5
#: A thread that failed to take a lock this often lately (none succeeding) wants it as
#: much as a waiter does.
TRIED_FAILURES = 3


class ProgressChecks:
    """Part of the Watchdog: the checks on waiters and on threads that make no progress."""

    mon: Monitor
    _samples: dict[ThreadState, Sample]
    deferred: int

    def _record_or_refresh(self, key: Hashable, snap: Snapshot, build: Any) -> None:
        raise NotImplementedError

    def _starvation(
        self,
        waiting: dict[ThreadState, Waiter],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
    ) -> None:
        cfg = self.mon.config
        for state, waiter in waiting.items():
            if state in ex_threads:
                continue
            grants = waiter.passed
            if snap.now - waiter.since < cfg.verdict_s or grants < cfg.starve_grants:
                continue
            key = ("starvation", id(waiter))
            seen.add(key)
            ex_threads.add(state)
            self._record_or_refresh(key, snap, lambda w=waiter: diagnosis.starvation(w, snap))

    def _no_progress(
        self,
        states: list[ThreadState],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
    ) -> None:
        mon = self.mon
        limit = mon.config.verdict_s
        now = snap.now
        busy: dict[ThreadState, float] = {}
        idle_s: dict[ThreadState, float] = {}
        failing: dict[ThreadState, list[tuple[Any, int]]] = {}
        live: list[ThreadState] = []
        still: list[ThreadState] = []
        for state in states:
            tracked = state.tracked_by is mon
            if not (tracked or state.trying) or state.idle or state in ex_threads:
                continue  # no progress() and no failing trylocks: nothing to go by
            sample = self._samples.get(state)
            if sample is None or (tracked and now - sample.last_op < limit):
                continue
            failed, proven = self._failing(state, now, limit)
            if (not tracked and not proven) or not state.alive():
                continue
            act = snap.activity.get(state)
            idle = now - (sample.last_op if tracked else min(entry[1] for entry in proven))
            idle_s[state] = idle
            moves = sum(sample.moves) / max(len(sample.moves), 1)
            busy[state] = act.cpu if act is not None and act.cpu is not None else moves
            if failed:
                failing[state] = [(lock, entry[0]) for lock, entry in failed]
            if proven or (waiting_on(state) is None and moves >= 0.5):
                live.append(state)  # busy: on a CPU, retrying or stepping, achieving nothing
            elif now - sample.last_move >= limit and self._involved(state):
                if act is not None and act.word == "not scheduled":
                    self.deferred += 1  # it only lacks a CPU
                    continue
                still.append(state)
        self._partners(live, failing, idle_s, busy, snap, ex_threads)
        for kind, group in (("livelock", live), ("stall", still)):
            keys = [(kind, s.tid) for s in group]
            seen.update(keys)
            new = [s for s, k in zip(group, keys, strict=True) if not mon.book.is_active(k)]
            if not new:
                continue
            if kind == "livelock":
                verdict = diagnosis.livelock(new, idle_s, busy, snap, failing)
            else:
                verdict = diagnosis.stall(new, idle_s, snap)
            mon.record(verdict, keys=[(kind, s.tid) for s in new])

    def _failing(
        self, state: ThreadState, now: float, limit: float
    ) -> tuple[list[tuple[Any, list[Any]]], list[list[Any]]]:
        """Locks of this run whose trylocks by `state` failed lately, and proven streaks.

        A streak is proven when the lock forgets a thread's failures on its success
        (stress.tsync's locks do): then `LIVELOCK_FAILURES` failures over `limit`
        seconds, the latest recent, mean it never got it - a livelock if meanwhile the
        lock changed hands (everyone retries in lockstep) or its holder keeps failing
        too (each holds what the other retries: a deadlock that spins).  A lock one
        thread simply holds all along is a long hold, not a livelock.
        """
        trying = state.trying
        if not trying:
            return [], []
        failed: list[tuple[Any, list[Any]]] = []
        proven: list[list[Any]] = []
        for lock, entry in list(trying.items()):
            fails, first, last, acquired = entry
            if now - last > 2 * limit:
                trying.pop(lock, None)  # an old story
                continue
            if getattr(lock, "monitor", None) is not self.mon or now - last > limit:
                continue
            failed.append((lock, entry))
            if (
                getattr(lock, "clears_failures", False)
                and fails >= LIVELOCK_FAILURES
                and now - first >= limit
                and now - last < limit / 2
                and (lock._nacq - acquired >= 2 or self._holder_retries(lock, now, limit))
            ):
                proven.append(entry)
        return failed, proven

    def _partners(
        self,
        live: list[ThreadState],
        failing: dict[ThreadState, list[tuple[Any, int]]],
        idle_s: dict[ThreadState, float],
        busy: dict[ThreadState, float],
        snap: Snapshot,
        ex_threads: set[ThreadState],
    ) -> None:
        """Add to a livelock the holders of its locks that keep retrying too (one verdict
        for both sides, even if one side's streak is a poll short of proven)."""
        limit = self.mon.config.verdict_s
        for state in list(live):
            for lock, _ in failing.get(state, []):
                for holder, _, _ in lock.holders():
                    if holder in live or holder in ex_threads or holder not in self._samples:
                        continue
                    failed, _ = self._failing(holder, snap.now, limit)
                    if not failed:
                        continue
                    live.append(holder)
                    failing[holder] = [(x, entry[0]) for x, entry in failed]
                    idle_s[holder] = snap.now - min(entry[1] for _, entry in failed)
                    act = snap.activity.get(holder)
                    busy[holder] = act.cpu if act is not None and act.cpu is not None else 0.0

    def _holder_retries(self, lock: Any, now: float, limit: float) -> bool:
        """Whether the lock's holder is itself failing to take some lock, lately."""
        for holder, _, _ in lock.holders():
            for other, entry in list((holder.trying or {}).items()):
                if other is not lock and entry[0] >= LIVELOCK_FAILURES and now - entry[2] < limit:
                    return True
        return False

    def _tried(self, lock: Any, states: list[ThreadState], now: float, limit: float) -> bool:
        """Whether some live thread keeps trying to take `lock` (it wants it: a waiter)."""
        for state in states:
            entry = (state.trying or {}).get(lock)
            if (
                entry is not None
                and entry[0] >= TRIED_FAILURES
                and now - entry[2] < limit / 2
                and state.alive()
            ):
                return True
        return False

    def _involved(self, state: ThreadState) -> bool:
        """Holds or waits for a lock of this run (a thread asleep elsewhere is no stall)."""
        mon = self.mon
        waiter = waiting_on(state)
        if waiter is not None and waiter.lock.monitor is mon:
            return True
        return any(getattr(x, "monitor", None) is mon for x in state.held_locks())
