"""pytest --rmapstress-watch: any threaded test, unchanged, watched for hangs.

For each test (setup, call and teardown) the plugin enters instrument_threading():
threading's primitives made during the test are instrumented, with lock classes keyed
by creation site, and every thread the test starts is watched.  Then:

- a hang (deadlock, list-loop, long-hold, livelock, starvation, stall) fails the test
  with its verdict - kind, blocker chain, stacks, source lines - in the failure text,
  within a couple of seconds and before pytest-timeout would fire; threads that do not
  stop are reported, left as daemons, and the session goes on;
- a lock-order inversion fails the test even if nothing hung (`lock_order = "warn"`
  makes it a warning);
- an exception raised in a thread the test started fails it (`thread_errors = "warn"`).

Settings: the ini options `rmapstress_watch` (watch every test) and
`rmapstress_watch_settings` (`key = value` lines), and per test
`@pytest.mark.rmapstress(key=value, ...)`, where a key is a stress.Config field
(hold_s, verdict_s, hold_budgets, ...), `lock_order`, `thread_errors`, or `watch`
(False leaves the test alone, True watches it without the flag).  A test that asks for
the `stress_monitor` fixture is watched and gets the monitor.

This module is generic harness code: it never imports the model (rmapsim), and it is
its own pytest11 entry point, apart from the scenario plugin.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import shlex
import warnings
from collections.abc import Generator
from typing import Any, NoReturn

import pytest

from stress.config import Config
from stress.errors import Cancelled, ConfigError, LadderError
from stress.instrument import Instrumentation, instrument_threading, watch_config
from stress.monitor import Monitor
from stress.verdicts import Verdict

OPTION = "--rmapstress-watch"
INI_WATCH = "rmapstress_watch"
INI_SETTINGS = "rmapstress_watch_settings"
MARKER = "rmapstress"
#: Seconds the watch ends a test before its pytest-timeout (on top of grace and backstop).
MARGIN_S = 0.5
#: Verdicts a failure shows in full (the rest by their summary).
SHOWN_VERDICTS = 4
_CHOICES = {"lock_order": ("fail", "warn", "ignore"), "thread_errors": ("fail", "warn", "ignore")}
_FIELDS = {f.name for f in dataclasses.fields(Config)}


class RmapstressWatchWarning(UserWarning):
    """A lock-order inversion or a thread's exception, reported as a warning by choice."""


@dataclasses.dataclass
class _Item:
    """The watch of one test."""

    block: Instrumentation
    manager: Any
    policy: dict[str, str]
    replay: str
    timeout: float | None
    seen: int = 0
    failed: bool = False


_WATCH = pytest.StashKey[_Item]()
_SETTINGS = pytest.StashKey[dict[str, Any]]()


# -- configuration ----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rmapstress-watch", "rmapstress: watch threaded tests for hangs")
    group.addoption(
        OPTION,
        action="store_true",
        default=False,
        help="instrument threading for every test: a hang fails it with its diagnosis, "
        "a lock-order inversion or a thread's exception fails it too",
    )
    parser.addini(INI_WATCH, f"watch every test (as {OPTION})", type="bool", default=False)
    parser.addini(
        INI_SETTINGS,
        "watch settings, one 'key = value' a line: stress.Config fields (hold_s, verdict_s, "
        "...), lock_order = fail|warn|ignore, thread_errors = fail|warn|ignore",
        type="linelist",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): settings of this test under {OPTION} (watch=False: "
        "not watched; watch=True: watched without the flag); also marks scenario cases",
    )
    settings: dict[str, Any] = {}
    for line in config.getini(INI_SETTINGS):
        if not line.strip() or line.strip().startswith("#"):
            continue
        key, sep, text = line.partition("=")
        key = key.strip()
        if not sep:
            raise pytest.UsageError(f"{INI_SETTINGS}: {line.strip()!r}: expected 'key = value'")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()  # a bare word: fail, warn
        settings[key] = value
    try:
        _check(settings, where=INI_SETTINGS)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_SETTINGS] = settings


def _check(settings: dict[str, Any], *, where: str) -> None:
    for key, value in settings.items():
        if key == "watch":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: watch: expected True or False, got {value!r}")
        elif key in _CHOICES:
            if value not in _CHOICES[key]:
                choices = ", ".join(_CHOICES[key])
                raise ConfigError(f"{where}: {key}: expected one of {choices}, got {value!r}")
        elif key not in _FIELDS:
            raise ConfigError(f"{where}: {key}: unknown setting")
    fields = {k: v for k, v in settings.items() if k in _FIELDS}
    if fields:
        Config.from_dict({**_base_fields(), **fields}, where=where)


def _base_fields() -> dict[str, Any]:
    base = watch_config()
    return {f.name: getattr(base, f.name) for f in dataclasses.fields(Config)}


# -- which tests, with what ---------------------------------------------------------------


