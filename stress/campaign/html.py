"""campaign.html: one self-contained page with the campaign's plots and tables.

Plots are made with plotly (interactive: hover a point to see its case and seed,
zoom into an hour of a soak) and plotly.js is inlined once in the page, so the page
opens without a network.  The page costs ~5 MB for the library; matplotlib's SVG
would be smaller but static, and brings numpy and a C toolchain's worth of wheels.

Element ids the page always has (tests and scripts rely on them):
`plot-first-defect` (time to first defect, ECDF per variant), `plot-failures`
(defects over time), `plot-throughput` (ops/s of each case over time), `plot-rss`
(worker RSS over time), `table-variants`, `table-signatures`, `table-memory`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stress.campaign.stats import (
    RSS_GROWTH_LIMIT_PCT,
    RSS_WARMUP_S,
    Summary,
    group_of,
    summarize,
)
from stress.campaign.text import duration_text, spread_text

PLOT_IDS = ("plot-first-defect", "plot-failures", "plot-throughput", "plot-rss")

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1em 2em; color: #1f2328; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.6em; font-size: 1.2em; }
.verdict { display: inline-block; padding: .2em .7em; border-radius: .4em; font-weight: 600; }
.ok { background: #dafbe1; color: #116329; } .bad { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .25em .8em .25em 0; border-bottom: 1px solid #d0d7de;
         vertical-align: top; }
th { font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f6f8fa;
       padding: .1em .3em; border-radius: .3em; word-break: break-all; }
.facts td:first-child { color: #59636e; } .muted { color: #59636e; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr; } }
.plot { min-height: 380px; border: 1px solid #d0d7de; border-radius: .4em; }
#table-signatures td:first-child code { white-space: nowrap; }
"""


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[str]], num: set[int]) -> str:
    out = [f'<table id="{table_id}"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{len(head)}" class="muted">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _link(folder: str | None, label: str = "run folder") -> str:
    if not folder:
        return ""
    target = f"{folder.rstrip('/')}/report.txt"
    return f'<a href="{_esc(target)}">{_esc(label)}</a>'


_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"orientation": "h", "y": -0.2},
    "hovermode": "closest",
}

Records = Sequence[Mapping[str, Any]]


def _by_time(records: Records) -> list[Mapping[str, Any]]:
    return sorted(
        (r for r in records if isinstance(r.get("finished_at"), int | float)),
        key=lambda r: float(r["finished_at"]),
    )


def _fig_first_defect(go: Any, records: Records, summary: Summary) -> Any:
    """The share of a variant's cases that had found a defect t seconds in (an ECDF)."""
    fig = go.Figure()
    for g in summary.groups:
        recs = [r for r in records if group_of(r) == g.group and r.get("outcome") != "error"]
        hits = sorted(
            (float(r["first_defect_s"]), r.get("seed"))
            for r in recs
            if r.get("outcome") == "defect" and isinstance(r.get("first_defect_s"), int | float)
        )
        if not hits:
            continue
        n = len(recs)
        xs = [0.0] + [t for t, _ in hits]
        ys = [0.0] + [(i + 1) / n for i in range(len(hits))]
        text = [""] + [f"seed {s}" for _, s in hits]
        # Carry the last step on to the longest case: no more defects came until then.
        longest = max((float(r.get("duration_s") or 0.0) for r in recs), default=0.0)
        if longest > xs[-1]:
            xs, ys, text = [*xs, longest], [*ys, ys[-1]], [*text, "longest case"]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=g.group,
                line_shape="hv",
                text=text,
                hovertemplate="%{text}: defect by %{x:.3f} s<br>%{y:.0%} of cases<extra>"
                + _esc(g.group)
                + "</extra>",
            )
        )
    fig.update_layout(
        title="Time to first defect",
        xaxis_title="seconds into the case",
        yaxis={
            "title": "share of cases with a defect by then",
            "tickformat": ".0%",
            "rangemode": "tozero",
        },
        **_LAYOUT,
    )
    if not fig.data:
        fig.add_annotation(
            text="no defect in any case",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            font={"size": 16},
        )
    return fig


