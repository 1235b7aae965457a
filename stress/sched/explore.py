"""Explore a user's threaded code under controlled schedules; shrink and save what fails.

    import stress

    def setup(mon):                       # shared state; locks from the run's Monitor
        return Account(lock=mon.mutex("account"))

    def deposit(acct):
        with acct.lock:
            balance = acct.balance
        stress.yield_point("between")     # explicit scheduling point
        with acct.lock:
            acct.balance = balance + 100

    result = stress.explore(
        {"a": deposit, "b": deposit},
        setup=setup,
        invariant=lambda acct: acct.balance == 200,
        schedules=500,
        save="deposit.repro.json",
    )
    assert result.ok, result.report()

Each schedule is one controlled run: the threads start together, one runs at a time,
and a strategy (PCT by default, seeded) decides who runs at every scheduling point:
every lock, rwsem and `yield_point()`.  A run fails on any verdict (deadlock,
lock-order inversion, an exception in a thread, a spin) or when `invariant(state)`
returns False or raises after the threads end.  The first failure's schedule is
shrunk toward fewer preemptions (each candidate replayed; kept only if it fails
the same way), saved as a reproducer file, and reported with its timeline.
`stress.replay(path, ...)` and `rmapstress replay FILE` run it again.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress.config import Config
from stress.monitor import Monitor
from stress.report import CaseResult
from stress.sched.core import Scheduler, Switch
from stress.sched.pool import ThreadPool
from stress.sched.repro import Reproducer, ReproducerError, verdict_record
from stress.sched.strategies import PCT, Replay, Strategy, make
from stress.sched.timeline import timeline_lines
from stress.threads import Frame
from stress.verdicts import Verdict

ThreadFn = Callable[[Any], Any]
Threads = Mapping[str, ThreadFn] | Sequence[ThreadFn]


def _named(threads: Threads) -> dict[str, ThreadFn]:
    if isinstance(threads, Mapping):
        out = dict(threads)
    else:
        out = {f"t{i}": fn for i, fn in enumerate(threads)}
    if not out:
        raise ValueError("explore needs at least one thread")
    for name, fn in out.items():
        if not callable(fn):
            raise TypeError(f"thread {name!r} is not callable: {fn!r}")
    return out


def _plain(setup: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """`setup` as a function of the Monitor, its signature looked at once, not per run."""
    if setup is None or isinstance(setup, _Setup):
        return setup
    try:
        takes_mon = bool(inspect.signature(setup).parameters)
    except (TypeError, ValueError):
        takes_mon = True
    return _Setup(setup, takes_mon)


class _Setup:
    __slots__ = ("fn", "takes_mon")

    def __init__(self, fn: Callable[..., Any], takes_mon: bool) -> None:
        self.fn = fn
        self.takes_mon = takes_mon

    def __call__(self, mon: Monitor) -> Any:
        return self.fn(mon) if self.takes_mon else self.fn()


def _call_setup(setup: Callable[..., Any] | None, mon: Monitor) -> Any:
    wrapped = _plain(setup)
    return None if wrapped is None else wrapped(mon)


@dataclass
class Run:
    """One schedule's outcome."""

    result: CaseResult
    switches: list[Switch]
    steps: int
    verdict: Verdict | None
    diverged: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str] | None:
        v = self.verdict
        return None if v is None else (v.kind, v.signature)


