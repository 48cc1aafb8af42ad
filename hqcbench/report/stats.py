"""Intervals and verdicts for the report: 95 % t-intervals over seeds, bootstrap over test examples,
and directional verdicts on paired per-seed differences.

Why a module of its own: the report's every conclusion rests on these few rules, so they live in one
small place with unit tests that compare them with hand-computed values.

Rules (also in docs/report.md):
- several seeds: mean +- Student-t 95 % interval (scipy.stats.t), df = n - 1;
- one run: a bootstrap interval over test examples (percentile, seeded numpy generator);
- a verdict needs at least ``MIN_SEEDS`` paired seeds and data; a directional claim *holds* when the
  whole interval lies on the claimed side of the threshold, *does not hold* when it lies wholly on
  the other side, and is *inconclusive* otherwise;
- a claim with a published lower bound (5-12x faster) holds only when the whole interval lies above
  that bound; above the neutral threshold (1x) but not above the bound it gets a partial verdict
  ("faster, but not 5-12x"), so a modest speed-up is not read as the published one.

Beside the verdict (never changing it), what a skeptical reader asks for: a rank test that does not lean
on normality (Wilcoxon signed-rank on paired differences, rank-sum on independent samples), the
Hodges-Lehmann shift that goes with it, Holm-adjusted p-values across the report's claims, and how many
seeds an unsettled claim would need (t-test power at the verdict's own level).

Size: a little over 400 lines because the intervals, the verdict rules and the rank statistics beside
them share their helpers (paired values, the confidence level, the None checks of an interval's ends);
split, each half would import the other's internals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations_with_replacement
from typing import Literal, Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
MIN_SEEDS = 5
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
NO_VERDICT = "no verdict"
NO_DATA = "not measured here: no data"
# A difference the interval rule settles (or bounds) inside a claim's threshold of practical relevance
# (claims.py, justified in docs/report.md): true, perhaps, but too small to matter.
NEGLIGIBLE = "negligible"
# The runs cannot decide the claim at all (a CPU-use claim on runs pinned to one thread).
NOT_TESTABLE = "not testable here"

# The verdict's rule (the whole two-sided 95 % interval on the claimed side) is a one-sided t-test at 2.5 %:
# seeds needed are computed at that level, so "n seeds" means "n seeds for this report to say holds".
ONE_SIDED_ALPHA = (1 - CONFIDENCE) / 2
POWER = 0.8
SEEDS_CAP = 1000  # beyond this, "more than 1000 seeds": the effect is ~0 at the observed spread
DECIMALS = 10  # differences are rounded before ranking, so 0.991 - 0.990 and 0.992 - 0.991 tie as on paper
EXACT_SIGNS_MAX = 16  # with ties or zeros, all 2^n sign flips are enumerated up to this n (65,536)
EXACT_SPLITS_MAX = 200_000  # rank-sum with ties: all C(n1 + n2, n1) splits enumerated up to this count

# Per-seed or per-example values: a list, or a numpy array of them.
Values = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval. ``method``: t (over seeds), bootstrap (over test examples),
    welch (difference of two independent means), single (one value, no interval)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    method: str

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    def scaled(self, factor: float) -> "Interval":
        """The same interval in another unit (e.g. fraction -> percent)."""
        def mul(v: float | None) -> float | None:
            return None if v is None else v * factor
        lo, hi = mul(self.low), mul(self.high)
        if factor < 0 and lo is not None:
            lo, hi = hi, lo
        return Interval(self.mean * factor, lo, hi, self.n, self.method)

    def mapped(self, fn) -> "Interval":
        """Apply a monotone increasing function to mean and bounds (e.g. exp of a log-ratio)."""
        return Interval(fn(self.mean), None if self.low is None else fn(self.low),
                        None if self.high is None else fn(self.high), self.n, self.method)


def _clean(values: Values) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def t_interval(values: Values, confidence: float = CONFIDENCE) -> Interval | None:
    """Mean and Student-t interval of the mean over seeds; None without data, no interval for n = 1."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return None
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1, "single")
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t")


def bootstrap_interval(samples: Values, confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval | None:
    """Percentile bootstrap of the mean of per-example values (0/1 correctness, or paired differences
    in {-1, 0, 1}).

    Resampling n examples with replacement from values taking k distinct levels is the same as drawing
    the level counts from Multinomial(n, observed level frequencies); drawing the counts is exact and
    needs k numbers per resample instead of n, so 10,000 resamples of a 10,000-example test set take
    milliseconds. (Hand-written because numpy/scipy resample examples, which is n times the work.)
    """
    x = _clean(samples)
    n = len(x)
    if n == 0:
        return None
    levels, counts = np.unique(x, return_counts=True)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, counts / n, size=resamples)
    means = drawn @ levels / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(low), float(high), n, "bootstrap")


