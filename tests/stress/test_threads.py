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


# -- reading other threads' frames (stress.threads.frozen_frames) -------------------------


def _contains_frames(obj: Any, depth: int = 4) -> bool:
    """Whether a frame object is reachable from `obj` within `depth` references."""
    import gc
    import types

    seen: set[int] = set()
    level = [obj]
    for _ in range(depth):
        nxt = []
        for o in level:
            if isinstance(o, types.FrameType):
                return True
            if id(o) in seen or isinstance(o, (type, types.ModuleType, types.CodeType)):
                continue
            seen.add(id(o))
            nxt.extend(gc.get_referents(o))
        level = nxt
    return any(isinstance(o, types.FrameType) for o in level)


def test_a_look_at_every_thread_keeps_no_frame_object(monitor_factory: Any, fast: Any) -> None:
    # On CPython 3.11 a frame of another thread read after that thread ran on can crash
    # the interpreter (seen: a watchdog segfaulting in f_back under load).  So a snapshot
    # holds plain values, and stacks are read afresh when a verdict needs them.
    from stress.diagnosis import Snapshot
    from stress.threads import frame_views

    mon = monitor_factory(fast, name="look")
    release = threading.Event()

    def parked() -> None:
        release.wait(30)

    t = threading.Thread(target=parked, name="parked", daemon=True)
    t.start()
    try:
        snap = Snapshot.take(mon)
        # (Event.wait's own frames differ when threading is instrumented: a watch.)
        (top,) = snap.views[t.ident].chain  # type: ignore[index]
        assert top[1].co_filename != __file__  # inside Event.wait, below parked()
        assert not _contains_frames(snap)
        deep = frame_views([t.ident])[t.ident]  # type: ignore[index]
        names = [code.co_name for _, code, _ in deep.chain]
        assert names[0] == top[1].co_name and "parked" in names[1:]
        assert not _contains_frames(deep)
        stack = snap.stacks_of(t.ident)
        (mine,) = [f for f in stack if f.func == "parked"]
        assert mine.code == "release.wait(30)"
        assert stack[-1].func == names[0]
    finally:
        release.set()
        t.join(10)


def test_frozen_frames_holds_the_collector_off_and_leaves_the_switch_interval() -> None:
    import gc
    import sys

    from stress.threads import frozen_frames

    previous = sys.getswitchinterval()
    with frozen_frames() as frames:
        assert threading.get_ident() in frames
        assert not gc.isenabled()
        assert sys.getswitchinterval() == previous  # stretching it stalls other threads
    assert gc.isenabled()


def test_a_threads_own_stack_is_read_from_its_own_frame() -> None:
    from stress.threads import stack_of

    def inner() -> list[Any]:
        return stack_of(threading.get_ident())

    funcs = [f.func for f in inner()]
    assert funcs[-2:] == ["test_a_threads_own_stack_is_read_from_its_own_frame", "inner"]
