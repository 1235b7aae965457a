"""Campaign statistics against values computed another way (or taken from the literature)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from stress.campaign import (
    quantile,
    rate_of,
    rss_verdict,
    rule_of_three,
    summarize,
    wilson,
)
from stress.campaign.stats import Z95, signatures

pytestmark = pytest.mark.timeout(30)


def wilson_by_roots(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson interval as the two p with (k/n - p)^2 = z^2 p (1 - p) / n (the quadratic)."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Published values (Newcombe 1998, Brown-Cai-DasGupta 2001; z = 1.96).
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=6e-5)
    assert hi == pytest.approx(high, abs=6e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 10, 33, 100, 1000])
def test_wilson_equals_the_roots_of_its_quadratic(n: int) -> None:
    for k in range(0, n + 1, max(1, n // 7)):
        lo, hi = wilson(k, n)
        rlo, rhi = wilson_by_roots(k, n)
        assert lo == pytest.approx(rlo, abs=1e-12)
        assert hi == pytest.approx(rhi, abs=1e-12)
        assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_refuses_impossible_counts_and_is_vacuous_without_cases() -> None:
    with pytest.raises(ValueError, match="failures must be between 0 and n"):
        wilson(11, 10)
    assert wilson(0, 0) == (0.0, 1.0)


def test_rule_of_three() -> None:
    assert rule_of_three(30) == pytest.approx(0.1)
    assert rule_of_three(300) == pytest.approx(0.01)
    assert rule_of_three(2) == 1.0
    r = rate_of(0, 300)
    assert r.upper_rule_of_three == pytest.approx(0.01)
    assert r.text() == "clean in 300 cases: rate < 0.01 (3/300) at 95%"
    assert rate_of(0, 1).text() == "clean in 1 case: rate < 1 (3/1) at 95%"
    assert rate_of(3, 10).upper_rule_of_three is None
    assert rate_of(5, 10).text() == "5/10 = 50.0% (95% CI 23.7% .. 76.3%)"


def test_quantile_interpolates_like_numpy() -> None:
    xs = [float(x) for x in range(1, 11)]
    # numpy.quantile(range(1, 11), q) with the default (linear) method.
    assert quantile(xs, 0.9) == pytest.approx(9.1)
    assert quantile(xs, 0.5) == pytest.approx(5.5)
    assert quantile(list(reversed(xs)), 0.0) == 1.0
    assert quantile(xs, 1.0) == 10.0
    assert quantile([4.0], 0.9) == 4.0
    with pytest.raises(ValueError):
        quantile([], 0.5)


def rec(key: str, variant: str, seed: int, outcome: str, **kw: Any) -> dict[str, Any]:
    expected = kw.pop("expected", "defect" if variant == "bad" else "clean")
    return {
        "key": key,
        "variant": variant,
        "seed": seed,
        "outcome": outcome,
        "expected": expected,
        "matched": outcome == expected,
        "replay": f"demo --variant {variant} --seed {seed}",
        **kw,
    }


def test_summary_per_variant_signatures_and_mismatches() -> None:
    sig_a = {"id": "aaa", "kind": "list-loop", "summary": "walk", "count": 3}
    sig_b = {"id": "bbb", "kind": "crash", "summary": "BUG_ON", "count": 1}
    records = [
        rec("bad/9", "bad", 9, "defect", first_defect_s=0.5, signatures=[sig_a], run_folder="c/9"),
        rec("bad/2", "bad", 2, "defect", first_defect_s=1.5, signatures=[sig_a, sig_b]),
        rec("bad/4", "bad", 4, "defect", first_defect_s=2.5, signatures=[sig_b]),
        rec("bad/5", "bad", 5, "clean"),
        rec("good/1", "good", 1, "clean", ops_per_s=100.0),
        rec("good/2", "good", 2, "clean", ops_per_s=300.0),
        rec("good/3", "good", 3, "error", error="lost"),
        rec("good/4", "good", 4, "defect", first_defect_s=1.0, signatures=[sig_b]),
    ]
    s = summarize(records)
    bad, good = s.groups
    assert (bad.group, bad.cases, bad.defects, bad.clean, bad.errors) == ("bad", 4, 3, 1, 0)
    assert (bad.rate.failures, bad.rate.n) == (3, 4)
    assert bad.first_defect is not None
    assert (bad.first_defect.median, bad.first_defect.max) == (1.5, 2.5)
    assert bad.first_defect.p90 == pytest.approx(2.3)
    # The error counts in neither side of the rate; the defect is a mismatch.
    assert (good.cases, good.defects, good.errors, good.rate.n) == (4, 1, 1, 3)
    assert good.mismatches == 2
    assert good.ops_per_s is not None and good.ops_per_s.median == 200.0
    assert [r["key"] for r in s.mismatched] == ["good/3", "good/4", "bad/5"]  # seed order
    assert [r["key"] for r in s.errors] == ["good/3"]
    assert (s.total, s.matched, s.ok) == (8, 5, False)

    by_id = {x.id: x for x in s.signatures}
    assert set(by_id) == {"aaa", "bbb"}
    # First seed is the lowest seed that showed it, not the first record written.
    assert (by_id["aaa"].cases, by_id["aaa"].occurrences, by_id["aaa"].first_seed) == (2, 6, 2)
    assert by_id["aaa"].replay == "demo --variant bad --seed 2"
    assert (by_id["bbb"].cases, by_id["bbb"].first_seed, by_id["bbb"].groups) == (
        3,
        2,
        ["bad", "good"],
    )
    assert by_id["bbb"].kind == "crash"


def test_signatures_count_a_case_once_even_if_listed_twice() -> None:
    sig = {"id": "x", "kind": "k", "summary": "s", "count": 2}
    out = signatures([rec("v/1", "v", 1, "defect", signatures=[sig, sig])])
    assert (out[0].cases, out[0].occurrences) == (1, 4)


def series(values: list[float], step_s: float = 60.0) -> list[tuple[float, int]]:
    return [(1000.0 + i * step_s, int(v)) for i, v in enumerate(values)]


def test_rss_flat_growing_levelling_and_warming_up() -> None:
    warm = 300.0
    flat = series([100_000, 110_000] + [120_000 + (i % 3) * 500 for i in range(30)])
    assert rss_verdict(flat, warmup_s=warm)[3] == "flat"

    climbing = series([100_000 + i * 2_000 for i in range(40)])
    baseline, growth, slope, verdict = rss_verdict(climbing, warmup_s=warm)
    assert verdict == "GROWING"
    assert baseline == 110_000  # the sample 5 minutes in
    assert slope == pytest.approx(2_000, rel=1e-6)  # KiB per minute
    assert growth == pytest.approx(2_000 * 34 / 110_000 * 100, rel=1e-6)

    # Rises for a while after the baseline, then stays: not a leak.
    plateau = series([100_000 + min(i, 20) * 2_000 for i in range(40)])
    assert rss_verdict(plateau, warmup_s=warm)[3] == "levels off"

    # Everything inside the warm-up: growth is reported but not judged.
    young = series([100_000 + i * 5_000 for i in range(10)], step_s=5.0)
    assert rss_verdict(young, warmup_s=warm)[3] == "warming up"

    assert rss_verdict(series([1, 2, 3]), warmup_s=warm)[3] == "too few samples"


def test_worker_memory_is_per_worker_process() -> None:
    records = [
        rec(f"v/{i}", "v", i, "clean", worker=f"h:{1 + i % 2}", rss_kib=1000 + i, finished_at=i)
        for i in range(10)
    ]
    s = summarize(records, warmup_s=0)
    assert sorted(m.worker for m in s.workers) == ["h:1", "h:2"]
    assert sorted(m.cases for m in s.workers) == [5, 5]
    assert all(not m.flagged for m in s.workers)
