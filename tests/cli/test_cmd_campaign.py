"""`rmapstress campaign`, the real command: worker processes, signals, Dask, the page.

Tiny scenarios keep each campaign to seconds: rik-v2 without reclaim hits its
BUG_ON within a fraction of a second, 2.6.34 runs its whole (short) duration.
Outcomes of real threads may vary; the checks are on the set of cases, the schema,
what the exit status says about the records, and what survives a kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stress.cli import UsageError, main
from stress.cmd_campaign_cases import Plan, case_stream, load_scenarios, parse_duration, parse_seeds
from tests.cli.cli_support import rmapstress
from tests.stress.campaign.campaign_support import assert_plots, assert_self_contained, parse

TINY = """\
[scenario]
name = "tiny"
variants = ["rik-v2", "2.6.34"]
seeds = [1]
duration_s = 1.0

[expect]
"rik-v2" = "defect"
"2.6.34" = "clean"

[memory]
mode = "kasan"

[threads]
processes = 3
reclaim_walkers = 0
"""

REQUIRED = {
    "variant",
    "seed",
    "outcome",
    "expected",
    "first_defect_s",
    "ops_per_s",
    "duration_s",
    "signatures",
}
#: Fields a record has only when something went wrong in it.
OPTIONAL = {"errors", "stuck", "error", "traceback", "lost"}
RUN_FILES = {"events.jsonl", "report.json", "report.txt", "trace.json"}


def campaign(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return rmapstress("campaign", *args, cwd=cwd, timeout=timeout)


def records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "results.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def keys(seeds: range, variants: tuple[str, ...] = ("rik-v2", "2.6.34")) -> set[str]:
    return {f"tiny/{v}/{s}" for s in seeds for v in variants}


def expected_status(recs: list[dict[str, Any]]) -> int:
    return 0 if all(r["matched"] for r in recs) else 1


def in_session(sid: int) -> list[int]:
    """Live processes of a session (the campaign and any worker it left behind)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d))
    return out


def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scn") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def finished(
    tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One campaign of 6 cases on 2 worker processes, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("camp") / "c"
    r = campaign(str(tiny), "--seeds", "1-3", "--jobs", "2", "--out", str(out))
    return r, out


@pytest.mark.timeout(120)
def test_results_schema_run_folders_and_exit_status(
    finished: tuple[subprocess.CompletedProcess[str], Path], tiny: Path
) -> None:
    r, out = finished
    recs = records(out)
    assert r.returncode == expected_status(recs), (r.stdout, r.stderr)
    assert r.stderr == ""
    assert {x["key"] for x in recs} == keys(range(1, 4)) and len(recs) == 6
    for x in recs:
        assert set(x) >= REQUIRED, set(x)
        assert x["expected"] == ("defect" if x["variant"] == "rik-v2" else "clean")
        assert x["matched"] == (x["outcome"] == x["expected"])
        assert x["replay"] == f"rmapstress run {tiny} --variant {x['variant']} --seed {x['seed']}"
        assert x["rss_kib"] > 0 and x["worker"]
        if x["outcome"] == "defect":
            assert x["first_defect_s"] is not None and x["signatures"]
            folder = out / x["run_folder"]
            assert {p.name for p in folder.iterdir()} >= RUN_FILES
            report = json.loads((folder / "report.json").read_text())
            assert report["cases"][0]["seed"] == x["seed"]
        else:
            assert x["run_folder"] is None  # nothing is kept for clean cases
    # rik-v2 hits its BUG_ON within 0.2 s in every seed tried (on a quiet machine).
    assert any(x["outcome"] == "defect" for x in recs if x["variant"] == "rik-v2")
    assert "defect rate (95%)" in r.stdout and "signatures (" in r.stdout
    assert "replay: " in r.stdout or "first seed 1: rmapstress run" in r.stdout
    assert len({x["worker"] for x in recs}) == 2  # both cores worked


