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
