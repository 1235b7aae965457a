"""Verdicts: what went wrong, with its proof, and the book that counts repeats.

A verdict is the unit every report prints: one kind, a one-line summary, the
threads and locks involved, the blocker chain, each involved thread's stack taken
while it was stuck, kind-specific evidence, and a signature (kind, lock classes,
innermost frames outside the harness) under which repeats in a long run are
counted instead of reported again.

Defects found by the code under test (`Monitor.report_defect`) are verdicts too,
so they share dedup, stop policy and reports with the watchdog's.
"""

from __future__ import annotations

import _thread
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stress.threads import Frame, format_stack, top_frames, where

#: Where a verdict came from.
SOURCES = ("watchdog", "lockdep", "lock", "walk", "worker", "defect")


@dataclass
class Verdict:
    """One diagnosed problem and its evidence."""

    kind: str
    summary: str
    source: str
    threads: list[str] = field(default_factory=list)
    locks: list[str] = field(default_factory=list)
    lock_classes: list[str] = field(default_factory=list)
    #: The blocker chain, one line per waiter, followed to its end or to the cycle.
    chain: list[str] = field(default_factory=list)
    #: Stack of each involved thread, outermost first, taken while it was stuck.
    stacks: dict[str, list[Frame]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    #: Threads whose innermost frames sign the verdict (the culprits, not the victims).
    culprits: list[str] = field(default_factory=list)
    #: Seconds from the start of the run.
    at_s: float = 0.0
    count: int = 1
    last_at_s: float = 0.0
    #: Command that runs the same case again (filled in by the caller).
    replay: str | None = None
    signature: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.last_at_s = self.at_s
        tops: list[str] = []
        for name in sorted(self.culprits or self.threads):
            tops.extend(top_frames(self.stacks.get(name, [])))
        classes = ",".join(sorted(set(self.lock_classes)))
        self.signature = f"{self.kind}|{classes}|{';'.join(tops)}"

    @property
    def signature_id(self) -> str:
        return hashlib.sha1(self.signature.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "source": self.source,
            "at_s": round(self.at_s, 4),
            "count": self.count,
            "last_at_s": round(self.last_at_s, 4),
            "threads": list(self.threads),
            "locks": list(self.locks),
            "lock_classes": sorted(set(self.lock_classes)),
            "chain": list(self.chain),
            "where": {name: where(frames) for name, frames in self.stacks.items()},
            "stacks": {name: [f.to_dict() for f in frames] for name, frames in self.stacks.items()},
            "evidence": self.evidence,
            "signature": self.signature,
            "signature_id": self.signature_id,
            "replay": self.replay,
        }

    def text(self) -> str:
        """The verdict as report.txt prints it, for someone who never saw the code."""
        return "\n".join(self.lines())

    def __str__(self) -> str:
        return self.text()

    def lines(self) -> list[str]:
        """text(), one list item per line."""
        repeat = (
            f", seen {self.count} times (last at {self.last_at_s:.3f} s)" if self.count > 1 else ""
        )
        lines = [
            f"{self.kind.upper()} at {self.at_s:.3f} s{repeat} [{self.source}]",
            f"  {self.summary}",
        ]
        if self.chain:
            lines.append("  Who waits for whom:")
            lines += [f"    {line}" for line in self.chain]
        if self.evidence:
            lines.append("  Evidence:")
            lines += [f"    {line}" for line in _evidence_lines(self.evidence)]
        for name, frames in self.stacks.items():
            lines.append(f"  Where {name} is ({where(frames)}):")
            lines += [f"  {line}" for line in format_stack(frames)]
        if self.replay:
            lines.append(f"  Run it again: {self.replay}")
        lines.append(f"  Signature: {self.signature_id} ({self.signature})")
        return lines


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, value in evidence.items():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            lines.append(f"{key}:")
            lines += [f"  {v}" for v in value]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{key}:")
            for item in value:
                lines.append("  - " + ", ".join(f"{k}={_short(v)}" for k, v in item.items()))
        else:
            lines.append(f"{key}: {_short(value)}")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    return str(value)


class VerdictBook:
    """All verdicts of one run, deduplicated by signature, plus the ongoing episodes.

    An episode is one occurrence of a condition the watchdog keeps seeing poll
    after poll (the same deadlock, the same looping walk); it is recorded once.
    A new episode with a known signature only increments that verdict's count.
    """

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self.verdicts: list[Verdict] = []
        self._by_signature: dict[str, Verdict] = {}
        self._active: dict[Hashable, Verdict] = {}

    def is_active(self, key: Hashable) -> bool:
        return key in self._active

    def active(self, key: Hashable) -> Verdict | None:
        return self._active.get(key)

    def add(self, verdict: Verdict, keys: Sequence[Hashable] = ()) -> tuple[Verdict, bool]:
        """Record `verdict` for the episodes `keys`; return the verdict kept and if it is new."""
        with self._lock:
            for key in keys:
                if key in self._active:
                    return self._active[key], False
            known = self._by_signature.get(verdict.signature)
            if known is not None:
                known.count += 1
                known.last_at_s = verdict.at_s
                kept, new = known, False
            else:
                self._by_signature[verdict.signature] = verdict
                self.verdicts.append(verdict)
                kept, new = verdict, True
            for key in keys:
                self._active[key] = kept
            return kept, new

    def end_episodes(self, seen: set[Hashable]) -> None:
        """Forget ongoing episodes the watchdog no longer sees."""
        with self._lock:
            for key in [k for k in self._active if k not in seen]:
                del self._active[key]

    def snapshot(self) -> list[Verdict]:
        """The verdicts, without taking the lock (safe in the emergency path)."""
        return list(self.verdicts)