def _settings(item: pytest.Item) -> dict[str, Any]:
    ini: dict[str, Any] = item.config.stash.get(_SETTINGS, {})
    settings = dict(ini)
    for marker in reversed(list(item.iter_markers(MARKER))):
        settings.update(marker.kwargs)  # the closest marker wins
    return settings


def _wanted(item: pytest.Item, settings: dict[str, Any]) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    if "watch" in settings:
        return bool(settings["watch"])
    if "stress_monitor" in getattr(item, "fixturenames", ()):
        return True
    return bool(item.config.getoption("rmapstress_watch") or item.config.getini(INI_WATCH))


def item_timeout(
    item: pytest.Item, error: type[Exception] = ConfigError
) -> tuple[float | None, str]:
    """The item's pytest-timeout in seconds (None: none) and where it comes from.

    Same precedence as pytest-timeout: the timeout marker, then --timeout, then the
    PYTEST_TIMEOUT environment variable, then the `timeout` ini option; 0 means none.
    A value that is not a number raises `error`, naming where it came from.
    """
    if not item.config.pluginmanager.hasplugin("timeout"):
        return None, ""
    value: Any = None
    source = ""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        source = "timeout marker"
    if value is None and item.config.getoption("timeout", None) is not None:
        value, source = item.config.getoption("timeout"), "--timeout"
    if value is None and os.environ.get("PYTEST_TIMEOUT"):
        value, source = os.environ["PYTEST_TIMEOUT"], "PYTEST_TIMEOUT"
    if value is None and item.config.getini("timeout"):
        value, source = item.config.getini("timeout"), "ini option timeout"
    if value is None:
        return None, ""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise error(f"{source}: expected a number of seconds, got {value!r}") from None
    return (seconds if seconds > 0 else None), source


def _config(item: pytest.Item, settings: dict[str, Any]) -> tuple[Config, float | None]:
    """The test's watch settings; its pytest-timeout is the ladder's outer rung."""
    where = f"{item.nodeid}: @pytest.mark.{MARKER}"
    _check(settings, where=where)
    fields = {k: v for k, v in settings.items() if k in _FIELDS}
    cfg = Config.from_dict({**_base_fields(), **fields}, where=where)
    timeout, source = item_timeout(item)
    if timeout is None:
        return cfg, None
    # End the test early enough to unwind it and write its report before pytest-timeout.
    duration = timeout - cfg.grace_s - cfg.backstop_s - MARGIN_S
    try:
        return cfg.replace(duration_s=max(duration, 1e-3), test_timeout_s=timeout), timeout
    except LadderError as exc:
        need = cfg.verdict_s + cfg.backstop_s + MARGIN_S
        raise ConfigError(
            f"{exc}\n{OPTION}: this test's pytest-timeout ({source} = {timeout:g} s) leaves "
            f"no time to name a hang: the watch ends a test grace_s + backstop_s + "
            f"{MARGIN_S:g} s = {cfg.grace_s + cfg.backstop_s + MARGIN_S:g} s before its "
            f"timeout and needs verdict_s = {cfg.verdict_s:g} s to call a hang a hang.  "
            f"Raise the timeout above {need:g} s, or lower verdict_s (and hold_s) with "
            f"@pytest.mark.{MARKER}(...)."
        ) from None


def _replay(item: pytest.Item) -> str:
    flag = "" if item.config.getini(INI_WATCH) else f" {OPTION}"
    return f"pytest {shlex.quote(item.nodeid)}{flag}"


# -- the phases ---------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    settings = _settings(item)
    if _wanted(item, settings):
        try:
            cfg, timeout = _config(item, settings)
        except ConfigError as exc:
            # Fail after the other plugins' setup ran: their teardown expects it.
            result = yield
            _fail(str(exc))
            return result
        manager = instrument_threading(cfg, name=item.nodeid)
        block = manager.__enter__()
        block.interruptible = False  # only while the test's own code runs (_phase)
        policy = {k: str(settings.get(k, "fail")) for k in _CHOICES}
        item.stash[_WATCH] = _Item(block, manager, policy, _replay(item), timeout)
    return (yield from _phase(item))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _phase(item))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    watch = item.stash.get(_WATCH, None)
    try:
        return (yield from _phase(item))
    finally:
        if watch is not None:
            del item.stash[_WATCH]
            watch.manager.__exit__(None, None, None)
            if not watch.failed:
                # What turned up at the very end: threads that would not stop.
                _judge(watch, None, final=True)


def _phase(item: pytest.Item) -> Generator[None, None, None]:
    watch = item.stash.get(_WATCH, None)
    if watch is not None:
        watch.block.interruptible = True
    try:
        result = yield
    except BaseException as exc:
        if watch is not None:
            watch.block.interruptible = False
        if watch is None or isinstance(exc, (KeyboardInterrupt, pytest.exit.Exception)):
            raise
        _judge(watch, exc)
        raise
    if watch is not None:
        watch.block.interruptible = False
        _judge(watch, None)
    return result


