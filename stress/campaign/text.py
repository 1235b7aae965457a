"""The campaign's summary as text: the table, each signature once, mismatches, memory.

Pure: lines from a `Summary`, printed by the application at the end of a campaign
(and by `--report`).  Every defect signature and every mismatch comes with the
command that runs that case again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stress.campaign.stats import GroupStats, Spread, Summary, WorkerMemory


def duration_text(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{seconds:.1f}s"


def spread_text(sp: Spread | None, unit: str = "s", fmt: str = "{:.2f}") -> str:
    if sp is None:
        return "-"
    return "/".join(fmt.format(v) for v in (sp.median, sp.p90, sp.max)) + (
        f" {unit}" if unit else ""
    )


def _ops(sp: Spread | None) -> str:
    return "-" if sp is None else f"{sp.median:,.0f}"


def group_rows(groups: Sequence[GroupStats]) -> list[tuple[str, ...]]:
    head = (
        "variant",
        "cases",
        "defects",
        "errors",
        "defect rate (95%)",
        "first defect med/p90/max",
        "ops/s med",
        "expected",
        "mismatches",
    )
    rows: list[tuple[str, ...]] = [head]
    for g in groups:
        rows.append(
            (
                g.group,
                str(g.cases),
                str(g.defects),
                str(g.errors),
                g.rate.text(),
                spread_text(g.first_defect),
                _ops(g.ops_per_s),
                ",".join(sorted(g.expected)) or "-",
                str(g.mismatches),
            )
        )
    return rows


def table(rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def memory_line(m: WorkerMemory) -> str:
    growth = "-" if m.growth_pct is None else f"{m.growth_pct:+.1f}%"
    slope = "" if m.slope_kib_per_min is None else f" ({m.slope_kib_per_min / 1024:+.2f} MiB/min)"
    base = "-" if m.baseline_kib is None else f"{m.baseline_kib / 1024:.1f}"
    return (
        f"{m.worker}: {m.cases} cases, RSS {m.start_kib / 1024:.1f} -> baseline {base} -> "
        f"{m.end_kib / 1024:.1f} MiB (max {m.max_kib / 1024:.1f}), growth after baseline "
        f"{growth}{slope}: {m.verdict}"
    )


def case_line(rec: Mapping[str, Any]) -> str:
    what = rec.get("outcome", "?")
    sigs = rec.get("signatures") or []
    detail = rec.get("error") or (
        f"{sigs[0].get('kind')}: {sigs[0].get('summary')}" if sigs else ""
    )
    return (
        f"{rec.get('group') or rec.get('variant')} seed {rec.get('seed')}: {what}, expected "
        f"{rec.get('expected') or 'clean'}" + (f": {detail}" if detail else "")
    )


def summary_lines(
    summary: Summary,
    *,
    title: str,
    where: str = "",
    folder: str = "",
    max_items: int = 20,
) -> list[str]:
    """The end-of-campaign summary."""
    rate = summary.total / summary.span_s if summary.span_s > 0 else 0.0
    lines = [
        f"campaign {title}: {summary.total} case(s) in {duration_text(summary.span_s)}"
        f" ({rate * 60:.1f} cases/min)" + (f" on {where}" if where else ""),
    ]
    if summary.groups:
        lines += table(group_rows(summary.groups))
    if summary.signatures:
        lines.append("")
        lines.append(f"signatures ({len(summary.signatures)} distinct, each once):")
        for s in summary.signatures[:max_items]:
            lines.append(
                f"  [{s.id}] {s.kind} in {s.cases} case(s) ({s.occurrences} time(s)), "
                f"{', '.join(s.groups)}: {s.summary}"
            )
            lines.append(f"      first seed {s.first_seed}: {s.replay or '-'}")
            if s.run_folder:
                lines.append(f"      run folder: {_join(folder, s.run_folder)}")
        if len(summary.signatures) > max_items:
            lines.append(f"  ... {len(summary.signatures) - max_items} more in campaign.html")
    if summary.mismatched:
        lines.append("")
        lines.append(f"did not match their expectation ({len(summary.mismatched)}):")
        for rec in summary.mismatched[:max_items]:
            lines.append(f"  {case_line(rec)}")
            lines.append(f"      replay: {rec.get('replay') or '-'}")
            if rec.get("run_folder"):
                lines.append(f"      run folder: {_join(folder, rec['run_folder'])}")
        if len(summary.mismatched) > max_items:
            lines.append(f"  ... {len(summary.mismatched) - max_items} more in results.jsonl")
    if summary.workers:
        lines.append("")
        flagged = [m for m in summary.workers if m.flagged]
        growths = [m.growth_pct for m in summary.workers if m.growth_pct is not None]
        span = (
            f", growth after baseline {min(growths):+.1f}% .. {max(growths):+.1f}%"
            if growths
            else ""
        )
        lines.append(
            f"worker memory: {len(summary.workers)} worker process(es){span}; "
            + (f"{len(flagged)} GROWING without levelling off:" if flagged else "none growing")
        )
        shown = flagged or summary.workers
        for m in shown[:max_items]:
            lines.append(f"  {memory_line(m)}")
    return lines


def _join(folder: str, rel: str) -> str:
    return f"{folder.rstrip('/')}/{rel}" if folder else rel