def run_schedule(
    threads: Threads,
    strategy: Strategy,
    *,
    setup: Callable[..., Any] | None = None,
    invariant: Callable[[Any], Any] | None = None,
    max_steps: int = 10_000,
    lock_order: bool = True,
    name: str = "explore",
    pool: ThreadPool | None = None,
) -> Run:
    """One controlled run of `threads` under `strategy` (on `pool`'s threads if given)."""
    named = _named(threads)
    sched = Scheduler(strategy, max_steps=max_steps, steps_per_s=max(max_steps, 1000))
    stop_on = None if lock_order else frozenset(
        {"deadlock", "crash", "livelock", "stall", "list-loop", "long-hold", "starvation"}
    )
    cfg = Config(
        duration_s=1.0,
        timing=False,
        trace_events=0,
        on_stuck="raise",
        verdict_s=0.9,
        hold_s=0.5,
        walk_s=0.2,
        grace_s=2.0,
        stop_on=stop_on,
    )
    mon = Monitor(cfg, name=name, scheduler=sched, pool=pool, backstop=pool is None)
    state = _call_setup(setup, mon)
    for tname, fn in named.items():
        mon.spawn(fn, state, name=tname, tracked=False)
    result = mon.run()
    verdicts = [v for v in result.verdicts if lock_order or v.kind != "lock-order"]
    verdict = min(verdicts, key=lambda v: v.at_s) if verdicts else None
    if verdict is None and invariant is not None and result.outcome != "error":
        verdict = _check(invariant, state, result)
        if verdict is not None:
            result.verdicts.append(verdict)
            result.outcome = "defect"
            result.first_defect_s = verdict.at_s
    diverged = list(strategy.diverged) if isinstance(strategy, Replay) else []
    return Run(result, list(sched.switches), sched.step, verdict, diverged)


def _check(invariant: Callable[[Any], Any], state: Any, result: CaseResult) -> Verdict | None:
    try:
        ok = invariant(state)
    except AssertionError as exc:
        return _invariant_verdict(invariant, str(exc) or "assertion failed", exc, result)
    if ok is False:
        return _invariant_verdict(invariant, "returned False", None, result)
    return None


def _invariant_verdict(
    invariant: Callable[[Any], Any], why: str, exc: BaseException | None, result: CaseResult
) -> Verdict:
    if exc is not None:
        tb = traceback.extract_tb(exc.__traceback__)[1:] or traceback.extract_tb(exc.__traceback__)
        frames = [Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip()) for f in tb]
    else:
        code = getattr(invariant, "__code__", None)
        frames = (
            [Frame(code.co_filename, code.co_firstlineno, code.co_name, "")]
            if code is not None
            else []
        )
    label = getattr(invariant, "__qualname__", repr(invariant))
    return Verdict(
        kind="invariant",
        summary=f"invariant {label} failed after the threads ended: {why}",
        source="defect",
        threads=["main"],
        chain=[],
        stacks={"invariant": frames},
        evidence={"message": why},
        culprits=["invariant"],
        at_s=result.duration_s,
    )


def shrink(
    threads: Threads,
    failing: Run,
    *,
    setup: Callable[..., Any] | None = None,
    invariant: Callable[[Any], Any] | None = None,
    max_steps: int = 10_000,
    lock_order: bool = True,
    budget_s: float = 30.0,
    pool: ThreadPool | None = None,
) -> tuple[Run, int]:
    """Fewer switches that fail the same way: drop one at a time, keep what still fails.

    Preemptions go first (iterative context bounding prefers schedules with fewer
    of them); each candidate is replayed semantically and, when it fails with the
    same kind and signature, its freshly recorded schedule replaces the old one.
    Returns the smallest run found and how many candidates were tried.
    """
    best = failing
    key = failing.key
    tried = 0
    deadline = time.monotonic() + budget_s

    def preempts(run: Run) -> int:
        return sum(1 for s in run.switches if s.why == "preempt")

    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        order = sorted(
            range(len(best.switches)),
            key=lambda i: (best.switches[i].why != "preempt", -i),
        )
        for i in order:
            if time.monotonic() >= deadline:
                break
            candidate = best.switches[:i] + best.switches[i + 1 :]
            tried += 1
            run = run_schedule(
                threads,
                Replay(candidate, exact=False),
                setup=setup,
                invariant=invariant,
                max_steps=max_steps,
                lock_order=lock_order,
                name="shrink",
                pool=pool,
            )
            if run.key == key and (
                preempts(run),
                len(run.switches),
            ) < (preempts(best), len(best.switches)):
                best = run
                changed = True
                break
    return best, tried


def _ref(fn: Callable[..., Any] | None) -> dict[str, Any] | None:
    """How to import `fn` again (None for no function; 'importable' False for closures)."""
    if fn is None:
        return None
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    mod = sys.modules.get(module or "")
    file = getattr(mod, "__file__", None)
    importable = bool(module and qual and "<" not in qual)
    return {
        "module": module,
        "qualname": qual,
        "file": os.path.abspath(file) if file else None,
        "importable": importable,
    }


