"""Getting out: the emergency exit and the faulthandler backstop.

The escape ladder after a verdict (or at the end of the budget):
  1. the run is cancelled: every instrumented wait, walk step, progress() and
     checkpoint() raises Cancelled in its thread;
  2. workers get grace_s to stop (Monitor.run joins them with that bound);
  3. if some do not, `emergency()` writes the report straight to files with
     os.write (no logging framework, no lock a stuck thread could hold), dumps
     every thread's stack with faulthandler, and leaves with
     os._exit(EXIT_EMERGENCY) (or raises StuckThreadsError when on_stuck='raise');
  4. if even that cannot run (a thread holds the GIL for ever in C), the
     faulthandler timer armed at start fires from its own C thread, dumps the
     stacks and exits with status 1 (EXIT_BACKSTOP).
"""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from stress.config import EXIT_EMERGENCY
from stress.errors import StuckThreadsError
from stress.report import render_json, render_text
from stress.runfiles import atomic_write, write_fd

if TYPE_CHECKING:
    from stress.monitor import Monitor

BACKSTOP_FILE = "backstop-stacks.txt"
STACKS_FILE = "emergency-stacks.txt"


class Backstop:
    """The faulthandler timer: fires without the GIL if everything else is stuck.

    Its file must be open before it fires, so it exists while a run goes on; it starts
    with a line saying so, and is removed when the run ends without the backstop firing.
    A file left with that line alone (the process was killed) is therefore complete.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._file: IO[str] | None = None
        self._header = 0
        self.armed = False

    def arm(self, seconds: float) -> None:
        target: IO[str] = sys.stderr
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.folder / BACKSTOP_FILE, "w", encoding="utf-8")  # noqa: SIM115
            header = (
                f"faulthandler backstop armed by pid {os.getpid()}: every thread's stack "
                f"follows if the run is still going {seconds:g} s after it started.\n"
            )
            self._file.write(header)
            self._file.flush()
            self._header = len(header.encode())
            target = self._file
        faulthandler.dump_traceback_later(seconds, exit=True, file=target)
        self.armed = True

    def disarm(self) -> None:
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False
        if self._file is not None:
            path = Path(self._file.name)
            self._file.close()
            self._file = None
            if path.exists() and path.stat().st_size <= self._header:
                path.unlink()


def emergency(mon: Monitor, stuck_names: list[str]) -> None:
    """Leave the report on disk and get out; never returns when on_stuck='exit'."""
    exiting = mon.config.on_stuck == "exit"
    report_path: str | None = None
    try:
        case = mon.result()
        if mon.report is not None:
            files = mon.report.rendered(case)
        else:
            scenario = str(mon.meta.get("scenario", mon.name))
            files = {
                "report.txt": render_text(scenario, [case]),
                "report.json": render_json(scenario, [case]),
            }
        folder = mon.emergency_dir
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("report.txt", "report.json"):
                _write_file(folder / name, files.pop(name))
            report_path = str(folder / "report.txt")
            fd = os.open(folder / STACKS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                faulthandler.dump_traceback(file=fd, all_threads=True)
            finally:
                os.close(fd)
            for name, text in files.items():  # the trace last: the largest, least vital
                _write_file(folder / name, text)
        else:
            _write_fd(2, files["report.txt"])
            faulthandler.dump_traceback(file=2, all_threads=True)
        how = f"exit status {EXIT_EMERGENCY}" if exiting else "raising StuckThreadsError"
        where = f"; report: {report_path}" if report_path else ""
        _write_fd(
            2,
            f"stress: emergency ({how}): {len(stuck_names)} thread(s) did not stop "
            f"within {mon.config.grace_s:g} s of cancellation: "
            f"{', '.join(stuck_names)}{where}\n",
        )
    finally:
        if exiting:
            os._exit(EXIT_EMERGENCY)
    raise StuckThreadsError(stuck_names, report_path)


def _write_file(path: Path, text: str) -> None:
    try:
        atomic_write(path, text)
    except OSError as exc:  # a full disk must not stop the exit: say so and go on
        _write_fd(2, f"stress: emergency: cannot write {path}: {exc.strerror or exc}\n")


def _write_fd(fd: int, text: str) -> None:
    write_fd(fd, text.encode("utf-8", "replace"))
