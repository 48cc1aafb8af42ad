"""Practical size: a verdict of the interval rule weighed against a threshold of practical relevance.

Why a module of its own: the interval rule (stats.py) answers "is there a difference?"; a referee also asks
"does it matter?". Each claim carries its threshold (claims.py; docs/report.md justifies each), and this one
rule turns a settled-but-tiny difference, or an unsettled one bounded inside the threshold, into
"negligible", so 60 saved parameters out of 142,590 never read as "fewer parameters: holds".
"""
from __future__ import annotations

from hqcbench.report.stats import HOLDS, INCONCLUSIVE, NEGLIGIBLE, Interval, Verdict


def practical_verdict(verdict: Verdict, interval: Interval | None, negligible: float | None,
                      reference: float = 0.0, ratio: bool = False, partial: str = "") -> Verdict:
    """The interval rule's verdict weighed by practical size: a "holds" (or the partial "faster, but not
    5-12x") whose point estimate lies within ``negligible`` of ``reference``, and an "inconclusive" whose
    whole interval does, read "negligible". ``ratio``: the quantity is a factor, ``negligible`` a factor too
    (1.1 = within 10 % of ``reference``). "does not hold" stays: the claimed direction is refuted whatever
    the size. Nothing changes without a threshold or an interval."""
    if negligible is None or interval is None or interval.low is None or interval.high is None:
        return verdict

    def inside(value: float) -> bool:
        if ratio:
            return value > 0 and reference / negligible < value < reference * negligible
        return abs(value - reference) < negligible

    band = f"within {negligible:g}x of {reference:g}x" if ratio else f"within +-{negligible:g} of {reference:g}"
    if verdict.status in (HOLDS, partial or HOLDS) and inside(interval.mean):
        return Verdict(NEGLIGIBLE, f"{verdict.reason}, but the mean lies {band}, the threshold of practical "
                       "relevance")
    if verdict.status == INCONCLUSIVE and inside(interval.low) and inside(interval.high):
        return Verdict(NEGLIGIBLE, f"the whole 95 % interval lies {band}, the threshold of practical relevance")
    return verdict
