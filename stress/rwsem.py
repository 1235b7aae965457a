"""The instrumented reader-writer semaphore (the kernel's rw_semaphore, e.g. mmap_sem).

Waiters queue FIFO and a release hands the semaphore over (a writer, or every
reader at the head of the queue).  A queued writer holds back later readers, so
neither side starves; that is also why a second read by a thread that already
reads deadlocks behind a queued writer, exactly as in the kernel, and the
watchdog names that cycle.  Taking it for writing while holding it at all, or
for reading while holding it for writing, is a self-deadlock.

Every holder's start time is recorded (the semaphore's bookkeeping runs under
its guard anyway), so long holds are exact and need no watchdog mark.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn

from stress.errors import Cancelled, NotOwnerError, SelfDeadlockError
from stress.lockcore import LockBase, Mode, Nested, Waiter
from stress.threads import ThreadState, _tls, new_thread, note_failed

if TYPE_CHECKING:
    from stress.lockdep import LockKey
    from stress.monitor import Monitor


class RWSem(LockBase):
    """A fair reader-writer semaphore with a lock class and an instance name."""

    __slots__ = ("_readers", "_ring", "_writer")

    kind = "rwsem"

    def __init__(
        self,
        lock_class: str = "rwsem",
        name: str | None = None,
        *,
        monitor: Monitor | None = None,
        subclass: int = 0,
    ) -> None:
        super().__init__(lock_class, name, monitor, subclass)
        #: reader -> [read depth, perf_counter time of its outermost read]
        self._readers: dict[ThreadState, list[Any]] = {}
        self._writer: tuple[ThreadState, float] | None = None
        self._ring = self._mon.trace_ring if self._mon.config.timing else None

    # -- the kernel's API ----------------------------------------------------------------

    def down_read(self) -> None:
        self._down("read", True)

    def down_write(self) -> None:
        self._down("write", True)

    def down_read_trylock(self) -> bool:
        return self._down("read", False)

    def down_write_trylock(self) -> bool:
        return self._down("write", False)

    def down_write_nested(self, subclass: int = 1) -> None:
        """Take it for writing as nesting subclass `subclass` (lockdep's down_write_nested)."""
        self._down("write", True, self._cls.key(subclass))

    def down_read_nested(self, subclass: int = 1) -> None:
        """Take it for reading as nesting subclass `subclass` (lockdep's down_read_nested)."""
        self._down("read", True, self._cls.key(subclass))

    def up_read(self) -> None:
        self._up("read")

    def up_write(self) -> None:
        self._up("write")

    def read(self) -> _Held:
        """Context manager: `with sem.read(): ...`."""
        return _Held(self.down_read, self.up_read)

    def write(self) -> _Held:
        """Context manager: `with sem.write(): ...`."""
        return _Held(self.down_write, self.up_write)

    def locked(self) -> bool:
        return self._writer is not None or bool(self._readers)

    # -- taking and giving back ----------------------------------------------------------

    def _down(self, mode: Mode, blocking: bool, key: LockKey | None = None) -> bool:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        state: ThreadState = held[0]
        writer = self._writer
        reading = state in self._readers
        if blocking and (
            (writer is not None and writer[0] is state) or (reading and mode == "write")
        ):
            return self._self_deadlock(state, mode)
        key = key or self._key
        entry = self if key is self._key else Nested(self, key)
        if blocking and not reading and len(held) > 1 and key not in held[-1]._after:
            self._order(held, key)
        with self._guard:
            if not self._waiters and self._free_for(mode):
                self._enter(state, mode, perf_counter())
                held.append(entry)
                return True
            state.nslow += 1
            if not blocking:
                note_failed(state, self, perf_counter())
                return False
        mon = self._mon
        if mon.cancelled:
            raise Cancelled(mon.cancel_reason)
        mon.adopt(state)
        waiter = Waiter(state, self, mode)
        with self._guard:
            self._waiters.append(waiter)
            state.waiting = waiter
            self._kick_locked()  # it may have been given back meanwhile
        self._block(waiter, None)
        self._ncont += 1  # counted once granted: a cancelled wait acquired nothing
        held.append(entry)
        if mon.cancelled:
            self._up(mode)
            raise Cancelled(mon.cancel_reason)
        return True

    def _free_for(self, mode: Mode) -> bool:
        if mode == "read":
            return self._writer is None
        return self._writer is None and not self._readers

    def _enter(self, state: ThreadState, mode: Mode, now: float) -> None:
        if mode == "read":
            entry = self._readers.get(state)
            if entry is None:
                self._readers[state] = [1, now]
            else:
                entry[0] += 1
        else:
            self._writer = (state, now)
        self._nacq += 1

    def _up(self, mode: Mode) -> None:
        try:
            held = _tls.held
        except AttributeError:
            held = new_thread()
        state: ThreadState = held[0]
        since: float | None = None
        with self._guard:
            if mode == "read":
                entry = self._readers.get(state)
                if entry is None:
                    self._not_owner(state, mode)
                entry[0] -= 1
                if entry[0] == 0:
                    del self._readers[state]
                    since = entry[1]
            else:
                writer = self._writer
                if writer is None or writer[0] is not state:
                    self._not_owner(state, mode)
                since = writer[1]
                self._writer = None
            if held[-1] is self:
                held.pop()
            else:
                for i in range(len(held) - 1, 0, -1):
                    if held[i] is self or getattr(held[i], "lock", None) is self:
                        del held[i]
                        break
            if self._waiters:
                self._kick_locked()
        if since is not None and self._ring is not None:
            now = perf_counter()
            self._note_hold(now - since)
            self._ring.append(("L", state.tid, self.name, self._cls.name, since, now))

    def _not_owner(self, state: ThreadState, mode: Mode) -> NoReturn:
        holders = [f"{s.name} ({m})" for s, m, _ in self.holders()]
        raise NotOwnerError(f"{self.name} ({mode})", state.name, holders)

    def _take_locked(self, waiter: Waiter) -> bool:
        return False  # only hand-overs: the queue is strictly FIFO

    def _kick_locked(self) -> None:
        now = perf_counter()
        while self._waiters:
            head = self._waiters[0]
            if not self._free_for(head.mode):
                return
            self._waiters.popleft()
            # Granted before it becomes a holder: the watchdog reads without our guard,
            # and a thread seen holding the semaphore while still waiting for it would
            # look like a self-deadlock.
            head.granted = True
            self._enter(head.state, head.mode, now)
            head.signal_locked()

    def _self_deadlock(self, state: ThreadState, mode: Mode) -> bool:
        mon = self._mon
        if not mon.running:
            raise SelfDeadlockError(f"{self.name} ({mode})", state.name)
        waiter = Waiter(state, self, mode)
        with self._guard:
            self._waiters.append(waiter)
            state.waiting = waiter
        mon.self_deadlock(state, self, waiter)
        self._block(waiter, None)
        raise Cancelled(mon.cancel_reason)  # pragma: no cover - _block raised already

    def blockers(self, waiter: Waiter) -> list[tuple[ThreadState, str, float | None]]:
        # A reader is kept out by a writer, not by other readers; and anyone queued
        # ahead goes first (FIFO), so a reader queued behind a writer waits for it.
        out: list[tuple[ThreadState, str, float | None]] = [
            (s, m, t) for s, m, t in self.holders() if waiter.mode == "write" or m == "write"
        ]
        for earlier in list(self._waiters):
            if earlier is waiter:
                break
            if not earlier.granted:
                out.append((earlier.state, "queued", earlier.since))
        return out

    def holders(self) -> list[tuple[ThreadState, Mode, float | None]]:
        out: list[tuple[ThreadState, Mode, float | None]] = []
        writer = self._writer
        if writer is not None:
            out.append((writer[0], "write", writer[1]))
        for state, entry in list(self._readers.items()):
            out.append((state, "read", entry[1]))
        return out


class _Held:
    """Context manager over a pair of bound methods (RWSem.read()/write())."""

    __slots__ = ("_down", "_up")

    def __init__(self, down: Callable[[], Any], up: Callable[[], None]) -> None:
        self._down = down
        self._up = up

    def __enter__(self) -> None:
        self._down()

    def __exit__(self, *exc: object) -> None:
        self._up()
