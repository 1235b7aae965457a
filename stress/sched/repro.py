"""Reproducer files: a controlled run's schedule, what it ran, what it found, on which code.

A reproducer is one JSON file:

    {
      "format": "stress-reproducer", "version": 1,
      "kind": "workload" | "program" | "function",    what `target` describes
      "target": {...},                                  the application's own description
      "strategy": {"name": "pct", "seed": 7, ...},     how the schedule was found
      "schedule": {"steps": 18231, "tasks": [...], "points": [...],
                   "switches": [[step, task, point, arrival, next task, why], ...]},
      "verdict": {"kind", "signature", "summary", "objects"},
      "source": {"hash": "...", "files": {"pkg/mod.py": "sha256", ...}},
      "python": "3.11.7", "created": "2026-12-01T14:00:00Z"
    }

Switches name tasks and points by index into `tasks` and `points` (names, never
bytecode offsets), so the file stays small however long the run: a switch is six
small numbers.  `source` records a hash of every source file the run depended on;
replaying on changed code names the files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress.sched.core import Switch

FORMAT = "stress-reproducer"
VERSION = 1
KINDS = ("workload", "program", "function")
WHYS = ("preempt", "block", "sleep", "wait", "exit", "relax", "start")


class ReproducerError(ValueError):
    """A reproducer file that cannot be used: names the file and what is wrong."""


def source_files(roots: Iterable[Path], base: Path | None = None) -> dict[str, str]:
    """sha256 of every .py file under each root (a package folder or one file).

    Names are relative to `base` (default: each root's parent folder).
    """
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        rel = base if base is not None else root.parent
        for f in files:
            if "__pycache__" in f.parts:
                continue
            out[str(f.relative_to(rel))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def combined(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()[:16]


def changed_files(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Files whose content differs, was added or was removed since recording."""
    out = [f"{n} (changed)" for n in sorted(recorded) if n in now and now[n] != recorded[n]]
    out += [f"{n} (removed)" for n in sorted(recorded) if n not in now]
    out += [f"{n} (new)" for n in sorted(now) if n not in recorded]
    return out


_ADDR = re.compile(r"0x[0-9a-f]{6,}")
_NAME = re.compile(r"\b[a-z_]+#\d+\b|\b[a-z_]+@0x[0-9a-f]+\b")


def verdict_objects(verdict: Any) -> list[str]:
    """The addresses and names of the objects a verdict involves, in order of mention.

    Locks by name, then every object name (``anon_vma#12``, ``page#3``) and address
    (``0xffff88000000a0c0``) in the summary and the evidence.
    """
    seen: dict[str, None] = {}
    for name in getattr(verdict, "locks", []):
        seen[str(name)] = None

    def scan(value: Any) -> None:
        if isinstance(value, str):
            for m in _NAME.findall(value):
                seen[m] = None
            for m in _ADDR.findall(value):
                seen[m] = None
        elif isinstance(value, bool):
            return
        elif isinstance(value, int) and value >= 0xFFFF000000000000:
            seen[f"{value:#x}"] = None
        elif isinstance(value, Mapping):
            for k in sorted(value, key=str):
                if k in ("stack", "stacks", "where", "step", "at_s", "waiting_s"):
                    continue
                scan(value[k])
        elif isinstance(value, (list, tuple)):
            for v in value:
                scan(v)

    scan(getattr(verdict, "summary", ""))
    scan(getattr(verdict, "evidence", {}))
    return list(seen)


def verdict_record(verdict: Any) -> dict[str, Any]:
    return {
        "kind": verdict.kind,
        "signature": verdict.signature,
        "summary": verdict.summary,
        "objects": verdict_objects(verdict),
    }


@dataclass
class Reproducer:
    """A controlled run that found something, and the way to run it again."""

    kind: str
    target: dict[str, Any]
    strategy: dict[str, Any]
    switches: list[Switch]
    steps: int
    verdict: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    python: str = field(default_factory=platform.python_version)
    created: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )

    # -- writing ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        tasks: dict[str, int] = {}
        points: dict[str, int] = {}
        rows = []
        for s in self.switches:
            t = tasks.setdefault(s.task, len(tasks))
            to = tasks.setdefault(s.to, len(tasks))
            p = points.setdefault(s.point, len(points))
            rows.append([s.step, t, p, s.n, to, WHYS.index(s.why) if s.why in WHYS else 0])
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "target": self.target,
            "strategy": self.strategy,
            "schedule": {
                "steps": self.steps,
                "tasks": list(tasks),
                "points": list(points),
                "switches": rows,
                # Where each switching task was (for reading; replay ignores it).
                "sites": [s.site for s in self.switches],
                # [operations the task had begun, arrivals at the point since the last]
                "marks": [[s.mark, s.since] for s in self.switches],
            },
            "verdict": self.verdict,
            "source": self.source,
            "python": self.python,
            "created": self.created,
        }

    def dumps(self) -> str:
        body = json.dumps(self.to_dict(), indent=1, sort_keys=False)
        # One switch per line: readable, and still small.
        return re.sub(r"\[\s+(-?\d+),\s+(-?\d+),\s+(-?\d+),\s+(-?\d+),\s+(-?\d+),\s+(-?\d+)\s+\]",
                      r"[\1, \2, \3, \4, \5, \6]", body) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a temporary file renamed over the target)."""
        from stress.runfiles import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.dumps())  # a full disk leaves no half-written file
        return path

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, where: str = "reproducer") -> Reproducer:
        def bad(msg: str) -> ReproducerError:
            return ReproducerError(f"{where}: {msg}")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        if data.get("format") != FORMAT:
            raise bad(f"not a reproducer file (format {data.get('format')!r}, want {FORMAT!r})")
        version = data.get("version")
        if version != VERSION:
            raise bad(f"format version {version!r} is not supported (this tool reads {VERSION})")
        kind = data.get("kind")
        if kind not in KINDS:
            raise bad(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        for key, typ in (("target", dict), ("strategy", dict), ("schedule", dict),
                         ("verdict", dict)):
            if not isinstance(data.get(key), typ):
                raise bad(f"{key}: missing or not a table")
        sch = data["schedule"]
        tasks, points, rows = sch.get("tasks"), sch.get("points"), sch.get("switches")
        steps = sch.get("steps")
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise bad("schedule.tasks: expected a list of task names")
        if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
            raise bad("schedule.points: expected a list of point names")
        if not isinstance(rows, list):
            raise bad("schedule.switches: expected a list")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise bad("schedule.steps: expected a whole number")
        sites = sch.get("sites")
        if sites is not None and (
            not isinstance(sites, list)
            or len(sites) != len(rows)
            or not all(isinstance(x, str) for x in sites)
        ):
            raise bad("schedule.sites: expected one string per switch")
        marks = sch.get("marks")
        if marks is not None and (
            not isinstance(marks, list)
            or len(marks) != len(rows)
            or not all(
                isinstance(m, list)
                and len(m) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in m)
                for m in marks
            )
        ):
            raise bad("schedule.marks: expected one [operations, arrivals] pair per switch")
        switches = []
        for i, row in enumerate(rows):
            ok = (
                isinstance(row, list)
                and len(row) == 6
                and all(isinstance(x, int) and not isinstance(x, bool) for x in row)
                and 0 <= row[1] < len(tasks)
                and 0 <= row[2] < len(points)
                and 0 <= row[4] < len(tasks)
                and 0 <= row[5] < len(WHYS)
                and row[3] >= 1
            )
            if not ok:
                raise bad(f"schedule.switches[{i}]: expected [step, task, point, arrival, "
                          f"next task, why] with valid indexes, got {row!r}")
            switches.append(
                Switch(row[0], tasks[row[1]], points[row[2]], row[3], tasks[row[4]],
                       WHYS[row[5]], sites[i] if sites else "",
                       marks[i][0] if marks else 0, marks[i][1] if marks else 0)
            )
        return cls(
            kind=kind,
            target=data["target"],
            strategy=data["strategy"],
            switches=switches,
            steps=steps,
            verdict=data["verdict"],
            source=data.get("source") or {},
            python=str(data.get("python", "")),
            created=str(data.get("created", "")),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reproducer:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReproducerError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReproducerError(
                f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})"
            ) from None
        return cls.from_dict(data, where=str(path))

    def staleness(self, files_now: Mapping[str, str]) -> list[str]:
        """What differs between the code it was recorded on and `files_now`."""
        out = []
        if self.python and self.python != platform.python_version():
            out.append(f"Python {self.python} then, {platform.python_version()} now")
        recorded = self.source.get("files")
        if isinstance(recorded, dict):
            out += changed_files(recorded, files_now)
        return out
