"""What the engine hands an executor (a Case) and gets back (Finished), and the interface.

Two executors implement it: `LocalPool` (worker processes on this machine) and
`DaskPool` (an existing Dask distributed scheduler).  The engine never knows which.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stress.config import EXIT_BACKSTOP, EXIT_EMERGENCY


@dataclass(frozen=True)
class Case:
    """One case of a campaign.

    `key` is unique in the campaign and stable across sessions (resume skips the keys
    already in results.jsonl); `args` are the case function's positional arguments
    (picklable); `info` is copied into the case's record (and is all a record holds when
    the worker running the case died).
    """

    key: str
    args: tuple[Any, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finished:
    """A case that ended: the worker's payload, or why there is none."""

    case: Case
    #: {"result": the case function's dict, "meta": worker, rss_kib, started_at, ...}
    payload: dict[str, Any] | None
    #: Why the case has no payload (its worker died, the cluster lost it).
    lost: str | None = None
    #: Where the case's files are when its worker died mid-case (local workers only).
    scratch: Path | None = None
    #: When the executor handed the case out (time.time()).
    started_at: float | None = None


class ExecutorBroken(Exception):
    """The executor cannot run any case (its workers cannot even start): the campaign
    stops, and the cases it could not run stay unrecorded, for a --resume once fixed."""


class Executor(Protocol):
    """Runs cases somewhere, at most `slots` at a time."""

    @property
    def description(self) -> str:
        """Human-readable: "4 local worker processes", "Dask scheduler tcp://...: 8 threads"."""
        ...

    @property
    def slots(self) -> int: ...

    def busy(self) -> int: ...

    def running(self) -> list[tuple[Case, str, float]]:
        """(case, where, since) of the cases running now."""
        ...

    def submit(self, case: Case) -> None: ...

    def poll(self, timeout: float) -> list[Finished]: ...

    def shutdown(self, *, kill: bool) -> None: ...


def describe_exit(code: int | None) -> str:
    """A worker process's exit status in words."""
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == EXIT_EMERGENCY:
        return (
            f"exited with status {code}: the harness's emergency exit "
            "(threads that did not stop after cancellation)"
        )
    if code == EXIT_BACKSTOP:
        return f"exited with status {code} (the faulthandler backstop, or a crash)"
    return f"exited with status {code}"