@pytest.mark.timeout(120)
def test_page_is_self_contained_with_plots_and_signatures(
    finished: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = finished
    text = (out / "campaign.html").read_text(encoding="utf-8")
    page = parse(text)
    assert_self_contained(page)
    assert_plots(page, text)
    table = text[text.index('<table id="table-signatures">') :]
    table = table[: table.index("</table>")]
    for sig_id in {s["id"] for x in records(out) for s in x["signatures"]}:
        assert sig_id in table


@pytest.mark.timeout(120)
def test_report_rebuilds_the_page_from_the_results(
    finished: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "campaign.html").unlink()
    r = campaign("--report", str(copy))
    assert r.returncode == 0, r.stderr
    text = (copy / "campaign.html").read_text(encoding="utf-8")
    assert_plots(parse(text), text)
    assert f"report:  {copy}/campaign.html" in r.stdout
    assert "campaign tiny: 6 case(s)" in r.stdout


@pytest.mark.timeout(120)
def test_sigkill_midway_then_resume_runs_every_case_exactly_once(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "c"
    log = (tmp_path / "out.txt").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stress",
            "campaign",
            str(tiny),
            "--seeds",
            "1-4",
            "--jobs",
            "2",
            "--out",
            str(out),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: line_count(out / "results.jsonl") >= 3 or proc.poll() is not None,
            90,
            "three finished cases",
        )
        assert proc.poll() is None, "the campaign ended before it could be killed"
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    # The workers die with it (nothing left running in its session).
    wait_until(lambda: not in_session(proc.pid), 15, "the workers to die with the campaign")
    before = {x["key"]: x for x in records(out)}
    assert 3 <= len(before) < 8
    # A write torn by the kill: the resumed campaign must cut it off and run that case.
    with (out / "results.jsonl").open("ab") as f:
        f.write(b'{"key":"tiny/2.6.34/4","outcome":"cle')

    r = campaign("--resume", str(out), "--jobs", "2")
    recs = records(out)
    assert r.returncode == expected_status(recs), (r.stdout, r.stderr)
    assert "cut off a torn last line" in r.stderr
    assert [x["key"] for x in recs].count("tiny/2.6.34/4") == 1
    assert sorted(x["key"] for x in recs) == sorted(keys(range(1, 5)))  # each exactly once
    after = {x["key"]: x for x in recs}
    assert all(after[k] == v for k, v in before.items())  # finished cases were not run again
    assert {x["session"] for x in recs if x["key"] not in before} == {1}
    assert f"resuming with {len(before)} finished" in r.stdout
    manifest = json.loads((out / "campaign.json").read_text())
    assert len(manifest["sessions"]) == 2


@pytest.mark.timeout(120)
def test_ctrl_c_stops_cleanly_with_a_summary(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stress",
            "campaign",
            str(tiny),
            "--seeds",
            "1-30",
            "--jobs",
            "2",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: line_count(out / "results.jsonl") >= 1 or proc.poll() is not None,
            90,
            "a finished case",
        )
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # what ^C on a terminal does: the whole group
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    n = len(records(out))
    assert 1 <= n < 60
    assert f"interrupted (SIGINT): {n} case(s) finished of 60" in stdout
    assert f"rmapstress campaign --resume {out}" in stdout
    assert (out / "campaign.html").is_file()
    assert "interrupted" in (out / "campaign.html").read_text(encoding="utf-8")
    wait_until(lambda: not in_session(proc.pid), 15, "no process left behind")


@pytest.mark.timeout(180)
def test_dask_cluster_gives_the_same_cases_and_schema_as_the_local_pool(
    finished: tuple[subprocess.CompletedProcess[str], Path], tiny: Path, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    _, local = finished
    out = tmp_path / "dask"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        r = campaign(
            str(tiny), "--seeds", "1-2", "--cluster", cluster.scheduler_address, "--out", str(out)
        )
    recs = records(out)
    assert r.returncode == expected_status(recs), (r.stdout, r.stderr)
    assert "on Dask scheduler tcp://127.0.0.1:" in r.stdout
    mine = {x["key"]: x for x in recs}
    theirs = {x["key"]: x for x in records(local) if x["seed"] <= 2}  # the same seeds
    assert set(mine) == set(theirs) == keys(range(1, 3))
    for k, x in mine.items():
        assert set(x) - OPTIONAL == set(theirs[k]) - OPTIONAL, k
        assert set(x) >= REQUIRED
        for field in ("variant", "seed", "expected", "replay", "scenario", "group"):
            assert x[field] == theirs[k][field]
        if x["outcome"] == "defect":  # the run folder came back from the worker as data
            assert {p.name for p in (out / x["run_folder"]).iterdir()} >= RUN_FILES
    assert len({x["worker"] for x in recs}) == 2
    text = (out / "campaign.html").read_text(encoding="utf-8")
    assert_plots(parse(text), text)


@pytest.mark.timeout(240)
def test_controlled_cases_give_the_same_results_on_dask_and_locally(
    tiny: Path, tmp_path: Path
) -> None:
    """Controlled scheduling makes a case a function of its seed: same outcome, same defect."""
    from distributed import LocalCluster

    common = ["--seeds", "1-2", "--schedule", "controlled", "--strategy", "random"]
    local = campaign(str(tiny), *common, "--jobs", "2", "--out", str(tmp_path / "local"))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = campaign(
            str(tiny),
            *common,
            "--cluster",
            cluster.scheduler_address,
            "--out",
            str(tmp_path / "dask"),
        )
    assert local.returncode == remote.returncode, (local.stderr, remote.stderr)
    mine = {x["key"]: x for x in records(tmp_path / "dask")}
    theirs = {x["key"]: x for x in records(tmp_path / "local")}
    assert set(mine) == set(theirs) == keys(range(1, 3))
    for k, x in mine.items():
        assert x["outcome"] == theirs[k]["outcome"], k
        assert [s["signature"] for s in x["signatures"]] == [
            s["signature"] for s in theirs[k]["signatures"]
        ], k
        assert [s["summary"] for s in x["signatures"]] == [
            s["summary"] for s in theirs[k]["signatures"]
        ], k  # the very same objects
        if x["outcome"] == "defect":
            assert x["reproducer"] == "reproducer.json"
            assert (tmp_path / "dask" / x["run_folder"] / "reproducer.json").is_file()


@pytest.mark.timeout(120)
def test_for_runs_until_the_time_is_up_and_resume_adds_nothing_after(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "soak"
    t0 = time.time()
    r = campaign(
        str(tiny),
        "--for",
        "3s",
        "--variant",
        "2.6.34",
        "--duration",
        "0.5",
        "--jobs",
        "2",
        "--out",
        str(out),
        "--rss-warmup",
        "1s",
        "--keep-clean",
    )
    recs = records(out)
    assert r.returncode == expected_status(recs), (r.stdout, r.stderr)
    assert "cases for 3.0s" in r.stdout and "worker memory:" in r.stdout
    seeds = sorted(x["seed"] for x in recs)
    assert seeds == list(range(1, len(seeds) + 1)) and len(seeds) >= 2
    assert all(x["variant"] == "2.6.34" and "--duration 0.5" in x["replay"] for x in recs)
    for x in recs:  # --keep-clean: a run folder for every case
        assert {p.name for p in (out / x["run_folder"]).iterdir()} >= RUN_FILES
    assert max(x["started_at"] for x in recs) < t0 + 3 + 15  # slack: interpreter start-up
    again = campaign("--resume", str(out))
    assert again.returncode == r.returncode
    assert len(records(out)) == len(recs)  # the time was spent: nothing more ran


@pytest.mark.timeout(120)
def test_cases_and_first_seed_and_a_mismatch_exit_1(tmp_path: Path) -> None:
    scn = tmp_path / "wrong.toml"
    # Time enough for the BUG_ON even on a loaded machine (a defect ends the case at once).
    scn.write_text(
        TINY.replace('"rik-v2" = "defect"', '"rik-v2" = "clean"').replace(
            "duration_s = 1.0", "duration_s = 3.0"
        )
    )
    out = tmp_path / "c"
    r = campaign(
        str(scn),
        "--cases",
        "3",
        "--first-seed",
        "5",
        "--variant",
        "rik-v2",
        "--jobs",
        "1",
        "--out",
        str(out),
        "--no-progress",
    )
    recs = records(out)
    assert [x["key"] for x in recs] == ["tiny/rik-v2/5", "tiny/rik-v2/6", "tiny/rik-v2/7"]
    bad = [x for x in recs if x["outcome"] != "clean"]
    assert bad and r.returncode == 1, (r.stdout, r.stderr)
    first = bad[0]
    assert f"MISMATCH rik-v2 seed {first['seed']}: defect, expected clean" in r.stdout
    assert f"did not match their expectation ({len(bad)}):" in r.stdout
    assert f"replay: rmapstress run {scn} --variant rik-v2 --seed {first['seed']}" in r.stdout


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    try:
        code = main(["campaign", *argv])
    except SystemExit as exc:  # argparse's own errors leave through SystemExit
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.timeout(60)
def test_bad_input_is_one_line_and_status_2(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = str(tiny)
    one_line_error(capsys, [s, "--seeds", "5-3"], "--seeds: 5-3")
    one_line_error(capsys, [s, "--seeds", "x"], "--seeds: expected A-B")
    one_line_error(capsys, [s, "--seeds", "1-2", "--cases", "3"], "not allowed with argument")
    one_line_error(capsys, [s, "--jobs", "0"], "--jobs: must be at least 1")
    one_line_error(capsys, [s, "--jobs", "two"], "--jobs: invalid int value")
    one_line_error(capsys, [s, "--for", "2x"], "--for: expected a duration")
    one_line_error(capsys, [s, "--cases", "0"], "--cases: must be at least 1")
    one_line_error(capsys, [s, "--variant", "nope"], "--variant:")
    one_line_error(capsys, [s, "--duration", "-1"], "--duration: must not be negative")
    # (the default scenario: its watchdog needs more than a second)
    one_line_error(capsys, ["--duration", "1"], "--duration 1: too short for", "lkml-2010.toml")
    one_line_error(capsys, [str(tmp_path / "missing.toml")], "missing.toml: cannot read")
    one_line_error(capsys, ["--resume", str(tmp_path / "none")], "--resume:", "campaign.json")
    one_line_error(capsys, ["--report", str(tmp_path / "none")], "--report:", "campaign.json")
    one_line_error(capsys, [s, "--seeds", "1-2", "--first-seed", "3"], "--first-seed")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "campaign.json").write_text("{}")
    one_line_error(capsys, [s, "--out", str(taken)], "already holds a campaign")
    assert not (tmp_path / "logs").exists()


@pytest.mark.timeout(60)
def test_a_cluster_that_cannot_be_used_is_bad_input(
    tiny: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "c"
    one_line_error(
        capsys,
        [str(tiny), "--cluster", "nonsense://x", "--out", str(out)],
        "--cluster nonsense://x: cannot connect",
    )


def test_durations_and_seed_ranges() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400
    assert parse_duration("45s") == 45 and parse_duration("600") == 600
    assert parse_duration("1.5m") == 90
    for bad in ("", "2x", "h", "0", "-5m"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    assert parse_seeds("3-9") == (3, 9) and parse_seeds("4") == (4, 4)
    with pytest.raises(UsageError):
        parse_seeds(f"1-{2**32}")


def test_cases_go_seed_by_seed_and_carry_the_scenario_untouched(tiny: Path) -> None:
    plan = Plan([str(tiny)], {"duration_s": 0.7}, (4, 5), None, None, 1, False)
    (scn,) = load_scenarios(plan)
    stream, total = case_stream([scn], plan)
    cases = list(stream)
    assert total == 4
    assert [c.key for c in cases] == [
        "tiny/rik-v2/4",
        "tiny/2.6.34/4",
        "tiny/rik-v2/5",
        "tiny/2.6.34/5",
    ]
    first = cases[0]
    assert first.args == (scn, "rik-v2", 4, False)  # every scenario setting goes to the worker
    assert first.args[0].duration_s == 0.7 and first.args[0].memory.mode == "kasan"
    assert first.info["expected"] == "defect" and "--duration 0.7" in first.info["replay"]
    endless, none = case_stream([scn], Plan([str(tiny)], {}, None, None, 60.0, 9, False))
    assert none is None
    assert [next(endless).key for _ in range(3)] == [
        "tiny/rik-v2/9",
        "tiny/2.6.34/9",
        "tiny/rik-v2/10",
    ]


def test_several_scenarios_group_by_scenario_and_variant(tiny: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace('name = "tiny"', 'name = "other"'))
    plan = Plan([str(tiny), str(other)], {"variants": ["2.6.34"]}, (1, 2), None, None, 1, False)
    scns = load_scenarios(plan)
    stream, total = case_stream(scns, plan)
    cases = list(stream)
    assert total == 4
    assert [c.key for c in cases] == [
        "tiny/2.6.34/1",
        "other/2.6.34/1",
        "tiny/2.6.34/2",
        "other/2.6.34/2",
    ]
    assert {c.info["group"] for c in cases} == {"tiny: 2.6.34", "other: 2.6.34"}
    same = Plan([str(tiny), str(tiny)], {}, (1, 1), None, None, 1, False)
    with pytest.raises(UsageError, match="another scenario is also named 'tiny'"):
        load_scenarios(same)


BROKEN_WORKERS = """
import os, sys
sys.path.insert(0, sys.argv[1])  # this process imports the real harness ...
from stress.cli import main
os.environ["PYTHONPATH"] = sys.argv[2]  # ... its workers a broken one
raise SystemExit(main(sys.argv[3:]))
"""


@pytest.mark.timeout(120)
def test_workers_that_cannot_start_stop_the_campaign_with_their_error(
    tiny: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken" / "stress"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("harness broken on purpose")\n')
    repo = str(Path(__file__).resolve().parents[2])
    out = tmp_path / "c"
    r = subprocess.run(
        [sys.executable, "-c", BROKEN_WORKERS, repo, str(broken.parent), "campaign",
         str(tiny), "--seeds", "1-3", "--jobs", "1", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert r.returncode == 3, (r.stdout, r.stderr)
    (line,) = r.stderr.splitlines()
    assert line.startswith("rmapstress campaign: error: the campaign stopped: 3 worker")
    assert "ImportError: harness broken on purpose" in line
    assert f"--resume {out}" in line
    # Nothing recorded: once the workers can start, a resume runs every case.
    assert not (out / "results.jsonl").exists() or records(out) == []
    r = campaign("--resume", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    assert {x["key"] for x in records(out)} == keys(range(1, 4))
