"""Per-thread state shared by the locks, the walks and the watchdog, and stack capture.

Each OS thread gets one `ThreadState`, created on first use through a
thread-local.  Its held-lock list is the lock fast path's only per-thread data:
`held[0]` is the ThreadState itself and `held[1:]` the locks it holds, in
acquisition order, so "holds nothing" is `len(held) == 1` and the most recent
lock is `held[-1]`.

The watchdog reads these fields from its own thread without locks: each field is
written by its owner thread only (or under the lock guard that hands a lock
over), and each read is of one attribute, which the GIL makes atomic.
"""

from __future__ import annotations

import _thread
import gc
import itertools
import linecache
import os
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stress.lockcore import Waiter
    from stress.monitor import Monitor
    from stress.walks import Walk

_registry: dict[int, ThreadState] = {}
_registry_lock = _thread.allocate_lock()
#: Names of the harness's own _thread threads, taken by their ThreadState.
_harness_names: dict[int, str] = {}
_tids = itertools.count(1)

_STRESS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_THREADING_FILE = os.path.abspath(threading.__file__)


class ThreadState:
    """What one thread holds, waits for, walks and has achieved."""

    __slots__ = (
        "held",
        "ident",
        "idle",
        "monitor",
        "name",
        "native_id",
        "nslow",
        "nwalks",
        "ops",
        "parked",
        "steps",
        "thread",
        "tid",
        "tracked_by",
        "trying",
        "waiting",
        "walks",
    )

    def __init__(self, thread: Any) -> None:
        self.held: list[Any] = [self]
        self.thread = thread
        self.name = thread.name
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        #: Small number for trace.json's tid.
        self.tid = next(_tids)
        #: Monitor this thread last worked for (spawned, waited, walked or progressed).
        self.monitor: Monitor | None = None
        #: Monitor counting this thread's operations (set by its first progress()).
        self.tracked_by: Monitor | None = None
        self.ops = 0
        self.nwalks = 0
        self.steps = 0
        #: Contended waits and failed trylocks: activity without progress.
        self.nslow = 0
        self.waiting: Waiter | None = None
        self.walks: list[Walk] = []
        #: True while in Monitor.pause(): idle by choice, never a stall.
        self.idle = False
        #: A wait that is not for a lock (a condition, event, semaphore, barrier):
        #: (what, object, perf_counter time since); shown in reports, never a wait-for edge.
        self.parked: tuple[str, Any, float] | None = None
        #: Locks whose non-blocking or timed acquisitions failed lately:
        #: lock -> [failures, first, last (perf_counter), lock acquisitions at the first].
        self.trying: dict[Any, list[Any]] | None = None

    def holds(self, lock: object) -> bool:
        return any(_lock_of(entry) is lock for entry in self.held[1:])

    def held_locks(self) -> list[Any]:
        return [_lock_of(entry) for entry in self.held[1:]]

    def alive(self) -> bool:
        return bool(self.thread.is_alive())

    def __repr__(self) -> str:
        return f"<ThreadState {self.name} tid={self.tid}>"


def _lock_of(entry: Any) -> Any:
    # A nested acquisition pushes a small proxy naming its lock.
    return getattr(entry, "lock", entry)


#: `_tls.held` is the calling thread's held list.  A bare _thread._local is a few
#: nanoseconds faster than a threading.local subclass; a thread's first access
#: raises AttributeError and goes through `new_thread()`.
_tls: Any = _thread._local()


class ForeignThread:
    """Stands in for the Thread object of a thread `threading` does not know.

    A thread started with `_thread.start_new_thread` has none; asking
    threading.current_thread() would make a _DummyThread, which says it is alive for
    ever and stays in threading's table after the thread is gone.  This one dies with
    the thread: a sentinel in the thread's local storage marks it when it is freed.
    """

    daemon = True

    def __init__(self, ident: int, name: str) -> None:
        self.ident = ident
        self.name = name
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive

    def __repr__(self) -> str:
        return f"<ForeignThread {self.name} {'alive' if self.alive else 'gone'}>"


class _Sentinel:
    __slots__ = ("thread",)

    def __init__(self, thread: ForeignThread) -> None:
        self.thread = thread

    def __del__(self) -> None:
        self.thread.alive = False


