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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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
        return None if not self.has_interval else (self.high - self.low) / 2

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


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
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


def bootstrap_interval(samples: Sequence[float], confidence: float = CONFIDENCE,
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


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
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
    if -margin < interval.low and interval.high < margin:
        return Verdict(HOLDS, f"the whole 95 % interval is within +-{margin:g}")
    if interval.low >= margin or interval.high <= -margin:
        return Verdict(DOES_NOT_HOLD, f"the whole 95 % interval is outside +-{margin:g}")
    return Verdict(INCONCLUSIVE, f"the 95 % interval crosses +-{margin:g}")


def magnitude_inside(interval: Interval | None, low: float | None, high: float | None) -> str:
    """Whether the published magnitude (a point when low == high, else a range) lies in our interval."""
    if interval is None or low is None or high is None:
        return "n/a"
    if not interval.has_interval:
        return "no interval"
    if low == high:
        return "yes" if interval.low <= low <= interval.high else "no"
    if interval.low <= high and low <= interval.high:
        return "overlaps"
    return "no"