def _judge(watch: _Item, exc: BaseException | None, *, final: bool = False) -> None:
    """Fail (or warn about) the phase for what the watch found since the last look."""
    block = watch.block
    verdicts = block.verdicts
    new = verdicts[watch.seen :]
    watch.seen = len(verdicts)
    cfg = block.monitor.config
    hangs = [v for v in verdicts if cfg.stops_on(v.kind)]
    if watch.failed:
        return
    if hangs or block.hung or isinstance(exc, Cancelled):
        watch.failed = True
        block.settle()  # the threads that will not stop belong in the report
        _fail(_hang_text(watch, hangs, exc))
    if final and block.stuck:
        watch.failed = True
        _fail(_hang_text(watch, [], exc))
    for kind, policy_key in (("lock-order", "lock_order"), ("crash", "thread_errors")):
        found = [v for v in new if v.kind == kind]
        if not found:
            continue
        policy = watch.policy[policy_key]
        text = _text(watch, found, headline=_headline(found))
        if policy == "fail" and exc is None:
            watch.failed = True
            _fail(text)
        elif policy == "warn" or (policy == "fail" and exc is not None):
            warnings.warn(RmapstressWatchWarning(text), stacklevel=1)


def _fail(text: str) -> NoReturn:
    """Fail the phase with `text` alone: no traceback, no chained exception."""
    try:
        pytest.fail(text, pytrace=False)
    except pytest.fail.Exception as failure:
        raise failure from None


def _headline(verdicts: list[Verdict]) -> str:
    first = verdicts[0]
    more = f" (and {len(verdicts) - 1} more verdict(s))" if len(verdicts) > 1 else ""
    what = (
        first.summary
        if first.summary.startswith(f"{first.kind}:")
        else (f"{first.kind}: {first.summary}")
    )
    return f"rmapstress watch: {what}{more}"


def _hang_text(watch: _Item, hangs: list[Verdict], exc: BaseException | None) -> str:
    block = watch.block
    mon = block.monitor
    others = [v for v in block.verdicts if v not in hangs]
    if hangs:
        headline = _headline(hangs + others)
    elif mon.cancel_reason.startswith("end of budget"):
        headline = (
            f"rmapstress watch: the test ran past its budget ({mon.config.duration_s:g} s, "
            f"ended before its pytest-timeout of {watch.timeout:g} s) and no hang was named"
        )
    else:
        headline = f"rmapstress watch: stopped: {mon.cancel_reason or exc!r}"
    lines = [_text(watch, hangs + others, headline=headline)]
    if exc is not None and not isinstance(exc, Cancelled):
        lines.append(f"The test itself then raised: {type(exc).__name__}: {exc}")
    return "\n".join(lines)


def _text(watch: _Item, verdicts: list[Verdict], *, headline: str) -> str:
    block = watch.block
    lines = [headline, ""]
    for n, v in enumerate(verdicts, 1):
        if n > SHOWN_VERDICTS:
            lines.append(f"[{n}] {v.kind}: {v.summary}")
            continue
        body = v.lines()
        lines.append(f"[{n}] {body[0]}")
        lines += body[1:]
        lines.append("")
    if block.stuck:
        lines.append(
            f"{len(block.stuck)} thread(s) did not stop within grace_s "
            f"({block.monitor.config.grace_s:g} s) of the cancellation; left running as "
            f"daemon threads, stopped as soon as they run Python code again:"
        )
        for detail in block.stuck:
            lines.append(f"  {detail['doing']}")
            for frame in detail.get("stack", [])[-4:]:
                code = f": {frame['code']}" if frame.get("code") else ""
                lines.append(
                    f"      {os.path.basename(frame['file'])}:{frame['line']} in "
                    f"{frame['func']}{code}"
                )
        lines.append("")
    cfg = block.monitor.config
    lines.append(
        f"Settings: hold_s = {cfg.hold_s:g} s, verdict_s = {cfg.verdict_s:g} s, "
        f"grace_s = {cfg.grace_s:g} s (change them with @pytest.mark.{MARKER}(...) or the "
        f"{INI_SETTINGS} ini option)"
    )
    lines.append(f"Run it again: {watch.replay}")
    return "\n".join(lines)


# -- the fixture ---------------------------------------------------------------------------


@pytest.fixture
def stress_monitor(request: pytest.FixtureRequest) -> Monitor:
    """The monitor watching this test (asking for it turns the watch on for the test)."""
    watch: _Item | None = request.node.stash.get(_WATCH, None)
    if watch is None:
        pytest.fail(
            f"stress_monitor: {request.node.nodeid} is not watched "
            f"(@pytest.mark.{MARKER}(watch=False)?)",
            pytrace=False,
        )
    return watch.block.monitor
