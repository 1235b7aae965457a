"""SIGINT and SIGTERM, really sent to this process, cut the attached run short and nothing else.

The signal handlers only exist while an `Interrupts` is entered; every test leaves the
process's handlers as it found them.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from stress import Config, Interrupts, Monitor
from stress.interrupts import SIGNALS

pytestmark = pytest.mark.timeout(30)


def busy_monitor(fast: Config, started: threading.Event) -> Monitor:
    """A run that would go on for its whole budget: one worker making progress."""
    mon = Monitor(fast.replace(duration_s=20.0), name="busy", meta={"variant": "v", "seed": 1})
    lock = mon.spinlock("anon_vma", "anon_vma#1")

    def worker() -> None:
        while True:
            with lock:
                started.set()
            mon.progress()
            mon.pause(0.001)

    mon.spawn(worker, name="w0")
    return mon


def send_when(ready: threading.Event, signum: int, times: int = 1) -> threading.Thread:
    """Send `signum` to this process `times` times once `ready` is set (from a thread)."""

    def body() -> None:
        if ready.wait(20):
            for _ in range(times):
                os.kill(os.getpid(), signum)

    t = threading.Thread(target=body, name="sender", daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_cuts_the_attached_run_short(fast: Config, signum: int) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    started = threading.Event()
    mon = busy_monitor(fast, started)
    with Interrupts() as stop:
        sender = send_when(started, signum)
        with stop.watching(mon):
            result = mon.run()
    sender.join(5)
    assert result.outcome == "interrupted"
    assert result.cancel_reason == f"interrupted by {signal.Signals(signum).name}"
    assert result.stats["ops"] > 0
    assert stop.signum == signum and stop.exit_code == 128 + signum
    assert stop.name == signal.Signals(signum).name
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_later_signals_are_only_acknowledged(fast: Config) -> None:
    seen: list[tuple[int, int]] = []
    acknowledged = threading.Event()

    def on_signal(signum: int, count: int) -> None:
        seen.append((signum, count))
        if count >= 2:
            acknowledged.set()

    started = threading.Event()
    mon = busy_monitor(fast, started)
    with Interrupts(on_signal=on_signal) as stop:
        send_when(started, signal.SIGINT)
        with stop.watching(mon):
            result = mon.run()
        # The run is over; more Ctrl-C raise nothing here, they are counted and reported.
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert acknowledged.wait(10)
    assert result.outcome == "interrupted"
    assert stop.signum == signal.SIGINT and stop.count >= 2  # close signals may coalesce
    assert seen[0] == (signal.SIGINT, 1)
    assert [count for _, count in seen] == list(range(1, len(seen) + 1))


def test_a_signal_before_the_run_is_attached_interrupts_it_at_once(fast: Config) -> None:
    mon = Monitor(fast.replace(duration_s=20.0), name="late")
    mon.spawn(lambda: mon.pause(30), name="idle", tracked=False)
    with Interrupts() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        # The handler runs in this thread at the next bytecode; the watcher right after.
        while stop.signum is None:
            pass
        with stop.watching(mon):
            result = mon.run()
    assert result.outcome == "interrupted" and stop.exit_code == 143
    assert result.duration_s < 20.0


def test_outside_the_main_thread_no_handler_is_installed(fast: Config) -> None:
    out: dict[str, Any] = {}

    def body() -> None:
        with Interrupts() as stop:
            out["handlers"] = {s: signal.getsignal(s) for s in SIGNALS}
            out["signum"] = stop.signum

    before = {s: signal.getsignal(s) for s in SIGNALS}
    t = threading.Thread(target=body, name="not-main")
    t.start()
    t.join(10)
    assert out == {"handlers": before, "signum": None}


def test_then_ignore_keeps_a_stopping_process_deaf_to_later_signals() -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        with Interrupts(then_ignore=True) as quiet:
            pass  # no signal: the previous handlers come back
        assert {s: signal.getsignal(s) for s in SIGNALS} == before
        with Interrupts(then_ignore=True) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            while stop.signum is None:
                pass
        assert {s: signal.getsignal(s) for s in SIGNALS} == dict.fromkeys(SIGNALS, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt here
        assert quiet.signum is None
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