def _fig_failures(go: Any, records: Records, summary: Summary) -> Any:
    """Cumulative defects per variant over time, and the cases that did not match."""
    fig = go.Figure()
    ordered = _by_time(records)
    for g in summary.groups:
        count = 0
        xs: list[str] = []
        ys: list[int] = []
        text: list[str] = []
        for r in ordered:
            if group_of(r) != g.group:
                continue
            count += r.get("outcome") == "defect"
            xs.append(_when(float(r["finished_at"])))
            ys.append(count)
            text.append(f"seed {r.get('seed')}: {r.get('outcome')}")
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=g.group,
                text=text,
                line_shape="hv",
                hovertemplate="%{text}<br>%{y} defects",
            )
        )
    bad = [r for r in ordered if not r.get("matched")]
    if bad:
        fig.add_trace(
            go.Scatter(
                x=[_when(float(r["finished_at"])) for r in bad],
                y=[0] * len(bad),
                mode="markers",
                name="did not match",
                marker={"symbol": "x", "size": 11, "color": "#cf222e"},
                text=[f"{group_of(r)} seed {r.get('seed')}: {r.get('outcome')}" for r in bad],
                hovertemplate="%{text}",
            )
        )
    fig.update_layout(
        title="Defects over time",
        xaxis_title="time",
        yaxis_title="cases with a defect (cumulative)",
        **_LAYOUT,
    )
    return fig


def _fig_throughput(go: Any, records: Records, summary: Summary) -> Any:
    fig = go.Figure()
    ordered = _by_time(records)
    for g in summary.groups:
        recs = [
            r
            for r in ordered
            if group_of(r) == g.group and isinstance(r.get("ops_per_s"), int | float)
        ]
        fig.add_trace(
            go.Scatter(
                x=[_when(float(r["finished_at"])) for r in recs],
                y=[r["ops_per_s"] for r in recs],
                mode="markers",
                name=g.group,
                text=[f"seed {r.get('seed')}: {r.get('outcome')}" for r in recs],
                hovertemplate="%{text}<br>%{y:,.0f} ops/s",
            )
        )
    fig.update_layout(
        title="Throughput of each case",
        xaxis_title="time the case finished",
        yaxis_title="ops/s",
        **_LAYOUT,
    )
    return fig


def _fig_rss(go: Any, records: Records) -> Any:
    """Each worker process's RSS after each of its cases."""
    fig = go.Figure()
    by_worker: dict[str, list[Mapping[str, Any]]] = {}
    for r in _by_time(records):
        rss = r.get("rss_kib")
        if r.get("worker") and isinstance(rss, int | float) and rss > 0:
            by_worker.setdefault(str(r["worker"]), []).append(r)
    for w, recs in by_worker.items():
        fig.add_trace(
            go.Scatter(
                x=[_when(float(r["finished_at"])) for r in recs],
                y=[r["rss_kib"] / 1024 for r in recs],
                mode="lines+markers",
                name=w,
                text=[f"{group_of(r)} seed {r.get('seed')}" for r in recs],
                hovertemplate="%{text}<br>%{y:.1f} MiB",
            )
        )
    fig.update_layout(
        title="Worker RSS after each case",
        xaxis_title="time",
        yaxis_title="MiB",
        showlegend=len(by_worker) <= 12,
        **_LAYOUT,
    )
    return fig


def _figures(records: Records, summary: Summary) -> dict[str, Any]:
    import plotly.graph_objects as go

    return {
        "plot-first-defect": _fig_first_defect(go, records, summary),
        "plot-failures": _fig_failures(go, records, summary),
        "plot-throughput": _fig_throughput(go, records, summary),
        "plot-rss": _fig_rss(go, records),
    }


