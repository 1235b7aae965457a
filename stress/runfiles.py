"""Run-folder files that survive interruption: unique folders, atomic writes, whole lines.

Whatever stops a run (a signal, SIGKILL, a full disk), a reader finds each file of the
run folder absent, as it was before, or complete:

* a run folder is created with an exclusive mkdir under a name no other run can pick
  (the time to the millisecond, the pid and a random suffix), and its scenario name
  must be one plain path component, so a folder never lands outside its logs folder;
* report files are written to a hidden temporary name in the same folder and renamed
  over the old one (rename is atomic within a file system);
* events.jsonl grows by whole lines: one os.write on an O_APPEND descriptor each,
  trimmed back to the last whole line if a write fails half-way.

Only os-level calls are used, so the emergency path can use them too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from datetime import datetime
from pathlib import Path

#: A run name: one path component of letters, digits and ``_ . + = -``, not starting
#: with a dot or a dash (no hidden folders, nothing an option parser would take).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*\Z")
MAX_NAME = 80


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a run folder, or None if it can."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters, got {len(name)}"
    if not _SAFE_NAME.match(name):
        return (
            f"must be one plain file name (letters, digits, _ . + = -; not starting "
            f"with . or -), got {name!r}"
        )
    return None


def safe_name(text: str) -> str:
    """`text` made into a valid run name (for names derived from file names)."""
    name = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text)[:MAX_NAME].lstrip(".-") or "run"
    return name


def new_run_folder(logs: str | Path, name: str, *, now: datetime | None = None) -> Path:
    """Create and return a run folder `logs/<time>-<name>-<pid>-<random>` of its own.

    The exclusive mkdir makes the name this run's even if another process (or this one)
    asks for a folder in the same millisecond.  Raises ValueError for a bad name and
    OSError when the folder cannot be created.
    """
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"run name {problem}")
    base = Path(logs)
    base.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now()
    stamp = f"{now:%Y%m%d-%H%M%S}.{now.microsecond // 1000:03d}"
    for _ in range(64):
        folder = base / f"{stamp}-{name}-{os.getpid()}-{secrets.token_hex(2)}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free run folder name under {base}")


def temp_name(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one.

    On an error (a full disk) the temporary file is removed, the old file is left as it
    was, and the OSError is raised.
    """
    target = Path(path)
    tmp = temp_name(target)
    data = text.encode("utf-8", "replace")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_fd(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(target)  # os.write names none; the message must
        raise


class LineLog:
    """An append-only file of whole lines, safe to share between threads.

    A line that cannot be written whole (a full disk) is trimmed away; the first such
    error is kept in `error` and the log takes no more lines, so that the file never has
    a gap a reader would not notice.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.error: OSError | None = None
        self.lines = 0
        self._lock = threading.Lock()
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )

    def write(self, line: str) -> bool:
        """Append one line (a newline is added if missing); False if it was not written."""
        data = line.encode("utf-8", "replace")
        if not data.endswith(b"\n"):
            data += b"\n"
        with self._lock:
            fd = self._fd
            if fd is None or self.error is not None:
                return False
            start = os.fstat(fd).st_size
            try:
                write_fd(fd, data)
            except OSError as exc:
                self.error = exc
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                return False
            self.lines += 1
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
