"""The watchdog: one thread that looks at every worker each period and names hangs.

Each poll reads, without locks, what every thread holds, waits for and walks,
where its innermost frame is and how many operations it completed, then checks
for hangs from the most specific kind to the least:

  list-loop    a walk past its step bound (or, without one, past walk_s and still stepping)
  deadlock     a cycle in the wait-for graph (a self-deadlock is a cycle of one)
  long-hold    a lock held past its class budget by a thread not itself waiting
  starvation   a waiter passed over while the lock changed hands starve_grants times
  livelock     a thread busy (running Python, retrying, stepping) with no operation done
  stall        a thread that neither moves nor completes anything, unexplained

Threads and locks a verdict explains (the culprits and everyone queued behind
them) are left out of the later checks, so a looping walker is one list-loop,
not also a long-hold and a pile of stalls.  A condition seen poll after poll is
one episode, recorded once; its chain and counts are refreshed while it lasts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from stress import diagnosis
from stress.diagnosis import Snapshot, waiting_on
from stress.lockcore import Waiter
from stress.rwsem import RWSem
from stress.threads import ThreadState, all_threads, current_frames

if TYPE_CHECKING:
    from stress.monitor import Monitor
    from stress.walks import Walk


class _Sample:
    """What the watchdog remembers of one thread between polls."""

    __slots__ = ("activity", "last_move", "last_op", "moves", "ops", "pos")

    def __init__(self, now: float, window: int) -> None:
        self.pos: tuple[int, int] | None = None
        self.activity: tuple[int, int, int] = (-1, -1, -1)
        self.last_move = now
        self.ops = -1
        self.last_op = now
        self.moves: deque[bool] = deque(maxlen=window)


class Watchdog:
    """Polls one Monitor's threads and records verdicts through it."""

    def __init__(self, mon: Monitor) -> None:
        self.mon = mon
        cfg = mon.config
        self.period = cfg.poll_s
        self._window = max(2, round(cfg.verdict_s / cfg.poll_s))
        self._samples: dict[ThreadState, _Sample] = {}
        self._walk_steps: dict[int, int] = {}
        self._last_poll = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.busy_s = 0.0

    # -- thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._last_poll = perf_counter()
        self._thread = threading.Thread(
            target=self._run, name=f"stress-watchdog[{self.mon.name}]", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop polling; True if the thread ended within `timeout`."""
        self._stop.set()
        if self._thread is None or self._thread is threading.current_thread():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        due = perf_counter() + self.period
        # Polls are due on a fixed grid, so the poll's own time does not stretch the period.
        while not self._stop.wait(max(due - perf_counter(), 0.0)):
            start = perf_counter()
            due = max(due + self.period, start + self.period / 2)
            try:
                self.poll(start)
            except Exception as exc:  # the watchdog must outlive its own bugs
                self.mon.internal_error("watchdog", exc)
            self.busy_s += perf_counter() - start
            self.polls += 1

    def frozen(self, now: float) -> dict[ThreadState, float]:
        """Seconds since each watched thread was last seen running Python code."""
        return {
            s: now - sample.last_move
            for s, sample in list(self._samples.items())
            if now - sample.last_move >= 2 * self.period
        }

    # -- one poll ----------------------------------------------------------------------

    def poll(self, now: float) -> None:
        mon = self.mon
        states = self._states()
        snap = Snapshot(now, mon.t0, current_frames())
        self._sample(states, snap)
        holds = self._scan_holds(states, now)
        if mon.cancelled:
            # Threads unwinding after cancellation are not new hangs; keep only the samples.
            mon.tick(now)
            return
        holders: dict[int, list[ThreadState]] = {}
        for lock, holder, _ in holds:
            holders.setdefault(id(lock), []).append(holder)
        waiting = {
            s: w for s in states if (w := waiting_on(s)) is not None and w.lock.monitor is mon
        }
        seen: set[Hashable] = set()
        ex_threads: set[ThreadState] = set()
        ex_locks: set[int] = set()

        self._list_loops(states, snap, seen, ex_threads, ex_locks)
        self._deadlocks(waiting, snap, seen, ex_threads, ex_locks)
        self._victims(waiting, holders, ex_threads, ex_locks)
        self._long_holds(holds, snap, seen, ex_threads, ex_locks)
        self._victims(waiting, holders, ex_threads, ex_locks)
        self._starvation(waiting, snap, seen, ex_threads)
        self._no_progress(states, snap, seen, ex_threads)

        mon.book.end_episodes(seen)
        self._last_poll = now
        mon.tick(now)

    def _states(self) -> list[ThreadState]:
        """Threads of this run, plus any other thread holding one of its locks."""
        mon = self.mon
        out = [s for s in mon.states() if s.monitor is mon]
        known = set(out)
        for state in all_threads():
            if state not in known and any(
                getattr(getattr(e, "lock", e), "monitor", None) is mon for e in state.held[1:]
            ):
                out.append(state)
        return out

    def _sample(self, states: list[ThreadState], snap: Snapshot) -> None:
        now = snap.now
        fresh: dict[ThreadState, _Sample] = {}
        for state in states:
            sample = self._samples.get(state) or _Sample(now, self._window)
            fresh[state] = sample
            frame = snap.frames.get(state.ident)
            pos = None if frame is None else (id(frame), frame.f_lasti)
            activity = (
                state.nslow,
                state.steps + sum(w.n for w in list(state.walks)),
                state.nwalks,
            )
            # A blocked waiter's frame moves with its timed wake-ups: that is not work.
            moved = waiting_on(state) is None and (pos != sample.pos or activity != sample.activity)
            sample.pos, sample.activity = pos, activity
            if moved:
                sample.last_move = now
            sample.moves.append(moved)
            if state.ops != sample.ops:
                sample.ops, sample.last_op = state.ops, now
            frozen = now - sample.last_move
            if frozen >= 2 * self.period:
                snap.frozen[state] = frozen
        self._samples = fresh

    def _scan_holds(
        self, states: list[ThreadState], now: float
    ) -> list[tuple[Any, ThreadState, float]]:
        mon = self.mon
        holds: list[tuple[Any, ThreadState, float]] = []
        for state in states:
            for entry in state.held[1:]:
                lock = getattr(entry, "lock", entry)
                if lock.monitor is not mon:
                    continue
                if isinstance(lock, RWSem):
                    since = next((t for s, _, t in lock.holders() if s is state), None)
                    if since is not None:
                        holds.append((lock, state, since))
                    continue
                # Every acquisition clears the mark: if ours is still there, the hold
                # we saw last time never ended.
                mark = lock._seen
                if mark is not None and mark[0] is state:
                    since = mark[1]
                else:
                    # A timed lock knows its start; trust it only if it is this hold's.
                    t0 = getattr(lock, "_t0", None)
                    since = t0 if t0 is not None and self._last_poll < t0 <= now else now
                    lock._seen = (state, since)
                holds.append((lock, state, since))
        return holds

    # -- checks, most specific first ---------------------------------------------------

    def _list_loops(
        self,
        states: list[ThreadState],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        walk_s = self.mon.config.walk_s
        steps: dict[int, int] = {}
        for state in states:
            for walk in list(state.walks):
                steps[id(walk)] = walk.n
                if not self._looping(walk, snap.now, walk_s):
                    continue
                seen.add(walk.episode)
                ex_threads.add(state)
                ex_locks.update(id(x) for x in state.held_locks())
                if walk.lock is not None:
                    ex_locks.add(id(walk.lock))
                self._record_or_refresh(
                    walk.episode, snap, lambda w=walk: diagnosis.list_loop(w, snap, "watchdog")
                )
        self._walk_steps = steps

    def _looping(self, walk: Walk, now: float, walk_s: float) -> bool:
        if walk.bound is not None:
            # A walk that checks itself (limit == bound) reports its own first step past
            # the bound; seen between that step and its check (the walker preempted on a
            # busy machine), it is not the watchdog's to report.
            return walk.n > walk.bound and walk.limit != walk.bound
        before = self._walk_steps.get(id(walk))
        return now - walk.t0 > walk_s and before is not None and walk.n > before

    def _deadlocks(
        self,
        waiting: dict[ThreadState, Waiter],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        edges = {s: [b for b, _, _ in w.lock.blockers(w)] for s, w in waiting.items()}
        for cycle in _cycles(edges):
            waiters = [waiting[s] for s in cycle]
            if not self._still_blocked(cycle, waiters):
                continue
            key = ("deadlock", frozenset(id(w) for w in waiters))
            seen.add(key)
            ex_threads.update(cycle)
            ex_locks.update(id(w.lock) for w in waiters)
            self._record_or_refresh(key, snap, lambda ws=waiters: diagnosis.deadlock(ws, snap))

    def _still_blocked(self, cycle: list[ThreadState], waiters: list[Waiter]) -> bool:
        """Re-read the cycle now: threads run while we poll, so the graph may be stale.

        A Waiter serves one wait only, so a member still in the same one has been
        blocked, its held list frozen, since the graph was built; if each also still
        blocks the one before it, they all block each other at once: a deadlock.
        """
        for i, (state, waiter) in enumerate(zip(cycle, waiters, strict=True)):
            if waiting_on(state) is not waiter:
                return False
            before = waiters[i - 1]
            if not any(s is state for s, _, _ in before.lock.blockers(before)):
                return False
        return True

    def _victims(
        self,
        waiting: dict[ThreadState, Waiter],
        holders: dict[int, list[ThreadState]],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        """Everyone waiting, directly or not, on an explained thread or lock is explained."""
        changed = True
        while changed:
            changed = False
            for state, waiter in waiting.items():
                if state in ex_threads:
                    continue
                if id(waiter.lock) in ex_locks or any(
                    h in ex_threads for h in holders.get(id(waiter.lock), [])
                ):
                    ex_threads.add(state)
                    ex_locks.update(id(x) for x in state.held_locks())
                    changed = True

    def _long_holds(
        self,
        holds: list[tuple[Any, ThreadState, float]],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        for lock, holder, since in holds:
            held_s = snap.now - since
            stats = lock.lock_class.stats
            if held_s > stats.longest_seen_s:
                stats.longest_seen_s = held_s
            if held_s <= lock.lock_class.budget_s:
                continue
            if id(lock) in ex_locks or holder in ex_threads or waiting_on(holder) is not None:
                continue  # explained, or a victim whose own blocker gets the verdict
            key = ("long-hold", id(lock), holder.tid, since)
            seen.add(key)
            ex_threads.add(holder)
            ex_locks.add(id(lock))
            self._record_or_refresh(
                key, snap, lambda x=lock, h=holder, t=since: diagnosis.long_hold(x, h, t, snap)
            )

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
        busy: dict[ThreadState, float] = {}
        idle_s: dict[ThreadState, float] = {}
        live: list[ThreadState] = []
        still: list[ThreadState] = []
        for state in states:
            if state.tracked_by is not mon or state.idle or state in ex_threads:
                continue
            if not state.thread.is_alive():
                continue
            sample = self._samples[state]
            idle = snap.now - sample.last_op
            if idle < limit:
                continue
            idle_s[state] = idle
            busy[state] = sum(sample.moves) / len(sample.moves)
            if waiting_on(state) is None and busy[state] >= 0.5:
                live.append(state)
            elif snap.now - sample.last_move >= limit:
                still.append(state)
        for kind, group in (("livelock", live), ("stall", still)):
            keys = [(kind, s.tid) for s in group]
            seen.update(keys)
            new = [s for s, k in zip(group, keys, strict=True) if not mon.book.is_active(k)]
            if not new:
                continue
            if kind == "livelock":
                verdict = diagnosis.livelock(new, idle_s, busy, snap)
            else:
                verdict = diagnosis.stall(new, idle_s, snap)
            mon.record(verdict, keys=[(kind, s.tid) for s in new])

    def _record_or_refresh(self, key: Hashable, snap: Snapshot, build: Any) -> None:
        """Record a new episode; refresh the evidence of one already recorded."""
        active = self.mon.book.active(key)
        if active is None:
            self.mon.record(build(), keys=[key])
            return
        fresh = build()
        active.summary, active.chain = fresh.summary, fresh.chain
        active.evidence.update(fresh.evidence)
        active.threads = list(dict.fromkeys(active.threads + fresh.threads))


def _cycles(edges: dict[ThreadState, list[ThreadState]]) -> list[list[ThreadState]]:
    """Cycles of a small wait-for graph, one per back edge found by depth-first search."""
    found: dict[frozenset[ThreadState], list[ThreadState]] = {}
    done: set[ThreadState] = set()
    stack: list[ThreadState] = []
    index: dict[ThreadState, int] = {}

    def visit(node: ThreadState) -> None:
        index[node] = len(stack)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in edges:
                continue  # not waiting: no cycle goes through it
            if nxt in index:
                cycle = stack[index[nxt] :]
                found.setdefault(frozenset(cycle), list(cycle))
            elif nxt not in done:
                visit(nxt)
        stack.pop()
        del index[node]
        done.add(node)

    for node in edges:
        if node not in done:
            visit(node)
    return list(found.values())