def _resolve(ref: Mapping[str, Any] | None, where: str) -> Callable[..., Any] | None:
    if ref is None:
        return None
    if not ref.get("importable"):
        raise ReproducerError(
            f"{where}: {ref.get('qualname')} is a local function or lambda and cannot be "
            f"imported: replay it from Python with stress.replay(path, threads=..., ...)"
        )
    module_name, qual = str(ref["module"]), str(ref["qualname"])
    try:
        if module_name == "__main__":  # a script: load its file under another name
            raise ImportError(module_name)
        mod = importlib.import_module(module_name)
    except ImportError:
        if module_name == "__main__":
            module_name = "__stress_replay_main__"
        file = ref.get("file")
        if not file or not os.path.exists(file):
            raise ReproducerError(f"{where}: cannot import {module_name}") from None
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ReproducerError(f"{where}: cannot load {file}") from None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = mod
        spec.loader.exec_module(mod)
    obj: Any = mod
    for part in qual.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ReproducerError(f"{where}: {module_name} has no {qual}")
    return obj  # type: ignore[no-any-return]


@dataclass
class Failure:
    """The first failing schedule, shrunk, and where its reproducer went."""

    run: Run
    original_switches: int
    original_preemptions: int
    schedule_index: int
    shrink_tries: int
    reproducer: Reproducer
    path: Path | None

    @property
    def verdict(self) -> Verdict:
        assert self.run.verdict is not None
        return self.run.verdict

    def report(self) -> str:
        v = self.verdict
        pre = sum(1 for s in self.run.switches if s.why == "preempt")
        lines = [
            f"schedule {self.schedule_index} failed: {v.kind}: {v.summary}",
            f"shrunk from {self.original_switches} switches ({self.original_preemptions} "
            f"preemptions) to {len(self.run.switches)} ({pre} preemptions) in "
            f"{self.shrink_tries} tries",
            "",
            "Interleaving:",
            *[f"  {x}" for x in timeline_lines(self.run.switches, self.run.steps)],
            "",
            *v.text(),
        ]
        if self.path is not None:
            lines += ["", f"Replay: rmapstress replay {self.path}"]
        return "\n".join(lines)


@dataclass
class ExploreResult:
    schedules: int
    elapsed_s: float
    failure: Failure | None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def schedules_per_s(self) -> float:
        return self.schedules / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def report(self) -> str:
        head = f"{self.schedules} schedules in {self.elapsed_s:.2f} s"
        if self.failure is None:
            return f"{head}: no failure"
        return f"{head}\n{self.failure.report()}"