def render_html(
    records: Sequence[Mapping[str, Any]],
    *,
    title: str,
    facts: Sequence[tuple[str, str]] = (),
    warmup_s: float | None = None,
    interrupted: bool = False,
) -> str:
    """The whole page as a string."""
    import plotly.io as pio
    import plotly.offline

    warm = RSS_WARMUP_S if warmup_s is None else warmup_s
    summary = summarize(records, warmup_s=warm)
    figs = _figures(records, summary)
    config = {"displaylogo": False, "responsive": True}
    plots = {
        pid: pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=pid, config=config)
        for pid, fig in figs.items()
    }
    ok = summary.ok and not interrupted
    verdict = (
        f'<span class="verdict ok">every case matched its expectation ({summary.total})</span>'
        if ok
        else f'<span class="verdict bad">{len(summary.mismatched)} of {summary.total} case(s) '
        "did not match their expectation" + (" · interrupted" if interrupted else "") + "</span>"
    )
    rate = summary.total / summary.span_s * 60 if summary.span_s else 0.0
    fact_rows = [
        ("cases", f"{summary.total} in {duration_text(summary.span_s)} ({rate:.1f} cases/min)"),
        *facts,
    ]
    variants = _table(
        "table-variants",
        [
            "variant",
            "cases",
            "defects",
            "errors",
            "defect rate (95%)",
            "first defect median / p90 / max",
            "ops/s median",
            "expected",
            "mismatches",
        ],
        [
            [
                _esc(g.group),
                str(g.cases),
                str(g.defects),
                str(g.errors),
                _esc(g.rate.text()),
                _esc(spread_text(g.first_defect)),
                "-" if g.ops_per_s is None else f"{g.ops_per_s.median:,.0f}",
                _esc(",".join(sorted(g.expected)) or "-"),
                str(g.mismatches),
            ]
            for g in summary.groups
        ],
        {1, 2, 3, 6, 8},
    )
    sigs = _table(
        "table-signatures",
        ["signature", "kind", "cases", "times", "variants", "summary", "first seed", "replay", ""],
        [
            [
                f"<code>{_esc(s.id)}</code>",
                _esc(s.kind),
                str(s.cases),
                str(s.occurrences),
                _esc(", ".join(s.groups)),
                _esc(s.summary),
                _esc(s.first_seed),
                f"<code>{_esc(s.replay)}</code>",
                _link(s.run_folder),
            ]
            for s in summary.signatures
        ],
        {2, 3},
    )
    mism = _table(
        "table-mismatches",
        ["variant", "seed", "outcome", "expected", "what", "replay", ""],
        [
            [
                _esc(group_of(r)),
                _esc(r.get("seed")),
                _esc(r.get("outcome")),
                _esc(r.get("expected") or "clean"),
                _esc(
                    r.get("error")
                    or next(
                        (f"{s.get('kind')}: {s.get('summary')}" for s in r.get("signatures") or ()),
                        "",
                    )
                ),
                f"<code>{_esc(r.get('replay'))}</code>",
                _link(r.get("run_folder")),
            ]
            for r in summary.mismatched[:500]
        ],
        set(),
    )
    memory = _table(
        "table-memory",
        [
            "worker",
            "cases",
            "RSS start MiB",
            "baseline MiB",
            "end MiB",
            "max MiB",
            "growth after baseline",
            "slope MiB/min",
            "verdict",
        ],
        [
            [
                _esc(m.worker),
                str(m.cases),
                f"{m.start_kib / 1024:.1f}",
                "-" if m.baseline_kib is None else f"{m.baseline_kib / 1024:.1f}",
                f"{m.end_kib / 1024:.1f}",
                f"{m.max_kib / 1024:.1f}",
                "-" if m.growth_pct is None else f"{m.growth_pct:+.1f}%",
                "-" if m.slope_kib_per_min is None else f"{m.slope_kib_per_min / 1024:+.2f}",
                f"<b>{_esc(m.verdict)}</b>" if m.flagged else _esc(m.verdict),
            ]
            for m in summary.workers
        ],
        {1, 2, 3, 4, 5, 6, 7},
    )
    facts_html = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in fact_rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>campaign {_esc(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head><body>
<h1>Campaign {_esc(title)}</h1>
<p>{verdict}</p>
<table class="facts">{facts_html}</table>
<h2>Per variant</h2>
{variants}
<div class="grid">
<div class="plot">{plots["plot-first-defect"]}</div>
<div class="plot">{plots["plot-failures"]}</div>
</div>
<h2>Signatures <span class="muted">(each distinct verdict once)</span></h2>
{sigs}
<h2>Cases that did not match their expectation</h2>
{mism}
<h2>Throughput and memory</h2>
<div class="grid">
<div class="plot">{plots["plot-throughput"]}</div>
<div class="plot">{plots["plot-rss"]}</div>
</div>
{memory}
<p class="muted">Rates: Wilson 95% intervals; a variant without defects shows the rule of three
(clean in N cases: rate &lt; 3/N at 95%).  Errors count on neither side.  Memory: the
baseline is a worker's RSS {_esc(duration_text(warm))} into its life (or after its first
case), and growth is the least-squares fit after it; GROWING means above
{RSS_GROWTH_LIMIT_PCT:g}% and still climbing in the second half.
Written {_esc(_when(time.time()))}.</p>
</body></html>
"""


def write_html(path: str | Path, records: Sequence[Mapping[str, Any]], **kwargs: Any) -> Path:
    """Render the page and write it (atomically: a reader never sees half a page)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render_html(records, **kwargs), encoding="utf-8")
    tmp.replace(target)
    return target
