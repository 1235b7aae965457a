"""Scenario files: what a run puts under load, how hard, and what it expects.

A scenario is a TOML file (schema in scenarios/README.md).  `load_scenario` refuses
unknown keys, wrong types and out-of-range values with the file, the key path and
the reason; `Scenario.override` applies command-line overrides the same way.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmapsim.errors import ModelError
from rmapsim.variants import parse_variant
from stress.config import Config
from stress.runfiles import name_problem, safe_name

OUTCOMES = ("defect", "clean")

#: Scenario key path -> the `rmapstress run` option that overrides it.
OVERRIDE_FLAGS: dict[str, str] = {
    "variants": "--variant",
    "seeds": "--seed",
    "duration_s": "--duration",
    "audit_interval_s": "--audit",
    "memory.mode": "--memory",
    "threads.processes": "--processes",
    "threads.threads_per_process": "--threads",
    "threads.reclaim_walkers": "--reclaim",
    "yield.probability": "--yield-prob",
    "schedule.mode": "--schedule",
    "schedule.strategy": "--strategy",
}
#: [watchdog] keys: stress.Config's fields, but the run budget is scenario.duration_s.
WATCHDOG_KEYS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "duration_s")


class ScenarioError(ValueError):
    """A bad scenario: ``FILE: KEY: reason``."""


Check = Callable[[Any], str | None]


def _number(lo: float, hi: float, *, integer: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"expected a {'whole ' if integer else ''}number, got {_show(v)}"
        if integer and not isinstance(v, int):
            return f"expected a whole number, got {v!r}"
        if not math.isfinite(v) or not lo <= v <= hi:
            return f"must be between {lo:g} and {hi:g}, got {v!r}"
        return None

    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, got {_show(v)}"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {_show(v)}"


def _choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        if v not in options:
            return f"expected one of {', '.join(repr(o) for o in options)}, got {_show(v)}"
        return None

    return check


def _show(v: Any) -> str:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(v), type(v).__name__)
    return f"{kind} {v!r}" if not isinstance(v, (list, dict)) else kind


@dataclass(frozen=True)
class Threads:
    processes: int = 6  # live processes kept (forks and spawns refill, exits drain)
    threads_per_process: int = 2  # threads faulting under one mmap_sem
    reclaim_walkers: int = 2  # kswapd-like: page_referenced + try_to_unmap over the LRU
    hibernate: bool = True  # a worker that swaps everything out now and then
    hibernate_period_s: float = 0.05
    compactors: int = 0  # threads migrating samples of the LRU, as memory compaction does
    compaction_period_s: float = 0.005
    compaction_batch: int = 8  # pages isolated and migrated per round


@dataclass(frozen=True)
class Workload:
    touch: int = 50
    mmap: int = 15
    mprotect: int = 12
    munmap: int = 5
    fork: int = 6
    exit: int = 4
    window_pages: int = 6
    min_ops: int = 20  # a process lives this many operations at least ...
    max_ops: int = 200  # ... and at most


@dataclass(frozen=True)
class MemoryModel:
    mode: str = "reuse"
    slab_page_bytes: int = 768
    min_partial: int = 0
    debug_list: bool = False


@dataclass(frozen=True)
class Yields:
    probability: float = 0.05  # at each yield point of the model
    switch_interval_s: float = 0.0002  # sys.setswitchinterval during the run
    atomic_windows: bool = False  # test build: a yield point inside every atomic operation
    # CONFIG_TREE_PREEMPT_RCU: a yield inside an RCU read-side section is a preemption
    # lasting this long (0: a yield is only a thread switch, as without preemptible RCU)
    preempt_rcu_s: float = 0.0


@dataclass(frozen=True)
class KernelConfig:
    # USE_SPLIT_PTLOCKS: one PTE lock per page table (2.6.34 on SMP without lock
    # debugging); false: mm->page_table_lock guards every PTE
    split_ptlocks: bool = True


@dataclass(frozen=True)
class Schedule:
    """Who decides thread switches: the OS (free) or the harness (controlled)."""

    mode: str = "free"  # free | controlled
    strategy: str = "pct"  # pct | random | round-robin (controlled only)
    depth: int = 3  # PCT bug depth
    window: int = 5_000  # PCT: priorities and change points drawn afresh every N steps
    preempt_prob: float = 0.05  # random: chance of a preemption at each scheduling point
    hot_prob: float = 0.2  # random: ... at the model's own race windows (its yield points)
    quantum: int = 50  # round-robin: scheduling points per turn
    steps_per_s: int = 20_000  # logical time: scheduling steps in one second of a scenario
    spin_limit: int = 2_000  # busy-wait turns without progress before a livelock verdict

    @property
    def controlled(self) -> bool:
        return self.mode == "controlled"

    def strategy_params(self) -> dict[str, Any]:
        if self.strategy == "pct":
            return {"depth": self.depth, "window": self.window}
        if self.strategy == "random":
            return {"p": self.preempt_prob, "p_hot": self.hot_prob}
        return {"quantum": self.quantum}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    description: str = ""
    variants: tuple[str, ...] = ("2.6.34",)
    seeds: tuple[int, ...] = (1,)
    duration_s: float = 8.0
    expect: Mapping[str, str] = field(default_factory=dict)
    audit_interval_s: float = 0.0
    threads: Threads = Threads()
    workload: Workload = Workload()
    memory: MemoryModel = MemoryModel()
    yields: Yields = Yields()
    schedule: Schedule = Schedule()
    kernel: KernelConfig = KernelConfig()
    watchdog: Mapping[str, Any] = field(default_factory=dict)
    #: Overrides applied on top of the file, as (key path, value), so that a replay
    #: command can repeat them.
    overrides: tuple[tuple[str, Any], ...] = ()

    def cases(self) -> list[tuple[str, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]

    def expected(self, variant: str) -> str | None:
        return self.expect.get(variant)

    def override(self, **changes: Any) -> Scenario:
        """Apply command-line overrides (None means 'not given'), validated like the file."""
        top: dict[str, Any] = {}
        tables: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if value is None:
                continue
            table, _, name = key.rpartition(".")
            if table:
                tables.setdefault(table, {})[name] = value
            else:
                top[key] = value
        raw = _to_raw(self)
        raw["scenario"].update(top)
        for table, values in tables.items():
            raw.setdefault(table, {}).update(values)
        built = _build(raw, self.path, where_prefix="override: ")
        applied = dict(self.overrides)
        applied.update({k: v for k, v in changes.items() if v is not None})
        return dataclasses.replace(built, overrides=tuple(applied.items()))

    def to_raw(self) -> dict[str, Any]:
        """The scenario as the tables of a file (what a reproducer embeds)."""
        return _to_raw(self)

    def override_flags(self, *, skip: tuple[str, ...] = ("variants", "seeds")) -> list[str]:
        """The command-line options that repeat this scenario's overrides."""
        out: list[str] = []
        for key, value in self.overrides:
            if key in skip or key not in OVERRIDE_FLAGS:
                continue
            out += [OVERRIDE_FLAGS[key], f"{value:g}" if isinstance(value, float) else str(value)]
        return out


