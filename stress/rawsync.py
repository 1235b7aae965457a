"""The harness's own waiting, on `_thread` primitives only.

Code under test may replace `threading.Lock`, `Event` and friends (the watch mode does,
for a whole test): anything the harness itself waits on must keep working then, and
must never show up as one of the program's locks.  So the watchdog, the monitor's
cancellation flag and every internal mutex are built from `_thread.allocate_lock()`
directly, and the harness starts its own threads with `_thread.start_new_thread`.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import Any


class Flag:
    """A one-way event (set, never cleared): `threading.Event` without `threading`.

    The gate lock is held while the flag is down; set() releases it, and each waiter
    takes and gives it back at once, so every waiter passes.
    """

    __slots__ = ("_gate", "_mutex", "_set")

    def __init__(self) -> None:
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self._mutex = _thread.allocate_lock()
        self._set = False

    def set(self) -> None:
        with self._mutex:
            if not self._set:
                self._set = True
                self._gate.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        if self._set:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._gate.release()
            return True
        return self._set


class RawThread:
    """A harness thread started with `_thread`: no Thread object, never watched."""

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        self.name = name
        self._target = target
        self._done = _thread.allocate_lock()
        self.ident: int | None = None

    def start(self) -> None:
        """Start the thread and wait until it runs (as Thread.start does): who counts
        threads (_thread._count()) sees it from now on."""
        self._done.acquire()
        self._running = _thread.allocate_lock()
        self._running.acquire()
        self.ident = _thread.start_new_thread(self._main, ())
        self._running.acquire()

    def _main(self) -> None:
        from stress.threads import name_harness_thread

        self._running.release()
        name_harness_thread(self.name)
        try:
            self._target()
        finally:
            name_harness_thread(None)
            self._done.release()

    def is_current(self) -> bool:
        return self.ident == _thread.get_ident()

    def join(self, timeout: float) -> bool:
        """True if the thread ended within `timeout` seconds (or never started)."""
        if self.ident is None:
            return True
        if self._done.acquire(True, max(timeout, 0.0)):
            self._done.release()
            return True
        return False
