"""One stress case: a kernel variant and a seed, on real threads, under a stress Monitor."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stress
from rmapsim.atomic import atomic_windows
from rmapsim.variants import parse_variant
from rmapsim.workload.actors import World
from rmapsim.workload.scenario import Scenario
from stress import CaseResult, Config, Interrupts, Monitor, RunReport, Status
from stress.sched import Replay, Scheduler, Strategy
from stress.sched import make as make_strategy
from stress.sched.repro import Reproducer, combined, source_files, verdict_record

#: Watchdog settings a scenario starts from (its [watchdog] table overrides them).
WATCHDOG_DEFAULTS: dict[str, Any] = {
    "poll_s": 0.02,
    "walk_s": 0.2,
    "hold_s": 0.5,
    "verdict_s": 1.5,
    "grace_s": 2.0,
    "linger_s": 0.25,
    "status_every_s": 1.0,
}


def watchdog_config(scn: Scenario, **extra: Any) -> Config:
    """The Monitor settings of a scenario's cases (the timeout ladder is checked here)."""
    values = {**WATCHDOG_DEFAULTS, **dict(scn.watchdog), "duration_s": scn.duration_s, **extra}
    return Config.from_dict(values, where=f"{scn.path}: watchdog")


def replay_command(scn: Scenario, variant: str, seed: int, memory: str | None = None) -> str:
    """The command that runs this case again (optionally in another memory mode)."""
    cmd = ["rmapstress", "run", scn.path, "--variant", variant, "--seed", str(seed)]
    if memory is None or memory == scn.memory.mode:
        cmd += scn.override_flags()
    else:
        cmd += [*scn.override_flags(skip=("variants", "seeds", "memory.mode")), "--memory", memory]
    return shlex.join(cmd)


def matches(outcome: str, expected: str | None) -> bool:
    """A case passes when it found what was expected (clean when nothing is)."""
    return outcome == (expected or "clean")


#: The code a controlled schedule depends on: the model, and the harness's scheduling
#: points (locks, walks, the scheduler).  A reproducer records their hashes.
_RMAPSIM = Path(__file__).resolve().parents[1]
_STRESS = Path(stress.__file__).resolve().parent
SCHEDULE_SOURCES = (
    _RMAPSIM,
    _STRESS / "sched",
    _STRESS / "lockcore.py",
    _STRESS / "locks.py",
    _STRESS / "rwsem.py",
    _STRESS / "walks.py",
    _STRESS / "monitor.py",
)


def schedule_sources() -> dict[str, str]:
    """Hashes of the model and the harness files that place scheduling points."""
    return source_files(SCHEDULE_SOURCES, base=_RMAPSIM.parent)


def make_scheduler(
    scn: Scenario, seed: int, *, replay: Reproducer | None = None, exact: bool = True
) -> Scheduler | None:
    """The scheduler of a controlled case (None when the scenario runs free)."""
    sc = scn.schedule
    if replay is None and not sc.controlled:
        return None
    strategy: Strategy
    if replay is not None:
        strategy = Replay(replay.switches, exact=exact)
    else:
        strategy = make_strategy(sc.strategy, seed, **sc.strategy_params())
    return Scheduler(
        strategy,
        max_steps=max(1, int(scn.duration_s * sc.steps_per_s)),
        steps_per_s=sc.steps_per_s,
        spin_limit=sc.spin_limit,
    )


def run_case(
    scn: Scenario,
    variant: str,
    seed: int,
    *,
    report: RunReport | None = None,
    on_status: Callable[[Status], None] | None = None,
    config: Config | None = None,
    instrumented: bool = True,
    strategy_seed: int | None = None,
    replay: Reproducer | None = None,
    interrupts: Interrupts | None = None,
) -> CaseResult:
    """Run one case to its first defect or the end of its duration.

    `instrumented=False` runs the same workload on plain locks with untracked walks,
    timing and tracing off (the baseline for the instrumentation's cost).  A
    controlled case (`[schedule] mode = "controlled"`) draws its schedule from
    `strategy_seed` (default: the case seed); `replay` follows a reproducer's
    recorded switches instead.  A controlled case that finds a defect carries its
    reproducer in `CaseResult.reproducer`.  With `interrupts`, a SIGINT or SIGTERM
    cuts the case short: it returns with the outcome 'interrupted' and whatever it
    found so far.
    """
    v = parse_variant(variant)
    cfg = config or watchdog_config(scn)
    if not instrumented:
        cfg = cfg.replace(timing=False, trace_events=0)
    meta: dict[str, Any] = {
        "variant": v.name,
        "seed": seed,
        "expected": scn.expected(variant),
        "replay": replay_command(scn, variant, seed),
        "memory": scn.memory.mode,
        "variant_expression": v.expression,
    }
    if scn.memory.mode == "reuse":
        meta["cause_replay"] = replay_command(scn, variant, seed, memory="kasan")
    if v.reconstructed:
        meta["reconstructed"] = list(v.reconstructed)
    sched = make_scheduler(
        scn, seed if strategy_seed is None else strategy_seed, replay=replay
    )
    if sched is not None:
        meta["schedule"] = "controlled"
        meta["strategy"] = sched.strategy.describe()
    mon = Monitor(
        cfg,
        name=f"{v.name} seed {seed}",
        meta=meta,
        report=report,
        on_status=on_status,
        scheduler=sched,
    )
    world = World(scn, v, mon, seed, instrumented=instrumented)
    world.spawn_all()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(scn.yields.switch_interval_s)
    # A thread switch inside an atomic's window happens with the atomic's lock held:
    # fine for the OS scheduler, never for the controlled one.
    windows = atomic_windows(
        world.yield_point if scn.yields.atomic_windows and sched is None else None
    )
    watching = interrupts.watching(mon) if interrupts is not None else contextlib.nullcontext()
    try:
        with windows, watching:
            result = mon.run()
    except BaseException:  # interrupted (^C, a test timeout): never leave workers running
        mon.interrupt("interrupted")
        mon.stop()
        raise
    finally:
        sys.setswitchinterval(previous)
    result.stats["model"] = world.model_stats()
    if sched is not None:
        if isinstance(sched.strategy, Replay):
            result.stats["schedule"]["diverged"] = list(sched.strategy.diverged)
        if result.verdicts and replay is None:
            result.reproducer = workload_reproducer(scn, v.expression, seed, sched, result, world)
    return result


def workload_reproducer(
    scn: Scenario, variant: str, seed: int, sched: Scheduler, result: CaseResult, world: World
) -> Reproducer:
    """What a controlled case found, and the schedule that found it."""
    files = schedule_sources()
    first = min(result.verdicts, key=lambda v: v.at_s)
    raw = scn.to_raw()
    raw["scenario"]["variants"] = [variant]
    raw["scenario"]["seeds"] = [seed]
    raw["expect"] = {k: x for k, x in raw["expect"].items() if k == variant}
    return Reproducer(
        kind="workload",
        target={
            "scenario": raw,
            "scenario_path": scn.path,
            "variant": variant,
            "seed": seed,
            "operations": world.oplog or {},
        },
        strategy=sched.strategy.describe(),
        switches=list(sched.switches),
        steps=sched.step,
        verdict=verdict_record(first),
        source={"hash": combined(files), "files": files},
    )