_TOP: dict[str, Check] = {
    "name": _string,
    "description": _string,
    "duration_s": _number(0.1, 24 * 3600.0),
    "audit_interval_s": _number(0.0, 3600.0),
}
_TABLES: dict[str, tuple[type, dict[str, Check]]] = {
    "threads": (
        Threads,
        {
            "processes": _number(1, 64, integer=True),
            "threads_per_process": _number(1, 16, integer=True),
            "reclaim_walkers": _number(0, 16, integer=True),
            "hibernate": _boolean,
            "hibernate_period_s": _number(0.001, 60.0),
            "compactors": _number(0, 16, integer=True),
            "compaction_period_s": _number(0.0001, 60.0),
            "compaction_batch": _number(1, 256, integer=True),
        },
    ),
    "workload": (
        Workload,
        {
            **{
                op: _number(0, 1000, integer=True)
                for op in ("touch", "mmap", "mprotect", "munmap", "fork", "exit")
            },
            "window_pages": _number(1, 64, integer=True),
            "min_ops": _number(1, 100_000, integer=True),
            "max_ops": _number(1, 100_000, integer=True),
        },
    ),
    "memory": (
        MemoryModel,
        {
            "mode": _choice("reuse", "kasan"),
            "slab_page_bytes": _number(768, 1 << 20, integer=True),
            "min_partial": _number(0, 1000, integer=True),
            "debug_list": _boolean,
        },
    ),
    "yield": (
        Yields,
        {
            "probability": _number(0.0, 1.0),
            "switch_interval_s": _number(1e-6, 1.0),
            "atomic_windows": _boolean,
            "preempt_rcu_s": _number(0.0, 1.0),
        },
    ),
    "kernel": (
        KernelConfig,
        {
            "split_ptlocks": _boolean,
        },
    ),
    "schedule": (
        Schedule,
        {
            "mode": _choice("free", "controlled"),
            "strategy": _choice("pct", "random", "round-robin"),
            "depth": _number(1, 16, integer=True),
            "window": _number(10, 100_000_000, integer=True),
            "preempt_prob": _number(1e-6, 1.0),
            "hot_prob": _number(0.0, 1.0),
            "quantum": _number(1, 1_000_000, integer=True),
            "steps_per_s": _number(100, 10_000_000, integer=True),
            "spin_limit": _number(10, 100_000_000, integer=True),
        },
    ),
}