def _thread_object() -> Any:
    """The calling thread's Thread object, without creating one."""
    ident = _thread.get_ident()
    known: Any = getattr(threading, "_active", {}).get(ident)
    dummy = getattr(threading, "_DummyThread", ())
    if known is None or isinstance(known, dummy):
        # Started and still in its bootstrap (Thread.start waits for an Event it sets
        # before it is entered in threading's table).  A _DummyThread found under its
        # ident may be a dead thread's: idents are reused and dummies never leave.
        for candidate in list(getattr(threading, "_limbo", {})):
            if getattr(candidate, "_ident", None) == ident:
                known = candidate
                break
    if known is not None and not isinstance(known, dummy):
        return known
    name = _harness_names.pop(ident, None)
    if name is None:
        name = known.name if known is not None else f"foreign-{threading.get_native_id()}"
    stand_in = ForeignThread(ident, name)
    _tls.sentinel = _Sentinel(stand_in)
    return stand_in


def name_harness_thread(name: str | None) -> None:
    """Name the calling _thread thread (one of the harness's own) for reports; None: forget."""
    if name is None:
        _harness_names.pop(_thread.get_ident(), None)
    else:
        _harness_names[_thread.get_ident()] = name


def new_thread() -> list[Any]:
    """Create the calling thread's state; return its held list."""
    state = ThreadState(_thread_object())
    _tls.held = state.held
    with _registry_lock:
        _registry[state.tid] = state
    return state.held


def held_list() -> list[Any]:
    """The calling thread's held list (held[0] is its ThreadState)."""
    try:
        held: list[Any] = _tls.held
    except AttributeError:
        held = new_thread()
    return held


def current() -> ThreadState:
    """The calling thread's ThreadState."""
    state: ThreadState = held_list()[0]
    return state


def all_threads() -> list[ThreadState]:
    """Threads that touched the harness and are alive or died holding a lock."""
    with _registry_lock:
        for tid, state in list(_registry.items()):
            if len(state.held) == 1 and not state.thread.is_alive():
                del _registry[tid]
        return list(_registry.values())


#: A thread remembers failed attempts on at most this many locks at once.
MAX_TRYING = 64


def note_failed(state: ThreadState, lock: Any, now: float) -> None:
    """`state` failed to take `lock` without waiting for it (trylock, timeout)."""
    trying = state.trying
    if trying is None:
        trying = state.trying = {}
    entry = trying.get(lock)
    if entry is not None:
        entry[0] += 1
        entry[2] = now
    elif len(trying) < MAX_TRYING:
        trying[lock] = [1, now, now, getattr(lock, "_nacq", 0)]


def holders_of(lock: object) -> list[ThreadState]:
    """Threads whose held list contains `lock` (slow: for errors, repr and reports)."""
    return [s for s in all_threads() if s.holds(lock)]


# -- stacks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One stack frame, detached from the live frame so it survives the thread."""

    file: str
    line: int
    func: str
    code: str

    @property
    def internal(self) -> bool:
        """A frame of the harness itself or of the threading module."""
        return self.file.startswith(_STRESS_DIR) or self.file == _THREADING_FILE

    def short(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line} in {self.func}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "func": self.func, "code": self.code}


def capture(frame: FrameType | None, limit: int = 40) -> list[Frame]:
    """The stack from `frame` outwards, outermost first (traceback order)."""
    if frame is None:
        return []
    summary = traceback.StackSummary.extract(traceback.walk_stack(frame), limit=limit)
    frames = [Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip()) for f in summary]
    frames.reverse()
    return frames


def capture_current(skip: int = 1) -> list[Frame]:
    """The calling thread's stack, without the harness frames on top of it."""
    frame: FrameType | None = sys._getframe(skip)
    return capture(frame)


def capture_exception(exc: BaseException, skip: int = 1) -> list[Frame]:
    """The stack where `exc` was raised, as seen from the handler that caught it.

    The caller's own frames (outermost first) followed by the traceback's frames
    down to the raise point, the handler's frame counted once.
    """
    outer = capture_current(skip + 1)
    tb = traceback.extract_tb(exc.__traceback__)
    inner = [Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip()) for f in tb]
    if outer and inner and outer[-1].func == inner[0].func and outer[-1].file == inner[0].file:
        outer = outer[:-1]
    return outer + inner


#: Innermost frames kept per thread and poll for the threads asked for (FrameView.chain).
VIEW_DEPTH = 16
_JOIN_CODE = threading.Thread._wait_for_tstate_lock.__code__  # type: ignore[attr-defined]


