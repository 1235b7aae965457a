"""The local pool: worker processes on this machine, one case at a time each, recycled.

Each worker is a fresh interpreter (`python -m stress.campaign`) talking to
the pool over a socket pair, started with MALLOC_ARENA_MAX=2 and PYTHONMALLOC=malloc
(both read only at start-up) and its own temporary folder, so that what a case leaves there can be
picked up if the worker dies in the middle of it.  A worker exits after `recycle`
cases (0: never) and a fresh one takes its place, so that whatever a long campaign
would accumulate in one process is given back.  A worker that dies mid-case (the
harness's emergency exit, a crash, the OOM killer) costs that case only: it is
reported as lost and the pool goes on with a new worker.  Workers ignore SIGINT
(the pool decides), and die with the pool even when it is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import IO, Any

from stress.campaign.executor import Case, ExecutorBroken, Finished, describe_exit
from stress.campaign.worker import ARENA_MAX, READY

#: Cases a worker process runs before it is replaced.
DEFAULT_RECYCLE = 50
#: How long a worker gets to exit on its own before it is killed.
_EXIT_WAIT_S = 5.0
#: Fresh workers in a row that die before they are ready: the pool cannot run cases.
START_FAILURES = 3


class _Slot:
    """One place in the pool and the worker process in it (if any)."""

    def __init__(self, index: int, scratch: Path | None, log: Path | None) -> None:
        self.index = index
        self.scratch = scratch
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.case: Case | None = None
        self.since = 0.0
        self.started_at = 0.0
        self.retiring = False
        self.generation = 0
        #: The worker said it is ready (a death before that ran no case).
        self.ready = False

    @property
    def label(self) -> str:
        pid = self.proc.pid if self.proc is not None else "-"
        return f"worker {self.index} (pid {pid})"


class LocalPool:
    """Up to `jobs` worker processes running one case function by name."""

    def __init__(
        self,
        jobs: int,
        fn_name: str,
        *,
        recycle: int = DEFAULT_RECYCLE,
        scratch: Path | None = None,
        logs: Path | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.fn_name = fn_name
        self.recycle = max(0, recycle)
        self.scratch = scratch
        self.logs = logs
        self._slots = [
            _Slot(
                i,
                scratch / f"worker-{i}" if scratch is not None else None,
                logs / f"worker-{i}.stderr" if logs is not None else None,
            )
            for i in range(1, jobs + 1)
        ]
        recycling = f", each recycled after {self.recycle} cases" if self.recycle else ""
        self.description = f"{jobs} local worker process{'es' if jobs != 1 else ''}{recycling}"
        self.started = 0  # worker processes started so far
        self._start_failures = 0  # fresh workers in a row that died before being ready

    @property
    def slots(self) -> int:
        return len(self._slots)

    def busy(self) -> int:
        return sum(s.case is not None for s in self._slots)

    def running(self) -> list[tuple[Case, str, float]]:
        return [(s.case, s.label, s.since) for s in self._slots if s.case is not None]

    # -- worker processes ----------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["MALLOC_ARENA_MAX"] = str(ARENA_MAX)
        # Small objects from glibc, not pymalloc: a few objects that outlive a case pin
        # whole 1 MiB pymalloc arenas (RSS crept up ~1 MiB a case), while glibc's free
        # pages go back at each malloc_trim (flat; see bench/bench_campaign_malloc.py).
        env.setdefault("PYTHONMALLOC", "malloc")
        env["PYTHONUNBUFFERED"] = "1"
        if slot.scratch is not None:
            shutil.rmtree(slot.scratch, ignore_errors=True)
            slot.scratch.mkdir(parents=True)
            env["TMPDIR"] = str(slot.scratch)
        err: IO[bytes] | int = subprocess.DEVNULL
        if slot.log is not None:
            slot.log.parent.mkdir(parents=True, exist_ok=True)
            err = slot.log.open("ab")
        try:
            fd = child_sock.fileno()
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "stress.campaign", str(fd), str(os.getpid())],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=env,
                close_fds=True,
            )
        finally:
            child_sock.close()
            if not isinstance(err, int):
                err.close()
        slot.conn = Connection(parent_sock.detach())
        slot.conn.send({"sys_path": list(sys.path), "recycle": self.recycle})
        slot.retiring = False
        slot.ready = False
        slot.generation += 1
        slot.started_at = time.time()
        self.started += 1

    def _reap(self, slot: _Slot, *, kill: bool) -> int | None:
        """Let the slot's process go (killing it if asked or if it will not exit)."""
        proc, conn = slot.proc, slot.conn
        slot.proc, slot.conn = None, None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if kill:
            proc.kill()
        try:
            return proc.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=_EXIT_WAIT_S)

    # -- the executor interface ----------------------------------------------------------

    def submit(self, case: Case) -> None:
        slot = next((s for s in self._slots if s.case is None), None)
        if slot is None:
            raise RuntimeError("submit() with every worker busy")
        if slot.proc is None:
            self._start(slot)
        assert slot.conn is not None
        slot.case, slot.since = case, time.time()
        # If the worker died meanwhile, poll() finds its end and reports the case.
        with contextlib.suppress(OSError):
            slot.conn.send((case.key, self.fn_name, case.args))

    def poll(self, timeout: float) -> list[Finished]:
        by_conn = {s.conn: s for s in self._slots if s.conn is not None}
        if not by_conn:
            time.sleep(min(timeout, 0.05))
            return []
        out: list[Finished] = []
        for conn in wait(list(by_conn), timeout):
            slot = by_conn[conn]  # type: ignore[index]
            try:
                msg = slot.conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                out += self._died(slot)
                continue
            if msg == READY:
                slot.ready = True
                self._start_failures = 0
                continue
            key, payload, last = msg
            case = slot.case
            if case is None or key != case.key:
                continue  # nothing was asked of it: ignore
            out.append(Finished(case, payload, started_at=slot.since))
            slot.case = None
            if last:
                self._reap(slot, kill=False)
        return out

    def _died(self, slot: _Slot) -> list[Finished]:
        case = slot.case
        ready = slot.ready
        code = self._reap(slot, kill=False)
        if not ready:
            return self._failed_start(slot, code)
        slot.case = None
        if case is None:
            return []
        scratch = slot.scratch
        if scratch is not None:
            # Keep what the dead case left: the next worker here starts with an empty folder.
            kept = scratch.with_name(scratch.name + f"-lost-{slot.generation}")
            shutil.rmtree(kept, ignore_errors=True)
            if scratch.exists():
                scratch.rename(kept)
            scratch = kept
        why = f"the worker process running it {describe_exit(code)}"
        return [Finished(case, None, lost=why, scratch=scratch, started_at=slot.since)]

    def _failed_start(self, slot: _Slot, code: int | None) -> list[Finished]:
        """A worker died before it was ready: its case never ran.  Try a fresh worker with
        the same case; after START_FAILURES in a row, the pool is broken (a worker that
        cannot import the harness, say) and says why instead of losing case after case."""
        self._start_failures += 1
        if self._start_failures >= START_FAILURES:
            tail = _last_line(slot.log)
            raise ExecutorBroken(
                f"{self._start_failures} worker processes in a row {describe_exit(code)} "
                f"before they could run a case" + (f"; the last one said: {tail}" if tail else "")
                + (f" (see {slot.log})" if slot.log is not None else "")
            )
        case = slot.case
        if case is not None:
            self._start(slot)
            assert slot.conn is not None
            with contextlib.suppress(OSError):
                slot.conn.send((case.key, self.fn_name, case.args))
        return []

    def shutdown(self, *, kill: bool) -> None:
        """Stop every worker: politely (after their case) or at once."""
        for slot in self._slots:
            if slot.conn is not None and not kill:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
        for slot in self._slots:
            self._reap(slot, kill=kill)
            slot.case = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.logs is not None and self.logs.is_dir():
            for log in self.logs.glob("worker-*.stderr"):
                if log.stat().st_size == 0:
                    log.unlink()
            if not any(self.logs.iterdir()):
                self.logs.rmdir()

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(kill=True)


def _last_line(log: Path | None) -> str:
    """The last non-empty line a worker wrote to its log (an exception's message)."""
    if log is None:
        return ""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4096))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")[:300]
