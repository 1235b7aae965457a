"""Scenario files: every bad input refused with the file, the key path and the reason."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from rmapsim.workload import (
    Scenario,
    ScenarioError,
    load_scenario,
    matches,
    replay_command,
    watchdog_config,
)
from rmapsim.workload.case import WATCHDOG_DEFAULTS
from rmapsim.workload.scenario import KernelConfig, MemoryModel, Threads, Workload, Yields
from stress import Config, ConfigError, LadderError

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))
HEAD = '[scenario]\nvariants = ["2.6.34"]\n'

#: (id, file text, key path the message must name, words of the reason)
BAD: list[tuple[str, str, str, str]] = [
    ("unknown-table", HEAD + "[bogus]\nx = 1\n", "bogus", "unknown table"),
    ("table-is-a-value", "scenario = 3\n", "scenario", "expected a table"),
    ("unknown-key-scenario", HEAD + "durations = 3\n", "scenario.durations", "unknown key"),
    ("unknown-key-threads", HEAD + "[threads]\nprocesss = 2\n", "threads.processs", "unknown key"),
    ("unknown-key-watchdog", HEAD + "[watchdog]\npol_s = 0.01\n", "watchdog.pol_s", "unknown key"),
    # The run budget is scenario.duration_s; a second one in [watchdog] would be ignored.
    (
        "watchdog-duration",
        HEAD + "[watchdog]\nduration_s = 99\n",
        "watchdog.duration_s",
        "unknown key",
    ),
    (
        "string-for-number",
        HEAD + 'duration_s = "3"\n',
        "scenario.duration_s",
        "expected a number, got string '3'",
    ),
    (
        "bool-for-number",
        HEAD + "[yield]\nprobability = true\n",
        "yield.probability",
        "expected a number, got boolean",
    ),
    (
        "fraction-for-count",
        HEAD + "[threads]\nprocesses = 2.5\n",
        "threads.processes",
        "expected a whole number",
    ),
    (
        "number-for-bool",
        HEAD + "[threads]\nhibernate = 1\n",
        "threads.hibernate",
        "expected true or false",
    ),
    ("number-for-string", HEAD + "description = 5\n", "scenario.description", "expected a string"),
    (
        "too-many-processes",
        HEAD + "[threads]\nprocesses = 65\n",
        "threads.processes",
        "must be between 1 and 64, got 65",
    ),
    (
        "duration-too-short",
        HEAD + "duration_s = 0.01\n",
        "scenario.duration_s",
        "must be between 0.1",
    ),
    ("duration-nan", HEAD + "duration_s = nan\n", "scenario.duration_s", "must be between"),
    (
        "probability-above-1",
        HEAD + "[yield]\nprobability = 1.5\n",
        "yield.probability",
        "must be between 0 and 1",
    ),
    (
        "slab-page-too-small",
        HEAD + "[memory]\nslab_page_bytes = 64\n",
        "memory.slab_page_bytes",
        "must be between 768",
    ),
    (
        "memory-mode",
        HEAD + '[memory]\nmode = "leaky"\n',
        "memory.mode",
        "expected one of 'reuse', 'kasan', got string 'leaky'",
    ),
    (
        "min-ops-above-max",
        HEAD + "[workload]\nmin_ops = 50\nmax_ops = 10\n",
        "workload.min_ops",
        "must not exceed workload.max_ops (10)",
    ),
    (
        "all-weights-zero",
        HEAD + "[workload]\ntouch = 0\nmmap = 0\nmprotect = 0\nmunmap = 0\nfork = 0\nexit = 0\n",
        "workload",
        "every operation weight is 0",
    ),
    (
        "unknown-variant",
        '[scenario]\nvariants = ["2.6.99"]\n',
        "scenario.variants",
        "unknown variant base '2.6.99'",
    ),
    (
        "unknown-patch",
        '[scenario]\nvariants = ["2.6.34-rc3+no-such-patch"]\n',
        "scenario.variants",
        "no-such-patch",
    ),
    ("no-variants", "[scenario]\nvariants = []\n", "scenario.variants", "non-empty array"),
    (
        "variant-not-string",
        "[scenario]\nvariants = [3]\n",
        "scenario.variants",
        "non-empty array of variant names",
    ),
    (
        "expect-unknown-variant",
        HEAD + '[expect]\n"2.6.99" = "clean"\n',
        "expect.2.6.99",
        "unknown variant",
    ),
    (
        "bad-expectation",
        HEAD + '[expect]\n"2.6.34" = "maybe"\n',
        "expect.2.6.34",
        "expected 'defect' or 'clean', got string 'maybe'",
    ),
    (
        "expectation-not-string",
        HEAD + '[expect]\n"2.6.34" = true\n',
        "expect.2.6.34",
        "expected 'defect' or 'clean'",
    ),
    ("negative-seed", HEAD + "seeds = [-1]\n", "scenario.seeds", "whole numbers in [0, 2**32)"),
    ("seed-too-large", HEAD + "seeds = [4294967296]\n", "scenario.seeds", "[0, 2**32)"),
    ("seed-string", HEAD + 'seeds = ["1"]\n', "scenario.seeds", "whole numbers"),
    ("seed-bool", HEAD + "seeds = true\n", "scenario.seeds", "whole numbers"),
    ("no-seeds", HEAD + "seeds = []\n", "scenario.seeds", "non-empty array"),
    (
        "split-ptlocks-not-bool",
        HEAD + '[kernel]\nsplit_ptlocks = "yes"\n',
        "kernel.split_ptlocks",
        "expected true or false",
    ),
    ("kernel-unknown-key", HEAD + "[kernel]\nsmp = 2\n", "kernel.smp", "unknown key"),
    (
        "too-many-compactors",
        HEAD + "[threads]\ncompactors = 17\n",
        "threads.compactors",
        "between 0 and 16",
    ),
    (
        "preempt-rcu-negative",
        HEAD + "[yield]\npreempt_rcu_s = -0.1\n",
        "yield.preempt_rcu_s",
        "between 0 and 1",
    ),
    # The name names the run folder: one plain path component, never a way out of --logs.
    ("name-parent", HEAD + 'name = "../x"\n', "scenario.name", "one plain file name"),
    (
        "name-far-up",
        HEAD + 'name = "../../../../elsewhere"\n',
        "scenario.name",
        "one plain file name",
    ),
    ("name-absolute", HEAD + 'name = "/tmp/x"\n', "scenario.name", "one plain file name"),
    ("name-subfolder", HEAD + 'name = "a/b"\n', "scenario.name", "one plain file name"),
    ("name-dot", HEAD + 'name = "."\n', "scenario.name", "one plain file name"),
    ("name-hidden", HEAD + 'name = ".x"\n', "scenario.name", "one plain file name"),
    ("name-empty", HEAD + 'name = ""\n', "scenario.name", "must not be empty"),
    ("name-long", HEAD + f'name = "{"n" * 81}"\n', "scenario.name", "at most 80 characters"),
    # An expectation for a variant the file does not run would never be checked.
    (
        "expect-unused",
        HEAD + '[expect]\n"rik-v2" = "defect"\n',
        "expect.rik-v2",
        "not one of scenario.variants (2.6.34)",
    ),
]


@pytest.mark.parametrize(("text", "key", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_scenario_is_refused_naming_file_key_and_reason(
    write_toml: Callable[..., Path], text: str, key: str, reason: str
) -> None:
    path = write_toml(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("table", "key", "known"),
    [
        ("threads", "processs", [f.name for f in dataclasses.fields(Threads)]),
        ("workload", "sleep", [f.name for f in dataclasses.fields(Workload)]),
        ("memory", "kasan", [f.name for f in dataclasses.fields(MemoryModel)]),
        ("yield", "prob", [f.name for f in dataclasses.fields(Yields)]),
        (
            "scenario",
            "variant",
            ["name", "description", "duration_s", "audit_interval_s", "variants", "seeds"],
        ),
        (
            "watchdog",
            "poll",
            [f.name for f in dataclasses.fields(Config) if f.name != "duration_s"],
        ),
    ],
)
def test_unknown_key_lists_the_known_keys(
    write_toml: Callable[..., Path], table: str, key: str, known: list[str]
) -> None:
    head = HEAD if table != "scenario" else '[scenario]\nvariants = ["2.6.34"]\n'
    body = f"{key} = 1\n" if table == "scenario" else f"[{table}]\n{key} = 1\n"
    path = write_toml(head + body)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {table}.{key}: unknown key (known: ")
    listed = message.split("(known: ", 1)[1].rstrip(")").split(", ")
    assert listed == known


def test_invalid_toml_names_file_line_and_column(write_toml: Callable[..., Path]) -> None:
    path = write_toml(HEAD + "duration_s = = 3\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3, column 14" in message


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[scenario]\n")
    for path, reason in (
        (missing, "cannot read: No such file or directory"),
        (folder, "cannot read: Is a directory"),
        (binary, "not a UTF-8 text file"),
    ):
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert str(info.value) == f"{path}: {reason}"


def test_defaults_fill_what_a_file_leaves_out(write_toml: Callable[..., Path]) -> None:
    path = write_toml("", name="bare.toml")
    scn = load_scenario(path)
    assert scn.name == "bare" and scn.path == str(path)
    assert scn.variants == ("2.6.34",) and scn.seeds == (1,)
    assert (scn.threads, scn.workload, scn.memory, scn.yields) == (
        Threads(),
        Workload(),
        MemoryModel(),
        Yields(),
    )
    assert scn.expect == {} and scn.watchdog == {}
    assert scn.expected("2.6.34") is None


def test_full_file_is_read_into_every_table(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[scenario]\n"
        'name = "full"\ndescription = "all of it"\n'
        'variants = ["rik-v2", "2.6.34"]\nseeds = [3, 4]\nduration_s = 2.5\n'
        "audit_interval_s = 0.5\n"
        '[expect]\n"rik-v2" = "defect"\n'
        "[threads]\nprocesses = 3\nthreads_per_process = 1\nreclaim_walkers = 0\n"
        "hibernate = false\nhibernate_period_s = 0.2\n"
        "compactors = 2\ncompaction_period_s = 0.01\ncompaction_batch = 4\n"
        "[workload]\ntouch = 1\nmmap = 2\nmprotect = 3\nmunmap = 4\nfork = 5\nexit = 6\n"
        "window_pages = 8\nmin_ops = 5\nmax_ops = 5\n"
        '[memory]\nmode = "kasan"\nslab_page_bytes = 4096\nmin_partial = 5\ndebug_list = true\n'
        "[yield]\nprobability = 0.5\nswitch_interval_s = 0.001\npreempt_rcu_s = 0.002\n"
        "[kernel]\nsplit_ptlocks = false\n"
        "[watchdog]\npoll_s = 0.01\nhold_budgets = { anon_vma = 0.4 }\n"
    )
    scn = load_scenario(path)
    assert scn.name == "full" and scn.description == "all of it"
    assert scn.cases() == [("rik-v2", 3), ("rik-v2", 4), ("2.6.34", 3), ("2.6.34", 4)]
    assert scn.expected("rik-v2") == "defect" and scn.expected("2.6.34") is None
    assert scn.duration_s == 2.5 and scn.audit_interval_s == 0.5
    assert scn.threads == Threads(3, 1, 0, False, 0.2, 2, 0.01, 4)
    assert scn.workload == Workload(1, 2, 3, 4, 5, 6, 8, 5, 5)
    assert scn.memory == MemoryModel("kasan", 4096, 5, True)
    assert scn.yields == Yields(0.5, 0.001, False, 0.002)
    assert scn.kernel == KernelConfig(split_ptlocks=False)
    cfg = watchdog_config(scn)
    assert cfg.poll_s == 0.01 and cfg.budget("anon_vma") == 0.4
    assert cfg.duration_s == 2.5


def test_short_forms_of_variants_and_seeds(write_toml: Callable[..., Path]) -> None:
    scn = load_scenario(write_toml('[scenario]\nvariants = "rik-v2,2.6.34"\nseeds = 9\n'))
    assert scn.variants == ("rik-v2", "2.6.34") and scn.seeds == (9,)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_scenarios_load_and_pass_the_ladder(path: Path) -> None:
    scn = load_scenario(path)
    cfg = watchdog_config(scn)
    assert cfg.duration_s == scn.duration_s
    assert scn.cases()
    for variant in scn.expect:
        assert variant in scn.variants, f"{path}: expectation for a variant it does not run"


def test_overrides_are_validated_like_the_file(write_toml: Callable[..., Path]) -> None:
    path = write_toml(HEAD + "duration_s = 4.0\n")
    scn = load_scenario(path)
    changed = scn.override(
        duration_s=1.5,
        variants=["rik-v2"],
        seeds=[5],
        **{"memory.mode": "kasan"},
        **{"threads.processes": None},  # None: not given on the command line
    )
    assert changed.duration_s == 1.5 and changed.variants == ("rik-v2",)
    assert changed.seeds == (5,) and changed.memory.mode == "kasan"
    assert changed.threads == scn.threads and changed.path == scn.path
    assert scn.duration_s == 4.0 and scn.memory.mode == "reuse"  # the original is untouched
    for changes, key in (
        ({"duration_s": -1.0}, "scenario.duration_s"),
        ({"memory.mode": "leaky"}, "memory.mode"),
        ({"threads.processes": 0}, "threads.processes"),
        ({"variants": ["bogus"]}, "scenario.variants"),
        ({"seeds": [-3]}, "scenario.seeds"),
    ):
        with pytest.raises(ScenarioError) as info:
            scn.override(**changes)
        assert str(info.value).startswith(f"{path}: override: {key}: ")


def test_watchdog_table_overrides_the_defaults() -> None:
    scn = Scenario(name="w", path="w.toml", duration_s=3.0, watchdog={"verdict_s": 1.0})
    cfg = watchdog_config(scn)
    assert cfg.verdict_s == 1.0 and cfg.duration_s == 3.0
    for key, value in WATCHDOG_DEFAULTS.items():
        if key != "verdict_s":
            assert getattr(cfg, key) == value, key


@pytest.mark.parametrize(
    ("watchdog", "duration", "low", "high"),
    [
        ({"verdict_s": 5.0}, 1.0, "verdict_s", "duration_s + grace_s"),
        ({"walk_s": 0.8}, 4.0, "walk_s", "hold_s"),
        ({"poll_s": 0.3}, 4.0, "poll_s", "walk_s"),
    ],
)
def test_watchdog_table_breaking_the_ladder_names_both_settings(
    write_toml: Callable[..., Path],
    watchdog: dict[str, float],
    duration: float,
    low: str,
    high: str,
) -> None:
    table = "".join(f"{k} = {v}\n" for k, v in watchdog.items())
    path = write_toml(HEAD + f"duration_s = {duration}\n[watchdog]\n" + table)
    scn = load_scenario(path)
    with pytest.raises(LadderError) as info:
        watchdog_config(scn)
    assert info.value.settings == (low, high)
    message = str(info.value)
    assert message.startswith(f"{path}: watchdog: {low} (")
    assert f"must be less than {high} (" in message


def test_watchdog_bad_value_names_the_setting(write_toml: Callable[..., Path]) -> None:
    scn = load_scenario(write_toml(HEAD + '[watchdog]\npoll_s = "fast"\n'))
    with pytest.raises(ConfigError) as info:
        watchdog_config(scn)
    assert "watchdog.poll_s" in str(info.value) and "'fast'" in str(info.value)


def test_replay_command_and_matching() -> None:
    scn = Scenario(name="r", path="my scenarios/r.toml", memory=MemoryModel(mode="reuse"))
    assert replay_command(scn, "rik-v2", 7) == (
        "rmapstress run 'my scenarios/r.toml' --variant rik-v2 --seed 7"
    )
    assert replay_command(scn, "rik-v2", 7, memory="kasan").endswith(" --memory kasan")
    assert replay_command(scn, "rik-v2", 7, memory="reuse") == replay_command(scn, "rik-v2", 7)
    assert matches("defect", "defect") and matches("clean", None) and matches("clean", "clean")
    assert not matches("defect", None) and not matches("clean", "defect")
    assert not matches("error", "defect") and not matches("error", None)


def test_name_defaults_to_the_file_name_made_safe(tmp_path: Path) -> None:
    path = tmp_path / "my scenario (2).toml"
    path.write_text(HEAD)
    assert load_scenario(path).name == "my_scenario_2_"
    path = tmp_path / "plain-name.toml"
    path.write_text(HEAD)
    assert load_scenario(path).name == "plain-name"
    path.write_text(HEAD + 'name = "v2.6.34+fix=1_a-b"\n')
    assert load_scenario(path).name == "v2.6.34+fix=1_a-b"


def test_variant_override_may_leave_expectations_unused(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[scenario]\nvariants = ["rik-v2", "2.6.34"]\n[expect]\n"rik-v2" = "defect"\n'
    )
    scn = load_scenario(path).override(variants=["2.6.34"])
    assert scn.variants == ("2.6.34",) and scn.expected("rik-v2") == "defect"


def test_an_interrupted_case_never_matches() -> None:
    for expected in (None, "clean", "defect"):
        assert not matches("interrupted", expected)
