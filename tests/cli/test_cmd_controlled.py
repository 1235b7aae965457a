"""Controlled scheduling from the command line: run --schedule controlled, replay, exec of
concurrent programs, shrink and hunt --threads, as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.cli_support import rmapstress

CONTROLLED = """\
[scenario]
name = "ctl"
variants = ["2.6.34-rc3", "2.6.34"]
seeds = [2]
duration_s = 3.0

[expect]
"2.6.34-rc3" = "defect"
"2.6.34" = "clean"

[memory]
mode = "kasan"
slab_page_bytes = 768
min_partial = 0

[threads]
processes = 4

[schedule]
mode = "controlled"
strategy = "random"
"""

RACE = """\
# two threads write-fault one fresh vma whose neighbour has an anon_vma
spawn P
mmap P 0x13000 2 rw
mmap P 0x10000 3 rwx
mmap P 0x10000 2 rw

thread t0:
    touch P 0x11000 3 w

thread t1:
    touch P 0x11000 3 w

schedule:
    t1 until op 1 at anon_vma_prepare:rik-v2 clone
    t0 until op 1 at anon_vma_prepare:rik-v2 clone (2nd)
    t1
"""
RACY_VARIANT = "2.6.34+rik-v2+clone-sets-anon-vma"


@pytest.fixture(scope="module")
def controlled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("ctl")
    scn = tmp / "ctl.toml"
    scn.write_text(CONTROLLED, encoding="utf-8")
    proc = rmapstress("run", str(scn), "--logs", str(tmp / "logs"), "--no-progress", cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = next((tmp / "logs").iterdir())
    report = json.loads((folder / "report.json").read_text())
    return folder, report


@pytest.mark.timeout(180)
def test_a_controlled_defect_comes_with_a_reproducer_in_the_report(
    controlled_run: tuple[Path, dict[str, object]],
) -> None:
    folder, report = controlled_run
    cases = {c["variant"]: c for c in report["cases"]}  # type: ignore[union-attr, index]
    rc3, clean = cases["2.6.34-rc3"], cases["2.6.34"]
    assert clean["reproducer"] is None
    rel = rc3["reproducer"]
    assert rel == "reproducers/2.6.34-rc3-seed2.json"
    assert (folder / rel).is_file()
    assert rc3["replay"].startswith("rmapstress replay ")
    assert rc3["schedule"] == "controlled"


@pytest.mark.timeout(240)
def test_replay_gives_the_same_verdict_and_objects_every_time(
    controlled_run: tuple[Path, dict[str, object]],
) -> None:
    folder, report = controlled_run
    case = next(c for c in report["cases"] if c["variant"] == "2.6.34-rc3")  # type: ignore[union-attr]
    recorded = case["verdicts"][0]
    docs = []
    for _ in range(3):
        proc = rmapstress("replay", str(folder / case["reproducer"]), "--json")
        assert proc.returncode == 1, proc.stderr
        docs.append(json.loads(proc.stdout))
    for doc in docs:
        assert doc["outcome"] == "defect" and doc["reproduced"] and doc["same_objects"]
        assert doc["verdicts"][0]["kind"] == recorded["kind"]
        assert doc["verdicts"][0]["signature"] == recorded["signature"]
        assert doc["verdicts"][0]["objects"]
        assert doc["diverged"] == [] and doc["stale"] == []
    assert len({json.dumps(d["verdicts"]) for d in docs}) == 1


@pytest.mark.timeout(240)
def test_shrink_turns_the_reproducer_into_a_concurrent_program_exec_runs(
    controlled_run: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    folder, report = controlled_run
    case = next(c for c in report["cases"] if c["variant"] == "2.6.34-rc3")  # type: ignore[union-attr]
    out = tmp_path / "small.rmap"
    proc = rmapstress(
        "shrink", str(folder / case["reproducer"]), "--budget-s", "60", "-o", str(out)
    )
    assert proc.returncode == 1, proc.stderr
    text = out.read_text()
    assert "thread " in text and "# run it: rmapstress exec" in text
    run_it = next(line for line in text.splitlines() if "# run it:" in line)
    args = run_it.split("rmapstress ", 1)[1].split()
    again = rmapstress(*args, "--json")
    assert again.returncode == 1, again.stderr
    doc = json.loads(again.stdout)
    assert doc["verdicts"][0]["kind"] == case["verdicts"][0]["kind"]
    assert doc["verdicts"][0]["signature"] == case["verdicts"][0]["signature"]


@pytest.mark.timeout(120)
def test_exec_runs_a_concurrent_program_under_its_schedule(tmp_path: Path) -> None:
    prog = tmp_path / "race.rmap"
    prog.write_text(RACE, encoding="utf-8")
    runs = [rmapstress("exec", str(prog), "--variant", RACY_VARIANT, "--json") for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 1, proc.stderr
    docs = [json.loads(p.stdout) for p in runs]
    assert docs[0]["verdicts"] == docs[1]["verdicts"]
    assert docs[0]["threads"] == 2 and docs[0]["ops"] == 6
    stops = [s["point"] for s in docs[0]["interleaving"]]
    assert "anon_vma_prepare:rik-v2 clone" in stops
    # The same threads, one after the other: no race, no defect.
    serial = RACE.split("schedule:")[0] + "schedule:\n    t0\n    t1\n"
    prog.write_text(serial, encoding="utf-8")
    proc = rmapstress("exec", str(prog), "--variant", RACY_VARIANT)
    assert proc.returncode == 0, proc.stdout
    assert "clean: no defect" in proc.stdout
    text = rmapstress("exec", str(tmp_path / "race.rmap"), "--variant", RACY_VARIANT).stdout
    assert "interleaving:" in text


@pytest.mark.timeout(120)
def test_a_bad_schedule_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    prog = tmp_path / "bad.rmap"
    prog.write_text(RACE.replace("t0 until op 1 at", "t0 until op 9 at"), encoding="utf-8")
    proc = rmapstress("exec", str(prog), "--variant", RACY_VARIANT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert f"{prog}:15:" in proc.stderr and "not an op 9" in proc.stderr


@pytest.mark.timeout(240)
def test_hunt_with_threads_prints_a_small_concurrent_program(tmp_path: Path) -> None:
    out = tmp_path / "found.rmap"
    proc = rmapstress(
        "hunt",
        "--variant",
        "2.6.34-rc3",
        "--threads",
        "2",
        "--budget-s",
        "60",
        "-o",
        str(out),
        timeout=200,
    )
    assert proc.returncode == 1, proc.stderr
    text = out.read_text()
    assert "thread t" in text
    threads = text.count("\nthread ")
    assert 1 <= threads <= 3
    run_it = next(line for line in text.splitlines() if "# run it:" in line)
    again = rmapstress(*run_it.split("rmapstress ", 1)[1].split())
    assert again.returncode == 1


@pytest.mark.timeout(240)
def test_replay_on_a_changed_model_names_the_files_that_changed(
    controlled_run: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    folder, report = controlled_run
    case = next(c for c in report["cases"] if c["variant"] == "2.6.34-rc3")  # type: ignore[union-attr]
    doc = json.loads((folder / case["reproducer"]).read_text())
    files = doc["source"]["files"]
    assert "rmapsim/rmap.py" in files and "stress/sched/core.py" in files
    # As if rmap.py had been edited since the recording: the replay still runs and says so.
    files["rmapsim/rmap.py"] = "0" * 64
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc), encoding="utf-8")
    proc = rmapstress("replay", str(edited), "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["stale"] == ["rmapsim/rmap.py (changed)"]
    assert "recorded on other code: rmapsim/rmap.py (changed)" in proc.stderr
    # A schedule that no longer fits the code: refused with exit 2, the change named.
    for key in ("switches", "sites", "marks"):
        doc["schedule"][key] = doc["schedule"][key][:1]
    doc["verdict"]["signature"] = "something else"
    edited.write_text(json.dumps(doc), encoding="utf-8")
    proc = rmapstress("replay", str(edited))
    assert proc.returncode == 2
    assert "no longer fits this code" in proc.stderr and "rmapsim/rmap.py" in proc.stderr
