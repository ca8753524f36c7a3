"""The experiment statistics against independent computations: numerical integration of the beta posteriors, and
the normal model's closed form by hand."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from gitops_flow.experiments.posterior import beta_beats, binary, compare, summarize


@pytest.mark.parametrize(
    ("ones_a", "n_a", "ones_b", "n_b"),
    [(80, 200, 160, 200), (80, 200, 80, 200), (0, 3, 2, 3), (5, 10, 4, 10), (400, 1000, 415, 1000)],
    ids=["far-better", "alike", "tiny", "worse", "close"],
)
def test_the_beta_chance_is_exact(ones_a: int, n_a: int, ones_b: int, n_b: int) -> None:
    pa, pb = stats.beta(1 + ones_a, 1 + n_a - ones_a), stats.beta(1 + ones_b, 1 + n_b - ones_b)
    expected, _ = integrate.quad(lambda x: pb.pdf(x) * pa.cdf(x), 0, 1, limit=500, points=[ones_a / n_a])
    got = beta_beats(1 + ones_a, 1 + n_a - ones_a, 1 + ones_b, 1 + n_b - ones_b)
    assert got == pytest.approx(expected, abs=1e-6)


def test_the_normal_model_compares_means_by_their_standard_errors() -> None:
    a, b = [3.0, 4.0, 3.0, 2.0, 3.0], [4.0, 5.0, 4.0, 3.0, 5.0]
    compared = compare(a, b, is_binary=binary(a + b))
    assert compared is not None
    se = math.sqrt(stats.tvar(a) / len(a) + stats.tvar(b) / len(b))
    assert compared.chance_to_beat == pytest.approx(stats.norm.cdf((4.2 - 3.0) / se))
    assert compared.expected_lift == pytest.approx(0.4)
    assert compared.low < 1.2 < compared.high


def test_too_few_scores_give_no_comparison_and_an_open_interval() -> None:
    assert compare([], [1.0], is_binary=True) is None
    assert compare([3.0], [4.0, 5.0], is_binary=False) is None
    assert summarize([4.0], is_binary=False).low is None
    one = summarize([1.0, 0.0, 1.0, 1.0], is_binary=True)
    assert (one.count, one.mean) == (4, 0.75) and one.low is not None and one.low < 0.75 < (one.high or 0)


def test_alike_constant_scores_are_a_coin_toss() -> None:
    compared = compare([3.0, 3.0], [3.0, 3.0], is_binary=False)
    assert compared is not None and compared.chance_to_beat == 0.5 and compared.low == compared.high == 0.0
