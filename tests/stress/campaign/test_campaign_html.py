"""campaign.html: self-contained, every plot and table present, text escaped."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stress.campaign import render_html, write_html
from tests.stress.campaign.campaign_support import assert_plots, assert_self_contained, parse

pytestmark = pytest.mark.timeout(60)


def records() -> list[dict[str, Any]]:
    out = []
    for i in range(1, 13):
        variant = "bad" if i % 2 else "good"
        defect = variant == "bad" and i % 3 != 0
        out.append(
            {
                "key": f"{variant}/{i}",
                "variant": variant,
                "seed": i,
                "outcome": "defect" if defect else "clean",
                "expected": "defect" if variant == "bad" else "clean",
                "matched": defect == (variant == "bad"),
                "first_defect_s": 0.1 * i if defect else None,
                "ops_per_s": 1000.0 + 10 * i,
                "duration_s": 0.1 * i + 0.05 if defect else 2.0,
                "signatures": (
                    [{"id": "cafe01", "kind": "list-loop", "summary": "<script>x</script>"}]
                    if defect
                    else []
                ),
                "replay": f"rmapstress run s.toml --variant {variant} --seed {i}",
                "worker": f"host:{100 + i % 2}",
                "rss_kib": 40_000 + i * 10,
                "started_at": 1_700_000_000.0 + i,
                "finished_at": 1_700_000_000.5 + i,
                "run_folder": f"cases/{variant}-{i}" if defect else None,
            }
        )
    return out


def test_page_is_self_contained_with_every_plot_and_table(tmp_path: Path) -> None:
    recs = records()
    path = write_html(tmp_path / "campaign.html", recs, title="demo", facts=[("where", "here")])
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert_self_contained(page)
    assert_plots(page, text)
    assert {"table-variants", "table-signatures", "table-memory", "table-mismatches"} <= page.ids()
    # The signature table names the signature once with its counts and first replay.
    sig_row = re.search(r'<table id="table-signatures">.*?</table>', text, re.S)
    assert sig_row is not None
    assert sig_row.group(0).count("cafe01") == 1
    assert "rmapstress run s.toml --variant bad --seed 1" in sig_row.group(0)
    assert '<a href="cases/bad-1/report.txt">' in sig_row.group(0)
    # Untrusted text is escaped, never markup.
    assert "<script>x</script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    # The seed-3 mismatch (a 'bad' case that stayed clean) is listed with its replay.
    mism = re.search(r'<table id="table-mismatches">.*?</table>', text, re.S)
    assert mism is not None and "--variant bad --seed 3" in mism.group(0)
    assert "did not match their expectation" in text


def test_page_without_defects_still_has_every_plot() -> None:
    clean = [dict(r, outcome="clean", signatures=[], matched=True) for r in records()]
    text = render_html(clean, title="quiet")
    page = parse(text)
    assert_self_contained(page)
    assert_plots(page, text)
    assert "no defect in any case" in text
    assert "every case matched its expectation (12)" in text


def test_plot_data_comes_from_the_records() -> None:
    text = render_html(records(), title="demo")
    # The ECDF of 'bad' reaches its defect share: 4 defects in 6 cases.
    m = re.search(r'Plotly\.newPlot\(\s*"plot-first-defect",\s*(\[.*?\]),\s*\{', text, re.S)
    assert m is not None
    traces = json.loads(m.group(1))
    bad = next(t for t in traces if t["name"] == "bad")
    assert bad["y"][-1] == pytest.approx(4 / 6)
    # The steps at each defect, then on to the longest case (no defect came after).
    assert bad["x"][1:] == pytest.approx([0.1, 0.5, 0.7, 1.1, 2.0])
    assert bad["y"][1:] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 4 / 6])
