"""Free-running defects made deterministic: find a controlled schedule that shows the same.

A free-running case (the OS switching threads) cannot be replayed exactly.  When one
finds a defect, the same workload (scenario, variant, seed) is run again under
controlled schedules - random walks and PCT, each from its own seed - until one shows
a verdict of the same kind and signature, or the time budget is spent.  That case's
reproducer then replays exactly, every time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from rmapsim.workload.case import run_case, watchdog_config
from rmapsim.workload.scenario import Scenario, Schedule
from stress import CaseResult, Interrupts

#: Strategies tried in turn (each with fresh seeds): quick preemptions first.
TRIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("random", {"preempt_prob": 0.05}),
    ("pct", {}),
    ("random", {"preempt_prob": 0.2}),
)


@dataclass
class Determinized:
    result: CaseResult | None
    attempts: int
    seconds: float

    @property
    def found(self) -> bool:
        return self.result is not None


def find_controlled(
    scn: Scenario,
    variant: str,
    seed: int,
    kind: str,
    signature: str,
    *,
    budget_s: float = 60.0,
    within_s: float | None = None,
    interrupts: Interrupts | None = None,
) -> Determinized:
    """A controlled case of the same workload whose first verdict has `kind` and `signature`.

    `within_s` bounds each attempt's logical duration (a defect the free run found at
    time t is looked for in the first few t of each attempt, not the whole scenario).
    A SIGINT or SIGTERM seen by `interrupts` ends the search (not found).
    """
    t0 = time.monotonic()
    if within_s is not None:
        scn = replace(scn, duration_s=max(1.0, min(scn.duration_s, within_s)))
    attempts = 0
    round_ = 0
    while time.monotonic() - t0 < budget_s:
        for strategy, params in TRIES:
            if time.monotonic() - t0 >= budget_s or _stopped(interrupts):
                break
            sched = replace(scn.schedule, mode="controlled", strategy=strategy, **params)
            cscn = replace(scn, schedule=sched)
            cfg = watchdog_config(cscn, on_stuck="raise")
            attempts += 1
            result = run_case(
                cscn,
                variant,
                seed,
                config=cfg,
                strategy_seed=seed * 7919 + round_ * 31 + attempts,
                interrupts=interrupts,
            )
            if result.outcome == "interrupted":
                break
            first = min(result.verdicts, key=lambda v: v.at_s) if result.verdicts else None
            if first is not None and (first.kind, first.signature) == (kind, signature):
                return Determinized(result, attempts, time.monotonic() - t0)
        if _stopped(interrupts):
            break
        round_ += 1
    return Determinized(None, attempts, time.monotonic() - t0)


def _stopped(interrupts: Interrupts | None) -> bool:
    return interrupts is not None and interrupts.signum is not None


__all__ = ["Determinized", "Schedule", "find_controlled"]
