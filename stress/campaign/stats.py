"""Campaign statistics: failure rates with bounds, time to first defect, signatures, memory.

Pure functions of the records a campaign wrote (one dict per finished case), so that
the live summary, the final table and the HTML page all say the same thing, and a
page rebuilt from results.jsonl says what the campaign said when it ended.

A record is read for: `group` (else `variant`), `seed`, `key`, `outcome` (clean,
defect, error), `matched`, `first_defect_s`, `ops_per_s`, `signatures` (each with
`id`, `kind`, `summary`, `count`), `replay`, `run_folder`, `worker`, `rss_kib` and
`finished_at`.  Missing fields count as absent, never as errors.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054
#: A worker's RSS may grow this much (percent of its baseline) and still count as flat.
RSS_GROWTH_LIMIT_PCT = 5.0
#: The baseline of a worker's RSS is its sample this long into its life (when it lived that long).
RSS_WARMUP_S = 300.0

Record = Mapping[str, Any]


def wilson(failures: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= failures <= n:
        raise ValueError(f"failures must be between 0 and n ({n}), got {failures}")
    p = failures / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Clamp rounding at the ends: 0/n has a lower bound of exactly 0, n/n an upper of 1.
    low = 0.0 if failures == 0 else max(0.0, centre - half)
    high = 1.0 if failures == n else min(1.0, centre + half)
    return (low, high)


def rule_of_three(n: int) -> float:
    """The 95% upper bound of a rate never seen in n trials (3/n, capped at 1)."""
    if n <= 0:
        return 1.0
    return min(1.0, 3.0 / n)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be between 0 and 1, got {q}")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Rate:
    """How often a group's cases found a defect, with its 95% bounds."""

    failures: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.failures / self.n if self.n else 0.0

    @property
    def upper_rule_of_three(self) -> float | None:
        """3/n when no failure was seen (the bound people quote for 'clean')."""
        return rule_of_three(self.n) if self.failures == 0 and self.n else None

    def text(self) -> str:
        if self.n == 0:
            return "no finished case"
        if self.failures == 0:
            return (
                f"clean in {self.n} case{'s' if self.n != 1 else ''}: "
                f"rate < {rule_of_three(self.n):.3g} (3/{self.n}) at 95%"
            )
        return (
            f"{self.failures}/{self.n} = {self.rate:.1%} (95% CI {self.low:.1%} .. {self.high:.1%})"
        )


def rate_of(failures: int, n: int) -> Rate:
    low, high = wilson(failures, n)
    return Rate(failures, n, low, high)


@dataclass(frozen=True)
class Spread:
    """Median, p90 and max of a sample (None when the sample is empty)."""

    n: int
    median: float
    p90: float
    max: float

    @staticmethod
    def of(values: Iterable[float]) -> Spread | None:
        xs = [float(v) for v in values]
        if not xs:
            return None
        return Spread(len(xs), statistics.median(xs), quantile(xs, 0.9), max(xs))


@dataclass
class GroupStats:
    """One group of cases (a variant): outcomes, defect rate, time to first defect, speed."""

    group: str
    cases: int = 0
    clean: int = 0
    defects: int = 0
    errors: int = 0
    mismatches: int = 0
    expected: set[str] = field(default_factory=set)
    rate: Rate = field(default_factory=lambda: rate_of(0, 0))
    first_defect: Spread | None = None
    ops_per_s: Spread | None = None


@dataclass
class SignatureStats:
    """One distinct verdict signature over the whole campaign."""

    id: str
    kind: str
    summary: str
    cases: int
    occurrences: int
    groups: list[str]
    first_seed: Any
    first_key: str
    replay: str | None
    run_folder: str | None


@dataclass
class WorkerMemory:
    """RSS of one worker process over its life, and whether it levels off."""

    worker: str
    cases: int
    first_at: float
    last_at: float
    start_kib: int
    baseline_kib: int | None
    end_kib: int
    max_kib: int
    #: Fitted growth after the baseline, in percent of the baseline.
    growth_pct: float | None
    #: Fitted slope after the baseline.
    slope_kib_per_min: float | None
    #: flat, levels off, warming up, GROWING, or too few samples.
    verdict: str

    @property
    def flagged(self) -> bool:
        return self.verdict == "GROWING"


