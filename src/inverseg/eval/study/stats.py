"""Statistics of a pairwise preference study: Wilson score interval and the exact two-sided binomial test.

Both are written out here (stdlib only) so that the numbers a study reports can be checked by hand: with
``n`` votes of which ``k`` prefer method A, the rate is ``k/n``; the interval is Wilson's score interval (it
stays inside [0, 1] and behaves for small ``n``, unlike the normal approximation); the p-value tests the null
hypothesis "no preference" (p = 1/2) exactly.
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist, median


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    _check_counts(successes, trials)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    n = trials
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half_width = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # at k = 0 (k = n) the exact lower (upper) bound is 0 (1); the formula leaves floating-point dust there
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == n else min(1.0, centre + half_width)
    return low, high


def binomial_test(successes: int, trials: int) -> float:
    """Exact two-sided binomial test of p = 1/2: the probability of an outcome at most as likely as ``k``.

    Under p = 1/2 every outcome has probability C(n, i) / 2^n, so the sum is done in integers and divided
    once: the result is exact up to the final rounding to a float.  For p = 1/2 this equals
    ``min(1, 2 · P(X ≤ min(k, n−k)))`` and scipy's ``binomtest(k, n).pvalue``.
    """
    _check_counts(successes, trials)
    if trials == 0:
        return 1.0
    observed = math.comb(trials, successes)
    extreme = sum(c for c in (math.comb(trials, i) for i in range(trials + 1)) if c <= observed)
    return float(Fraction(extreme, 2 ** trials))


def _check_counts(successes: int, trials: int) -> None:
    if isinstance(successes, bool) or isinstance(trials, bool) or not (
            isinstance(successes, int) and isinstance(trials, int)):
        raise TypeError("successes and trials must be integers")
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def compare(method_a: str, method_b: str, votes: list[dict], confidence: float = 0.95) -> dict:
    """Summary of the votes between two methods, from A's point of view.

    ``votes`` are rows with at least ``chosen`` (a method name), ``rater``, ``choice`` ("left"/"right") and
    ``ms``.  The left-choice rate is reported too: far from 50 % it points to a position bias.
    """
    n = len(votes)
    wins_a = sum(1 for vote in votes if vote["chosen"] == method_a)
    wins_b = sum(1 for vote in votes if vote["chosen"] == method_b)
    if wins_a + wins_b != n:
        raise ValueError(f"votes between {method_a} and {method_b} name another method")
    low, high = wilson_interval(wins_a, n, confidence)
    return {
        "method_a": method_a,
        "method_b": method_b,
        "votes": n,
        "raters": len({vote["rater"] for vote in votes}),
        "pairs": len({vote["pair_id"] for vote in votes if "pair_id" in vote}),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "rate_a": wins_a / n if n else None,
        "confidence": confidence,
        "ci_low": low,
        "ci_high": high,
        "p_value": binomial_test(wins_a, n),
        "left_rate": sum(1 for vote in votes if vote["choice"] == "left") / n if n else None,
        "median_ms": median(vote["ms"] for vote in votes) if n else None,
    }


def format_comparison(row: dict) -> str:
    """One human-readable line per method pair."""
    a, b, n = row["method_a"], row["method_b"], row["votes"]
    if not n:
        return f"{a} vs {b}: no votes yet"
    level = round(row["confidence"] * 100)
    return (
        f"{a} vs {b}: {a} preferred in {row['wins_a']}/{n} = {row['rate_a']:.1%} "
        f"({level}% Wilson CI {row['ci_low']:.1%}–{row['ci_high']:.1%}), "
        f"two-sided binomial p = {row['p_value']:.4g}; {row['raters']} rater(s), {row['pairs']} pair(s), "
        f"left chosen {row['left_rate']:.0%}, median {row['median_ms'] / 1000:.1f} s"
    )
