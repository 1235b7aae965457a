"""The run folder: events.jsonl, report.json, report.txt and trace.json, written for real."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from stress import Config, Monitor, RunReport

pytestmark = pytest.mark.timeout(30)


class Node:
    def __init__(self) -> None:
        self.next: Node = self


def _clean_case(cfg: Config, report: RunReport) -> None:
    mon = Monitor(
        cfg.replace(duration_s=0.5),
        name="case-clean",
        report=report,
        meta={
            "variant": "2.6.34",
            "seed": 1,
            "expected": "clean",
            "replay": "demo --variant 2.6.34 --seed 1",
        },
    )
    lock = mon.spinlock("anon_vma", "anon_vma#1")

    def worker() -> None:
        while True:
            with lock, mon.walk("page_referenced_anon", "anon_vma#1", lock=lock, bound=8) as w:
                for _ in range(3):
                    w.step()
            mon.progress()

    mon.spawn(worker, name="kswapd-0")
    mon.run()


def _loop_case(cfg: Config, report: RunReport) -> None:
    mon = Monitor(
        cfg.replace(linger_s=0.1),
        name="case-loop",
        report=report,
        meta={
            "variant": "rik-v2-dst",
            "seed": 7,
            "expected": "defect",
            "replay": "demo --variant rik-v2-dst --seed 7",
            "memory": "reuse",
        },
    )
    lock = mon.spinlock("anon_vma", "anon_vma#17")
    head, a, b = Node(), Node(), Node()
    head.next, a.next, b.next = a, b, a

    def walker() -> None:
        with lock, mon.walk("page_referenced_anon", "anon_vma#17", lock=lock, bound=96) as w:
            node = head.next
            while node is not head:
                w.step()
                node = node.next

    def waiter() -> None:
        while not lock.locked():
            time.sleep(0.001)
        with lock:
            pass

    mon.spawn(walker, name="kswapd-0", tracked=False)
    mon.spawn(waiter, name="kswapd-1", tracked=False)
    mon.run()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "20240101-demo"
    cfg = Config(
        poll_s=0.02,
        walk_s=0.1,
        hold_s=0.3,
        verdict_s=0.8,
        duration_s=4,
        status_every_s=0.1,
        on_stuck="raise",
    )
    with RunReport(folder, scenario="demo") as report:
        _clean_case(cfg, report)
        _loop_case(cfg, report)
    return folder


def test_the_folder_holds_the_four_files(run_folder: Path) -> None:
    names = sorted(p.name for p in run_folder.iterdir())
    assert names == ["events.jsonl", "report.json", "report.txt", "trace.json"]


def test_report_json_follows_the_schema(run_folder: Path) -> None:
    body = json.loads((run_folder / "report.json").read_text())
    assert body["schema"] == 1 and body["scenario"] == "demo"
    clean, loop = body["cases"]
    assert (clean["variant"], clean["seed"], clean["expected"], clean["outcome"]) == (
        "2.6.34",
        1,
        "clean",
        "clean",
    )
    assert clean["first_defect_s"] is None and clean["verdicts"] == []
    assert clean["stats"]["ops"] > 0 and clean["stats"]["walks"] > 0
    assert clean["stats"]["lock_classes"]["anon_vma"]["acquisitions"] > 0
    assert (loop["variant"], loop["seed"], loop["outcome"], loop["memory"]) == (
        "rik-v2-dst",
        7,
        "defect",
        "reuse",
    )
    assert 0 < loop["first_defect_s"] < 2
    (v,) = loop["verdicts"]
    for key in (
        "kind",
        "summary",
        "threads",
        "locks",
        "lock_classes",
        "chain",
        "stacks",
        "where",
        "evidence",
        "signature",
        "signature_id",
        "count",
        "replay",
        "at_s",
    ):
        assert key in v, key
    assert v["kind"] == "list-loop" and v["count"] == 1
    assert v["replay"] == "demo --variant rik-v2-dst --seed 7"
    assert v["signature"].startswith("list-loop|anon_vma|")
    frames = v["stacks"]["kswapd-0"]
    assert any(f["func"] == "walker" for f in frames)


def test_report_txt_reads_as_a_diagnosis(run_folder: Path) -> None:
    text = (run_folder / "report.txt").read_text()
    assert "Case 1 of 2: variant=2.6.34 seed=1: clean (expected: clean)" in text
    assert "Case 2 of 2: variant=rik-v2-dst seed=7: DEFECT after" in text
    assert "No verdicts: nothing hung" in text
    assert "LIST-LOOP at" in text
    assert "Who waits for whom:" in text
    assert (
        "kswapd-1 waits for anon_vma#17, held" in text
        and "by kswapd-0, which is walking anon_vma#17's list (page_referenced_anon), step" in text
    )
    assert "Where kswapd-0 is (test_report.py:" in text
    assert "Run it again: demo --variant rik-v2-dst --seed 7" in text
    assert "Locks (per class" in text


def test_events_jsonl_has_one_record_per_verdict_and_status_tick(run_folder: Path) -> None:
    records = [json.loads(line) for line in (run_folder / "events.jsonl").read_text().splitlines()]
    kinds = [r["record"]["extra"]["event"] for r in records]
    assert kinds.count("verdict") == 1
    assert kinds.count("case") == 2
    assert kinds.count("status") >= 2
    verdict = next(r for r in records if r["record"]["extra"]["event"] == "verdict")
    assert verdict["record"]["extra"]["case"] == "case-loop"
    assert verdict["record"]["extra"]["verdict"]["kind"] == "list-loop"
    assert verdict["record"]["level"]["name"] == "STRESS"
    status = next(r for r in records if r["record"]["extra"]["event"] == "status")
    assert {"ops", "ops_per_s", "walks", "walks_per_s", "verdicts"} <= set(
        status["record"]["extra"]["status"]
    )


def test_trace_json_is_a_chrome_trace(run_folder: Path) -> None:
    body = json.loads((run_folder / "trace.json").read_text())
    events: list[dict[str, Any]] = body["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert complete, "no lock holds or walks traced"
    for e in complete:
        assert isinstance(e["name"], str) and e["pid"] in (1, 2)
        assert isinstance(e["tid"], int) and e["ts"] >= 0 and e["dur"] >= 0
    assert {e["cat"] for e in complete} == {"lock", "walk"}
    named = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in complete} <= named
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {1: "variant=2.6.34 seed=1", 2: "variant=rik-v2-dst seed=7"}
    # The looping walk ended only when cancellation reached its next step.
    stopped = [e for e in complete if e["cat"] == "walk" and e["pid"] == 2 and "ended" in e["args"]]
    assert len(stopped) == 1 and stopped[0]["args"]["ended"] == "Cancelled"
    assert stopped[0]["args"]["steps"] > 96
    assert [e["name"] for e in events if e["ph"] == "i"] == ["list-loop"]
    # Slices on one thread nest (Perfetto drops ones that overlap without nesting).
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in complete:
        by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
    for slices in by_thread.values():
        stack: list[float] = []
        for e in sorted(slices, key=lambda e: (e["ts"], -e["dur"])):
            while stack and stack[-1] <= e["ts"]:
                stack.pop()
            end = e["ts"] + e["dur"]
            assert not stack or end <= stack[-1] + 0.01, e
            stack.append(end)


def test_the_harness_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = Config(
        poll_s=0.02,
        walk_s=0.1,
        hold_s=0.3,
        verdict_s=0.8,
        duration_s=4,
        status_every_s=0.1,
        on_stuck="raise",
    )
    with RunReport(tmp_path / "quiet", scenario="quiet") as report:
        _loop_case(cfg, report)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert json.loads((tmp_path / "quiet" / "report.json").read_text())["cases"][0]["verdicts"]


def test_tracing_can_be_switched_off(tmp_path: Path) -> None:
    cfg = Config(trace_events=0, timing=False, duration_s=0.3, on_stuck="raise")
    with RunReport(tmp_path / "untraced", scenario="untraced", events=False) as report:
        _clean_case(cfg, report)
    body = json.loads((tmp_path / "untraced" / "trace.json").read_text())
    assert [e for e in body["traceEvents"] if e["ph"] == "X"] == []
    assert not (tmp_path / "untraced" / "events.jsonl").exists()


def test_verdict_text_is_one_string() -> None:
    from stress.verdicts import Verdict

    v = Verdict(kind="stall", summary="stall: w-1 made no progress", source="watchdog")
    text = v.text()
    assert isinstance(text, str)
    assert text.splitlines() == v.lines()
    assert text.splitlines()[:2] == ["STALL at 0.000 s [watchdog]", "  stall: w-1 made no progress"]
    assert str(v) == text


def test_lock_table_columns_never_run_together() -> None:
    from stress.lockcore import Histogram
    from stress.report import CaseResult, render_text

    wait = Histogram()
    for us in (524_300, 700_000, 3_400_000):
        wait.add(us / 1e6)
    cls = {
        "instances": 2,
        "acquisitions": 3,
        "contentions": 3,
        "contention_pct": 100.0,
        "wait": wait.to_dict(),
        "hold": Histogram().to_dict(),
        "longest_hold_seen_s": 12.5,
    }
    stats = {"lock_classes": {"a-rather-long-lock-class-name": cls, "b": cls}}
    case = CaseResult("c", {}, "clean", None, 1.0, [], stats)
    text = render_text("demo", [case])
    rows = text[text.index("Locks (per class") :].splitlines()[1:]
    assert len(rows) == 3
    for row in rows:  # seven cells, at least two spaces apart
        assert len(re.split(r"\s{2,}", row.strip())) == 7, row
    assert "3 (100.0%)" in rows[1]


def test_quantiles_never_exceed_the_longest_duration() -> None:
    from stress.lockcore import Histogram

    h = Histogram()
    for _ in range(3):
        h.add(600e-6)  # bucket [512, 1024) us
    d = h.to_dict()
    assert d["p50_us"] <= d["max_us"] and d["p99_us"] <= d["max_us"]
    assert d["p50_us"] == 600

