"""The watchdog: one thread that looks at every worker each period and names hangs.

Each poll reads, without locks, what every thread holds, waits for and walks,
where its innermost frame is and how many operations it completed, then checks
for hangs from the most specific kind to the least:

  list-loop    a walk past its step bound (or, without one, past walk_s and still stepping)
  livelock     (soft lockup) a declared busy-wait past walk_s (stress.spins)
  leaked-lock  a lock held with nobody inside it (its taker exited, or unlocked another
               lock instead: stress.leaks)
  deadlock     a cycle in the wait-for graph (a self-deadlock is a cycle of one)
  long-hold    a lock held past its class budget by a thread not itself waiting
  starvation   a waiter passed over while the lock changed hands starve_grants times
  list-loop    a lock holder spinning in one loop over a linked structure that is a ring
  livelock     a lock holder spinning in one loop past its budget (a suspected endless
               loop); a thread whose trylocks on a lock keep failing while it changes
               hands; a tracked thread busy (on a CPU, retrying, stepping) with no
               operation done
  stall        a tracked thread holding or waiting for a lock that neither runs nor
               completes anything, unexplained

Whether a thread runs, sleeps in a wait, or waits for a CPU it does not get comes
from the OS (stress.samples): a thread that is only not scheduled on an overloaded
machine gets no verdict (a hold that lasts far past its budget anyway is reported,
labelled "machine overloaded").  A thread sleeping outside any lock is never a stall.

Threads and locks a verdict explains (the culprits and everyone queued behind
them) are left out of the later checks, so a looping walker is one list-loop,
not also a long-hold and a pile of stalls.  A condition seen poll after poll is
one episode, recorded once; its chain and counts are refreshed while it lasts.
"""

from __future__ import annotations

from collections.abc import Hashable
from time import perf_counter, thread_time
from types import FrameType
from typing import TYPE_CHECKING, Any

from stress import diagnosis, leaks, spins
from stress.diagnosis import Snapshot, waiting_on
from stress.lockcore import Waiter
from stress.progress import ProgressChecks
from stress.rawsync import Flag, RawThread
from stress.rwsem import RWSem
from stress.samples import Activity, Sample, Spin, find_frame
from stress.spin import find_ring, spin_verdict
from stress.threads import ThreadState, all_threads, frame_views, frozen_frames
from stress.verdicts import Verdict

if TYPE_CHECKING:
    from stress.monitor import Monitor
    from stress.walks import Walk


#: A hold past its budget whose holder only lacks a CPU (an overloaded machine stretches
#: every hold) is deferred until the holder got a budget's worth of CPU time in it, and
#: at most this many budgets.
OVERLOAD_BUDGETS = 10
def only_lacks_cpu(
    sample: Sample | None, act: Activity | None, since: float, held_s: float, budget: float
) -> bool:
    """Whether a hold past its budget is only stretched by an overloaded machine.

    The holder has not had a budget's worth of CPU time in the hold, the hold is not
    yet `OVERLOAD_BUDGETS` budgets long, and either the holder waits for a CPU now, or
    the hold less the time it waited for one would fit the budget (a stretched hold may
    end its last window running, having just got a CPU back).
    """
    if sample is None or held_s >= OVERLOAD_BUDGETS * budget:
        return False
    used = sample.cpu_since(since)
    if used is None or used >= budget:
        return False
    if act is not None and act.word == "not scheduled":
        return True
    return held_s - sample.queued_since(since) <= budget


