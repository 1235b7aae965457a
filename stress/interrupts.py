"""SIGINT and SIGTERM as a request to stop: the running case is cut short, never lost.

While an `Interrupts` is entered (in the main thread), the first SIGINT or SIGTERM
interrupts the attached run (`Monitor.interrupt`): its workers are cancelled and
joined, its result is kept with the outcome 'interrupted', and the caller sees
`signum` set and runs no further case.  Later signals change nothing but a call of
`on_signal`: the report is being written by then, and the emergency exit bounds how
long that may take, so a second and a third Ctrl-C cannot tear a file in half.

The handler itself only records the signal and wakes a watcher thread.  A handler
runs between two bytecodes of the main thread, which may hold any lock at that moment
(a Monitor's, loguru's, a report's); the watcher, a thread of its own, takes them as
any other thread would.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interruptible(Protocol):
    def interrupt(self, reason: str) -> None: ...


class Interrupts:
    """Turn SIGINT/SIGTERM into `interrupt()` of the attached run (see the module doc).

    `on_signal(signum, count)` is called from the watcher thread for every signal.  With
    `then_ignore`, a process that got a signal ignores SIGINT and SIGTERM from the exit of
    the block on, instead of getting its previous handlers back: it was told to stop and
    is stopping, and a Ctrl-C in its last moments must not turn that into death by the
    signal (a command line's use; not for a process that goes on after the block).
    """

    def __init__(
        self, on_signal: Callable[[int, int], None] | None = None, *, then_ignore: bool = False
    ) -> None:
        self.on_signal = on_signal
        self.then_ignore = then_ignore
        #: The first signal received, if any.
        self.signum: int | None = None
        self.count = 0
        self._seen = 0
        self._target: Interruptible | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._previous: dict[int, Any] = {}
        self._watcher: threading.Thread | None = None

    @property
    def name(self) -> str | None:
        """'SIGINT' or 'SIGTERM' once one has arrived."""
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's status for death by the signal: 128 + its number (130, 143)."""
        return 128 + (self.signum or 0)

    @property
    def reason(self) -> str:
        return f"interrupted by {self.name}"

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        self._watcher = threading.Thread(target=self._watch, name="stress-interrupts", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        ignore = self.then_ignore and self.signum is not None
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if ignore else previous)
        self._previous.clear()
        self._closing = True
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(5.0)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Plain assignments and an Event nobody else in this thread uses: nothing here
        # can wait for a lock the interrupted code holds.
        if self.signum is None:
            self.signum = signum
        self.count += 1
        self._wake.set()

    def _watch(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._seen < self.count:
                self._seen += 1
                if self._seen == 1:
                    with self._lock:
                        target = self._target
                    if target is not None:
                        target.interrupt(self.reason)
                if self.on_signal is not None and self.signum is not None:
                    self.on_signal(self.signum, self._seen)
            if self._closing:
                return

    @contextmanager
    def watching(self, run: Interruptible) -> Iterator[None]:
        """Interrupt `run` on the first signal, including one that came before."""
        with self._lock:
            self._target = run
            pending = self.signum is not None
        if pending:
            run.interrupt(self.reason)
        try:
            yield
        finally:
            with self._lock:
                self._target = None
