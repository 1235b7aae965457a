"""The worker side: one case at a time in a process, measured, with memory given back.

`call(fn_name, args)` is what runs on a worker, the local pool's processes and a
Dask cluster's alike: it imports the case function by name ("package.module:function"),
runs it, turns an exception into an `error` result, and adds where and when it ran
and the process's RSS afterwards.  Cases never overlap in one process (a Dask
worker with several threads runs them one after the other): a case owns the
process-wide switch interval and faulthandler timer while it runs.

`python -m stress.campaign FD PARENT_PID` is a local pool's worker process:
it reads (key, fn_name, args) messages from the socket FD, answers each with
(key, payload, last), and exits after the number of cases the pool set (`last`
says so), when the pool closes the socket, or when its parent dies.  Where it can
(Linux), it runs each case in a child forked for it: the worker itself never runs a
case, so a case's heap fragments (glibc keeps them resident after malloc_trim: RSS
crept ~35 KiB a 30 s case, +15 % over a worker's first 15 minutes) die with the
child, and every case starts from the same memory.  A child that dies ends the
worker the same way, so the pool sees what it always saw: the worker running the
case died.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib
import os
import pickle
import platform
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: glibc's mallopt parameter: the most malloc arenas a process creates.
_M_ARENA_MAX = -8
#: Arenas per process: glibc's default (8 x cores) lets RSS climb under thread churn.
ARENA_MAX = 2
_PR_SET_PDEATHSIG = 1

_case_lock = threading.Lock()
_state: dict[str, Any] = {"cases": 0, "setup": False}
_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        _libc = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            except OSError:
                _libc = False
    return _libc or None


def setup_process() -> None:
    """Once per process: cap malloc arenas (effective for arenas made from now on)."""
    if _state["setup"]:
        return
    _state["setup"] = True
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, ARENA_MAX)


def give_back_memory() -> None:
    """Collect garbage and return free heap pages to the system between cases."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def rss_kib() -> int:
    """This process's resident set size in KiB (0 when it cannot be read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss // 1024)
    except Exception:  # psutil missing or refusing: report no figure rather than fail a case
        return 0


def resolve(fn_name: str) -> Callable[..., Any]:
    """The function named "package.module:function"."""
    module, sep, name = fn_name.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"case function {fn_name!r}: expected 'package.module:function'")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"case function {fn_name!r} is not callable")
    return obj  # type: ignore[no-any-return]


def call(fn_name: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """Run one case here: {"result": what the case function returned, "meta": where and when}."""
    setup_process()
    with _case_lock:
        _state["cases"] += 1
        started = time.time()
        try:
            result = resolve(fn_name)(*args)
            if not isinstance(result, dict):
                raise TypeError(f"{fn_name} returned {type(result).__name__}, not a dict")
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)
            at = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
            result = {
                "outcome": "error",
                "matched": False,
                "error": f"{type(exc).__name__}: {exc}{at}",
                "traceback": traceback.format_exc(),
            }
        finished = time.time()
        give_back_memory()
        host = socket.gethostname()
        rss = rss_kib()
        meta = {
            "worker": f"{host}:{os.getpid()}",
            "rss_kib": rss,
            # The worker's own RSS: the same process here; a forked case's parent's.
            "worker_rss_kib": rss,
            "started_at": round(started, 3),
            "finished_at": round(finished, 3),
            "worker_case": _state["cases"],
        }
        return {"result": result, "meta": meta}


#: The worker's first message: it started (imports and set-up done).
READY = "ready"


def _die_with_parent(parent: int) -> None:
    """Never outlive the pool: a SIGKILLed campaign must not leave workers running."""
    libc = _glibc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: Whether the local pool's workers run each case in a forked child (see the module doc).
FORK = hasattr(os, "fork") and platform.system() == "Linux"
#: A child that could not hand its result over exits with this status.
_CHILD_FAILED = 70


def call_forked(fn_name: str, args: tuple[Any, ...], done: int) -> dict[str, Any]:
    """`call` in a child forked for the case; its payload comes back through a pipe.

    The worker must be single-threaded here (it is: the case's threads live in the
    child).  The payload names the worker, not the child, and counts the worker's
    cases; its RSS is the child's, the memory the case ran in.  A child that dies
    (the harness's emergency exit, a signal) takes the worker with it, in the same way.
    """
    worker = os.getpid()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the case, hand the payload over, never return
        status = _CHILD_FAILED
        try:
            os.close(rfd)
            _die_with_parent(worker)
            _state["cases"] = done
            data = pickle.dumps(call(fn_name, args), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(wfd, "wb") as out:
                out.write(data)
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(worker, sig)
        os._exit(128 + sig)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or not data:
        os._exit(code or _CHILD_FAILED)
    payload: dict[str, Any] = pickle.loads(data)
    payload["meta"]["worker"] = f"{socket.gethostname()}:{worker}"
    payload["meta"]["worker_rss_kib"] = rss_kib()
    return payload


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    # ^C reaches the whole process group; the pool decides what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    conn = Connection(fd)
    hello = conn.recv()
    for entry in reversed(hello.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    recycle = int(hello.get("recycle", 0))
    setup_process()
    # Up and able to run cases: a worker that dies before saying so never ran one.
    conn.send(READY)
    done = 0
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return 0
        if msg is None:
            return 0
        key, fn_name, args = msg
        payload = call_forked(fn_name, args, done) if FORK else call(fn_name, args)
        done += 1
        last = bool(recycle) and done >= recycle
        try:
            conn.send((key, payload, last))
        except OSError:
            return 0
        if last:
            return 0
