"""One stress case: a kernel variant and a seed, on real threads, under a stress Monitor."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable
from typing import Any

from rmapsim.variants import parse_variant
from rmapsim.workload.actors import World
from rmapsim.workload.scenario import Scenario
from stress import CaseResult, Config, Interrupts, Monitor, RunReport, Status

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


def run_case(
    scn: Scenario,
    variant: str,
    seed: int,
    *,
    report: RunReport | None = None,
    on_status: Callable[[Status], None] | None = None,
    config: Config | None = None,
    instrumented: bool = True,
    interrupts: Interrupts | None = None,
) -> CaseResult:
    """Run one case to its first defect or the end of its duration.

    `instrumented=False` runs the same workload on plain locks with untracked walks,
    timing and tracing off (the baseline for the instrumentation's cost).  With
    `interrupts`, a SIGINT or SIGTERM cuts the case short: it returns with the outcome
    'interrupted' and whatever it found so far.
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
    mon = Monitor(cfg, name=f"{v.name} seed {seed}", meta=meta, report=report, on_status=on_status)
    world = World(scn, v, mon, seed, instrumented=instrumented)
    world.spawn_all()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(scn.yields.switch_interval_s)
    watching = interrupts.watching(mon) if interrupts is not None else contextlib.nullcontext()
    try:
        with watching:
            result = mon.run()
    except BaseException:  # interrupted (^C, a test timeout): never leave workers running
        mon.interrupt("interrupted")
        mon.stop()
        raise
    finally:
        sys.setswitchinterval(previous)
    result.stats["model"] = world.model_stats()
    return result
