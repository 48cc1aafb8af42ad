"""The statistics beside the verdict (stats.py): every function against values computed by hand on small
examples, so a wrong use of scipy (a two-sided p, the wrong zero method, an off-by-one in Holm) fails here.

Hand computations:
- signed-rank, d = [0.5, 1.0, 1.5, 2.0, 2.5]: ranks 1..5 all positive, T+ = 15; of the 2^5 = 32 equally likely
  sign patterns only one reaches 15, so the exact one-sided p is 1/32;
- Walsh averages of the same d: the 15 values (d_i + d_j) / 2, i <= j, listed below; their median is 1.5;
- Holm on [0.01, 0.04, 0.03]: sorted 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running maximum
  0.03, 0.06, 0.06, back in input order [0.03, 0.06, 0.06];
- seeds needed: a loop over n whose power is an integral over the chi-square distribution of the sample
  variance (not scipy's noncentral t), checked against Guenther's closed-form approximation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from hqcbench.report import stats

D = [0.5, 1.0, 1.5, 2.0, 2.5]


# ----------------------------------------------------------------------------------------- signed-rank test
def test_signed_rank_exact_p_all_positive():
    assert stats.signed_rank_p(D, "greater") == pytest.approx(1 / 32)
    assert stats.signed_rank_p(D, "less") == pytest.approx(1.0)  # every pattern has T+ <= 15
    assert stats.signed_rank_p([-v for v in D], "less") == pytest.approx(1 / 32)


def test_signed_rank_one_negative():
    """d = [-0.5, 1, 1.5, 2, 2.5]: T+ = 2 + 3 + 4 + 5 = 14. T+ >= 14 when the negatives' ranks sum to <= 1:
    none negative, or only rank 1 -> 2 / 32; T+ <= 14 is every pattern but the all-positive one -> 31 / 32."""
    d = [-0.5, 1.0, 1.5, 2.0, 2.5]
    assert stats.signed_rank_p(d, "greater") == pytest.approx(2 / 32)
    assert stats.signed_rank_p(d, "less") == pytest.approx(31 / 32)


def test_signed_rank_ties_use_the_exact_permutation_distribution():
    """Five equal differences (the parameter reduction, the same every seed): midranks 3 each, T+ = 15, and
    only the all-positive sign pattern reaches it: 1 / 32 (the normal approximation would say ~0.03 too, but
    by luck). Three tied -0.1s, 0.2, 0.3 (midranks 2, 2, 2, 4, 5): T+ = 9; T+ >= 9 when the negative ranks sum
    to <= 6: {}, {2} x3, {4}, {5}, {2, 2} x3, {2, 2, 2}, {2, 4} x3 -> 13 / 32."""
    assert stats.signed_rank_p([6.08] * 5, "greater") == pytest.approx(1 / 32)
    assert stats.signed_rank_p([-0.1, 0.2, -0.1, 0.3, -0.1], "greater") == pytest.approx(13 / 32)


def test_signed_rank_floating_point_noise_still_ties():
    """(0.3 - 0.2) x 100 and (0.2 - 0.1) x 100 differ in the 16th digit; rounded, they tie as on paper
    (midranks 2, 2, 2, 4, 5; T+ = 13; T+ >= 13 when the negative ranks sum to <= 2: {}, {2} x3 -> 4 / 32)."""
    noisy = [(0.3 - 0.2) * 100, (0.2 - 0.1) * 100, -(0.7 - 0.6) * 100, 20.0, 30.0]
    assert len({abs(v) for v in noisy[:3]}) > 1  # the noise is real
    assert stats.signed_rank_p(noisy, "greater") == pytest.approx(4 / 32)
    assert stats.signed_rank_p(noisy, "greater") == stats.signed_rank_p([10.0, 10.0, -10.0, 20.0, 30.0], "greater")


def test_signed_rank_zeros_pratt():
    """Pratt: zeros stay in the ranking, their ranks count for neither side. [0, 1, 2, 3, 4]: ranks 2..5 all
    positive, T+ = 14, reached only with every nonzero positive: 1 / 2^4. [0, -3, 1, 2]: ranks 2, 3, 4 for
    1, 2, 3; T+ = 2 + 3 = 5; of the 8 patterns of {2, 3, 4}, T+ >= 5 for {2,3}, {2,4}, {3,4}, {2,3,4}: 4 / 8
    (dropping the zero, 'wilcox', ranks 1, 2, 3: T+ = 3 and p = 5 / 8). Every difference zero: p = 1."""
    assert stats.signed_rank_p([0.0, 1.0, 2.0, 3.0, 4.0], "greater") == pytest.approx(1 / 16)
    assert stats.signed_rank_p([0.0, -3.0, 1.0, 2.0], "greater") == pytest.approx(4 / 8)
    assert stats.signed_rank_p([0.0] * 5, "greater") == 1.0
    assert stats.signed_rank_p([1.0], "greater") is None  # one seed: no test


def test_equivalence_is_two_one_sided_tests():
    """|d| < 2 for d = [0.1, -0.2, 0.3, 0, 0.2]: d + 2 all positive (1/32), d - 2 all negative (1/32)."""
    assert stats.equivalence_rank_p([0.1, -0.2, 0.3, 0.0, 0.2], 2.0) == pytest.approx(1 / 32)
    # d + 2 = [3.5, 0.5, 4.5, 2.5, 3] all positive (1/32), but d - 2 = [-0.5, -3.5, 0.5, -1.5, -1]: midranks
    # 1.5, 5, 1.5, 4, 3, T+ = 1.5; P(T+ <= 1.5): no positive, or one of the two 1.5s -> 3 / 32; the larger wins
    assert stats.equivalence_rank_p([1.5, -1.5, 2.5, 0.5, 1.0], 2.0) == pytest.approx(3 / 32)


def test_rank_sum_exact():
    """[1, 2, 3] above [0, -1, -2]: only 1 of the C(6, 3) = 20 splits puts the three largest in a: 1 / 20;
    with ties ([1, 1, 1] vs [0, 0, 0]) the permutation distribution gives the same."""
    assert stats.rank_sum_p([1.0, 2.0, 3.0], [0.0, -1.0, -2.0], "greater") == pytest.approx(1 / 20)
    assert stats.rank_sum_p([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], "greater") == pytest.approx(1 / 20)
    assert stats.rank_sum_p([1.0, 2.0, 3.0], [0.0, -1.0, -2.0], "less") == pytest.approx(1.0)
    assert stats.rank_sum_p([1.0], [0.0, 1.0], "greater") is None


# ----------------------------------------------------------------------------------------- effect sizes
def test_walsh_averages_and_hodges_lehmann():
    by_hand = sorted([0.5, 0.75, 1.0, 1.25, 1.5,  # 0.5 with 0.5, 1.0, 1.5, 2.0, 2.5
                      1.0, 1.25, 1.5, 1.75,  # 1.0 with 1.0 .. 2.5
                      1.5, 1.75, 2.0,  # 1.5 with 1.5 .. 2.5
                      2.0, 2.25,  # 2.0 with 2.0, 2.5
                      2.5])
    assert sorted(stats.walsh_averages(D)) == pytest.approx(by_hand)
    assert stats.hodges_lehmann(D) == pytest.approx(1.5)  # the 8th of 15
    # skewed: [1, 2, 10] -> 1, 1.5, 5.5, 2, 6, 10; median (2 + 5.5) / 2 = 3.75 (the mean, 4.33, follows the 10)
    assert stats.hodges_lehmann([1.0, 2.0, 10.0]) == pytest.approx(3.75)
    assert stats.hodges_lehmann([]) is None


def test_two_sample_shift():
    """Every a_i - b_j of [1, 2, 3] and [0, -1, -2]: 1 2 3 / 2 3 4 / 3 4 5 -> median 3."""
    assert stats.two_sample_shift([1.0, 2.0, 3.0], [0.0, -1.0, -2.0]) == pytest.approx(3.0)


# ----------------------------------------------------------------------------------------- Holm
def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1.0, then capped and non-decreasing
    assert stats.holm([0.02]) == pytest.approx([0.02])  # a family of one: unadjusted
    assert stats.holm([]) == []


# ----------------------------------------------------------------------------------------- seeds needed
def _power_by_hand(delta: float, n: int, alpha: float) -> float:
    """P(mean / (s / sqrt(n)) > t_crit) with mean ~ N(delta sd, sd^2 / n) and (n - 1) s^2 / sd^2 ~ chi2(n - 1):
    P(Z > t_crit sqrt(V / df) - delta sqrt(n)), integrated over V."""
    df = n - 1
    critical = sps.t.ppf(1 - alpha, df)
    value, _ = integrate.quad(lambda v: sps.norm.sf(critical * math.sqrt(v / df) - delta * math.sqrt(n))
                              * sps.chi2.pdf(v, df), 0, np.inf)
    return value


def _seeds_by_hand(delta: float, alpha: float = 0.025, power: float = 0.8) -> int:
    n = 2
    while _power_by_hand(delta, n, alpha) < power:
        n += 1
    return n


@pytest.mark.parametrize("effect, sd", [(1.0, 1.0), (0.5, 1.0), (0.3, 0.2)])
def test_seeds_needed_matches_a_hand_iteration(effect, sd):
    expected = max(5, _seeds_by_hand(effect / sd))
    assert stats.seeds_needed(effect, sd) == expected
    assert stats.t_power(effect, sd, expected) >= 0.8 > stats.t_power(effect, sd, expected - 1) or expected == 5


def test_seeds_needed_known_values():
    """effect = sd: n = 10 (power 0.803 at 10, 0.748 at 9); Guenther's approximation
    (z_0.975 + z_0.8)^2 / delta^2 + z_0.975^2 / 2 = 7.85 + 1.92 = 9.77 agrees; delta = 0.5: 31.40 + 1.92 -> 34."""
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert stats.t_power(1.0, 1.0, 10) == pytest.approx(_power_by_hand(1.0, 10, 0.025), abs=1e-6)
    assert stats.seeds_needed(0.5, 1.0) == 34
    assert stats.seeds_needed(2.0, 1.0) == 5  # 3 would do, but no verdict comes from fewer than 5 seeds
    assert stats.seeds_needed(1.0, 0.0) == 5  # no spread: the minimum
    assert stats.seeds_needed(0.0, 1.0) is None  # no effect: more than the cap
    assert stats.seeds_needed(-1.0, 1.0) is None  # the other side
    assert stats.seeds_needed(0.05, 1.0) is None  # ~3,100 seeds: past the cap of 1000
    assert stats.seeds_needed(0.05, 1.0, cap=5000) == pytest.approx(3142, abs=5)