def explore(
    threads: Threads,
    *,
    setup: Callable[..., Any] | None = None,
    invariant: Callable[[Any], Any] | None = None,
    strategy: str = "pct",
    schedules: int = 1000,
    seed: int = 0,
    depth: int = 3,
    max_steps: int = 10_000,
    time_budget_s: float | None = None,
    save: str | os.PathLike[str] | None = None,
    shrink_schedule: bool = True,
    lock_order: bool = True,
) -> ExploreResult:
    """Run `threads` under up to `schedules` controlled schedules; stop at the first failure."""
    named = _named(threads)
    t0 = time.perf_counter()
    pool = ThreadPool()
    setup = _plain(setup)
    # Calibrate PCT's k (steps per run) with one run that never preempts.
    base = run_schedule(
        named, Strategy(seed), setup=setup, invariant=invariant, max_steps=max_steps,
        lock_order=lock_order, pool=pool,
    )
    k = max(base.steps, 2)
    done = 1
    found: tuple[Run, int, Strategy] | None = None
    if base.verdict is not None:
        found = (base, 0, Strategy(seed))
    deadline = None if time_budget_s is None else t0 + time_budget_s
    i = 1
    while found is None and i < schedules:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        s_seed = seed * 1_000_003 + i
        strat = (
            PCT(s_seed, depth=depth, window=k) if strategy == "pct" else make(strategy, s_seed)
        )
        run = run_schedule(
            named, strat, setup=setup, invariant=invariant, max_steps=max_steps,
            lock_order=lock_order, pool=pool,
        )
        k = max(k, run.steps)
        done += 1
        if run.verdict is not None:
            found = (run, i, strat)
        i += 1
    if found is None:
        return ExploreResult(done, time.perf_counter() - t0, None)
    run, index, strat = found
    elapsed = time.perf_counter() - t0
    orig_sw = len(run.switches)
    orig_pre = sum(1 for s in run.switches if s.why == "preempt")
    tries = 0
    if shrink_schedule:
        run, tries = shrink(
            named, run, setup=setup, invariant=invariant, max_steps=max_steps,
            lock_order=lock_order, pool=pool,
        )
    assert run.verdict is not None
    rep = Reproducer(
        kind="function",
        target={
            "threads": {n: _ref(fn) for n, fn in named.items()},
            "setup": _ref(setup.fn if isinstance(setup, _Setup) else setup),
            "invariant": _ref(invariant),
            "max_steps": max_steps,
            "lock_order": lock_order,
            "function": ", ".join(f"{n}={getattr(fn, '__qualname__', fn)}"
                                  for n, fn in named.items()),
        },
        strategy=strat.describe(),
        switches=run.switches,
        steps=run.steps,
        verdict=verdict_record(run.verdict),
        source=_sources(named, setup.fn if isinstance(setup, _Setup) else setup, invariant),
    )
    path = rep.save(save) if save is not None else None
    failure = Failure(run, orig_sw, orig_pre, index, tries, rep, path)
    return ExploreResult(done, elapsed, failure)


def _sources(
    named: Mapping[str, ThreadFn], setup: Any, invariant: Any
) -> dict[str, Any]:
    from stress.sched.repro import combined, source_files

    roots = set()
    for fn in [*named.values(), setup, invariant]:
        mod = sys.modules.get(getattr(fn, "__module__", "") or "")
        file = getattr(mod, "__file__", None)
        if file:
            roots.add(Path(file))
    files = source_files(sorted(roots))
    return {"hash": combined(files), "files": files}


def replay(
    path: str | os.PathLike[str],
    threads: Threads | None = None,
    *,
    setup: Callable[..., Any] | None = None,
    invariant: Callable[[Any], Any] | None = None,
) -> Run:
    """Run a saved failure's schedule again (functions resolved from the file if not given)."""
    rep = Reproducer.load(path)
    if rep.kind != "function":
        raise ReproducerError(f"{path}: a {rep.kind} reproducer: use rmapstress replay")
    t = rep.target
    where = str(path)
    needed = [] if threads is not None else list(dict(t.get("threads", {})).values())
    needed += [t.get("setup")] if setup is None else []
    needed += [t.get("invariant")] if invariant is None else []
    for r in needed:  # refuse before importing anything (a script's body would run)
        if isinstance(r, dict) and not r.get("importable"):
            _resolve(r, where)
    named = (
        _named(threads)
        if threads is not None
        else {n: _resolve(r, where) for n, r in dict(t.get("threads", {})).items()}
    )
    if setup is None:
        setup = _resolve(t.get("setup"), where)
    if invariant is None:
        invariant = _resolve(t.get("invariant"), where)
    return run_schedule(
        {n: fn for n, fn in named.items() if fn is not None},
        Replay(rep.switches, exact=True),
        setup=setup,
        invariant=invariant,
        max_steps=int(t.get("max_steps", 10_000)),
        lock_order=bool(t.get("lock_order", True)),
        name="replay",
    )


def replay_function(rep: Reproducer, path: str) -> tuple[CaseResult, list[str], list[str]]:
    """For `rmapstress replay`: (result, divergences, what changed since recording)."""
    run = replay(path)
    files = rep.source.get("files") if isinstance(rep.source, dict) else None
    stale: list[str] = []
    if isinstance(files, dict):
        from stress.sched.repro import source_files

        roots = {
            Path(r["file"]) for r in dict(rep.target.get("threads", {})).values()
            if isinstance(r, dict) and r.get("file")
        }
        now = source_files(sorted(roots))
        stale = rep.staleness(now)
    return run.result, run.diverged, stale
