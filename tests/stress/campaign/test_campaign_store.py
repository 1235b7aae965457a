"""The campaign folder on a real file system: durable appends, torn lines, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.campaign import CampaignStore, StoreError, time_spent
from stress.campaign.store import folder_name

pytestmark = pytest.mark.timeout(30)


def test_append_and_load_round_trip(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "c")
    store.create({"title": "t"})
    for i in range(3):
        store.append({"key": f"k{i}", "seed": i, "outcome": "clean"})
    store.close()
    lines = (tmp_path / "c" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["k0", "k1", "k2"]
    assert [r["seed"] for r in CampaignStore(tmp_path / "c").load()] == [0, 1, 2]


def test_a_torn_last_line_is_cut_off_and_the_file_repaired(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path)
    store.append({"key": "a", "outcome": "clean"})
    store.append({"key": "b", "outcome": "defect"})
    store.close()
    path = tmp_path / "results.jsonl"
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"key":"c","outcome":"cle')  # the process died in the middle of this write
    again = CampaignStore(tmp_path)
    assert [r["key"] for r in again.load()] == ["a", "b"]
    assert len(again.repaired) == 1 and again.repaired[0].startswith('{"key":"c"')
    assert path.read_bytes() == good  # cut back to the last whole line
    again.append({"key": "c", "outcome": "clean"})  # appends start on a line of their own
    again.close()
    assert [r["key"] for r in CampaignStore(tmp_path).load()] == ["a", "b", "c"]


def test_bad_and_duplicate_lines_are_skipped_first_record_wins(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text(
        '{"key":"a","seed":1}\nnot json\n[1,2]\n{"key":"a","seed":2}\n\n{"key":"b","seed":3}\n'
    )
    store = CampaignStore(tmp_path)
    assert [(r["key"], r["seed"]) for r in store.load()] == [("a", 1), ("b", 3)]
    assert len(store.repaired) == 2


def test_create_refuses_a_folder_holding_a_campaign(tmp_path: Path) -> None:
    CampaignStore(tmp_path).create({"title": "one"})
    with pytest.raises(StoreError, match=r"already holds a campaign .*--resume"):
        CampaignStore(tmp_path).create({"title": "two"})
    manifest = CampaignStore(tmp_path).manifest()
    assert (manifest["title"], manifest["schema"], manifest["sessions"]) == ("one", 1, [])


def test_manifest_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no campaign here \(campaign.json is missing\)"):
        CampaignStore(tmp_path / "none").manifest()
    (tmp_path / "campaign.json").write_text("{oops")
    with pytest.raises(StoreError, match=r"campaign\.json: unreadable"):
        CampaignStore(tmp_path).manifest()


def test_case_files_stay_inside_their_folder(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path)
    rel = store.write_case_files("lkml/2.6.34+x/7", {"report.txt": "r", "../../evil.txt": "e"})
    assert rel == "cases/lkml-2.6.34+x-7"
    assert sorted(p.name for p in (tmp_path / rel).iterdir()) == ["evil.txt", "report.txt"]
    assert not (tmp_path / "evil.txt").exists()
    assert folder_name("///") == "case"


def test_time_spent_sums_each_earlier_session_until_its_last_case() -> None:
    sessions = [{"started_at": 100.0}, {"started_at": 500.0}, {"started_at": 900.0}]
    records = [
        {"session": 0, "finished_at": 130.0},
        {"session": 0, "finished_at": 160.0},
        {"session": 1, "finished_at": 520.0},
    ]
    assert time_spent(records, sessions) == pytest.approx(60.0 + 20.0)
