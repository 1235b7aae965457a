"""What the watchdog remembers of each thread between polls, CPU time from the OS first.

Where a thread's innermost Python frame is says little about what it does: a thread
spinning in a tight loop gives the GIL up at the same instruction every time the
watchdog looks, exactly like one blocked in C.  The kernel knows better.  Each poll
reads every watched thread's CPU clock (clock_gettime on the thread's CPU-time clock id,
made from its TID: a thread that is gone gives EINVAL, never another's memory, and the
call does not let go of the GIL, which a busy program would make costly to get back).
For suspects only (a lock holder past half its budget, a thread whose trylocks keep
failing, a tracked thread without progress) it also reads
`/proc/self/task/<tid>/schedstat`: nanoseconds spent runnable but waiting for a CPU.
Over a window that tells apart

  running        it got CPU time: executing Python (or C code holding the GIL);
  blocked        no CPU and no wait for one: asleep in a wait (a lock, sleep, I/O);
  not scheduled  runnable, waiting for a CPU: the machine is overloaded, not the thread
                 stuck; the watchdog defers its verdicts then.

Without /proc (not Linux) the frame position decides, as before: `Activity.word` is
"unknown" and the checks that need CPU time do not fire.

For threads holding a lock the watchdog also keeps the innermost frames of each poll:
a thread whose innermost frames stay inside one frame object, within a few lines,
while its CPU time advances, is spinning in one loop.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stress.threads import FrameView

#: A poll counts as "ran" when the thread got at least this share of it on a CPU.
RAN_SHARE = 0.02
#: Over a window, at least this CPU share is running ...
RUNNING_SHARE = 0.05
#: ... unless it waited for a CPU longer than it ran, and at least this share: starved.
STARVED_SHARE = 0.2
#: A thread put on a CPU this often per second while getting almost no CPU time is
#: waiting for the GIL: CPython's GIL waiters wake every switch interval (5 ms) to ask.
GIL_WAKEUPS = 100
#: A loop's lines may span at most this many source lines.
LOOP_SPAN_LINES = 25


def _clock_id(native_id: int) -> int:
    # Linux's CPU-time clock of one thread: CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD, on ~tid.
    return ((~native_id) << 3) | 6


def _thread_cpu_ns(native_id: int) -> int | None:
    try:
        return time.clock_gettime_ns(_clock_id(native_id))
    except (OSError, OverflowError):
        return None


def _schedstat(native_id: int) -> tuple[int, int, int] | None:
    try:
        fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 128).split()
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(fields) < 3:
        return None
    return int(fields[0]), int(fields[1]), int(fields[2])


#: Whether the OS gives per-thread CPU clocks and run-queue waits (asked once).
CPU_TIMES = (
    sys.platform.startswith("linux") and _thread_cpu_ns(threading.get_native_id()) is not None
)
RUN_QUEUE = CPU_TIMES and _schedstat(threading.get_native_id()) is not None


def cpu_ns(native_id: int) -> int | None:
    """Nanoseconds the thread (of this process) spent on a CPU, if known."""
    return _thread_cpu_ns(native_id) if CPU_TIMES else None


def run_queue(native_id: int) -> tuple[int, int] | None:
    """(ns the thread spent runnable waiting for a CPU, times it was put on one), if known."""
    if not RUN_QUEUE:
        return None
    times = _schedstat(native_id)
    return None if times is None else (times[1], times[2])


@dataclass(frozen=True)
class Activity:
    """What a thread did over the last window, from its CPU times."""

    #: "running", "blocked", "not scheduled" or "unknown" (no CPU times).
    word: str
    #: Shares of the window spent on a CPU and waiting for one (None: unknown).
    cpu: float | None
    wait: float | None
    #: Seconds measured.
    span_s: float
    #: Seconds since the thread last got CPU time (0 if it did in the last poll).
    idle_s: float

    def describe(self) -> str:
        if self.cpu is None:
            return "activity unknown"
        wait = f", waiting for a CPU {self.wait:.0%}" if self.wait and self.wait >= 0.05 else ""
        return f"{self.cpu:.0%} CPU over the last {self.span_s:.1f} s{wait}"


@dataclass(frozen=True)
class Spin:
    """A thread staying inside one frame (a loop) while it uses CPU time."""

    frame_id: int
    code: CodeType
    lines: tuple[int, ...]
    since: float
    cpu: float


class Sample:
    """One thread's history: CPU times, activity counters, progress and frames."""

    __slots__ = (
        "activity",
        "cpu",
        "frames",
        "last_move",
        "last_op",
        "moves",
        "ops",
        "pos",
        "spin_cache",
        "waits",
    )

    def __init__(self, now: float, window: int) -> None:
        self.pos: tuple[int, int] | None = None
        self.activity: tuple[int, int, int] = (-1, -1, -1)
        self.last_move = now
        self.ops = -1
        self.last_op = now
        self.moves: deque[bool] = deque(maxlen=window)
        #: (t, ns on CPU) per poll.
        self.cpu: deque[tuple[float, int]] = deque(maxlen=window + 1)
        #: (t, ns waiting for a CPU, times put on a CPU) per poll while it is a suspect.
        self.waits: deque[tuple[float, int, int]] = deque(maxlen=window + 1)
        #: (t, ((frame id, code, line), ...) innermost first) per poll, holders only.
        self.frames: deque[tuple[float, tuple[tuple[int, CodeType, int], ...]]] = deque(
            maxlen=window + 1
        )
        #: Results of the linked-structure search, per loop frame (it is costly).
        self.spin_cache: dict[int, object] = {}

    # -- per poll --------------------------------------------------------------------

    def take(
        self,
        now: float,
        native_id: int,
        view: FrameView | None,
        activity: tuple[int, int, int],
        waiting: bool,
        keep_frames: bool,
        suspect: bool,
    ) -> bool:
        """Record one poll; True if the thread ran (did work) since the last one."""
        used = cpu_ns(native_id)
        ran_cpu: bool | None = None
        if used is not None:
            if self.cpu:
                t0, c0 = self.cpu[-1]
                ran_cpu = used - c0 >= RAN_SHARE * max(now - t0, 1e-6) * 1e9
            self.cpu.append((now, used))
        if suspect:
            queued = run_queue(native_id)
            if queued is not None:
                self.waits.append((now, *queued))
        else:
            self.waits.clear()
        pos = None if view is None or not view.chain else (view.chain[0][0], view.lasti)
        # No CPU times: a frame that moved ran (blind to tight loops, see the module doc).
        ran = pos != self.pos if ran_cpu is None else ran_cpu
        # A blocked waiter's frame moves with its timed wake-ups: that is not work.
        moved = not waiting and (ran or activity != self.activity)
        self.pos, self.activity = pos, activity
        if moved:
            self.last_move = now
        self.moves.append(moved)
        if keep_frames and view is not None and not waiting:
            self.frames.append((now, view.chain))
        else:
            self.frames.clear()
            self.spin_cache.clear()
        return moved

    # -- over a window ---------------------------------------------------------------

    def activity_over(self, now: float, span: float, starved_process: bool) -> Activity:
        """Activity over the last `span` seconds (or what history there is)."""
        idle = max(now - self.last_move, 0.0)
        cpu = _share(self.cpu, span)
        if cpu is None:
            return Activity("unknown", None, None, 0.0, idle)
        share, dt = cpu
        queued = _share([(t, w) for t, w, _ in self.waits], span)
        wait = None if queued is None or queued[1] < dt / 2 else queued[0]
        wakeups = _share([(t, n * 1_000_000_000) for t, _, n in self.waits], span)
        gil = (
            wakeups is not None
            and wakeups[1] >= dt / 2
            and wakeups[0] >= GIL_WAKEUPS
            and share < RUNNING_SHARE
            and idle >= dt / 2  # no Python progress either (a ping-pong of waits has some)
        )
        if gil or (
            wait is not None
            and (
                wait >= max(STARVED_SHARE, share) or (starved_process and wait >= max(share, 0.02))
            )
        ):
            # It waited for a CPU longer than it ran, or it keeps waking (every switch
            # interval, 5 ms) to ask for the GIL and does not get it.
            word = "not scheduled"
        elif share >= RUNNING_SHARE:
            word = "running"
        else:
            word = "blocked"
        return Activity(word, share, wait, dt, idle)

    def spin(self, now: float, span: float) -> Spin | None:
        """The frame this thread has stayed in for `span` seconds while using CPU, if any."""
        if len(self.frames) < 3 or now - self.frames[0][0] < span:
            return None
        recent = [f for t, f in self.frames if t >= now - span - 1e-9]
        if len(recent) < 3:
            return None
        common = _innermost_common(recent)
        if common is None:
            return None
        frame_id, code = common
        lines = sorted(
            {line for frames in recent for fid, c, line in frames if fid == frame_id and c is code}
        )
        if lines[-1] - lines[0] > LOOP_SPAN_LINES:
            return None
        # Any CPU time will do: on an overloaded machine a spinning thread gets little,
        # but every bit of it goes round the same loop.
        share = _share(self.cpu, span)
        if share is None or share[0] < RAN_SHARE:
            return None
        since = now - span
        for t, frames in reversed(self.frames):
            if not any(fid == frame_id and c is code for fid, c, _ in frames):
                break
            since = t
        return Spin(frame_id, code, tuple(lines), since, share[0])

    def queued_since(self, t: float) -> float:
        """Seconds the thread waited for a CPU since perf_counter time `t`, as far as
        its run-queue samples go back (they start when it became a suspect): a lower
        bound, 0.0 without them."""
        waits = [w for tt, w, _ in self.waits if tt >= t]
        return (waits[-1] - waits[0]) / 1e9 if len(waits) >= 2 else 0.0

    def cpu_since(self, t: float) -> float | None:
        """CPU seconds the thread got since perf_counter time `t` (from the oldest sample
        kept, if `t` is older), or None without CPU clocks."""
        if len(self.cpu) < 2:
            return None
        v1 = self.cpu[-1][1]
        v0 = self.cpu[0][1]
        for tt, v in self.cpu:
            if tt >= t:
                v0 = v
                break
        return (v1 - v0) / 1e9


def _share(ring: Sequence[tuple[float, int]], span: float) -> tuple[float, float] | None:
    """(growth per second of the counter in `ring` over the last `span` s, seconds covered)."""
    if len(ring) < 2:
        return None
    t1, v1 = ring[-1]
    t0, v0 = ring[-2]
    start = t1 - span
    for t, v in reversed(ring):  # newest first: a short span reads only the last few
        if t < start:
            break
        if t < t1:
            t0, v0 = t, v
    dt = max(t1 - t0, 1e-6)
    return (v1 - v0) / 1e9 / dt, dt


def _innermost_common(
    samples: list[tuple[tuple[int, CodeType, int], ...]],
) -> tuple[int, CodeType] | None:
    """The innermost frame object present in every sample (a frame that never returned)."""
    rest = [{(fid, c) for fid, c, _ in frames} for frames in samples[1:]]
    for fid, code, _ in samples[0]:
        if all((fid, code) in keys for keys in rest):
            return fid, code
    return None


def find_frame(frame: FrameType | None, frame_id: int) -> FrameType | None:
    """The frame with id `frame_id` on the stack from `frame` outwards."""
    while frame is not None:
        if id(frame) == frame_id:
            return frame
        frame = frame.f_back
    return None
