"""Exceptions of the stress harness.

`Cancelled` derives from BaseException on purpose: a worker's `except Exception`
must not swallow the harness asking it to stop, exactly as it cannot swallow
KeyboardInterrupt.  Everything else is an ordinary Exception that names the
setting, lock or threads involved.
"""

from __future__ import annotations


class Cancelled(BaseException):
    """The run was cancelled (after a verdict or at the end of its budget).

    Raised in a worker by any instrumented wait, by a walk step, by `progress()`
    and by `checkpoint()` once the run is cancelled.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StressError(Exception):
    """Base class of the harness's own errors."""


class ConfigError(StressError, ValueError):
    """A setting has a value the harness cannot use; the message names the setting."""

    def __init__(self, message: str, *, settings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.settings = settings


class LadderError(ConfigError):
    """Two settings of the timeout ladder are in the wrong order.

    The ladder is: walk bound < hold budget < watchdog verdict < emergency exit
    < per-test timeout < job limit.  `settings` holds the two names.
    """


class LockError(StressError, RuntimeError):
    """Misuse of an instrumented lock (RuntimeError, like threading's own)."""


class NotOwnerError(LockError):
    """A thread released a lock it does not hold; names both threads."""

    def __init__(self, lock: str, thread: str, holders: list[str]) -> None:
        held = "held by " + ", ".join(holders) if holders else "not held by anyone"
        super().__init__(f"{thread} released {lock}, which it does not hold ({held})")
        self.lock = lock
        self.thread = thread
        self.holders = holders


class SelfDeadlockError(LockError):
    """A thread took a non-recursive lock it already holds, with no watchdog running.

    Under a running Monitor this is a `deadlock` verdict instead and the thread
    waits, as the kernel would, until the run is cancelled.
    """

    def __init__(self, lock: str, thread: str) -> None:
        super().__init__(f"{thread} takes {lock}, which it already holds: self-deadlock")
        self.lock = lock
        self.thread = thread


class StuckThreadsError(StressError):
    """Workers did not stop within the grace period (raised when on_stuck='raise')."""

    def __init__(self, names: list[str], report_path: str | None) -> None:
        where = f"; report in {report_path}" if report_path else ""
        super().__init__(
            f"{len(names)} thread(s) did not stop after cancellation: {', '.join(names)}{where}"
        )
        self.names = names
        self.report_path = report_path