def welch_interval(a: Values, b: Values, confidence: float = CONFIDENCE) -> Interval | None:
    """mean(a) - mean(b) for two independent samples, Welch's t interval (scipy). n = min(len)."""
    xa, xb = _clean(a), _clean(b)
    if len(xa) == 0 or len(xb) == 0:
        return None
    diff = float(xa.mean() - xb.mean())
    n = min(len(xa), len(xb))
    if len(xa) < 2 or len(xb) < 2:
        return Interval(diff, None, None, n, "single")
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    if va + vb == 0:
        return Interval(diff, diff, diff, n, "welch")
    ci = sps.ttest_ind(xa, xb, equal_var=False).confidence_interval(confidence)
    return Interval(diff, float(ci.low), float(ci.high), n, "welch")


@dataclass(frozen=True)
class Verdict:
    status: str  # HOLDS | DOES_NOT_HOLD | INCONCLUSIVE | NO_VERDICT | NO_DATA, or a joint/partial wording
    reason: str
    summary: str = ""  # the short form for the at-a-glance table (default: the status)

    @property
    def short(self) -> str:
        return self.summary or self.status


def seeds_of(interval: Interval) -> int:
    """Seeds behind an interval (a bootstrap interval comes from one run, whatever its n examples)."""
    return 1 if interval.method == "bootstrap" else interval.n


def _precheck(interval: Interval | None, min_seeds: int, missing: str) -> Verdict | None:
    if interval is None:
        return Verdict(NO_DATA, missing or "no runs with this metric for both arms")
    seeds = seeds_of(interval)
    if seeds < min_seeds:
        return Verdict(NO_VERDICT, f"{seeds} paired seed(s); a verdict needs at least {min_seeds}")
    if not interval.has_interval:
        return Verdict(NO_VERDICT, "no interval")
    return None


def directional_verdict(interval: Interval | None, direction: str, threshold: float = 0.0,
                        min_seeds: int = MIN_SEEDS, missing: str = "") -> Verdict:
    """direction 'greater': the claim is quantity > threshold; 'less': quantity < threshold."""
    early = _precheck(interval, min_seeds, missing)
    if early is not None:
        return early
    assert interval is not None and interval.low is not None and interval.high is not None  # _precheck
    above, below = interval.low > threshold, interval.high < threshold
    claimed, other = (above, below) if direction == "greater" else (below, above)
    side = ">" if direction == "greater" else "<"
    if claimed:
        return Verdict(HOLDS, f"the whole 95 % interval is {side} {threshold:g}")
    if other:
        return Verdict(DOES_NOT_HOLD, f"the whole 95 % interval is on the other side of {threshold:g}")
    return Verdict(INCONCLUSIVE, f"the 95 % interval contains {threshold:g}")


def floor_verdict(interval: Interval | None, threshold: float, floor: float, partial: str,
                  min_seeds: int = MIN_SEEDS, missing: str = "") -> Verdict:
    """A 'greater' claim with a published lower bound ``floor`` (e.g. 5x of "5-12x faster"): holds when the
    whole interval is above ``floor``; ``partial`` when it is above ``threshold`` (1x) but not above
    ``floor``; otherwise as :func:`directional_verdict` at ``threshold``."""
    verdict = directional_verdict(interval, "greater", threshold, min_seeds, missing)
    if verdict.status != HOLDS:
        return verdict
    assert interval is not None and interval.low is not None  # a verdict that holds has an interval
    if interval.low > floor:
        return Verdict(HOLDS, f"the whole 95 % interval is > {floor:g}")
    return Verdict(partial, f"the whole 95 % interval is > {threshold:g} but not > {floor:g}")


def equivalence_verdict(interval: Interval | None, margin: float, min_seeds: int = MIN_SEEDS,
                        missing: str = "") -> Verdict:
    """A 'comparable' claim: holds when the interval lies inside (-margin, margin), does not hold when it
    lies wholly outside, inconclusive otherwise."""
    early = _precheck(interval, min_seeds, missing)
    if early is not None:
        return early
    assert interval is not None and interval.low is not None and interval.high is not None  # _precheck
    if -margin < interval.low and interval.high < margin:
        return Verdict(HOLDS, f"the whole 95 % interval is within +-{margin:g}")
    if interval.low >= margin or interval.high <= -margin:
        return Verdict(DOES_NOT_HOLD, f"the whole 95 % interval is outside +-{margin:g}")
    return Verdict(INCONCLUSIVE, f"the 95 % interval crosses +-{margin:g}")


