"""Helpers the bench scripts share: range-checked option types, the load-average line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def number(lo: float, hi: float, *, integer: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in [lo, hi] (a whole one when `integer`)."""

    def check(text: str) -> float:
        try:
            x = int(text) if integer else float(text)
        except ValueError:
            what = "a whole number" if integer else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}, got {text!r}")
        return x

    return check


def load_at_end() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average at end {one:.1f} (1 min), {five:.1f} (5 min), {fifteen:.1f} (15 min)"
