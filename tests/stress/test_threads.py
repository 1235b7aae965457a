"""Thread states: the Thread object of a thread, and of a thread threading does not know."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any

import pytest

from stress.threads import ForeignThread, _thread_object, current

pytestmark = pytest.mark.timeout(30)


def test_a_dead_threads_dummy_under_a_reused_ident_is_not_taken() -> None:
    # Idents are reused, and _DummyThread objects never leave threading's table: a
    # thread still in its bootstrap (in _limbo) must be found there, not named after
    # the dummy a dead foreign thread left under the same ident.
    seen: list[Any] = []

    def body() -> None:
        me = threading.current_thread()
        ident = threading.get_ident()
        active: dict[int, Any] = threading._active  # type: ignore[attr-defined]
        limbo: dict[Any, Any] = threading._limbo  # type: ignore[attr-defined]
        stale = object.__new__(threading._DummyThread)  # type: ignore[attr-defined]
        stale._name = "Dummy-99"
        active[ident], limbo[me] = stale, me  # as it is while me bootstraps
        try:
            seen.append(_thread_object())
        finally:
            active[ident] = me
            del limbo[me]

    t = threading.Thread(target=body, name="reborn")
    t.start()
    t.join(10)
    assert seen == [t]


def test_a_thread_threading_does_not_know_gets_a_stand_in_that_dies_with_it() -> None:
    states: list[Any] = []
    done = _thread.allocate_lock()
    done.acquire()

    def body() -> None:
        states.append(current())
        done.release()

    _thread.start_new_thread(body, ())
    assert done.acquire(True, 10)
    (state,) = states
    assert isinstance(state.thread, ForeignThread) and state.name.startswith("foreign-")
    deadline = time.monotonic() + 10
    while state.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not state.alive()
