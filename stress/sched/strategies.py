"""Who runs next: PCT, random walks, round-robin, and the replay of a recorded schedule.

A strategy is consulted at *events* only: when the running task cannot go on, when
a task is woken or created, and at the step the strategy itself asked for
(`next_event`).  Between events the running task keeps the token, so a scheduling
point costs a counter increment and a comparison.

- `PCT` (Burckhardt et al., ASPLOS 2010): random distinct priorities, the highest
  runnable task runs; at d-1 random change points the running task drops below
  everyone.  One run finds a bug of depth d with probability at least
  1/(n k^(d-1)) for n tasks and k steps.  Long stress workloads never end, so the
  priorities and change points are drawn afresh every `window` steps: each window
  is one PCT run of the tasks alive in it.
- `RandomWalk`: at each event, a uniformly chosen runnable task; preemptions come at
  geometrically distributed intervals (mean 1/p points).
- `RoundRobin`: the next runnable task in creation order every `quantum` points.
- `Replay`: follows recorded switches exactly (`exact`), or semantically, by
  (task, point, arrival) only, for edited and shrunk schedules.

A busy-wait (`relax`) always hands the token to someone else when anyone else can
run, and under PCT the spinner drops below every other task: a spinning
high-priority thread would otherwise starve the thread it waits for.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stress.sched.core import DONE, EXIT, PREEMPT, RELAX, START, Switch, Task

if TYPE_CHECKING:
    from stress.sched.core import Scheduler

STRATEGIES = ("pct", "random", "round-robin")
_NEVER = 1 << 62


class Strategy:
    """Base: keep the running task while it can run; otherwise the first runnable one."""

    name = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(f"stress.sched/{self.name}/{seed}")

    def on_new(self, sched: Scheduler, task: Task) -> None:
        pass

    def on_wake(self, sched: Scheduler, task: Task) -> None:
        pass

    def on_mark(self, sched: Scheduler, task: Task) -> None:
        pass

    def next_event(self, sched: Scheduler) -> int:
        return _NEVER

    def pick(
        self,
        sched: Scheduler,
        cur: Task | None,
        cands: list[Task],
        why: str,
        point: str,
        n: int,
    ) -> Task:
        if cur is not None and cur in cands and why != RELAX:
            return cur
        return _others(cur, cands)[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed}


def _others(cur: Task | None, cands: list[Task]) -> list[Task]:
    """The candidates other than `cur`, unless `cur` is the only one."""
    others = [t for t in cands if t is not cur]
    return others or cands


class PCT(Strategy):
    """Probabilistic concurrency testing with bug depth `depth`, redrawn every `window` steps."""

    name = "pct"

    def __init__(self, seed: int = 0, *, depth: int = 3, window: int = 5_000) -> None:
        if depth < 1:
            raise ValueError(f"PCT depth must be at least 1, got {depth}")
        if window < 1:
            raise ValueError(f"PCT window must be at least 1, got {window}")
        super().__init__(seed)
        self.depth = depth
        self.window = window
        self.prio: dict[Task, float] = {}
        self.changes: list[int] = []
        self.window_end = 0
        self.low = 0.0  # next priority below everyone (change points, spinners)

    def _new_window(self, sched: Scheduler) -> None:
        start = sched.step
        self.window_end = start + self.window
        live = [t for t in sched.tasks if t.status != DONE]
        order = list(range(len(live)))
        self.rng.shuffle(order)
        self.prio = {t: float(self.depth + o) for t, o in zip(live, order, strict=True)}
        self.changes = sorted(
            start + self.rng.randrange(1, self.window + 1) for _ in range(self.depth - 1)
        )
        self.low = 0.0

    def on_new(self, sched: Scheduler, task: Task) -> None:
        if not self.prio and self.window_end == 0:
            self._new_window(sched)
            return
        # A task born mid-window gets a random place among the high priorities.
        hi = max(self.prio.values(), default=float(self.depth))
        self.prio[task] = self.depth + self.rng.random() * (hi - self.depth + 1)

    def next_event(self, sched: Scheduler) -> int:
        nxt = self.window_end
        if self.changes:
            nxt = min(nxt, self.changes[0])
        return nxt

    def _lower(self, task: Task) -> None:
        self.low -= 1.0
        self.prio[task] = self.low

    def pick(
        self,
        sched: Scheduler,
        cur: Task | None,
        cands: list[Task],
        why: str,
        point: str,
        n: int,
    ) -> Task:
        if sched.step >= self.window_end:
            self._new_window(sched)
        while self.changes and sched.step >= self.changes[0]:
            self.changes.pop(0)
            if cur is not None:
                self._lower(cur)
        if why == RELAX and cur is not None and len(cands) > 1:
            self._lower(cur)
        prio = self.prio
        return max(cands, key=lambda t: (prio.get(t, 0.0), -t.index))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "depth": self.depth, "window": self.window}


class RandomWalk(Strategy):
    """A uniformly random runnable task at each event; preemption every ~1/p points."""

    name = "random"

    def __init__(self, seed: int = 0, *, p: float = 0.05, p_hot: float | None = None) -> None:
        if not 0.0 < p <= 1.0:
            raise ValueError(f"preemption probability must be in (0, 1], got {p}")
        if p_hot is not None and not 0.0 <= p_hot <= 1.0:
            raise ValueError(f"hot preemption probability must be in [0, 1], got {p_hot}")
        super().__init__(seed)
        self.p = p
        #: Preemption probability at hot points (the code's own race windows).
        self.p_hot = p_hot
        self.at = 0

    def _draw(self, step: int) -> None:
        gap = 1
        if self.p < 1.0:
            u = self.rng.random()
            gap = 1 + int(_log(u) / _log(1.0 - self.p)) if u > 0.0 else 1
        self.at = step + gap

    def next_event(self, sched: Scheduler) -> int:
        return self.at

    def pick(
        self,
        sched: Scheduler,
        cur: Task | None,
        cands: list[Task],
        why: str,
        point: str,
        n: int,
    ) -> Task:
        preempt_due = sched.step >= self.at
        if preempt_due:
            self._draw(sched.step)
        if sched.hot_now and self.p_hot is not None and why == PREEMPT:
            preempt_due = self.rng.random() < self.p_hot
        if why == PREEMPT and cur is not None and cur in cands and not preempt_due:
            return cur
        pool = _others(cur, cands) if why == RELAX else cands
        return pool[self.rng.randrange(len(pool))]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "seed": self.seed, "p": self.p}
        if self.p_hot is not None:
            out["p_hot"] = self.p_hot
        return out


def _log(x: float) -> float:
    import math

    return math.log(x)


class RoundRobin(Strategy):
    """The next runnable task in creation order, every `quantum` scheduling points."""

    name = "round-robin"

    def __init__(self, seed: int = 0, *, quantum: int = 50) -> None:
        if quantum < 1:
            raise ValueError(f"round-robin quantum must be at least 1, got {quantum}")
        super().__init__(seed)
        self.quantum = quantum
        self.at = quantum

    def next_event(self, sched: Scheduler) -> int:
        return self.at

    def pick(
        self,
        sched: Scheduler,
        cur: Task | None,
        cands: list[Task],
        why: str,
        point: str,
        n: int,
    ) -> Task:
        due = sched.step >= self.at
        if due or why != PREEMPT:
            self.at = sched.step + self.quantum
        if why == PREEMPT and not due and cur is not None and cur in cands:
            return cur
        if cur is None:
            return cands[0]
        pool = _others(cur, cands)
        after = [t for t in pool if t.index > cur.index]
        return (after or pool)[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "quantum": self.quantum}


class Replay(Strategy):
    """Follow recorded switches.

    `exact=True`: the switches happen at the recorded global steps, each checked
    against the recorded task, point and arrival; any mismatch is a divergence
    (noted, and the replay goes on semantically).  `exact=False`: a switch happens
    when its task reaches its (point, arrival), wherever that falls; forced
    switches go to the recorded next task if it can run, else to the first task
    that can (creation order).
    """

    name = "replay"

    def __init__(self, switches: Sequence[Switch], *, exact: bool = True) -> None:
        super().__init__(0)
        self.switches = list(switches)
        self.i = 0
        self.exact = exact
        self.diverged: list[str] = []

    # -- the switch in force, and moving past it ----------------------------------------

    def _armed(self) -> Switch | None:
        return self.switches[self.i] if self.i < len(self.switches) else None

    def _first(self) -> str | None:
        return self.switches[0].task if self.switches else None

    def _advance(self, sched: Scheduler) -> None:
        self.i += 1
        self._arm(sched)

    def _successor(self, sched: Scheduler, done: Switch) -> Task | None:
        """Who runs after the switch `done` (its recorded next task)."""
        return sched.by_name.get(done.to)

    def _arm(self, sched: Scheduler) -> None:
        for t in sched.tasks:
            t.until = None
        sw = self._armed()
        if sw is not None and not self.exact:
            task = sched.by_name.get(sw.task)
            if task is not None:
                task.until = (sw.point, sw.n)

    def on_new(self, sched: Scheduler, task: Task) -> None:
        if not self.exact:
            sw = self._armed()
            if sw is not None and sw.task == task.name:
                task.until = (sw.point, sw.n)

    def next_event(self, sched: Scheduler) -> int:
        sw = self._armed()
        if sw is None or not self.exact:
            return _NEVER
        return sw.step

    def _note(self, text: str) -> None:
        if len(self.diverged) < 20:
            self.diverged.append(text)

    def pick(
        self,
        sched: Scheduler,
        cur: Task | None,
        cands: list[Task],
        why: str,
        point: str,
        n: int,
    ) -> Task:
        if why == START:
            first = sched.by_name.get(self._first() or "")
            self._arm(sched)
            return first if first is not None and first in cands else cands[0]
        sw = self._armed()
        matches = (
            cur is not None
            and sw is not None
            and sw.task == cur.name
            and sw.point == point
            and sw.n == n
        )
        if self.exact and sw is not None and sched.step >= sw.step and not matches:
            self._note(
                f"step {sched.step:,}: the schedule says {sw.task} stops at arrival "
                f"#{sw.n} at {sw.point!r}, but {cur.name if cur else 'nobody'} is at "
                f"arrival #{n} at {point!r}"
            )
            self.exact = False
            self._arm(sched)
        if matches and sw is not None:
            self._advance(sched)
            nxt = self._successor(sched, sw)
            if nxt is not None and nxt in cands:
                return nxt
            if why != EXIT or nxt is None:
                self._note(f"step {sched.step:,}: {sw.to} should run next but cannot")
        if cur is not None and cur in cands and why not in (RELAX, EXIT):
            return cur
        sw = self._armed()
        if sw is not None:
            # Forced off: prefer the task the schedule runs now.
            wanted = sched.by_name.get(sw.task)
            if wanted is not None and wanted in cands and wanted is not cur:
                return wanted
        return self._fallback(sched, cur, cands)

    def _fallback(self, sched: Scheduler, cur: Task | None, cands: list[Task]) -> Task:
        return _others(cur, cands)[0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "exact": self.exact, "switches": len(self.switches)}


@dataclass(frozen=True)
class Stop:
    """Run `task` until, in its `mark`-th operation, it reaches `point` the `n`-th time
    (mark None: until it ends); then `then` runs."""

    task: str
    mark: int | None
    point: str
    n: int
    then: str


class MarkedReplay(Replay):
    """Replay stops named by operation (mark) rather than by cumulative arrival.

    A stop becomes a concrete switch once its task is inside the named operation
    (its arrivals at the point are counted from the operation's start), so stops
    stay valid when other operations are added or removed.
    """

    name = "program"

    def __init__(self, stops: Sequence[Stop]) -> None:
        super().__init__([], exact=False)
        self.stops = list(stops)
        self.cur: Switch | None = None

    def _first(self) -> str | None:
        return self.stops[0].task if self.stops else None

    def _armed(self) -> Switch | None:
        return self.cur

    def _advance(self, sched: Scheduler) -> None:
        self.i += 1
        self._arm(sched)

    def _arm(self, sched: Scheduler) -> None:
        for t in sched.tasks:
            t.until = None
        self.cur = None
        while self.i < len(self.stops):
            stop = self.stops[self.i]
            task = sched.by_name.get(stop.task)
            if task is not None and task.status == DONE:
                self.i += 1  # it ended: whatever the record still had it do was nothing
                continue
            if stop.mark is None:
                self.cur = Switch(0, stop.task, "exit", 1, stop.then, "exit")
                return
            if task is None or task.marks < stop.mark:
                # Not there yet: a placeholder that cannot match until on_mark arms it.
                self.cur = Switch(0, stop.task, stop.point, -1, stop.then, "preempt")
                return
            if task.marks == stop.mark:
                n = task.base.get(stop.point, 0) + stop.n
                seen = task.counts.get(stop.point, 0)
                if seen < n:
                    self.cur = Switch(0, stop.task, stop.point, n, stop.then, "preempt")
                    task.until = (stop.point, n)
                    return
                if seen == n and task is not sched.current:
                    # Parked right there already: the stop holds at once, nothing runs.
                    self.i += 1
                    continue
            self._note(
                f"{stop.task} is past operation {stop.mark} at {stop.point!r} "
                f"({ordinal_text(stop.n)}): stop skipped"
            )
            self.i += 1

    def on_new(self, sched: Scheduler, task: Task) -> None:
        if self.cur is not None and self.cur.task == task.name:
            self._arm(sched)

    def _fallback(self, sched: Scheduler, cur: Task | None, cands: list[Task]) -> Task:
        """Off the record: the task whose next stop comes soonest, as in the recording;
        a task the schedule no longer names comes last."""
        pool = _others(cur, cands)
        soonest: dict[str, int] = {}
        for j in range(self.i, len(self.stops)):
            soonest.setdefault(self.stops[j].task, j)
        return min(pool, key=lambda t: (soonest.get(t.name, len(self.stops)), t.index))

    def _successor(self, sched: Scheduler, done: Switch) -> Task | None:
        # Stops that held at once were skipped: the next one's task runs now.
        if self.cur is not None:
            return sched.by_name.get(self.cur.task)
        return sched.by_name.get(done.to)

    def on_mark(self, sched: Scheduler, task: Task) -> None:
        if self.i < len(self.stops) and self.stops[self.i].task == task.name:
            self._arm(sched)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "stops": len(self.stops)}


def ordinal_text(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def make(name: str, seed: int, **params: Any) -> Strategy:
    """A strategy by its command-line name."""
    if name == "pct":
        return PCT(seed, **params)
    if name == "random":
        return RandomWalk(seed, **params)
    if name == "round-robin":
        return RoundRobin(seed, **params)
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
