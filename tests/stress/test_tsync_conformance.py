"""CPython's own conformance suite for its lock types (Lib/test/lock_tests.py), run on
stress's threading-compatible types: they must behave as threading's, to the letter.

Each suite runs twice: with the types bound to a monitor that is not running (as
objects outliving a watched test are), and inside instrument_threading with its
watchdog running - where no verdict may come of CPython's tests, which are healthy.
"""

from __future__ import annotations

from typing import Any

import pytest

import stress

lock_tests: Any = pytest.importorskip(
    "test.lock_tests", reason="CPython's test package (Lib/test) is not installed"
)

pytestmark = pytest.mark.timeout(120)


class LockTests(lock_tests.LockTests):  # type: ignore[misc]
    locktype = staticmethod(stress.Lock)


class RLockTests(lock_tests.RLockTests):  # type: ignore[misc]
    locktype = staticmethod(stress.RLock)


class EventTests(lock_tests.EventTests):  # type: ignore[misc]
    eventtype = staticmethod(stress.Event)


class ConditionAsRLockTests(lock_tests.RLockTests):  # type: ignore[misc]
    # A Condition with its default RLock is an RLock too.
    locktype = staticmethod(stress.Condition)

    def test_recursion_count(self) -> None:
        pytest.skip("Condition has no _recursion_count (as in CPython's own suite)")


class ConditionTests(lock_tests.ConditionTests):  # type: ignore[misc]
    condtype = staticmethod(stress.Condition)


class SemaphoreTests(lock_tests.SemaphoreTests):  # type: ignore[misc]
    semtype = staticmethod(stress.Semaphore)


class BoundedSemaphoreTests(lock_tests.BoundedSemaphoreTests):  # type: ignore[misc]
    semtype = staticmethod(stress.BoundedSemaphore)


class BarrierTests(lock_tests.BarrierTests):  # type: ignore[misc]
    barriertype = staticmethod(stress.Barrier)


# -- the same suites inside instrument_threading, its watchdog running ----------------------


class _Watched:
    """Runs a suite inside one instrument_threading block: it must still pass, and the
    watchdog must find nothing wrong with CPython's (healthy) tests."""

    _manager: Any
    _block: stress.Instrumentation

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls._manager = stress.instrument_threading(name=cls.__name__)
        cls._block = cls._manager.__enter__()

    @classmethod
    def tearDownClass(cls) -> None:
        cls._manager.__exit__(None, None, None)
        super().tearDownClass()  # type: ignore[misc]
        found = [f"{v.kind}: {v.summary}" for v in cls._block.verdicts]
        assert found == [], found


class WatchedLockTests(_Watched, lock_tests.LockTests):  # type: ignore[misc]
    locktype = staticmethod(stress.Lock)


class WatchedRLockTests(_Watched, lock_tests.RLockTests):  # type: ignore[misc]
    locktype = staticmethod(stress.RLock)


class WatchedEventTests(_Watched, lock_tests.EventTests):  # type: ignore[misc]
    eventtype = staticmethod(stress.Event)


class WatchedConditionTests(_Watched, lock_tests.ConditionTests):  # type: ignore[misc]
    condtype = staticmethod(stress.Condition)


class WatchedSemaphoreTests(_Watched, lock_tests.SemaphoreTests):  # type: ignore[misc]
    semtype = staticmethod(stress.Semaphore)


class WatchedBoundedSemaphoreTests(_Watched, lock_tests.BoundedSemaphoreTests):  # type: ignore[misc]
    semtype = staticmethod(stress.BoundedSemaphore)


class WatchedBarrierTests(_Watched, lock_tests.BarrierTests):  # type: ignore[misc]
    barriertype = staticmethod(stress.Barrier)
