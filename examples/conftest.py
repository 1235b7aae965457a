"""Bound every example: without --rmapstress-watch the buggy ones would hang."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # The signal method fails the test and lets the session go on (the thread
        # method would end the whole session at the first hang).
        item.add_marker(pytest.mark.timeout(10, method="signal"))
