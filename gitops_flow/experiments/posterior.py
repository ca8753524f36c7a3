"""The statistics of an experiment, Bayesian as GrowthBook's engine: what each arm's scores say about its true
mean, and the chance that one arm beats another (docs/experiments.md says it in plain words).

Scores that are all 0 or 1 (liked or not) follow a beta-binomial model: an arm with ``s`` ones in ``n`` scores has
a Beta(1 + s, 1 + n - s) posterior for its rate (a uniform prior). Other scores follow a normal model: the arm's
mean is Normal(sample mean, sample variance / n). The chance that B beats A is exact for both: the normal model's
from the normal distribution of the difference, the beta model's by Evan Miller's closed form (a sum of as many terms
as B has ones, done at once with numpy), so a report costs milliseconds and reads the same every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

CREDIBLE = 0.95  # the credible intervals' mass


@dataclass(frozen=True, slots=True)
class Summary:
    """One arm's scores for one key: how many, their mean (as observed), and the 95 % credible interval of the true
    mean."""

    count: int
    mean: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Challenger B against baseline A: P(B's true mean > A's), the expected lift of B over A (relative: 0.1 is
    10 % better; None when A's mean is 0) and the 95 % credible interval of B's mean minus A's."""

    chance_to_beat: float
    expected_lift: float | None
    low: float
    high: float


def binary(scores: Sequence[float]) -> bool:
    """Whether every score is 0 or 1 (a liked/disliked key): the beta-binomial model applies."""
    return all(score in (0.0, 1.0) for score in scores)


def summarize(scores: Sequence[float], *, is_binary: bool) -> Summary:
    """The posterior of one arm's true mean; no mean without scores, no interval for a numeric key under 2."""
    n = len(scores)
    if n == 0:
        return Summary(0, None, None, None)
    tail = (1 - CREDIBLE) / 2
    if is_binary:
        ones = sum(scores)
        a, b = 1 + ones, 1 + n - ones
        low, high = stats.beta.ppf([tail, 1 - tail], a, b)
        return Summary(n, ones / n, float(low), float(high))
    mean = float(np.mean(scores))
    if n < 2:
        return Summary(n, mean, None, None)
    error = float(np.std(scores, ddof=1)) / math.sqrt(n)
    low, high = stats.norm.ppf([tail, 1 - tail], loc=mean, scale=max(error, 1e-12))
    return Summary(n, mean, float(low), float(high))


def compare(baseline: Sequence[float], challenger: Sequence[float], *, is_binary: bool) -> Comparison | None:
    """Challenger against baseline; None while either arm has too few scores to say anything (none for a 0/1 key,
    fewer than two for a numeric one)."""
    least = 1 if is_binary else 2
    if len(baseline) < least or len(challenger) < least:
        return None
    if is_binary:
        return _beta(baseline, challenger)
    return _normal(baseline, challenger)


def _beta(baseline: Sequence[float], challenger: Sequence[float]) -> Comparison:
    a1, b1 = 1 + sum(baseline), 1 + len(baseline) - sum(baseline)
    a2, b2 = 1 + sum(challenger), 1 + len(challenger) - sum(challenger)
    chance = beta_beats(a1, b1, a2, b2)
    mean_a, mean_b = a1 / (a1 + b1), a2 / (a2 + b2)
    # the difference's interval by its normal approximation (the two posteriors' means and variances)
    var = a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1)) + a2 * b2 / ((a2 + b2) ** 2 * (a2 + b2 + 1))
    tail = (1 - CREDIBLE) / 2
    low, high = stats.norm.ppf([tail, 1 - tail], loc=mean_b - mean_a, scale=math.sqrt(var))
    return Comparison(chance, mean_b / mean_a - 1, float(low), float(high))


def beta_beats(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1) and X2 ~ Beta(a2, b2), ``a2`` a whole number (Evan Miller, "Formulas for
    Bayesian A/B Testing"): the sum over i < a2 of B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1))."""
    i = np.arange(int(a2), dtype=float)
    terms = special.betaln(a1 + i, b1 + b2) - np.log(b2 + i) - special.betaln(1 + i, b2) - special.betaln(a1, b1)
    return float(min(1.0, max(0.0, np.exp(terms).sum())))


def _normal(baseline: Sequence[float], challenger: Sequence[float]) -> Comparison:
    mean_a, mean_b = float(np.mean(baseline)), float(np.mean(challenger))
    var = float(np.var(baseline, ddof=1)) / len(baseline) + float(np.var(challenger, ddof=1)) / len(challenger)
    delta = mean_b - mean_a
    if var <= 0:  # every score alike in both arms: the difference is known exactly
        chance = 0.5 if delta == 0 else float(delta > 0)
        low = high = delta
    else:
        spread = math.sqrt(var)
        chance = float(stats.norm.sf(0, loc=delta, scale=spread))
        tail = (1 - CREDIBLE) / 2
        low, high = (float(x) for x in stats.norm.ppf([tail, 1 - tail], loc=delta, scale=spread))
    lift = delta / abs(mean_a) if mean_a != 0 else None
    return Comparison(chance, lift, low, high)
