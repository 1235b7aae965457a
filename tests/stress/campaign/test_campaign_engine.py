"""The engine and the local pool with real worker processes and a generic case function."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stress.campaign import CampaignStore, Case, LocalPool, Runner
from stress.campaign.worker import FORK
from tests.stress.campaign.campaign_support import NAME

pytestmark = pytest.mark.timeout(60)

NUMBERED = f"{NAME}:numbered"


def cases(ns: range, delay: float = 0.0) -> list[Case]:
    return [Case(f"n/{n}", (n, delay), {"variant": "n", "seed": n}) for n in ns]


def run(
    tmp: Path, todo: Any, *, jobs: int = 2, recycle: int = 0, fn: str = NUMBERED, **kw: Any
) -> tuple[CampaignStore, Any]:
    store = CampaignStore(tmp)
    pool = LocalPool(jobs, fn, recycle=recycle, scratch=tmp / ".scratch", logs=tmp / "workers")
    outcome = Runner(store, pool, poll_s=0.05).run(todo, **kw)
    store.close()
    return store, outcome


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_every_case_is_recorded_once_with_its_files(tmp_path: Path) -> None:
    store, outcome = run(tmp_path, cases(range(1, 9)), total=8)
    records = store.load()
    assert sorted(r["seed"] for r in records) == list(range(1, 9))
    assert outcome.exhausted and not outcome.interrupted
    for r in records:
        assert r["key"] == f"n/{r['seed']}" and r["variant"] == "n"
        assert r["outcome"] == ("defect" if r["seed"] % 3 == 0 else "clean")
        # The worker, not the child it forked for the case (where it forks).
        assert r["worker"].endswith(f":{r['ppid'] if FORK else r['pid']}")
        assert r["pid"] != os.getpid() and r["ppid"] != os.getpid()
        assert r["rss_kib"] > 1000
        assert r["started_at"] <= r["finished_at"]
        assert r["session"] == 0
        if r["outcome"] == "defect":
            folder = tmp_path / r["run_folder"]
            assert (folder / "report.txt").read_text() == f"case {r['seed']}\n"
            assert (folder / "escape.txt").is_file()  # '../' cannot leave the folder
        else:
            assert r["run_folder"] is None
    assert len({r["worker"] for r in records}) == 2  # both workers took cases
    assert not (tmp_path / ".scratch").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_workers_are_recycled_and_never_outlive_the_pool(tmp_path: Path) -> None:
    store, _ = run(tmp_path, cases(range(1, 6)), jobs=1, recycle=2)
    records = store.load()
    workers = [r["worker"] for r in sorted(records, key=lambda r: r["seed"])]
    assert workers[0] == workers[1] != workers[2] == workers[3] != workers[4]
    pids = {int(w.rsplit(":", 1)[1]) for w in workers} | {r["pid"] for r in records}
    assert [r["worker_case"] for r in sorted(records, key=lambda r: r["seed"])] == [1, 2, 1, 2, 1]
    assert not any(alive(p) for p in pids)


def test_a_worker_dying_mid_case_costs_that_case_only(tmp_path: Path) -> None:
    todo = [
        Case("n/1", ("n", 1), {"seed": 1}),
        Case("die/124", ("die", 124), {"seed": 2, "replay": "demo --die"}),
        Case("n/3", ("n", 3), {"seed": 3}),
        Case("n/4", ("n", 4), {"seed": 4}),
    ]
    store, _ = run(tmp_path, todo, jobs=1, fn=f"{NAME}:by_kind")
    records = {r["key"]: r for r in store.load()}
    assert set(records) == {"n/1", "die/124", "n/3", "n/4"}
    lost = records["die/124"]
    assert (lost["outcome"], lost["matched"], lost["lost"]) == ("error", False, True)
    assert "emergency exit" in lost["error"] and "status 124" in lost["error"]
    assert lost["replay"] == "demo --die"
    # What the case wrote before it died is kept as its run folder.
    assert (tmp_path / lost["run_folder"] / "report.txt").read_text().startswith("written before")
    assert records["n/3"]["outcome"] == "defect"
    assert records["n/1"]["worker"] != records["n/3"]["worker"]  # a new worker took over


@pytest.mark.skipif(not FORK, reason="workers fork a child per case on Linux only")
def test_each_case_runs_in_a_child_so_nothing_it_keeps_outlives_it(tmp_path: Path) -> None:
    # Each case keeps 8 MiB for ever: in one process, the fifth would see 32 MiB kept.
    store, _ = run(tmp_path, cases(range(1, 6)), jobs=1, fn=f"{NAME}:hoard")
    records = sorted(store.load(), key=lambda r: r["seed"])
    assert [r["kept_before"] for r in records] == [0] * 5
    assert len({r["worker"] for r in records}) == 1 and len({r["pid"] for r in records}) == 5
    assert [r["worker_case"] for r in records] == [1, 2, 3, 4, 5]
    # Each case ran in the same memory, and the worker never held what a case kept.
    for field in ("rss_kib", "worker_rss_kib"):
        rss = [r[field] for r in records]
        assert max(rss) - min(rss) < 4 * 1024, (field, rss)


def test_an_exception_is_an_error_result_and_the_worker_goes_on(tmp_path: Path) -> None:
    store, _ = run(tmp_path, [Case("boom", (), {"seed": 1})], jobs=1, fn=f"{NAME}:boom")
    (r,) = store.load()
    assert (r["outcome"], r["matched"]) == ("error", False)
    assert r["error"].startswith("ValueError: boom (at ")
    assert "campaign_support.py" in r["error"] and "lost" not in r


def test_finished_keys_are_skipped(tmp_path: Path) -> None:
    store, _ = run(tmp_path, cases(range(1, 7)), done={"n/2", "n/5"})
    assert sorted(r["seed"] for r in store.load()) == [1, 3, 4, 6]


def test_an_endless_stream_stops_at_the_deadline(tmp_path: Path) -> None:
    endless = (Case(f"n/{n}", (n, 0.05), {"seed": n}) for n in itertools.count(1))
    wall_deadline = time.time() + 1.5
    store, outcome = run(tmp_path, endless, deadline=time.monotonic() + 1.5)
    records = store.load()
    assert not outcome.exhausted and not outcome.interrupted and records
    # Cases run in order, every one handed out finishes, and none is handed out after the
    # deadline (a worker may pick the last one up a little later on a loaded machine).
    assert sorted(r["seed"] for r in records) == list(range(1, len(records) + 1))
    assert max(r["started_at"] for r in records) <= wall_deadline + 1.0
    assert outcome.in_flight_dropped == []


class Recorder:
    """An engine observer that writes down what it is told."""

    def __init__(self) -> None:
        self.started_keys: list[str] = []
        self.finished_keys: list[str] = []

    def started(self, case: Case) -> None:
        self.started_keys.append(case.key)

    def finished(self, record: Mapping[str, Any]) -> None:
        self.finished_keys.append(record["key"])

    def tick(self, runner: Runner) -> None:
        pass


def test_stop_kills_running_cases_and_reports_them(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path)
    pool = LocalPool(2, NUMBERED)
    obs = Recorder()
    runner = Runner(store, pool, poll_s=0.05, observer=obs)
    pids: list[int] = []

    def stop_later() -> None:
        while len(store.load()) < 1:
            time.sleep(0.02)
        pids.extend(s.proc.pid for s in pool._slots if s.proc is not None)
        runner.stop("test")

    stopper = threading.Thread(target=stop_later)
    stopper.start()
    outcome = runner.run(cases(range(1, 50), delay=0.3))
    stopper.join(timeout=10)
    store.close()
    assert outcome.interrupted and outcome.signal_name == "test"
    assert outcome.in_flight_dropped  # cases that were running are named, not recorded
    assert not set(outcome.in_flight_dropped) & {r["key"] for r in store.load()}
    assert obs.finished_keys == [r["key"] for r in store.load()]
    assert set(obs.finished_keys) <= set(obs.started_keys)
    assert pids and not any(alive(p) for p in pids)


def test_the_generic_campaign_modules_never_import_rmapsim() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['rmapsim'] = None  # any import of it fails\n"
        "import stress.campaign as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('stress.campaign.' + m.name)\n"
        "import stress.campaign.html, plotly.graph_objects\n"
        "assert 'rmapsim' not in [k.split('.')[0] for k in sys.modules if sys.modules[k]]\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_workers_that_cannot_start_stop_the_campaign_and_lose_no_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that dies before it is ready never ran its case: the case is handed to a
    # fresh worker, and after three such deaths in a row the pool is broken (here: the
    # harness cannot even be imported, as while its code is being edited).  Nothing is
    # recorded for the cases, so that --resume runs them once it is fixed.
    broken = tmp_path / "broken" / "stress"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("harness broken on purpose")\n')
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    monkeypatch.chdir(tmp_path)  # `python -m` puts the current folder first
    store, outcome = run(tmp_path / "c", cases(range(1, 5)), jobs=1, total=4)
    assert outcome.broken.startswith("3 worker processes in a row exited with status 1")
    assert "ImportError: harness broken on purpose" in outcome.broken
    assert not outcome.interrupted and not outcome.exhausted
    assert store.load() == []  # no case recorded as lost
    assert outcome.in_flight_dropped == ["n/1"]
