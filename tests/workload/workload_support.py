"""Shared helpers of the workload and run-command tests: tiny scenarios, in-process settings."""

from __future__ import annotations

import dataclasses
from typing import Any

from rmapsim.workload import Scenario, watchdog_config
from rmapsim.workload.scenario import MemoryModel, Threads
from stress import Config


def tiny_scenario(
    *, duration_s: float = 2.0, memory: str = "kasan", path: str = "tiny.toml", **changes: Any
) -> Scenario:
    """A small, fast scenario: few processes, the default workload mix."""
    scn = Scenario(
        name="tiny",
        path=path,
        duration_s=duration_s,
        threads=Threads(processes=4, threads_per_process=2, reclaim_walkers=2),
        memory=MemoryModel(mode=memory),
    )
    return dataclasses.replace(scn, **changes)


#: Watchdog margins for a loaded machine (the suite runs beside other work): a thread the
#: scheduler leaves off the CPU for a second while it holds a lock is not a long hold.
LOADED_MACHINE: dict[str, float] = {"hold_s": 2.0, "verdict_s": 3.0, "grace_s": 4.0}


def inprocess_config(scn: Scenario, **extra: Any) -> Config:
    """The scenario's watchdog settings with loaded-machine margins, but a stuck run raises
    instead of os._exit."""
    return watchdog_config(scn, on_stuck="raise", **{**LOADED_MACHINE, **extra})
