"""The one reporting layer: a run folder with events.jsonl, report.json, report.txt, trace.json.

A run is one or more cases (a kernel variant and a seed, say); each case is one
Monitor's `CaseResult`: the caller's metadata (variant, seed, expected outcome,
replay command, anything else) plus the harness's outcome, verdicts and stats.

Rendering is pure (strings from values, no locks, no logging) so the emergency
path can write the same report with bare os.write.

trace.json is in the Chrome trace event format (Perfetto, chrome://tracing).
While a run goes on, lock holds, walks and verdicts go into a bounded ring of
plain tuples (one deque append each; the oldest fall off), so tracing costs the
workers little and memory stays flat however long the run.  Converting them to
trace events happens once, at the end of the case, including the holds and
walks still open then (the stuck ones, marked "open").  Ring records:
  ("L", tid, lock name, lock class, t0, t1)        a lock hold
  ("W", tid, walk kind, subject, t0, t1, steps, bound, how it ended, or None)
  ("V", tid, verdict kind, summary, t)            a verdict (an instant event)

events.jsonl goes through loguru with serialize=True, at the custom level
STRESS (no 5, below DEBUG): loguru's default stderr handler ignores it, so the
harness never prints by itself; add a sink at level 5 to see the events elsewhere.

Nothing is ever half-written (stress.runfiles): the report files are replaced
atomically, events.jsonl grows by whole lines, and a write that fails (a full
disk) leaves the previous version in place and is kept in `RunReport.error`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message

from stress.runfiles import LineLog, atomic_write
from stress.threads import Frame, ThreadState, format_stack
from stress.verdicts import Verdict

Record = tuple[Any, ...]

SCHEMA = 1
LEVEL = "STRESS"
try:
    logger.level(LEVEL)
except ValueError:
    logger.level(LEVEL, no=5, color="<magenta>")

#: Metadata keys printed first, in this order, when present.
META_ORDER = ("variant", "seed", "expected", "replay")


@dataclass
class CaseResult:
    """What one case (one Monitor run) found."""

    name: str
    meta: dict[str, Any]
    outcome: str
    first_defect_s: float | None
    duration_s: float
    verdicts: list[Verdict]
    stats: dict[str, Any]
    #: Verdicts raised after cancellation (consequences of stopping, not counted).
    late: list[Verdict] = field(default_factory=list)
    cancel_reason: str = ""
    stuck: list[str] = field(default_factory=list)
    #: For each stuck thread: what it holds, what it does, its stack.
    stuck_detail: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Chrome trace events of this case (pid 1; renumbered per case by the report).
    trace_events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: A controlled run's reproducer (a `stress.sched.repro.Reproducer`), when it found
    #: something; the application saves it and puts its path in meta["reproducer"].
    reproducer: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.meta.get(k) for k in META_ORDER if k in self.meta}
        out.setdefault("expected", None)
        out.update({k: v for k, v in self.meta.items() if k not in out})
        out.update(
            {
                "case": self.name,
                "outcome": self.outcome,
                "first_defect_s": (
                    None if self.first_defect_s is None else round(self.first_defect_s, 4)
                ),
                "duration_s": round(self.duration_s, 4),
                "cancel_reason": self.cancel_reason,
                "verdicts": [v.to_dict() for v in self.verdicts],
                "after_cancel": [v.to_dict() for v in self.late],
                "stats": self.stats,
                "stuck_threads": list(self.stuck),
                "stuck": list(self.stuck_detail),
                "errors": list(self.errors),
            }
        )
        return out

    def headline(self) -> str:
        who = " ".join(f"{k}={self.meta[k]}" for k in ("variant", "seed") if k in self.meta)
        who = who or self.name
        if self.outcome == "defect":
            kinds = ", ".join(dict.fromkeys(v.kind for v in self.verdicts))
            what = f"DEFECT after {self.first_defect_s:.3f} s ({kinds})"
        elif self.outcome == "error":
            what = "ERROR"
        elif self.outcome == "interrupted":
            n = len(self.verdicts)
            what = f"INTERRUPTED after {self.duration_s:.1f} s" + (
                f" ({n} verdict{'s' if n != 1 else ''} before)" if n else ""
            )
        else:
            what = "clean"
        expected = self.meta.get("expected")
        tail = f" (expected: {expected})" if expected is not None else ""
        return f"{who}: {what}{tail}"


def render_json(scenario: str, cases: list[CaseResult], **run: Any) -> str:
    """report.json; `run` adds run-level fields (complete, interrupted) before the cases."""
    body = {"schema": SCHEMA, "scenario": scenario, **run, "cases": [c.to_dict() for c in cases]}
    return json.dumps(body, indent=2, default=str) + "\n"


def render_text(scenario: str, cases: list[CaseResult], *, interrupted: str | None = None) -> str:
    lines = [f"Stress report: scenario {scenario}, {len(cases)} case(s)", ""]
    if interrupted:
        lines[1:1] = [
            f"The run was interrupted ({interrupted}): the last case was cut short and the "
            "cases after it did not run."
        ]
    for i, case in enumerate(cases, 1):
        lines += [*_case_text(i, len(cases), case), ""]
    return "\n".join(lines)


def _case_text(index: int, total: int, case: CaseResult) -> list[str]:
    st = case.stats
    lines = [f"Case {index} of {total}: {case.headline()}", "=" * 78]
    if "replay" in case.meta:
        lines.append(f"Run it again: {case.meta['replay']}")
    lines.append(f"Ran {case.duration_s:.2f} s; stopped because: {case.cancel_reason or 'n/a'}")
    lines.append(
        f"Work done: {st.get('ops', 0):,} operations ({st.get('ops_per_s', 0):,.0f}/s), "
        f"{st.get('walks', 0):,} walks ({st.get('walks_per_s', 0):,.0f}/s), "
        f"{st.get('walk_steps', 0):,} walk steps"
    )
    if case.stuck:
        lines.append(
            f"EMERGENCY EXIT: these threads did not stop after cancellation: "
            f"{', '.join(case.stuck)}"
        )
        for detail in case.stuck_detail:
            lines.append(f"  {detail['doing']}")
            frames = [Frame(**f) for f in detail["stack"]]
            lines += [f"  {line}" for line in format_stack(frames)]
    for err in case.errors:
        lines.append(f"Internal error: {err}")
    if case.verdicts:
        lines.append("")
        lines.append(f"{len(case.verdicts)} verdict(s), first at {case.first_defect_s:.3f} s:")
        for n, verdict in enumerate(case.verdicts, 1):
            lines.append("")
            body = verdict.lines()
            lines.append(f"[{n}] {body[0]}")
            lines += body[1:]
    else:
        lines.append("No verdicts: nothing hung, nothing was reported.")
    rep = case.reproducer
    if rep is not None and getattr(rep, "switches", None):
        from stress.sched.timeline import timeline_lines

        lines.append("")
        lines.append(
            "The interleaving that led to it (controlled schedule; the last stretches, "
            "who ran until which point):"
        )
        lines += [f"  {x}" for x in timeline_lines(rep.switches, rep.steps)]
    if case.late:
        lines.append("")
        lines.append(
            f"After cancellation (not counted; likely consequences of stopping "
            f"workers half-way), {len(case.late)}:"
        )
        lines += [f"  {v.kind}: {v.summary}" for v in case.late]
    lines += _lock_table(st.get("lock_classes", {}))
    return lines


def _lock_table(classes: dict[str, dict[str, Any]]) -> list[str]:
    if not classes:
        return []
    header = ("class", "locks", "acquired", "contended", "wait", "hold", "longest seen")
    rows: list[tuple[str, ...]] = []
    for name, c in sorted(classes.items()):
        w, h = c["wait"], c["hold"]
        wait = "/".join(_us(w[k]) for k in ("p50_us", "p99_us", "max_us")) if w["count"] else "-"
        hold = "/".join(_us(h[k]) for k in ("p50_us", "p99_us", "max_us")) if h["count"] else "-"
        acquired = "-" if c["acquisitions"] is None else f"{c['acquisitions']:,}"
        contended = (
            f"{c['contentions']:,}"
            if c["contention_pct"] is None
            else f"{c['contentions']:,} ({c['contention_pct']:.1f}%)"
        )
        rows.append(
            (
                name,
                f"{c['instances']:,}",
                acquired,
                contended,
                wait,
                hold,
                f"{c['longest_hold_seen_s']:.3f} s",
            )
        )
    # Widths from the cells themselves, two spaces between columns: long class names and
    # wait figures never run into their neighbours.
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  " + "  ".join([first, *rest])

    return [
        "",
        "Locks (per class; contended = acquisitions that had to wait; wait and hold as "
        "p50/p99/max; '-' where not measured: acquisitions and holds need timing on):",
        line(header),
        *(line(r) for r in rows),
    ]


# -- trace.json --------------------------------------------------------------------------


def open_records(states: list[ThreadState], monitor: Any, now: float) -> list[Record]:
    """Holds and walks in progress now, as records ending at `now`."""
    out: list[Record] = []
    for state in states:
        for entry in state.held[1:]:
            lock = getattr(entry, "lock", entry)
            if getattr(lock, "monitor", None) is not monitor:
                continue
            since = next((t for s, _, t in lock.holders() if s is state), None)
            if since is not None:
                out.append(("L", state.tid, lock.name, lock.lock_class.name, since, now, True))
        for walk in list(state.walks):
            out.append(
                ("W", state.tid, walk.kind, walk.subject, walk.t0, now, walk.n, walk.bound, "open")
            )
    return out


def chrome_events(
    records: list[Record], *, pid: int, base: float, process: str, threads: dict[int, str]
) -> list[dict[str, Any]]:
    """Trace events of one case (one Perfetto process), timestamps in us from `base`."""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process}},
        {
            "name": "process_sort_index",
            "ph": "M",
            "pid": pid,
            "tid": 0,
            "args": {"sort_index": pid},
        },
    ]
    used: set[int] = set()
    body: list[dict[str, Any]] = []
    for rec in records:
        tag, tid = rec[0], rec[1]
        used.add(tid)
        if tag == "L":
            body.append(
                _complete(
                    rec[2],
                    "lock",
                    pid,
                    tid,
                    rec[4],
                    rec[5],
                    base,
                    {"class": rec[3], **({"open": True} if len(rec) > 6 else {})},
                )
            )
        elif tag == "W":
            args: dict[str, Any] = {"subject": rec[3], "steps": rec[6], "bound": rec[7]}
            if rec[8] is not None:
                args["ended"] = rec[8]  # "open" (still walking) or the exception that ended it
            body.append(_complete(f"walk {rec[2]}", "walk", pid, tid, rec[4], rec[5], base, args))
        elif tag == "V":
            body.append(
                {
                    "name": rec[2],
                    "cat": "verdict",
                    "ph": "i",
                    "s": "p",
                    "pid": pid,
                    "tid": tid,
                    "ts": _micros(rec[4] - base),
                    "args": {"summary": rec[3]},
                }
            )
    # Parents before children at equal start times, so holds nest as taken.
    body.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
    for tid in sorted(used):
        events.append(
            {
                "name": "thread_name",
                "ph": "M",
                "pid": pid,
                "tid": tid,
                "args": {"name": threads.get(tid, f"thread-{tid}")},
            }
        )
    return events + body


def _complete(
    name: str, cat: str, pid: int, tid: int, t0: float, t1: float, base: float, args: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "pid": pid,
        "tid": tid,
        "ts": _micros(t0 - base),
        "dur": max(_micros(t1 - t0), 0.0),
        "args": args,
    }


def _micros(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def render_trace(events: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    return json.dumps(
        {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}, separators=(",", ":")
    )


# -- the run folder ---------------------------------------------------------------------


def _us(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}s"
    if value >= 1e3:
        return f"{value / 1e3:.1f}ms"
    return f"{value:.0f}us"


class RunReport:
    """A run folder and the writers that fill it; collects the cases of one run.

    `write()` may be called after every case; `finish()` writes the last version once
    (later calls do nothing), marking the run complete or interrupted.
    """

    def __init__(self, folder: str | Path, *, scenario: str = "adhoc", events: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.cases: list[CaseResult] = []
        #: The run ran every case it meant to (False until finish(complete=True)).
        self.complete = False
        #: What interrupted the run ("SIGINT", "SIGTERM"), if anything did.
        self.interrupted: str | None = None
        #: The first write that failed (a full disk, say); the files keep their last version.
        self.error: OSError | None = None
        self._token = f"{id(self):x}-{time.monotonic_ns():x}"
        self._sink: int | None = None
        self._events: LineLog | None = None
        self._write_lock = threading.Lock()
        self._finished = False
        if events:
            token = self._token
            log = self._events = LineLog(self.folder / "events.jsonl")

            def sink(message: Message) -> None:
                log.write(message)  # one serialized record, one whole line

            self._sink = logger.add(
                sink,
                level=LEVEL,
                serialize=True,
                filter=lambda record: record["extra"].get("stress_run") == token,
            )

    @property
    def paths(self) -> dict[str, Path]:
        names = ("events.jsonl", "report.json", "report.txt", "trace.json")
        return {n: self.folder / n for n in names}

    @property
    def events_error(self) -> OSError | None:
        """The write error that stopped events.jsonl, if one did."""
        return self._events.error if self._events is not None else None

    def event(self, kind: str, message: str, **data: Any) -> None:
        """One record in events.jsonl (kind is 'verdict', 'status', 'case' or 'error')."""
        if self._sink is not None:
            logger.bind(stress_run=self._token, event=kind, **data).log(LEVEL, message)

    def add_case(self, case: CaseResult) -> None:
        self.cases.append(case)
        self.event(
            "case",
            case.headline(),
            case=case.name,
            outcome=case.outcome,
            verdicts=len(case.verdicts),
        )

    def run_fields(self) -> dict[str, Any]:
        return {"complete": self.complete, "interrupted": self.interrupted}

    def write(self) -> None:
        """Write report.json, report.txt and trace.json for the cases so far.

        Each file is replaced atomically; on an OSError the files keep their previous
        version, the error is kept in `error` and raised.
        """
        with self._write_lock:
            cases = list(self.cases)
            files = {
                "report.json": render_json(self.scenario, cases, **self.run_fields()),
                "report.txt": render_text(self.scenario, cases, interrupted=self.interrupted),
                "trace.json": render_trace(
                    self.trace_events(cases),
                    {"scenario": self.scenario, "cases": [c.name for c in cases]},
                ),
            }
            for name, text in files.items():
                try:
                    atomic_write(self.folder / name, text)
                except OSError as exc:
                    if exc.filename is None:  # os.write does not say which file
                        exc.filename = str(self.folder / name)
                    self.error = self.error or exc
                    raise

    def finish(self, *, complete: bool, interrupted: str | None = None) -> None:
        """Write the run's last version once, under a guard (later calls do nothing)."""
        with self._write_lock:
            if self._finished:
                return
            self._finished = True
            self.complete = complete
            self.interrupted = interrupted
        try:
            self.write()
        finally:
            self.close()

    def trace_events(self, cases: list[CaseResult]) -> list[dict[str, Any]]:
        """Every case's trace events, one Perfetto process (pid) per case."""
        events: list[dict[str, Any]] = []
        for pid, case in enumerate(cases, 1):
            for event in case.trace_events:
                event = {**event, "pid": pid}
                if event["name"] == "process_sort_index":
                    event["args"] = {"sort_index": pid}
                events.append(event)
        return events

    def rendered(self, current: CaseResult | None) -> dict[str, str]:
        """File contents for the emergency path: pure strings, no I/O, most important first."""
        cases = self.cases + ([current] if current is not None else [])
        return {
            "report.txt": render_text(self.scenario, cases, interrupted=self.interrupted),
            "report.json": render_json(self.scenario, cases, **self.run_fields()),
            "trace.json": render_trace(self.trace_events(cases), {"scenario": self.scenario}),
        }

    def close(self) -> None:
        if self._sink is not None:
            logger.remove(self._sink)
            self._sink = None
        if self._events is not None:
            self._events.close()

    def __enter__(self) -> RunReport:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.write()
        finally:
            self.close()
