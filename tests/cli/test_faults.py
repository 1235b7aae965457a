"""Fault injection on the real `rmapstress run`: signals, SIGKILL, a full disk, two runs at once.

Every test runs the real command in a subprocess and acts on what it shows (a line on
stdout or stderr, a record in events.jsonl), never after a fixed sleep.  Whatever
happens, what is on disk must be complete or absent, and nothing finished is lost.

The run used by the signal tests names two scenario files: `first` (rik-v2, which stops
at its first defect within a second) and `second` (2.6.34-rc3 with `stop_on = []`, so
that it keeps finding use-after-frees for a minute unless interrupted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIRST = """\
[scenario]
name = "first"
variants = ["rik-v2"]
seeds = [3]
duration_s = 10.0

[expect]
"rik-v2" = "defect"

[memory]
mode = "kasan"

[threads]
processes = 4
reclaim_walkers = 0
"""

SECOND = """\
[scenario]
name = "second"
variants = ["2.6.34-rc3"]
seeds = [1]
duration_s = 60.0

[expect]
"2.6.34-rc3" = "defect"

[memory]
mode = "kasan"

[threads]
processes = 4

[watchdog]
stop_on = []
grace_s = 10.0
"""

#: Generous: the machine may be busy with other work.
WAIT_S = 90.0


class Background:
    """`rmapstress run ...` in the background, its output in files under `cwd`."""

    def __init__(self, cwd: Path, *args: str, argv: list[str] | None = None) -> None:
        self.cwd = cwd
        self.out_path = cwd / "stdout.txt"
        self.err_path = cwd / "stderr.txt"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                argv or [sys.executable, "-m", "stress", "run", *args],
                stdout=out,
                stderr=err,
                cwd=cwd,
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ready():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(f"ended before {what}: {code}\n{self.stdout}\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"no {what} within {WAIT_S} s\n{self.stdout}\n{self.stderr}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def finish(self) -> int:
        try:
            return self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"did not end within {WAIT_S} s\n{self.stdout}\n{self.stderr}")


def folder_of(logs: Path, name: str) -> Path | None:
    found = sorted(logs.glob(f"*-{name}-*")) if logs.is_dir() else []
    assert len(found) <= 1, found
    return found[0] if found else None


def events(folder: Path) -> list[dict[str, Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


def has_event(logs: Path, name: str, kind: str) -> bool:
    folder = folder_of(logs, name)
    if folder is None:
        return False
    path = folder / "events.jsonl"
    # Only whole lines count: a line being appended right now is not looked at.
    text = path.read_text() if path.exists() else ""
    return any(
        json.loads(line)["record"]["extra"]["event"] == kind
        for line in text.splitlines(keepends=True)
        if line.endswith("\n")
    )


def assert_all_complete(logs: Path) -> None:
    """Every file is complete or absent: JSON parses, JSONL parses line by line, no temp file."""
    for path in logs.rglob("*"):
        if path.is_dir():
            continue
        assert not path.name.startswith("."), f"temporary file left: {path}"
        text = path.read_text()
        if path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".jsonl":
            assert text == "" or text.endswith("\n"), path
            for line in text.splitlines():
                json.loads(line)
        elif path.name == "backstop-stacks.txt":
            # Armed while a case ran; a process killed meanwhile leaves its first line.
            assert text.startswith("faulthandler backstop armed by pid "), text[:200]
        else:
            assert path.name == "report.txt", path
            assert text.startswith("Stress report: scenario "), text[:200]


def start_two(tmp_path: Path) -> Background:
    (tmp_path / "first.toml").write_text(FIRST)
    (tmp_path / "second.toml").write_text(SECOND)
    return Background(tmp_path, "first.toml", "second.toml", "--logs", "logs")


def wait_for_second_defect(run: Background) -> None:
    logs = run.cwd / "logs"
    run.wait_for("a verdict in the second scenario", lambda: has_event(logs, "second", "verdict"))


def check_interrupted_run(run: Background, code: int, name: str) -> None:
    """What every interrupted run must leave: exit code, console, both reports."""
    out, err = run.stdout, run.stderr
    assert code == 128 + signal.Signals[name].value, (code, out, err)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert f"rmapstress run: interrupted by {name}: 2 of 2 case(s) ran, 1 of them cut short" in err
    logs = run.cwd / "logs"
    assert_all_complete(logs)
    first, second = folder_of(logs, "first"), folder_of(logs, "second")
    assert first is not None and second is not None
    # The finished scenario: complete, its defect kept.
    done = json.loads((first / "report.json").read_text())
    assert done["complete"] is True and done["interrupted"] is None
    ((case,),) = [done["cases"]]
    assert case["outcome"] == "defect" and case["verdicts"]
    # The one cut short: recorded as such, with the defects it found before.
    cut = json.loads((second / "report.json").read_text())
    assert cut["complete"] is False and cut["interrupted"] == name
    ((case2,),) = [cut["cases"]]
    assert case2["outcome"] == "interrupted" and case2["expected"] == "defect"
    assert case2["verdicts"], "the defects found before the interruption are lost"
    assert case2["cancel_reason"] == f"interrupted by {name}"
    assert "The run was interrupted (" + name in (second / "report.txt").read_text()
    assert json.loads((second / "trace.json").read_text())["traceEvents"]
    assert [e["extra"]["outcome"] for e in events(second) if e["extra"]["event"] == "case"] == [
        "interrupted"
    ]
    assert not (second / "backstop-stacks.txt").exists()
    # The console: the table so far, the defects (also those of the case cut short), folders.
    assert re.search(r"^rik-v2\s+3\s+kasan\s+defect\s+defect ok", out, re.M), out
    assert re.search(r"^2\.6\.34-rc3\s+1\s+kasan\s+interrupted\s+defect \?", out, re.M), out
    first_kind = case2["verdicts"][0]["kind"]
    assert f"2.6.34-rc3 seed 1: {first_kind}: " in out
    assert "(found before the interruption)" in out
    assert f"run folder: {Path('logs') / first.name}" in out
    assert f"run folder: {Path('logs') / second.name}" in out


@pytest.mark.timeout(200)
@pytest.mark.parametrize("count", [1, 2, 3], ids=["SIGINT x1", "SIGINT x2", "SIGINT x3 and more"])
def test_sigint_keeps_every_case_and_the_defects_found(tmp_path: Path, count: int) -> None:
    run = start_two(tmp_path)
    wait_for_second_defect(run)
    run.signal(signal.SIGINT)
    if count > 1:
        # The next Ctrl-C arrives while the case winds down and the report is written.
        run.wait_for("the case cut short", lambda: "INTERRUPTED after" in run.stdout)
        run.signal(signal.SIGINT)
    if count > 2:
        run.wait_for(
            "the second Ctrl-C acknowledged",
            lambda: "received 2 times" in run.stderr or run.proc.poll() is not None,
        )
        # Then Ctrl-C over and over, up to the process's last moments (its exit included).
        deadline = time.monotonic() + WAIT_S
        while run.proc.poll() is None and time.monotonic() < deadline:
            run.signal(signal.SIGINT)
            time.sleep(0.005)
    check_interrupted_run(run, run.finish(), "SIGINT")
    if count > 1 and "received 2 times" in run.stderr:
        assert "rmapstress run: already stopping (SIGINT received 2 times)" in run.stderr


@pytest.mark.timeout(200)
def test_sigterm_is_handled_like_sigint(tmp_path: Path) -> None:
    run = start_two(tmp_path)
    wait_for_second_defect(run)
    run.signal(signal.SIGTERM)
    check_interrupted_run(run, run.finish(), "SIGTERM")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("when", ["first case written", "second case running"])
def test_sigkill_leaves_only_complete_files(tmp_path: Path, when: str) -> None:
    run = start_two(tmp_path)
    logs = tmp_path / "logs"
    if when == "first case written":
        # Killed right after the first case's headline: the report is being written.
        run.wait_for("the first case", lambda: "DEFECT after" in run.stdout)
    else:
        wait_for_second_defect(run)
    run.signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    # Temporary files of a write cut short may stay behind; only they may be partial.
    for tmp in logs.rglob(".*.tmp-*"):
        tmp.unlink()
    assert_all_complete(logs)
    first = folder_of(logs, "first")
    assert first is not None
    if when == "second case running":
        (case,) = json.loads((first / "report.json").read_text())["cases"]
        assert case["outcome"] == "defect" and case["verdicts"]
        second = folder_of(logs, "second")
        assert second is not None
        assert [e["extra"]["event"] for e in events(second)].count("verdict") >= 1


#: Runs `rmapstress` with a disk that fills up once the first complete report (its
#: trace.json, written last) is in place: from then on, a write to a file under the
#: logs folder writes a little, then fails with ENOSPC, as a real full disk does.
DISK_FULL = textwrap.dedent(
    """
    import errno, os, sys

    logs = os.path.realpath(sys.argv[1])
    real_write, real_replace = os.write, os.replace
    state = {"full": False}

    def under_logs(fd):
        try:
            return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")).startswith(logs)
        except OSError:
            return False

    def write(fd, data):
        if state["full"] and under_logs(fd):
            if len(data) > 64 and not state.get("partial"):
                state["partial"] = True
                return real_write(fd, bytes(data[:64]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        if os.path.basename(dst) == "trace.json":
            state["full"] = True

    os.write, os.replace = write, replace
    from stress.cli import main
    raise SystemExit(main(sys.argv[2:]))
    """
)

TWO_QUICK = """\
[scenario]
name = "quick"
variants = ["rik-v2", "2.6.34-rc3"]
seeds = [3]
duration_s = 10.0

[expect]
"rik-v2" = "defect"
"2.6.34-rc3" = "defect"

[memory]
mode = "kasan"

[threads]
processes = 4
"""


@pytest.mark.timeout(120)
def test_full_disk_is_one_clear_error_and_keeps_what_was_written(tmp_path: Path) -> None:
    (tmp_path / "quick.toml").write_text(TWO_QUICK)
    logs = tmp_path / "logs"
    logs.mkdir()
    r = subprocess.run(
        # (--reproduce 0: no reproducer file, so that report.json is the write that fails)
        [
            sys.executable,
            "-c",
            DISK_FULL,
            str(logs),
            "run",
            "quick.toml",
            "--logs",
            "logs",
            "--reproduce",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("rmapstress run: error: --logs: cannot write report.json in logs/")
    assert "No space left on device" in line and "keep the last version" in line
    # Both cases ran and are on the console; the files keep the first, written in full.
    assert re.search(r"^rik-v2\s+3\s+kasan\s+defect", r.stdout, re.M), r.stdout
    assert re.search(r"^2\.6\.34-rc3\s+3\s+kasan\s+defect", r.stdout, re.M), r.stdout
    assert_all_complete(logs)
    folder = folder_of(logs, "quick")
    assert folder is not None
    doc = json.loads((folder / "report.json").read_text())
    assert [c["variant"] for c in doc["cases"]] == ["rik-v2"]
    assert doc["cases"][0]["verdicts"]
    assert "Case 1 of 1: variant=rik-v2 seed=3: DEFECT" in (folder / "report.txt").read_text()
    kinds = [e["extra"]["event"] for e in events(folder)]
    assert kinds.count("case") == 1  # the second case's record could not be written


def _tiny_tmpfs_works(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k none {where}"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.timeout(120)
def test_a_really_full_tmpfs_leaves_only_complete_files(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _tiny_tmpfs_works(mnt):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    (tmp_path / "quick.toml").write_text(TWO_QUICK)
    # The run writes into a 32 KiB tmpfs; the folder is copied out before the mount goes.
    script = (
        f"mount -t tmpfs -o size=32k none {mnt} && "
        f"{sys.executable} -m stress run quick.toml --logs {mnt}/logs; rc=$?; "
        f"cp -a {mnt}/logs {tmp_path}/copied; exit $rc"
    )
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.splitlines()
    assert "rmapstress run: error: --logs: cannot write " in line
    assert "No space left on device" in line
    assert_all_complete(tmp_path / "copied")


QUICK_ONE = """\
[scenario]
name = "same"
variants = ["rik-v2"]
seeds = [3]
duration_s = 2.0

[expect]
"rik-v2" = "defect"

[memory]
mode = "kasan"

[threads]
processes = 4
reclaim_walkers = 0
"""


@pytest.mark.timeout(120)
def test_two_runs_at_once_on_one_logs_folder_keep_their_own_reports(tmp_path: Path) -> None:
    (tmp_path / "same.toml").write_text(QUICK_ONE)
    procs = []
    for n in (1, 2):
        cwd = tmp_path / f"run{n}"
        cwd.mkdir()
        procs.append(
            Background(
                cwd,
                argv=[
                    sys.executable,
                    "-m",
                    "stress",
                    "run",
                    str(tmp_path / "same.toml"),
                    "--seed",
                    str(n),
                    "--logs",
                    str(tmp_path / "logs"),
                ],
            )
        )
    codes = [p.finish() for p in procs]
    folders = sorted((tmp_path / "logs").iterdir())
    assert len(folders) == 2, folders
    assert_all_complete(tmp_path / "logs")
    seeds = set()
    for folder in folders:
        doc = json.loads((folder / "report.json").read_text())
        assert doc["complete"] is True
        ((case,),) = [doc["cases"]]
        seeds.add(case["seed"])
        assert {e["extra"]["case"] for e in events(folder)} == {case["case"]}
    assert seeds == {1, 2}
    for proc, code in zip(procs, codes, strict=True):
        assert code in (0, 1), proc.stderr
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith("run folder: ")]
        assert Path(line.removeprefix("run folder: ")).parent == tmp_path / "logs"


@pytest.mark.timeout(120)
def test_one_scenario_named_twice_gets_two_folders(tmp_path: Path) -> None:
    (tmp_path / "same.toml").write_text(QUICK_ONE)
    r = subprocess.run(
        [sys.executable, "-m", "stress", "run", "same.toml", "same.toml", "--logs", "logs"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=tmp_path,
    )
    assert r.returncode in (0, 1), (r.stdout, r.stderr)
    folders = sorted((tmp_path / "logs").iterdir())
    assert len(folders) == 2
    shown = [x.removeprefix("run folder: ") for x in r.stdout.splitlines() if "run folder: " in x]
    assert sorted(Path(tmp_path, s) for s in shown) == folders
    for folder in folders:
        (case,) = json.loads((folder / "report.json").read_text())["cases"]
        assert case["variant"] == "rik-v2"


CONTROLLED_LONG = """\
[scenario]
name = "controlled"
variants = ["2.6.34"]
seeds = [1]
duration_s = 600.0

[schedule]
mode = "controlled"
"""


@pytest.mark.timeout(200)
def test_sigint_cuts_a_controlled_case_short_too(tmp_path: Path) -> None:
    # Under the controlled scheduler every thread but one is parked by the harness: the
    # signal must reach them there as well.
    (tmp_path / "ctl.toml").write_text(CONTROLLED_LONG)
    run = Background(tmp_path, "ctl.toml", "--logs", "logs")
    logs = tmp_path / "logs"
    run.wait_for("the case's first status line", lambda: "ops/s" in run.stdout)
    run.signal(signal.SIGINT)
    code = run.finish()
    assert code == 130, (code, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert_all_complete(logs)
    folder = folder_of(logs, "controlled")
    assert folder is not None
    doc = json.loads((folder / "report.json").read_text())
    assert doc["complete"] is False and doc["interrupted"] == "SIGINT"
    ((case,),) = [doc["cases"]]
    assert case["outcome"] == "interrupted" and case["verdicts"] == []
    assert re.search(r"^2\.6\.34\s+1\s+reuse\s+interrupted\s+clean \?", run.stdout, re.M)