class Watchdog(ProgressChecks):
    """Polls one Monitor's threads and records verdicts through it."""

    def __init__(self, mon: Monitor) -> None:
        self.mon = mon
        cfg = mon.config
        self.period = cfg.poll_s
        self._window = max(2, round(cfg.verdict_s / cfg.poll_s))
        self._samples: dict[ThreadState, Sample] = {}
        #: How recent a window describes what a thread does now.
        self.span = max(5 * cfg.poll_s, 0.25)
        #: Whether the whole process lacked CPU time over the last window.
        self.starved = False
        #: Polls in which some verdict was deferred because the machine was overloaded.
        self.deferred = 0
        self._polled: list[ThreadState] = []
        self._walk_steps: dict[int, int] = {}
        self._last_poll = 0.0
        self._stop = Flag()
        self._thread: RawThread | None = None
        self.polls = 0
        self.busy_s = 0.0
        #: CPU time the watchdog thread itself used (busy_s also counts waits for the GIL).
        self.cpu_s = 0.0

    # -- thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._last_poll = perf_counter()
        # A _thread thread: the watchdog must start and run while the program under test
        # has threading's Lock, Event and Thread.start replaced.
        self._thread = RawThread(self._run, f"stress-watchdog[{self.mon.name}]")
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop polling; True if the thread ended within `timeout`."""
        self._stop.set()
        if self._thread is None or self._thread.is_current():
            return True
        return self._thread.join(timeout)

    def _run(self) -> None:
        due = perf_counter() + self.period
        # Polls are due on a fixed grid, so the poll's own time does not stretch the period.
        while not self._stop.wait(max(due - perf_counter(), 0.0)):
            start = perf_counter()
            cpu = thread_time()
            due = max(due + self.period, start + self.period / 2)
            try:
                self.poll(start)
            except BaseException as exc:  # the watchdog must outlive its own bugs
                self.mon.internal_error("watchdog", exc)
            self.busy_s += perf_counter() - start
            self.cpu_s += thread_time() - cpu
            self.polls += 1

    def frozen(self, now: float) -> dict[ThreadState, float]:
        """Seconds since each watched thread was last seen running Python code."""
        return {
            s: now - sample.last_move
            for s, sample in list(self._samples.items())
            if now - sample.last_move >= 2 * self.period
        }

    def activities(self, now: float) -> dict[ThreadState, Activity]:
        """What each watched thread did over the last window (from its CPU times)."""
        return {
            s: sample.activity_over(now, self.span, self.starved)
            for s, sample in list(self._samples.items())
        }

    # -- one poll ----------------------------------------------------------------------

    def poll(self, now: float) -> None:
        mon = self.mon
        states = self._polled = self._states()
        holds = self._scan_holds(states, now)
        # Loop detection needs the holders' stacks; everyone else's innermost frame will do.
        snap = Snapshot(now, mon.t0, frame_views(h.ident for _, h, _ in holds))
        snap.joiners = _joiners(states, snap)
        self._sample(states, snap, holds)
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
        spins.check(mon, snap, seen, ex_threads, ex_locks)
        leaks.check(mon, holds, snap, seen, ex_threads, ex_locks)
        self._rings(holds, snap, seen, ex_threads, ex_locks)
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
        # A thread that ended holding nothing has nothing left to say (a busy program
        # ends hundreds a second; the monitor lets go of them only once a second).
        out = [
            s for s in mon.states() if s.monitor is mon and (len(s.held) > 1 or s.alive())
        ]
        known = set(out)
        for state in all_threads():
            if state not in known and any(
                getattr(getattr(e, "lock", e), "monitor", None) is mon for e in state.held[1:]
            ):
                out.append(state)
        return out

    def _sample(
        self, states: list[ThreadState], snap: Snapshot, holds: list[tuple[Any, ThreadState, float]]
    ) -> None:
        now = snap.now
        holders = {id(h) for _, h, _ in holds}
        # Suspects get their run-queue wait read too (a syscall: it lets the GIL go).
        suspects = {id(h) for x, h, t in holds if now - t >= x.lock_class.budget_s / 2}
        limit = self.mon.config.verdict_s
        fresh: dict[ThreadState, Sample] = {}
        cpu = wait = 0.0
        for state in states:
            sample = self._samples.get(state) or Sample(now, self._window)
            fresh[state] = sample
            view = snap.views.get(state.ident)
            activity = (
                state.nslow,
                state.steps + sum(w.n for w in list(state.walks)),
                state.nwalks,
            )
            if state.ops != sample.ops:
                sample.ops, sample.last_op = state.ops, now
            suspect = (
                id(state) in suspects
                or bool(state.trying)
                or (state.tracked_by is self.mon and now - sample.last_op >= limit / 2)
            )
            sample.take(
                now,
                state.native_id,
                view,
                activity,
                waiting_on(state) is not None,
                id(state) in holders,
                suspect,
            )
            frozen = now - sample.last_move
            if frozen >= 2 * self.period:
                snap.frozen[state] = frozen
            act = sample.activity_over(now, self.span, False)
            snap.activity[state] = act
            if act.cpu is not None and act.wait is not None:
                cpu += act.cpu
                wait += act.wait
        self._samples = fresh
        # The process is starved when its suspects together waited for a CPU about as
        # long as they ran (and long enough to matter): the machine is overloaded.
        starved = wait >= 0.1 and wait >= 0.5 * cpu
        if starved:
            for state, sample in fresh.items():
                if snap.activity[state].word == "blocked":
                    snap.activity[state] = sample.activity_over(now, self.span, True)
        self.starved = snap.starved = starved

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
                # Every acquisition clears the mark (or, for a lock that counts them,
                # changes the count it names): if ours still holds, the hold we saw last
                # time never ended.
                mark = lock._seen
                counted = lock.counts_acquisitions
                if mark is not None and mark[0] is state and (not counted or mark[2] == lock._nacq):
                    since = mark[1]
                else:
                    # A timed lock knows its start; trust it only if it is this hold's.
                    t0 = getattr(lock, "_t0", None)
                    since = t0 if t0 is not None and self._last_poll < t0 <= now else now
                    lock._seen = (state, since, lock._nacq) if counted else (state, since)
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

    def _rings(
        self,
        holds: list[tuple[Any, ThreadState, float]],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        """A lock holder spinning in one loop over a linked structure that is a ring."""
        walk_s = self.mon.config.walk_s
        for holder, all_locks in _by_holder(holds).items():
            if holder in ex_threads or holder.walks or waiting_on(holder) is not None:
                continue
            # One hold must cover the whole spin: an outer loop taking a lock per turn
            # is not spinning under it.
            locks = [(x, t) for x, t in all_locks if snap.now - t >= walk_s]
            if not locks:
                continue
            sample = self._samples.get(holder)
            spin = sample.spin(snap.now, walk_s) if sample is not None else None
            if sample is None or spin is None:
                continue
            ring = self._ring(holder, sample, spin.frame_id, snap)
            if ring is None:
                continue
            key = ("list-loop", holder.tid, spin.frame_id)
            seen.add(key)
            ex_threads.add(holder)
            ex_locks.update(id(x) for x, _ in locks)
            self._record_or_refresh(
                key,
                snap,
                lambda h=holder, sp=spin, r=ring, ls=locks: self._spin_verdict(h, sp, r, ls, snap),
            )

    def _ring(self, holder: ThreadState, sample: Sample, frame_id: int, snap: Snapshot) -> Any:
        """The ring the loop frame walks, if its locals show one (looked for once per loop).

        The holder's frames are read afresh, while no thread runs (frozen_frames): its
        loop frame is the one the samples saw if it is still on its stack.
        """
        if frame_id in sample.spin_cache:
            return sample.spin_cache[frame_id]
        ring = None
        with frozen_frames() as now:
            top = now.get(holder.ident)
            loop = find_frame(top, frame_id)
            frames: list[FrameType] = []
            f = top
            while f is not None and loop is not None:
                frames.append(f)
                if f is loop:
                    break
                f = f.f_back
            if loop is not None:
                ring = find_ring(frames)
            del frames, f, top, loop, now  # no frame object outlives the block
        sample.spin_cache[frame_id] = ring
        return ring

    def _spin_verdict(
        self,
        holder: ThreadState,
        spin: Spin,
        ring: Any,
        locks: list[tuple[Any, float]],
        snap: Snapshot,
    ) -> Verdict:
        objects = [x for x, _ in locks]
        held_s = snap.now - min(t for _, t in locks)
        waiters = [w.state.name for x in objects for w in x.waiters() if w.state is not holder]
        chains = diagnosis.waiters_behind(objects, snap, {holder})
        act = snap.activity.get(holder)
        starved = act.wait if act is not None and act.word == "not scheduled" else None
        return spin_verdict(
            holder,
            spin,
            ring,
            objects,
            held_s,
            snap.stack(holder),
            chains,
            list(dict.fromkeys(waiters)),
            snap.at_s,
            starved,
            max(snap.now - spin.since, 0.0),
        )

    def _deadlocks(
        self,
        waiting: dict[ThreadState, Waiter],
        snap: Snapshot,
        seen: set[Hashable],
        ex_threads: set[ThreadState],
        ex_locks: set[int],
    ) -> None:
        # A wait with a timeout ends by itself: a cycle through one is no deadlock (if
        # the waits time out and retry for ever, that is a livelock, seen as such).
        edges = {
            s: [b for b, _, _ in w.lock.blockers(w)] for s, w in waiting.items() if not w.timed
        }
        for cycle in cycles(edges):
            if any(s in ex_threads for s in cycle):
                continue  # explained already (a leaked lock taken again by its taker)
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
        cfg = self.mon.config
        for lock, holder, since in holds:
            held_s = snap.now - since
            stats = lock.lock_class.stats
            if held_s > stats.longest_seen_s:
                stats.longest_seen_s = held_s
            budget = lock.lock_class.budget_s
            if held_s <= budget:
                continue
            if id(lock) in ex_locks or holder in ex_threads or waiting_on(holder) is not None:
                continue  # explained, or a victim whose own blocker gets the verdict
            if not holder.holds(lock):
                # Released since the scan (and the holder may have ended since): no hang,
                # and its diagnosis would read the books of a hold that is over.
                continue
            joiners = snap.joiners.get(holder, [])
            if (
                cfg.hold_needs_waiters
                and not lock.waiters()
                and not joiners
                and not self._tried(lock, self._polled, snap.now, cfg.verdict_s)
            ):
                continue
            if self._holder_retries(lock, snap.now, cfg.verdict_s):
                continue  # it holds one lock and keeps retrying another: see livelock
            act = snap.activity.get(holder)
            sample = self._samples.get(holder)
            if only_lacks_cpu(sample, act, since, held_s, budget):
                # Not a hang, yet: the machine stretched it.  Its waiters wait for it.
                self.deferred += 1
                ex_threads.add(holder)
                ex_locks.add(id(lock))
                continue
            spin = None
            if sample is not None and sample.frames:
                # Spinning all along: over the whole hold as far as the frames kept go
                # back (they start at the first poll that saw the hold), and walk_s at least.
                covered = snap.now - sample.frames[0][0]
                spin = sample.spin(snap.now, max(cfg.walk_s, min(budget, covered)))
            if spin is not None and not holder.walks:
                # Spinning in one loop for the whole budget: a suspected endless loop.
                key: Hashable = ("livelock", holder.tid, spin.frame_id)
                seen.add(key)
                ex_threads.add(holder)
                ex_locks.add(id(lock))
                self._record_or_refresh(
                    key,
                    snap,
                    lambda h=holder, sp=spin, x=lock, t=since: self._spin_verdict(
                        h, sp, None, [(x, t)], snap
                    ),
                )
                continue
            key = ("long-hold", id(lock), holder.tid, since)
            seen.add(key)
            ex_threads.add(holder)
            ex_locks.add(id(lock))
            self._record_or_refresh(
                key, snap, lambda x=lock, h=holder, t=since: diagnosis.long_hold(x, h, t, snap)
            )

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


def _joiners(states: list[ThreadState], snap: Snapshot) -> dict[ThreadState, list[ThreadState]]:
    """Who is blocked in Thread.join() on whom: a joiner waits for the joined thread too."""
    out: dict[ThreadState, list[ThreadState]] = {}
    by_ident: dict[int, ThreadState] | None = None
    for state in states:
        view = snap.views.get(state.ident)
        if view is None or view.joining is None:
            continue
        if by_ident is None:
            by_ident = {s.ident: s for s in states}
        target = by_ident.get(view.joining)
        if target is not None and target is not state:
            out.setdefault(target, []).append(state)
    return out


def _by_holder(
    holds: list[tuple[Any, ThreadState, float]],
) -> dict[ThreadState, list[tuple[Any, float]]]:
    out: dict[ThreadState, list[tuple[Any, float]]] = {}
    for lock, holder, since in holds:
        out.setdefault(holder, []).append((lock, since))
    return out


def cycles(edges: dict[ThreadState, list[ThreadState]]) -> list[list[ThreadState]]:
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