@dataclass
class Summary:
    """Everything the reports show about a campaign's records."""

    total: int
    matched: int
    mismatched: list[Record]
    errors: list[Record]
    groups: list[GroupStats]
    signatures: list[SignatureStats]
    workers: list[WorkerMemory]
    started_at: float | None
    finished_at: float | None
    ops_per_s: Spread | None

    @property
    def ok(self) -> bool:
        return not self.mismatched

    @property
    def span_s(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(self.finished_at - self.started_at, 0.0)


def group_of(record: Record) -> str:
    return str(record.get("group") or record.get("variant") or "-")


def _seed_order(record: Record) -> tuple[int, str]:
    seed = record.get("seed")
    return (seed if isinstance(seed, int) else 1 << 62, str(record.get("key", "")))


def summarize(records: Sequence[Record], *, warmup_s: float = RSS_WARMUP_S) -> Summary:
    """The statistics of a campaign's finished cases."""
    groups: dict[str, GroupStats] = {}
    firsts: dict[str, list[float]] = {}
    speeds: dict[str, list[float]] = {}
    mismatched: list[Record] = []
    errors: list[Record] = []
    for rec in records:
        name = group_of(rec)
        g = groups.setdefault(name, GroupStats(name))
        g.cases += 1
        outcome = rec.get("outcome")
        if outcome == "defect":
            g.defects += 1
            if isinstance(rec.get("first_defect_s"), int | float):
                firsts.setdefault(name, []).append(float(rec["first_defect_s"]))
        elif outcome == "clean":
            g.clean += 1
        else:
            g.errors += 1
            errors.append(rec)
        if rec.get("expected"):
            g.expected.add(str(rec["expected"]))
        if not rec.get("matched", False):
            g.mismatches += 1
            mismatched.append(rec)
        if isinstance(rec.get("ops_per_s"), int | float) and outcome != "error":
            speeds.setdefault(name, []).append(float(rec["ops_per_s"]))
    for name, g in groups.items():
        # An error says nothing about the kernel: it counts in neither side of the rate.
        g.rate = rate_of(g.defects, g.defects + g.clean)
        g.first_defect = Spread.of(firsts.get(name, []))
        g.ops_per_s = Spread.of(speeds.get(name, []))
    times = [float(r["finished_at"]) for r in records if _is_num(r.get("finished_at"))]
    starts = [float(r["started_at"]) for r in records if _is_num(r.get("started_at"))]
    return Summary(
        total=len(records),
        matched=len(records) - len(mismatched),
        mismatched=sorted(mismatched, key=_seed_order),
        errors=sorted(errors, key=_seed_order),
        groups=sorted(groups.values(), key=lambda g: _first_index(records, g.group)),
        signatures=signatures(records),
        workers=worker_memory(records, warmup_s=warmup_s),
        started_at=min(starts or times) if (starts or times) else None,
        finished_at=max(times) if times else None,
        ops_per_s=Spread.of(v for vs in speeds.values() for v in vs),
    )


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _first_index(records: Sequence[Record], group: str) -> int:
    return next((i for i, r in enumerate(records) if group_of(r) == group), len(records))


def signatures(records: Sequence[Record]) -> list[SignatureStats]:
    """Each distinct signature once: cases, occurrences, groups, the first seed and its replay."""
    by_id: dict[str, SignatureStats] = {}
    for rec in sorted(records, key=_seed_order):
        seen_here: set[str] = set()
        for sig in rec.get("signatures") or ():
            sid = str(sig.get("id", ""))
            if not sid:
                continue
            count = int(sig.get("count", 1) or 1)
            s = by_id.get(sid)
            if s is None:
                s = by_id[sid] = SignatureStats(
                    id=sid,
                    kind=str(sig.get("kind", "?")),
                    summary=str(sig.get("summary", "")),
                    cases=0,
                    occurrences=0,
                    groups=[],
                    first_seed=rec.get("seed"),
                    first_key=str(rec.get("key", "")),
                    replay=rec.get("replay"),
                    run_folder=rec.get("run_folder"),
                )
            s.occurrences += count
            if sid not in seen_here:
                s.cases += 1
                seen_here.add(sid)
            if group_of(rec) not in s.groups:
                s.groups.append(group_of(rec))
    return sorted(by_id.values(), key=lambda s: (-s.cases, s.kind, s.id))


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2 or points[-1][0] - points[0][0] <= 0:
        return 0.0
    ts = [t / 60.0 for t, _ in points]
    ys = [y for _, y in points]
    if len(set(ts)) < 2:
        return 0.0
    return float(statistics.linear_regression(ts, ys).slope)


def rss_verdict(
    samples: Sequence[tuple[float, int]],
    *,
    warmup_s: float = RSS_WARMUP_S,
    limit_pct: float = RSS_GROWTH_LIMIT_PCT,
) -> tuple[int | None, float | None, float | None, str]:
    """(baseline KiB, growth %, slope KiB/min, verdict) of one worker's (time, RSS) samples.

    The baseline is the first sample `warmup_s` into the worker's life, or its second
    sample (after its first case) when it lived less.  Growth is the least-squares fit
    over the samples from the baseline on.  It is flagged GROWING only when it passes
    `limit_pct`, the worker lived past `warmup_s` (else it is 'warming up'), and the
    second half still climbs at more than half the first half's slope: memory that
    rises while caches warm and then stays is 'levels off'.
    """
    pts = sorted(samples)
    if len(pts) < 2:
        return (None, None, None, "too few samples")
    t0 = pts[0][0]
    idx = next((i for i, (t, _) in enumerate(pts) if t - t0 >= warmup_s), None)
    warmed = idx is not None
    after = [(t, float(kib)) for t, kib in pts[idx if idx is not None else 1 :]]
    baseline = int(after[0][1])
    if len(after) < 4 or baseline <= 0:
        return (baseline, None, None, "too few samples")
    slope = _slope_per_min(after)
    span_min = (after[-1][0] - after[0][0]) / 60.0
    growth = slope * span_min / baseline * 100.0
    if growth < limit_pct:
        return (baseline, growth, slope, "flat")
    if not warmed:
        # Caches still fill in a worker's first minutes: growth then is no leak yet.
        return (baseline, growth, slope, "warming up")
    half = len(after) // 2
    first, second = _slope_per_min(after[: half + 1]), _slope_per_min(after[half:])
    verdict = "levels off" if second <= max(first, 0.0) / 2 else "GROWING"
    return (baseline, growth, slope, verdict)


def worker_memory(
    records: Sequence[Record], *, warmup_s: float = RSS_WARMUP_S
) -> list[WorkerMemory]:
    """Per worker process: its RSS after each case, and whether it levels off."""
    series: dict[str, list[tuple[float, int]]] = {}
    for rec in records:
        w, rss, t = rec.get("worker"), rec.get("rss_kib"), rec.get("finished_at")
        if w and isinstance(rss, int | float) and isinstance(t, int | float) and rss > 0:
            series.setdefault(str(w), []).append((float(t), int(rss)))
    out = []
    for w, pts in series.items():
        pts.sort()
        baseline, growth, slope, verdict = rss_verdict(pts, warmup_s=warmup_s)
        out.append(
            WorkerMemory(
                worker=w,
                cases=len(pts),
                first_at=pts[0][0],
                last_at=pts[-1][0],
                start_kib=pts[0][1],
                baseline_kib=baseline,
                end_kib=pts[-1][1],
                max_kib=max(k for _, k in pts),
                growth_pct=growth,
                slope_kib_per_min=slope,
                verdict=verdict,
            )
        )
    return sorted(out, key=lambda m: m.first_at)
