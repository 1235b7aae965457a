"""A hand-over never shows a thread holding the semaphore while still waiting for it.

The watchdog reads holders and waiters without the semaphore's guard.  If the waiter
became a holder before it was marked granted, a watchdog poll in between would see it
waiting for a semaphore it holds: a false self-deadlock (seen on a loaded machine as
"p143/t1 waits for p143.mmap_sem, which it holds itself").
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stress import Config, Monitor
from stress.diagnosis import waiting_on
from stress.rwsem import RWSem


class Watched(RWSem):
    """Looks at itself, as the watchdog would, at the moment a thread becomes a holder."""

    __slots__ = ("seen",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, bool]] = []

    def _enter(self, state: Any, mode: Any, now: float) -> None:
        super()._enter(state, mode, now)
        waiter = waiting_on(state)
        self.seen.append((state.name, waiter is not None and waiter.lock is self))


@pytest.mark.timeout(30)
def test_a_waiter_becomes_a_holder_only_once_it_is_granted() -> None:
    mon = Monitor(Config(duration_s=5, on_stuck="raise"))
    sem = Watched("mmap_sem", "mm.mmap_sem", monitor=mon)
    sem.down_write()
    started = threading.Event()

    def reader() -> None:
        started.set()
        sem.down_read()
        sem.up_read()

    readers = [threading.Thread(target=reader, name=f"reader-{i}") for i in range(3)]
    for t in readers:
        t.start()
    started.wait(5)
    while len(sem.waiters()) < 3:  # all three queued behind the writer
        threading.Event().wait(0.005)
    sem.up_write()  # hands the semaphore over to the three readers at once
    for t in readers:
        t.join(5)
        assert not t.is_alive()
    handed = [(name, both) for name, both in sem.seen if name.startswith("reader")]
    assert len(handed) == 3
    assert not any(both for _, both in handed), handed
