"""Preference-study statistics against hand-computed values (and scipy for the binomial test)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from inverseg.eval.study import StudyStore, binomial_test, summarize, wilson_interval
from inverseg.eval.study.stats import compare, format_comparison


@pytest.mark.parametrize("k, n, low, high", [
    # p̂ = k/n, z = 1.95996: centre (p̂ + z²/2n)/(1 + z²/n) ± z/(1 + z²/n)·sqrt(p̂(1−p̂)/n + z²/4n²)
    (8, 10, 0.4902, 0.9433),
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 1, 0.2065, 1.0),
    (60, 100, 0.5020, 0.6906),
])
def test_wilson_interval_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edges_and_levels():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    narrow, wide = wilson_interval(8, 10, 0.80), wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)
    with pytest.raises(TypeError):
        wilson_interval(1.0, 10)


@pytest.mark.parametrize("k, n, expected", [
    (9, 10, 0.021484375),       # 2·(C(10,0) + C(10,1)) / 2¹⁰ = 22/1024
    (1, 10, 0.021484375),
    (7, 10, 0.34375),           # 2·(1 + 10 + 45 + 120) / 1024
    (10, 10, 0.001953125),      # 2/1024
    (5, 10, 1.0),
    (4, 6, 0.6875),             # 2·(1 + 6 + 15) / 64
    (0, 0, 1.0),
    (1, 1, 1.0),
])
def test_binomial_test_hand_computed(k, n, expected):
    assert binomial_test(k, n) == expected


def test_binomial_test_matches_scipy():
    for n in range(1, 41):
        for k in range(n + 1):
            assert binomial_test(k, n) == pytest.approx(binomtest(k, n).pvalue, rel=1e-12, abs=1e-300)
    assert binomial_test(530, 1000) == pytest.approx(binomtest(530, 1000).pvalue, rel=1e-9)
    with pytest.raises(ValueError):
        binomial_test(-1, 3)


def test_compare_and_format():
    votes = [{"chosen": "crn", "rater": "r1", "choice": "left", "ms": 1000, "pair_id": 1}] * 8 + \
            [{"chosen": "sims", "rater": "r2", "choice": "right", "ms": 3000, "pair_id": 2}] * 2
    row = compare("crn", "sims", votes)
    assert (row["votes"], row["wins_a"], row["wins_b"], row["raters"], row["pairs"]) == (10, 8, 2, 2, 2)
    assert row["rate_a"] == 0.8 and row["p_value"] == 0.109375  # 2·(1 + 10 + 45)/1024
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert row["left_rate"] == 0.8 and row["median_ms"] == 1000
    line = format_comparison(row)
    assert line.startswith("crn vs sims: crn preferred in 8/10 = 80.0% (95% Wilson CI 49.0%–94.3%)")
    assert "p = 0.1094" in line and "2 rater(s)" in line
    assert format_comparison(compare("crn", "sims", [])) == "crn vs sims: no votes yet"
    with pytest.raises(ValueError, match="another method"):
        compare("crn", "pix2pixhd", votes)


def test_summarize_groups_swapped_studies(tmp_path):
    """Studies of (a, b) and (b, a) in one database are one comparison, from the first study's side."""
    store = StudyStore(tmp_path / "s.sqlite")
    first = store.add_pairs(store.ensure_study("a", "b"), [("x", "a/x.png", "b/x.png")])
    second = store.add_pairs(store.ensure_study("b", "a"), [("y", "b/y.png", "a/y.png")])
    other = store.add_pairs(store.ensure_study("a", "c"), [("x", "a/x.png", "c/x.png")])
    import random
    rng = random.Random(1)
    for pair_ids, choice in ((first, "left"), (second, "left"), (other, "right")):
        trial = store.next_trial("r1", pair_ids, rng)
        store.record_vote(trial["id"], choice, 500)
    summary = summarize(store)
    assert summary["votes"] == 3 and summary["raters"] == 1
    rows = {(row["method_a"], row["method_b"]): row for row in summary["comparisons"]}
    assert set(rows) == {("a", "b"), ("a", "c")}
    assert rows[("a", "b")]["votes"] == 2 and rows[("a", "c")]["votes"] == 1
    assert rows[("a", "b")]["wins_a"] + rows[("a", "b")]["wins_b"] == 2
