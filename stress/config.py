"""Run settings and the timeout ladder.

Every hang must be named by the most specific rung first, and the process must
leave before anything outside it gives up on it:

    walk bound (walk_s)            a stuck walk is a list-loop ...
  < hold budget (hold_s)           ... before its lock is a long-hold ...
  < watchdog verdict (verdict_s)   ... before its waiters are a stall;
  < emergency exit                 the watchdog decides before the run is abandoned
    (duration_s + grace_s),
  < per-test timeout               our report lands before pytest-timeout fires,
  < job limit                      and before CI kills the job.

`Config.validate()` checks every rung and raises LadderError naming the two
settings in the wrong order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stress.errors import ConfigError, LadderError

#: os._exit status of the emergency path: workers did not stop within the grace
#: period after cancellation (the same status timeout(1) uses for "timed out").
EXIT_EMERGENCY = 124
#: Exit status of the faulthandler backstop (fixed by faulthandler: it calls _exit(1)).
EXIT_BACKSTOP = 1

#: Verdict kinds the harness itself produces.
WATCHDOG_KINDS = (
    "list-loop",
    "leaked-lock",
    "long-hold",
    "deadlock",
    "starvation",
    "livelock",
    "stall",
)
HARNESS_KINDS = (*WATCHDOG_KINDS, "lock-order", "crash")


@dataclass(frozen=True)
class Config:
    """Settings of one run (one Monitor).  All times are seconds."""

    #: Watchdog period.
    poll_s: float = 0.02
    #: Time bound of a walk that has no step bound.
    walk_s: float = 0.2
    #: Default hold budget of every lock class.
    hold_s: float = 0.5
    #: Per-class hold budgets, overriding hold_s.
    hold_budgets: Mapping[str, float] = field(default_factory=dict)
    #: Threshold of the starvation, livelock and stall verdicts.
    verdict_s: float = 1.5
    #: A waiter is starving only if the lock changed hands this often meanwhile.
    starve_grants: int = 16
    #: Run budget: the run is cancelled after this long.
    duration_s: float = 10.0
    #: How long cancelled workers get to stop before the emergency exit.
    grace_s: float = 2.0
    #: Extra time before the faulthandler backstop fires (it needs no GIL).
    backstop_s: float = 2.0
    #: pytest-timeout of the test running this, if any.
    test_timeout_s: float | None = None
    #: Wall-clock limit of the whole job (CI), if any.
    job_limit_s: float | None = None
    #: Verdict kinds that cancel the run; None means every kind.
    stop_on: frozenset[str] | None = None
    #: After a stopping verdict, keep watching this long before cancelling, so the
    #: evidence shows who piles up behind the culprit.
    linger_s: float = 0.0
    #: A walk step past its bound reports the list-loop itself (else only the
    #: watchdog, from outside, sees it and the walker keeps looping).
    walk_self_check: bool = False
    #: Time every lock hold (hold histograms, lock holds in trace.json).
    timing: bool = True
    #: Trace ring-buffer capacity in events; 0 switches tracing off.
    trace_events: int = 50_000
    #: Period of status ticks (callback and events.jsonl).
    status_every_s: float = 2.0
    #: What to do when workers do not stop: leave with os._exit(EXIT_EMERGENCY),
    #: or raise StuckThreadsError (the report is written either way).
    on_stuck: Literal["exit", "raise"] = "exit"
    #: Arm the faulthandler backstop at start (it ends the process; the watch mode,
    #: which must never end a pytest session, turns it off).
    backstop: bool = True
    #: A lock held past its budget is a long-hold only if someone waits for it (a slow
    #: thread holding a lock nobody wants hangs nobody); the watch mode turns it on.
    hold_needs_waiters: bool = False

    def budget(self, lock_class: str) -> float:
        """Hold budget of `lock_class`."""
        return self.hold_budgets.get(lock_class, self.hold_s)

    def stops_on(self, kind: str) -> bool:
        return self.stop_on is None or kind in self.stop_on

    @property
    def deadline_s(self) -> float:
        """The emergency exit: no run outlives its budget plus the grace period."""
        return self.duration_s + self.grace_s

    @property
    def backstop_at_s(self) -> float:
        """When the faulthandler backstop fires, counted from the run's start."""
        return self.deadline_s + self.backstop_s

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes).validate()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "config") -> Config:
        """Build from a mapping (a scenario file's table); unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ConfigError(f"{where}.{key}: unknown setting", settings=(key,))
        values = dict(data)
        stop_on = values.get("stop_on")
        if stop_on is not None:
            if (
                isinstance(stop_on, str)
                or not isinstance(stop_on, (list, tuple, set, frozenset))
                or not all(isinstance(k, str) for k in stop_on)
            ):
                raise ConfigError(
                    f"{where}.stop_on: expected an array of verdict kinds, got {stop_on!r}",
                    settings=("stop_on",),
                )
            values["stop_on"] = frozenset(stop_on)
        if "hold_budgets" in values:
            budgets = values["hold_budgets"]
            if not isinstance(budgets, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in budgets.items()
            ):
                raise ConfigError(
                    f"{where}.hold_budgets: expected a table of lock class = "
                    f"seconds, got {budgets!r}",
                    settings=("hold_budgets",),
                )
            values["hold_budgets"] = dict(budgets)
        try:
            made = cls(**values)
        except TypeError as exc:  # pragma: no cover - dataclass keywords are checked above
            raise ConfigError(f"{where}: {exc}") from None
        return made.validate(where=where)

    def validate(self, *, where: str = "config") -> Config:
        """Check types, ranges and the timeout ladder; return self."""
        for name in (
            "poll_s",
            "walk_s",
            "hold_s",
            "verdict_s",
            "duration_s",
            "grace_s",
            "backstop_s",
            "status_every_s",
        ):
            _positive(where, name, getattr(self, name))
        _non_negative(where, "linger_s", self.linger_s)
        for name in ("test_timeout_s", "job_limit_s"):
            value = getattr(self, name)
            if value is not None:
                _positive(where, name, value)
        for name in ("starve_grants", "trace_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"{where}.{name}: expected a whole number >= 0, got {value!r}", settings=(name,)
                )
        for name in ("walk_self_check", "timing", "backstop", "hold_needs_waiters"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}.{name}: expected true or false", settings=(name,))
        if self.on_stuck not in ("exit", "raise"):
            raise ConfigError(
                f"{where}.on_stuck: expected 'exit' or 'raise', got {self.on_stuck!r}",
                settings=("on_stuck",),
            )
        for cls_name, budget in self.hold_budgets.items():
            _positive(where, f"hold_budgets[{cls_name!r}]", budget)
        self._check_ladder(where)
        return self

    def _check_ladder(self, where: str) -> None:
        rungs: list[tuple[str, float, str, float, str]] = [
            (
                "poll_s",
                self.poll_s,
                "walk_s",
                self.walk_s,
                "the watchdog must poll more often than the shortest bound it enforces",
            ),
            (
                "walk_s",
                self.walk_s,
                "hold_s",
                self.hold_s,
                "a stuck walk must be called a list-loop before its lock is called a long-hold",
            ),
        ]
        for cls_name, budget in sorted(self.hold_budgets.items()):
            rungs.append(
                (
                    "walk_s",
                    self.walk_s,
                    f"hold_budgets[{cls_name!r}]",
                    budget,
                    "a stuck walk must be called a list-loop before its lock is called a long-hold",
                )
            )
            rungs.append(
                (
                    f"hold_budgets[{cls_name!r}]",
                    budget,
                    "verdict_s",
                    self.verdict_s,
                    "a long hold must be named before its waiters are called a stall",
                )
            )
        rungs += [
            (
                "hold_s",
                self.hold_s,
                "verdict_s",
                self.verdict_s,
                "a long hold must be named before its waiters are called a stall",
            ),
            (
                "verdict_s",
                self.verdict_s,
                "duration_s + grace_s",
                self.deadline_s,
                "the watchdog must reach its verdict before the emergency exit",
            ),
        ]
        if self.test_timeout_s is not None:
            rungs.append(
                (
                    "duration_s + grace_s + backstop_s",
                    self.backstop_at_s,
                    "test_timeout_s",
                    self.test_timeout_s,
                    "the harness must leave its report before pytest-timeout fires",
                )
            )
        outer_name = (
            "test_timeout_s"
            if self.test_timeout_s is not None
            else "duration_s + grace_s + backstop_s"
        )
        outer = self.test_timeout_s if self.test_timeout_s is not None else self.backstop_at_s
        if self.job_limit_s is not None:
            rungs.append(
                (
                    outer_name,
                    outer,
                    "job_limit_s",
                    self.job_limit_s,
                    "every test must end before the job limit",
                )
            )
        for low_name, low, high_name, high, why in rungs:
            if not low < high:
                raise LadderError(
                    f"{where}: {low_name} ({low:g} s) must be less than {high_name} "
                    f"({high:g} s): {why}",
                    settings=(low_name, high_name),
                )


def _positive(where: str, name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{where}.{name}: expected a number of seconds > 0, got {value!r}", settings=(name,)
        )


def _non_negative(where: str, name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(
            f"{where}.{name}: expected a number of seconds >= 0, got {value!r}", settings=(name,)
        )
