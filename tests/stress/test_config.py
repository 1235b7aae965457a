"""The timeout ladder: every rung checked, every refusal naming the two settings."""

from __future__ import annotations

import dataclasses

import pytest

from stress import Config, ConfigError, LadderError, Monitor


def test_defaults_are_consistent() -> None:
    cfg = Config().validate()
    assert cfg.poll_s < cfg.walk_s < cfg.hold_s < cfg.verdict_s < cfg.deadline_s
    assert 0.01 <= cfg.poll_s <= 0.1  # "tens of milliseconds"


@pytest.mark.parametrize(
    ("changes", "low", "high"),
    [
        ({"poll_s": 0.3}, "poll_s", "walk_s"),
        ({"walk_s": 0.6}, "walk_s", "hold_s"),
        ({"hold_s": 2.0}, "hold_s", "verdict_s"),
        ({"hold_budgets": {"anon_vma": 0.1}}, "walk_s", "hold_budgets['anon_vma']"),
        ({"hold_budgets": {"mmap_sem": 5.0}}, "hold_budgets['mmap_sem']", "verdict_s"),
        (
            {"duration_s": 0.5, "grace_s": 0.5, "verdict_s": 1.5},
            "verdict_s",
            "duration_s + grace_s",
        ),
        (
            {"duration_s": 10, "test_timeout_s": 12},
            "duration_s + grace_s + backstop_s",
            "test_timeout_s",
        ),
        ({"test_timeout_s": 60, "job_limit_s": 30}, "test_timeout_s", "job_limit_s"),
        ({"job_limit_s": 10}, "duration_s + grace_s + backstop_s", "job_limit_s"),
    ],
)
def test_each_rung_names_the_two_settings(changes: dict[str, object], low: str, high: str) -> None:
    with pytest.raises(LadderError) as err:
        Config().replace(**changes)
    assert err.value.settings == (low, high)
    message = str(err.value)
    assert message.startswith(f"config: {low} (")
    assert f"must be less than {high} (" in message


def test_a_consistent_ladder_with_outer_limits_passes() -> None:
    cfg = Config(duration_s=20, grace_s=2, backstop_s=2, test_timeout_s=30, job_limit_s=600)
    assert cfg.validate() is cfg


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"poll_s": -1}, "poll_s"),
        ({"grace_s": float("nan")}, "grace_s"),
        ({"duration_s": "10"}, "duration_s"),
        ({"linger_s": -0.5}, "linger_s"),
        ({"trace_events": -1}, "trace_events"),
        ({"timing": "yes"}, "timing"),
        ({"on_stuck": "ignore"}, "on_stuck"),
    ],
)
def test_bad_values_name_their_setting(changes: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config().replace(**changes)
    assert err.value.settings == (setting,)
    assert f"config.{setting}:" in str(err.value)


def test_from_dict_refuses_unknown_keys_with_their_path() -> None:
    with pytest.raises(ConfigError, match=r"^scenario\.watchdog\.pol_s: unknown setting$"):
        Config.from_dict({"pol_s": 0.02}, where="scenario.watchdog")
    cfg = Config.from_dict({"stop_on": ["deadlock"], "hold_budgets": {"anon_vma": 0.4}})
    assert cfg.stop_on == frozenset({"deadlock"})
    assert cfg.budget("anon_vma") == 0.4 and cfg.budget("other") == cfg.hold_s
    with pytest.raises(LadderError, match=r"^scenario: hold_s"):
        Config.from_dict({"hold_s": 9.0}, where="scenario")


def test_monitor_refuses_an_inconsistent_config() -> None:
    bad = dataclasses.replace(Config(), walk_s=1.0)  # replace() without validation
    with pytest.raises(LadderError, match="walk_s"):
        Monitor(bad)