def scenario_from_raw(raw: Mapping[str, Any], path: str) -> Scenario:
    """A scenario from file tables (an embedded copy), validated like a file."""
    return _build(raw, path)


def _to_raw(s: Scenario) -> dict[str, Any]:
    return {
        "scenario": {
            "name": s.name,
            "description": s.description,
            "variants": list(s.variants),
            "seeds": list(s.seeds),
            "duration_s": s.duration_s,
            "audit_interval_s": s.audit_interval_s,
        },
        "expect": dict(s.expect),
        "threads": dataclasses.asdict(s.threads),
        "workload": dataclasses.asdict(s.workload),
        "memory": dataclasses.asdict(s.memory),
        "yield": dataclasses.asdict(s.yields),
        "schedule": dataclasses.asdict(s.schedule),
        "kernel": dataclasses.asdict(s.kernel),
        "watchdog": dict(s.watchdog),
    }


def _build(raw: Mapping[str, Any], path: str, where_prefix: str = "") -> Scenario:
    def err(key: str, reason: str) -> ScenarioError:
        return ScenarioError(f"{path}: {where_prefix}{key}: {reason}")

    for key in raw:
        if key not in ("scenario", "expect", "watchdog", *_TABLES):
            raise err(
                key, f"unknown table (known: scenario, expect, {', '.join(_TABLES)}, watchdog)"
            )
        if not isinstance(raw[key], dict):
            raise err(key, f"expected a table, got {_show(raw[key])}")
    top = dict(raw.get("scenario", {}))
    values: dict[str, Any] = {}
    for key, value in top.items():
        if key in ("variants", "seeds"):
            continue
        if key not in _TOP:
            known = ", ".join([*_TOP, "variants", "seeds"])
            raise err(f"scenario.{key}", f"unknown key (known: {known})")
        problem = _TOP[key](value)
        if problem:
            raise err(f"scenario.{key}", problem)
        values[key] = value
    variants = top.get("variants", ["2.6.34"])
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    if (
        not isinstance(variants, list)
        or not variants
        or not all(isinstance(v, str) for v in variants)
    ):
        raise err("scenario.variants", "expected a non-empty array of variant names")
    for v in variants:
        try:
            parse_variant(v)
        except ModelError as exc:
            raise err("scenario.variants", str(exc)) from None
    seeds = top.get("seeds", [1])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
    ):
        raise err("scenario.seeds", "expected a non-empty array of whole numbers in [0, 2**32)")
    expect = dict(raw.get("expect", {}))
    for v, outcome in expect.items():
        try:
            parse_variant(v)
        except ModelError as exc:
            raise err(f"expect.{v}", str(exc)) from None
        if outcome not in OUTCOMES:
            raise err(f"expect.{v}", f"expected 'defect' or 'clean', got {_show(outcome)}")
        # A command line's --variant replaces the list: its expectations may go unused.
        if not where_prefix and v not in variants:
            raise err(
                f"expect.{v}",
                f"not one of scenario.variants ({', '.join(variants)}): it would never be "
                "checked",
            )
    tables: dict[str, Any] = {}
    for table, (cls, checks) in _TABLES.items():
        given = dict(raw.get(table, {}))
        for key, value in given.items():
            if key not in checks:
                raise err(f"{table}.{key}", f"unknown key (known: {', '.join(checks)})")
            problem = checks[key](value)
            if problem:
                raise err(f"{table}.{key}", problem)
        tables[table] = cls(**given)
    wl: Workload = tables["workload"]
    if wl.min_ops > wl.max_ops:
        raise err("workload.min_ops", f"must not exceed workload.max_ops ({wl.max_ops})")
    if not any((wl.touch, wl.mmap, wl.mprotect, wl.munmap, wl.fork, wl.exit)):
        raise err("workload", "every operation weight is 0")
    watchdog = dict(raw.get("watchdog", {}))
    for key in watchdog:
        if key not in WATCHDOG_KEYS:
            raise err(f"watchdog.{key}", f"unknown key (known: {', '.join(WATCHDOG_KEYS)})")
    if "name" in values:
        problem = name_problem(values["name"])
        if problem:  # it names the run folder: one plain path component, never a path
            raise err("scenario.name", problem)
    name = values.pop("name", None) or safe_name(Path(path).stem)
    return Scenario(
        name=name,
        path=path,
        variants=tuple(variants),
        seeds=tuple(seeds),
        expect=expect,
        threads=tables["threads"],
        workload=tables["workload"],
        memory=tables["memory"],
        yields=tables["yield"],
        schedule=tables["schedule"],
        kernel=tables["kernel"],
        watchdog=watchdog,
        **values,
    )


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: not a UTF-8 text file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: invalid TOML: {exc}") from None
    return _build(raw, str(p))
