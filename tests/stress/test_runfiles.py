"""Run-folder files: unique folders, safe names, atomic writes and whole lines, on real files.

Write failures are real ones: a child process whose file-size limit (RLIMIT_FSIZE) makes
the kernel refuse a write half-way, as a full disk does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from pathlib import Path

import pytest

from stress import RunReport
from stress.runfiles import LineLog, atomic_write, name_problem, new_run_folder, safe_name

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def test_folders_asked_for_in_one_millisecond_are_all_different(tmp_path: Path) -> None:
    now = datetime(2010, 4, 9, 12, 0, 0, 123456)
    made: list[Path] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(16):
            folder = new_run_folder(tmp_path / "logs", "same", now=now)
            with lock:
                made.append(folder)

    threads = [threading.Thread(target=make, name=f"maker-{i}") for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert len(made) == 128 and len(set(made)) == 128
    assert sorted(made) == sorted((tmp_path / "logs").iterdir())
    for folder in made:
        assert folder.parent == tmp_path / "logs"
        assert folder.name.startswith(f"20100409-120000.123-same-{os.getpid()}-")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/abs", "a/b", ".hidden", "-opt", "a\0b"])
def test_a_name_that_is_not_one_plain_component_is_refused(tmp_path: Path, name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(ValueError, match="run name must"):
        new_run_folder(tmp_path / "logs", name)
    assert not (tmp_path / "logs").exists()
    made = safe_name(name)
    assert name_problem(made) is None and "/" not in made


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    atomic_write(path, '{"a": 1}')
    atomic_write(path, '{"b": 2}')
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def run_limited(tmp_path: Path, body: str, limit: int) -> subprocess.CompletedProcess[str]:
    """Run `body` in a child whose files may not grow past `limit` bytes."""
    script = textwrap.dedent(
        f"""
        import os, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from stress.runfiles import LineLog, atomic_write
        folder = sys.argv[1]
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"cases": ["kept"]}')
    r = run_limited(
        tmp_path,
        """
        try:
            atomic_write(folder + "/report.json", '{"cases": ["' + "x" * 100_000 + '"]}')
        except OSError as exc:
            print("refused", exc.errno, os.path.basename(exc.filename))
        """,
        limit=50_000,
    )
    # EFBIG, and the error names the file it could not write (os.write names none).
    assert r.stdout.strip() == "refused 27 report.json", (r.stdout, r.stderr)
    assert json.loads((tmp_path / "report.json").read_text()) == {"cases": ["kept"]}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_line_that_cannot_be_written_whole_is_trimmed_and_the_log_stops(tmp_path: Path) -> None:
    r = run_limited(
        tmp_path,
        """
        log = LineLog(folder + "/events.jsonl")
        results = [log.write('{"n": %d, "pad": "%s"}' % (n, "p" * 300)) for n in range(40)]
        print(results.count(True), results.index(False), log.error.errno, log.lines)
        print(log.write('{"late": 1}'))
        """,
        limit=5_000,
    )
    first, second = r.stdout.splitlines()
    ok, first_failed, errno_, lines = map(int, first.split())
    assert ok == first_failed == lines and 0 < ok < 40 and errno_ == 27, r.stdout
    assert second == "False"
    text = (tmp_path / "events.jsonl").read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["n"] for line in text.splitlines()] == list(range(ok))


def test_lines_from_many_threads_are_never_interleaved(tmp_path: Path) -> None:
    log = LineLog(tmp_path / "events.jsonl")

    def write(t: int) -> None:
        for n in range(300):
            assert log.write(json.dumps({"t": t, "n": n, "pad": "x" * (n * 37 % 9000)}))

    threads = [threading.Thread(target=write, args=(t,), name=f"w{t}") for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    log.close()
    docs = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(docs) == 1800
    for t in range(6):
        assert [d["n"] for d in docs if d["t"] == t] == list(range(300))


def test_run_report_finishes_once_and_says_how_the_run_ended(tmp_path: Path) -> None:
    report = RunReport(tmp_path / "run", scenario="demo")
    report.write()
    doc = json.loads((tmp_path / "run" / "report.json").read_text())
    assert doc["complete"] is False and doc["interrupted"] is None and doc["cases"] == []
    report.finish(complete=False, interrupted="SIGINT")
    report.finish(complete=True)  # a second finish changes nothing
    doc = json.loads((tmp_path / "run" / "report.json").read_text())
    assert doc["complete"] is False and doc["interrupted"] == "SIGINT"
    text = (tmp_path / "run" / "report.txt").read_text()
    assert "The run was interrupted (SIGINT)" in text
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "events.jsonl",
        "report.json",
        "report.txt",
        "trace.json",
    ]