@contextmanager
def frozen_frames() -> Iterator[dict[int, FrameType]]:
    """Every thread's current frame (sys._current_frames()), to be read at once inside
    the block, with nothing in it that blocks or waits, and never kept past it.

    On CPython 3.11 a frame object of another thread goes stale as that thread runs on,
    and reading it then (f_back, f_lineno) can crash the interpreter: the segfaults of
    in-process samplers (python/cpython#111363, getsentry/sentry-python#2386), seen here
    under load as a watchdog dying in a walk over frames it had taken a few os.read
    calls (GIL releases) earlier.  The block keeps the garbage collector off
    (gh-106883) and the window short; the switch interval is left alone (stretching it
    stalls every other thread whenever the block is preempted anyway).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield sys._current_frames()
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class FrameView:
    """What a thread was executing at one look, as plain values (no frame object)."""

    #: Its innermost frame's last instruction (it moved if this or the frame changed).
    lasti: int
    #: (id(frame), code, line) of its innermost frames, innermost first.
    chain: tuple[tuple[int, CodeType, int], ...]
    #: The ident of the thread it waits for in Thread.join(), if it is in one.
    joining: int | None = None


def _view(frame: FrameType, depth: int) -> FrameView:
    out: list[tuple[int, CodeType, int]] = []
    f: FrameType | None = frame
    while f is not None and len(out) < depth:
        out.append((id(f), f.f_code, f.f_lineno or 0))
        f = f.f_back
    joining = None
    if frame.f_code is _JOIN_CODE:
        joined = frame.f_locals.get("self")
        joining = getattr(joined, "ident", None)
    return FrameView(frame.f_lasti, tuple(out), joining)


def frame_views(deep: Iterable[int] = ()) -> dict[int, FrameView]:
    """Every thread's FrameView, read at one moment (see frozen_frames): the innermost
    frame only, and VIEW_DEPTH frames for the threads whose idents are in `deep`."""
    wanted = set(deep)
    with frozen_frames() as frames:
        return {
            ident: _view(frame, VIEW_DEPTH if ident in wanted else 1)
            for ident, frame in frames.items()
        }


def stack_of(ident: int | None, limit: int = 40) -> list[Frame]:
    """Another thread's stack now, outermost first (read as frozen_frames says)."""
    if ident is None:
        return []
    if ident == threading.get_ident():
        return capture(sys._getframe(1), limit)  # its own: nothing can go stale
    raw: list[tuple[str, int, str]] = []
    with frozen_frames() as frames:
        f = frames.get(ident)
        while f is not None and len(raw) < limit:
            code = f.f_code
            raw.append((code.co_filename, f.f_lineno or 0, code.co_name))
            f = f.f_back
        del f
    # Source lines after the block: reading them may block (file I/O).
    out = [Frame(path, n, func, linecache.getline(path, n).strip()) for path, n, func in raw]
    out.reverse()
    return out


def forget(states: list[ThreadState]) -> None:
    """Drop dead threads from the registry (a finished run no longer needs them)."""
    with _registry_lock:
        for state in states:
            if not state.thread.is_alive() and _registry.get(state.tid) is state:
                del _registry[state.tid]


def user_frames(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if not f.internal]


def top_frames(frames: list[Frame], count: int = 3) -> list[str]:
    """Innermost frames outside the harness, innermost first (for signatures)."""
    mine = user_frames(frames) or frames
    return [f"{os.path.basename(f.file)}:{f.func}" for f in reversed(mine[-count:])]


def where(frames: list[Frame]) -> str:
    """The innermost frame outside the harness, as `file.py:12 in func: code`."""
    mine = user_frames(frames) or frames
    if not mine:
        return "no Python frame"
    top = mine[-1]
    return f"{top.short()}: {top.code}" if top.code else top.short()


def format_stack(frames: list[Frame], limit: int = 12) -> list[str]:
    """Readable lines, innermost last; runs of harness frames collapse to one line."""
    shown = frames[-limit:]
    lines: list[str] = []
    if len(frames) > limit:
        lines.append(f"... {len(frames) - limit} outer frames")
    internal: list[Frame] = []

    def flush() -> None:
        if internal:
            names = ", ".join(f"{os.path.basename(f.file)}:{f.func}" for f in internal)
            lines.append(f"  [harness: {names}]")
            internal.clear()

    for frame in shown:
        if frame.internal:
            internal.append(frame)
            continue
        flush()
        lines.append(f'  File "{frame.file}", line {frame.line}, in {frame.func}')
        if frame.code:
            lines.append(f"    {frame.code}")
    flush()
    return lines