def magnitude_inside(interval: Interval | None, low: float | None, high: float | None) -> str:
    """Whether the published magnitude (a point when low == high, else a range) lies in our interval."""
    if interval is None or low is None or high is None:
        return "n/a"
    if interval.low is None or interval.high is None:
        return "no interval"
    if low == high:
        return "yes" if interval.low <= low <= interval.high else "no"
    if interval.low <= high and low <= interval.high:
        return "overlaps"
    return "no"


# ------------------------------------------------------------------------------------ beside the verdict
@dataclass(frozen=True)
class RankEvidence:
    """The rank test, effect size and seeds needed shown beside one comparison's t-interval.

    ``test``: "signed-rank" (paired seeds), "signed-rank TOST" (equivalence: two one-sided tests at the
    margins, p the larger), "rank-sum" (independent samples: the growth rows) or "" (not computed: one
    seed, or no data). ``shift``: Hodges-Lehmann estimate in the claim's display unit (a factor for speed).
    ``needed_asked``: the verdict is unsettled (inconclusive, too few seeds, or the partial speed verdict),
    so ``seeds_needed`` was computed; None there means more than ``SEEDS_CAP``.
    """

    test: str = ""
    p: float | None = None
    shift: float | None = None
    seeds_needed: int | None = None
    needed_asked: bool = False


def _tidy(values: Values) -> np.ndarray:
    """Finite values, rounded to ``DECIMALS``: floating-point noise must not break a tie or hide a zero."""
    return np.round(_clean(values), DECIMALS)


def _alternative(direction: str) -> Literal["greater", "less"]:
    """scipy's one-sided ``alternative`` for a direction ('greater' or 'less')."""
    if direction == "greater":
        return "greater"
    if direction == "less":
        return "less"
    raise ValueError(f"direction must be 'greater' or 'less', not {direction!r}")


def _every_permutation() -> sps.PermutationMethod:
    """The exact permutation distribution: scipy enumerates every permutation when n_resamples is inf."""
    return sps.PermutationMethod(n_resamples=np.inf)  # type: ignore[call-overload]  # stubs: int only


def signed_rank_p(differences: Values, direction: str) -> float | None:
    """One-sided Wilcoxon signed-rank p-value of paired differences (scipy.stats.wilcoxon), H1: the
    differences lean to ``direction`` ('greater' or 'less') of 0.

    Why a rank test beside the t-interval: with 5 seeds the t-interval leans on normality that no one can
    check; the signed-rank test needs only symmetry. Zeros (a seed where both arms are equal): Pratt's
    method, ``zero_method='pratt'`` (Pratt 1959): the zero stays in the ranking, so every nonzero
    difference is ranked among all the seeds that ran, not only among those that differed, and the zero's
    own rank counts for neither side; dropping zeros ('wilcox') would judge the remaining seeds as if the
    tied ones never ran ('zsplit' gives Pratt's p under the permutation distribution: it only adds a
    constant to the statistic). Zeros are rare here (continuous metrics) and come from equal discrete
    counts, e.g. the same robust accuracy for both arms. Without ties or zeros the
    exact null distribution is used (5 positive differences: p = 1/32); with ties or zeros, the exact
    permutation distribution of the signed ranks (every sign flip, up to ``EXACT_SIGNS_MAX`` values),
    beyond that the normal approximation. Every difference zero: p = 1 (no evidence either way). None
    with fewer than 2 values."""
    d = _tidy(differences)
    if len(d) < 2:
        return None
    if not np.any(d):
        return 1.0
    ties = len(np.unique(np.abs(d))) < len(d) or not np.all(d)
    method: Literal["exact", "asymptotic"] | sps.PermutationMethod
    if not ties:
        method = "exact"
    elif len(d) <= EXACT_SIGNS_MAX:
        method = _every_permutation()
    else:
        method = "asymptotic"
    # scipy documents method="asymptotic" for wilcoxon; its stubs list it only for keepdims=True
    result = sps.wilcoxon(d, zero_method="pratt", alternative=_alternative(direction),  # type: ignore[call-overload]
                          method=method)
    return float(result.pvalue)


def equivalence_rank_p(differences: Values, margin: float) -> float | None:
    """An equivalence claim (|difference| < margin) as two one-sided signed-rank tests (TOST): d + margin
    > 0 and d - margin < 0; the p-value is the larger of the two, since both must reject."""
    d = _tidy(differences)
    low, high = signed_rank_p(d + margin, "greater"), signed_rank_p(d - margin, "less")
    return None if low is None or high is None else max(low, high)


