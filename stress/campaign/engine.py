"""The engine: cases out to an executor, records into the store as each one finishes.

    runner = Runner(store, executor, session=0, observer=live)
    outcome = runner.run(cases, done=keys_already_finished, total=len(cases), deadline=None)

Cases are taken from the iterable only as slots free up, so an endless stream (a
soak) and a deadline work alike.  Each finished case is written to results.jsonl
(files first, then the line, fsync'd) before anything else is done with it, so a
campaign stopped at any moment has lost nothing it finished.

SIGINT and SIGTERM (while `run` is in the main thread) ask the engine to stop:
no new case starts, the workers are killed, `run` returns with `interrupted` set.
A second ^C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from stress.campaign.executor import Case, Executor, ExecutorBroken, Finished
from stress.campaign.store import CampaignStore

#: Fields every record carries, in this order, before the rest.
RECORD_FIELDS = (
    "key",
    "scenario",
    "group",
    "variant",
    "seed",
    "outcome",
    "expected",
    "matched",
    "first_defect_s",
    "duration_s",
    "ops_per_s",
    "signatures",
)
#: The engine's own fields (added after the case function's).
ENGINE_FIELDS = ("worker", "worker_case", "rss_kib", "started_at", "finished_at", "session")


class Observer(Protocol):
    """Told what happens, from the engine's thread (a live display, a log)."""

    def started(self, case: Case) -> None: ...

    def finished(self, record: Mapping[str, Any]) -> None: ...

    def tick(self, runner: Runner) -> None: ...


@dataclass
class RunOutcome:
    """What one session of a campaign did."""

    records: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    signal_name: str = ""
    #: The stream ended (every case ran); False when the deadline or a signal stopped it.
    exhausted: bool = False
    in_flight_dropped: list[str] = field(default_factory=list)
    #: Why the executor could run no more cases (ExecutorBroken), if it could not.
    broken: str = ""


def lost_record(case: Case, why: str) -> dict[str, Any]:
    """The record of a case whose worker never answered."""
    return {
        "outcome": "error",
        "matched": False,
        "first_defect_s": None,
        "duration_s": None,
        "ops_per_s": None,
        "signatures": [],
        "error": f"case lost: {why}",
        "lost": True,
    }


def build_record(store: CampaignStore, fin: Finished, session: int) -> dict[str, Any]:
    """A finished case as results.jsonl holds it (its files written first)."""
    case = fin.case
    rec: dict[str, Any] = {"key": case.key, **case.info}
    run_folder: str | None = None
    if fin.payload is not None:
        result = dict(fin.payload.get("result") or {})
        files = result.pop("files", None) or {}
        rec.update(result)
        rec.update(fin.payload.get("meta") or {})
        if files:
            run_folder = store.write_case_files(case.key, files)
    else:
        rec.update(lost_record(case, fin.lost or "unknown"))
        rec.setdefault("started_at", round(fin.started_at, 3) if fin.started_at else None)
        rec["finished_at"] = round(time.time(), 3)
        if fin.scratch is not None:
            run_folder = store.adopt_folder(case.key, fin.scratch)
    rec["session"] = session
    rec["run_folder"] = run_folder
    ordered = {k: rec[k] for k in RECORD_FIELDS if k in rec}
    ordered.update({k: v for k, v in rec.items() if k not in ordered})
    return ordered


class Runner:
    """Runs a stream of cases on an executor into a store."""

    def __init__(
        self,
        store: CampaignStore,
        executor: Executor,
        *,
        session: int = 0,
        observer: Observer | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.store = store
        self.executor = executor
        self.session = session
        self.observer = observer
        self.poll_s = poll_s
        self.records: list[dict[str, Any]] = []
        self.total: int | None = None
        self.deadline: float | None = None
        self.started = time.monotonic()
        self._stop: str = ""

    def stop(self, why: str = "stopped") -> None:
        """Ask the run to end (thread-safe): running cases are abandoned."""
        self._stop = why

    @property
    def stopping(self) -> bool:
        return bool(self._stop)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second ^C: the user means it
        self._stop = signal.Signals(signum).name

    def run(
        self,
        cases: Iterable[Case],
        *,
        done: Sequence[str] | set[str] = (),
        total: int | None = None,
        deadline: float | None = None,
    ) -> RunOutcome:
        """Run the cases not in `done` until the stream ends, `deadline` (monotonic) or a signal."""
        self.total, self.deadline = total, deadline
        skip = set(done)
        stream = (c for c in cases if c.key not in skip)
        outcome = RunOutcome()
        handlers: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        kill = True
        try:
            kill = not self._loop(stream, outcome, deadline)
        except ExecutorBroken as exc:
            outcome.broken = str(exc)
            self._stop = self._stop or "broken"
        finally:
            if self._stop or kill:
                outcome.in_flight_dropped = [c.key for c, _, _ in self.executor.running()]
            self.executor.shutdown(kill=kill)
            for sig, old in handlers.items():
                signal.signal(sig, old)
        outcome.records = self.records
        outcome.interrupted = bool(self._stop) and not outcome.broken
        outcome.signal_name = "" if outcome.broken else self._stop
        return outcome

    def _loop(self, stream: Iterator[Case], outcome: RunOutcome, deadline: float | None) -> bool:
        """Hand out cases and collect what finishes; True when every case ran (nothing is
        left to kill), False when a signal or stop() ended it."""
        exhausted = False
        last_tick = 0.0
        while True:
            if not self._stop and not exhausted:
                while self.executor.busy() < self.executor.slots:
                    if deadline is not None and time.monotonic() >= deadline:
                        exhausted = True
                        break
                    case = next(stream, None)
                    if case is None:
                        exhausted = True
                        outcome.exhausted = True
                        break
                    self.executor.submit(case)
                    if self.observer is not None:
                        self.observer.started(case)
            if self._stop:
                return False
            if exhausted and self.executor.busy() == 0:
                return True
            for fin in self.executor.poll(self.poll_s):
                rec = build_record(self.store, fin, self.session)
                self.store.append(rec)
                self.records.append(rec)
                if self.observer is not None:
                    self.observer.finished(rec)
            now = time.monotonic()
            if self.observer is not None and now - last_tick >= 0.5:
                last_tick = now
                self.observer.tick(self)


def time_spent(
    records: Iterable[Mapping[str, Any]], sessions: Sequence[Mapping[str, Any]]
) -> float:
    """Seconds the earlier sessions of a campaign ran (each until its last finished case)."""
    last: dict[int, float] = {}
    for rec in records:
        s, t = rec.get("session"), rec.get("finished_at")
        if isinstance(s, int) and isinstance(t, int | float):
            last[s] = max(last.get(s, 0.0), float(t))
    spent = 0.0
    for i, sess in enumerate(sessions):
        start = sess.get("started_at")
        if i in last and isinstance(start, int | float):
            spent += max(0.0, last[i] - float(start))
    return spent