def rank_sum_p(a: Values, b: Values, direction: str) -> float | None:
    """One-sided Wilcoxon rank-sum (Mann-Whitney U) p-value of two independent samples, H1: ``a`` lies to
    ``direction`` of ``b``. For the growth rows, whose two gains come from different datasets (no pairing):
    the rank counterpart of their Welch interval. Exact without ties; with ties, every split of the pooled
    values enumerated (up to ``EXACT_SPLITS_MAX``), beyond that the normal approximation."""
    xa, xb = _tidy(a), _tidy(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    pooled = np.concatenate([xa, xb])
    method: Literal["exact", "asymptotic"] | sps.PermutationMethod
    if len(np.unique(pooled)) == len(pooled):
        method = "exact"
    elif math.comb(len(pooled), len(xa)) <= EXACT_SPLITS_MAX:
        method = _every_permutation()
    else:
        method = "asymptotic"
    return float(sps.mannwhitneyu(xa, xb, alternative=_alternative(direction), method=method).pvalue)


def walsh_averages(differences: Values) -> np.ndarray:
    """Every (d_i + d_j) / 2 with i <= j (n (n + 1) / 2 values): the averages the signed-rank test ranks
    implicitly, and whose median is the Hodges-Lehmann estimate."""
    d = _clean(differences)
    return np.asarray([(a + b) / 2 for a, b in combinations_with_replacement(d, 2)], dtype=float)


def hodges_lehmann(differences: Values) -> float | None:
    """Paired Hodges-Lehmann shift: the median of the Walsh averages, in the differences' unit.

    Why beside the mean: it is the effect size the signed-rank test estimates, and one wild seed moves it
    far less than it moves the mean (5 seeds: a mean can be one seed's story)."""
    walsh = walsh_averages(differences)
    return None if len(walsh) == 0 else float(np.median(walsh))


def two_sample_shift(a: Values, b: Values) -> float | None:
    """Two-sample Hodges-Lehmann shift: the median of every a_i - b_j (the rank-sum test's estimate)."""
    xa, xb = _clean(a), _clean(b)
    if len(xa) == 0 or len(xb) == 0:
        return None
    return float(np.median(np.subtract.outer(xa, xb)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the input's order: the k-th smallest p (k = 1..m) times m - k + 1,
    made non-decreasing, capped at 1.

    Why Holm: a report shows dozens of claims, and a reader scans them for one that holds; Holm controls
    the chance of any false "holds" among them (family-wise error) under any dependence between the claims
    (they share runs), and is uniformly more powerful than Bonferroni."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out.tolist()


def t_power(effect: float, sd: float, n: int, alpha: float = ONE_SIDED_ALPHA) -> float:
    """Power of the one-sided one-sample (paired) t-test at level ``alpha`` with ``n`` seeds, for a true
    mean difference ``effect`` (in the claimed direction) and spread ``sd``: P(T > t(1 - alpha, n - 1))
    with T noncentral t, df = n - 1, noncentrality effect / sd * sqrt(n) (scipy.stats.nct)."""
    df = n - 1
    critical = float(sps.t.ppf(1 - alpha, df))
    return float(sps.nct.sf(critical, df, effect / sd * math.sqrt(n)))


def seeds_needed(effect: float, sd: float, alpha: float = ONE_SIDED_ALPHA, power: float = POWER,
                 cap: int = SEEDS_CAP, min_n: int = MIN_SEEDS) -> int | None:
    """Seeds for the claim to hold with probability ``power`` if the observed mean difference ``effect``
    (in the claimed direction: positive supports the claim) and spread ``sd`` were the truth; None when
    more than ``cap`` would be needed (an effect of ~0, or on the other side).

    Why this level: at ``alpha`` = 2.5 % one-sided, a rejecting t-test is exactly a 95 % interval wholly on
    the claimed side, the report's "holds". At least ``min_n``: no verdict comes from fewer seeds. The
    search starts at the normal-approximation n, (z_alpha + z_power)^2 (sd / effect)^2, which the t-test
    never beats, and steps up until the noncentral-t power is reached."""
    if effect <= 0 or not math.isfinite(effect) or not math.isfinite(sd):
        return None
    if sd == 0:
        return min_n
    z = float(sps.norm.ppf(1 - alpha) + sps.norm.ppf(power))
    n = max(2, math.ceil((z * sd / effect) ** 2))
    while n <= cap:
        if t_power(effect, sd, n, alpha) >= power:
            return max(n, min_n)
        n += 1
    return None
