"""Judging a published claim: its quantity over paired seeds against each classical arm, and one verdict.

Why a module of its own: the published claims say the *circuit* helps. The CNN is the published
baseline, but the control arm (the same network with the circuit replaced by Linear+tanh) is the one
that isolates the circuit; so every claim is judged twice, hybrid vs cnn and hybrid vs control, and
holds only when it holds against both. The rule that joins the two verdicts, and its wording, live
here, apart from the claims as data (claims.py) and the interval rules (stats.py).

Joining the two verdicts:
- both the same: that verdict, "against cnn and control";
- holds against one only: "holds against cnn only: the Linear+tanh control does as well" (or does
  better, or too few seeds), and the mirror case;
- neither holds: the weakest of the two (does not hold, then no verdict, then inconclusive, then a
  partial verdict such as "faster, but not 5-12x");
- one arm has no data (e.g. no control runs): the other's verdict, "not checked against the control".

Beside each comparison's interval (never changing its verdict) stands its rank evidence (stats.py): the
one-sided signed-rank p-value of the per-seed values against the value the claim must clear (the 5x floor
for speed, on the log scale; the margins for an equivalence), the Hodges-Lehmann shift, and for an
unsettled verdict the seeds it would need; the growth rows, whose gains are independent samples, get the
rank-sum test instead.

The robustness claims take one more step, in masking_gate.py: which metric stands for "ours" (the worst case
over every attack, else PGD) and whether the runs' masking checks let the verdict settle; it reuses
``compare`` and ``join_verdicts`` from here, so the interval rules stay one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from hqcbench.report.claims import DATASET_LABELS, Claim
from hqcbench.report.practical import practical_verdict
from hqcbench.report.stats import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_SEEDS,
    NEGLIGIBLE,
    NO_DATA,
    NO_VERDICT,
    NOT_TESTABLE,
    Interval,
    RankEvidence,
    Verdict,
    bootstrap_interval,
    directional_verdict,
    equivalence_rank_p,
    equivalence_verdict,
    floor_verdict,
    hodges_lehmann,
    magnitude_inside,
    rank_sum_p,
    seeds_needed,
    signed_rank_p,
    t_interval,
    two_sample_shift,
    welch_interval,
)

COMPARED = ("cnn", "control")  # the classical arms every claim is judged against, published baseline first
ARM_LABELS = {"cnn": "cnn", "control": "the Linear+tanh control"}
# When neither comparison holds, the joint verdict is the first of these that either comparison has.
WEAKEST_FIRST = (NOT_TESTABLE, DOES_NOT_HOLD, NO_VERDICT, INCONCLUSIVE, NEGLIGIBLE)


@dataclass(frozen=True)
class Pairs:
    """Per-seed values of one metric for hybrid and the arm it is compared with (same seeds only)."""

    seeds: list[int]
    hybrid: list[float]
    other: list[float]
    run_ids: list[str]


class PairSource(Protocol):
    def pairs(self, dataset: str, protocol: str, metric: str, other: str = "cnn") -> tuple[Pairs | None, str]:
        """(pairs, '') or (None, why there is no data)."""

    def correct(self, run_id: str) -> np.ndarray | None:
        """Per-test-example 0/1 correctness of a run (test_correct.txt), if logged."""


@dataclass(frozen=True)
class Comparison:
    """The claim's quantity for hybrid vs one classical arm, in the claim's display unit."""

    other: str
    interval: Interval | None
    verdict: Verdict
    per_seed: list[float] = field(default_factory=list)  # per seed, in seed order (growth: per dataset)
    labels: list[str] = field(default_factory=list)  # the seed (or dataset) of each per_seed value
    run_ids: list[str] = field(default_factory=list)
    magnitude: str = "n/a"  # is the published magnitude inside our interval (vs cnn only: the published baseline)
    note: str = ""  # e.g. which proxy datasets are missing
    evidence: RankEvidence = RankEvidence()  # rank test, Hodges-Lehmann shift, seeds needed (beside the verdict)
    metric: str = ""  # the metric compared, where it is not the claim's (robustness: the fallback to PGD)
    masking: str = ""  # robustness: the masking flags of both arms ("hybrid: converged in 2/5 seeds")
    detail: str = ""  # shown in the detailed table only (robustness: seeds left out, EOT)
    absolute: str = ""  # the practical size in absolute terms where the unit is relative (parameters)
    # (label, interval in display units, run ids) of measures shown beside the verdict's own number
    # (robustness: the published measure and its clamp alone), never judged on
    beside: tuple[tuple[str, Interval, tuple[str, ...]], ...] = ()

    @property
    def n(self) -> int:
        """Paired seeds behind the interval (a bootstrap over test examples is one run)."""
        if self.interval is None:
            return 0
        return 1 if self.interval.method == "bootstrap" else self.interval.n


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    protocol: str
    metric: str | None
    comparisons: dict[str, Comparison]  # COMPARED arm -> comparison
    verdict: Verdict  # the joint verdict

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r for c in self.comparisons.values() for r in c.run_ids))

    @property
    def has_data(self) -> bool:
        return any(c.interval is not None for c in self.comparisons.values())

    @property
    def shown(self) -> bool:
        """Worth a line of its own: it has data, or some of the data it needs (the proxy with one dataset)."""
        return self.has_data or any(c.note for c in self.comparisons.values())

    @property
    def interval(self) -> Interval | None:
        """hybrid vs cnn (the published comparison)."""
        return self.comparisons["cnn"].interval


def paired_interval(quantity: str, pairs: Pairs, metric: str, source: PairSource | None) -> Interval | None:
    """The claim's quantity over the paired seeds, in the metric's unit (before ``Claim.scale``).

    One seed: a bootstrap over test examples where per-example results exist (test accuracy), else the
    single value without an interval."""
    h, c = np.asarray(pairs.hybrid, float), np.asarray(pairs.other, float)
    if quantity == "diff":
        if len(h) == 1 and metric == "test_acc" and source is not None:
            a, b = source.correct(pairs.run_ids[0]), source.correct(pairs.run_ids[1])
            if a is not None and b is not None and len(a) == len(b):
                return bootstrap_interval(a.astype(float) - b.astype(float))
        return t_interval(h - c)
    if quantity == "speedup":  # geometric mean of c / h: the t-interval is taken on the log scale
        ok = (h > 0) & (c > 0)
        iv = t_interval(np.log(c[ok] / h[ok]))
        return None if iv is None else iv.mapped(math.exp)
    if quantity == "reduction":
        ok = c != 0
        return t_interval((c[ok] - h[ok]) / c[ok] * 100.0)
    raise ValueError(f"unknown quantity {quantity!r}")


def per_seed_values(quantity: str, pairs: Pairs, scale: float) -> list[float]:
    """The quantity of each paired seed, in display units (what the interval summarises)."""
    out = []
    for h, c in zip(pairs.hybrid, pairs.other):
        if quantity == "diff":
            out.append((h - c) * scale)
        elif quantity == "speedup":
            out.append(c / h if h > 0 else math.nan)
        else:  # reduction
            out.append((c - h) / c * 100.0 if c else math.nan)
    return out


def _label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def _unsettled(claim: Claim, verdict: Verdict) -> bool:
    """More seeds could still make it hold: inconclusive, too few seeds, or faster but not above 5x."""
    return verdict.status in (INCONCLUSIVE, NO_VERDICT) or bool(claim.partial and verdict.status == claim.partial)


def paired_evidence(claim: Claim, per_seed: list[float], verdict: Verdict) -> RankEvidence:
    """Rank test, Hodges-Lehmann shift and seeds needed of a paired comparison, from its per-seed values in
    display units. Speed is tested on the log of the factor (where its t-interval lives) against the
    published floor (5x: what "holds" requires), and its shift is shown as a factor again."""
    values = np.asarray(per_seed, float)
    values = values[np.isfinite(values)]
    log_scale = claim.quantity == "speedup"
    if log_scale:
        values = np.log(values[values > 0])
    if len(values) < 2:
        return RankEvidence()
    reference = claim.floor if claim.floor is not None else claim.threshold
    if log_scale:
        reference = math.log(reference)
    shift = hodges_lehmann(values)
    if log_scale and shift is not None:
        shift = math.exp(shift)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if claim.direction == "equivalent":
        test, p, effect = "signed-rank TOST", equivalence_rank_p(values, claim.margin), claim.margin - abs(mean)
    else:
        sign = 1.0 if claim.direction == "greater" else -1.0
        test, p, effect = "signed-rank", signed_rank_p(values - reference, claim.direction), sign * (mean - reference)
    asked = _unsettled(claim, verdict)
    return RankEvidence(test, p, shift, seeds_needed(effect, sd) if asked else None, asked)


def growth_evidence(claim: Claim, hard: np.ndarray, easy: np.ndarray) -> RankEvidence:
    """The growth rows compare two datasets' gains, independent samples: the rank-sum test and the two-sample
    shift, in display units (no seeds-needed estimate: that would be a two-sample power question). Nothing
    with fewer than 2 seeds on either dataset: no test, and a shift without one would stand alone."""
    a, b = np.asarray(hard, float) * claim.scale, np.asarray(easy, float) * claim.scale
    p = rank_sum_p(a, b, claim.direction)
    return RankEvidence() if p is None else RankEvidence("rank-sum", p, two_sample_shift(a, b))


def _gains(claim: Claim, protocol: str, metric: str, source: PairSource,
           other: str) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """hybrid - other per seed on each dataset of a growth claim that has pairs; why the others have none."""
    gains, whys, run_ids = {}, {}, []
    for dataset in claim.datasets:
        pairs, why = source.pairs(dataset, protocol, metric, other)
        if pairs is None:
            whys[dataset] = why
            continue
        gains[dataset] = np.asarray(pairs.hybrid, float) - np.asarray(pairs.other, float)
        run_ids += pairs.run_ids
    return gains, whys, run_ids


def compare(claim: Claim, protocol: str, metric: str, source: PairSource, other: str,
            min_seeds: int = MIN_SEEDS) -> Comparison:
    """The claim's quantity for hybrid vs ``other`` under ``protocol``, with its own verdict."""
    note, labels, per_seed = "", [], []
    if claim.quantity in ("growth", "trend"):
        gains, whys, run_ids = _gains(claim, protocol, metric, source, other)
        if claim.quantity == "growth":
            missing = [d for d in claim.datasets if d not in gains]
            if missing:
                return Comparison(other, None, Verdict(NO_DATA, whys[missing[0]]))
            hard, easy = claim.datasets
        else:
            present = [d for d in claim.datasets if d in gains]
            missing = [d for d in claim.datasets if d not in gains]
            if not present:
                first = whys[claim.datasets[0]]
                return Comparison(other, None, Verdict(NO_DATA, f"no hybrid - {other} pairs on "
                                                       f"{', '.join(map(_label, missing))} ({first})"))
            if missing:
                note = f"only {', '.join(map(_label, present))} available; missing {', '.join(map(_label, missing))}"
        labels = [_label(d) for d in claim.datasets if d in gains]
        per_seed = [float(np.mean(gains[d])) * claim.scale for d in claim.datasets if d in gains]
        if claim.quantity == "trend":
            if len(present) < 2:
                return Comparison(other, None, Verdict(NO_DATA, note + " (add report folders with --related)"),
                                  per_seed, labels, run_ids, note=note)
            hard, easy = present[-1], present[0]
        raw = welch_interval(gains[hard], gains[easy])
        evidence = growth_evidence(claim, gains[hard], gains[easy])
    else:
        pairs, why = source.pairs(claim.datasets[0], protocol, metric, other)
        if pairs is None:
            return Comparison(other, None, Verdict(NO_DATA, why))
        run_ids, labels = pairs.run_ids, [str(s) for s in pairs.seeds]
        per_seed = per_seed_values(claim.quantity, pairs, claim.scale)
        raw = paired_interval(claim.quantity, pairs, metric, source)
        evidence = None
        if claim.quantity == "reduction":
            note = absolute_reduction(pairs)
    interval = None if raw is None else raw.scaled(claim.scale)
    if claim.direction == "equivalent":
        verdict = equivalence_verdict(interval, claim.margin, min_seeds)
    elif claim.floor is not None:
        verdict = floor_verdict(interval, claim.threshold, claim.floor, claim.partial, min_seeds)
    else:
        verdict = directional_verdict(interval, claim.direction, claim.threshold, min_seeds)
    verdict = practical_verdict(verdict, interval, claim.negligible, claim.threshold,
                                ratio=claim.quantity == "speedup", partial=claim.partial)
    if claim.quantity == "trend":
        verdict = trend_wording(verdict, labels, per_seed, claim.unit, other)
    magnitude = "n/a"
    if other == "cnn" and claim.magnitude is not None:
        magnitude = ("n/a: " + claim.magnitude_note if claim.magnitude_note
                     else magnitude_inside(interval, *claim.magnitude))
    if evidence is None:
        evidence = paired_evidence(claim, per_seed, verdict)
    absolute, note = (note, "") if claim.quantity == "reduction" else ("", note)
    return Comparison(other, interval, verdict, per_seed, labels, run_ids, magnitude, note, evidence,
                      absolute=absolute)


def absolute_reduction(pairs: Pairs) -> str:
    """A relative saving in absolute terms: '60 fewer (142,530 vs 142,590)', means over the paired seeds, so
    a reader sees that 0.04 % of a network is sixty parameters."""
    h, c = float(np.mean(pairs.hybrid)), float(np.mean(pairs.other))
    saved = c - h
    word = "fewer" if saved >= 0 else "more"
    return f"{abs(saved):,.0f} {word} ({h:,.0f} vs {c:,.0f})"


SHRINKING_DEFICIT = "does not hold: a shrinking deficit"


def trend_wording(verdict: Verdict, labels: list[str], gains: list[float], unit: str, other: str) -> Verdict:
    """The growth proxy in the words its data support. A difference that grows from the least to the most
    complex dataset is an advantage that grows only where the hybrid is ahead somewhere; below zero on every
    dataset it is a deficit that shrinks, and where the chain does not rise at every step the wording names
    the step that carries it."""
    if verdict.status not in (HOLDS, INCONCLUSIVE, NEGLIGIBLE) or not gains:
        return verdict
    listing = ", ".join(f"{label} {gain:+.2f} {unit}" for label, gain in zip(labels, gains))
    falls = [f"{a} -> {b}" for a, b, ga, gb in zip(labels, labels[1:], gains, gains[1:]) if gb <= ga]
    shape = (f"; the difference does not rise from {', '.join(falls)}" if falls
             else "; the difference rises at every step")
    if max(gains) < 0:
        return Verdict(SHRINKING_DEFICIT, f"hybrid - {other} is below zero on every dataset ({listing}): no "
                       f"advantage to grow, only a deficit that is smaller on the last dataset than on the first"
                       f"{shape}")
    return Verdict(verdict.status, f"{verdict.reason}; hybrid - {other} per dataset: {listing}{shape}",
                   verdict.summary)


def _one_sided(claim: Claim, holds: str, rest: Verdict) -> Verdict:
    """Holds against ``holds`` only: say what the other arm does."""
    other = "control" if holds == "cnn" else "cnn"
    name = ARM_LABELS[other]
    if claim.direction == "equivalent":
        what = f"against {name}: {rest.status}"
    elif rest.status == DOES_NOT_HOLD:
        what = f"{name} does better"
    elif rest.status == INCONCLUSIVE:
        what = f"{name} does as well"
    elif rest.status == NO_VERDICT:
        what = f"too few seeds against {name}"
    elif rest.status == NEGLIGIBLE:
        what = f"against {name} the difference is negligible"
    else:
        what = f"against {name}: {rest.status}"
    status = f"holds against {holds} only"
    return Verdict(status, f"{what}; hybrid - {other}: {rest.reason}", f"{status}: {what}")


def join_verdicts(claim: Claim, comparisons: dict[str, Comparison]) -> Verdict:
    """One verdict from the verdicts against cnn and against control (rules in the module docstring)."""
    cnn, control = comparisons["cnn"].verdict, comparisons["control"].verdict
    if cnn.status == NO_DATA and control.status == NO_DATA:
        return cnn
    if control.status == NO_DATA:
        return Verdict(cnn.status, f"{cnn.reason}; not checked against the control ({control.reason})",
                       f"{cnn.status}; not checked against the control")
    if cnn.status == NO_DATA:
        return Verdict(control.status, f"{control.reason}; not checked against cnn ({cnn.reason})",
                       f"{control.status} against the control; not checked against cnn")
    if cnn.status == control.status:
        same = cnn.reason if cnn.reason == control.reason else f"vs cnn: {cnn.reason}; vs control: {control.reason}"
        return Verdict(cnn.status, f"against cnn and control: {same}", f"{cnn.status} against cnn and control")
    if cnn.status == HOLDS:
        return _one_sided(claim, "cnn", control)
    if control.status == HOLDS:
        return _one_sided(claim, "control", cnn)
    both = f"vs cnn: {cnn.status} ({cnn.reason}); vs control: {control.status} ({control.reason})"
    summary = f"vs cnn: {cnn.status}; vs control: {control.status}"
    for status in WEAKEST_FIRST:
        if status in (cnn.status, control.status):
            return Verdict(status, both, f"{status} ({summary})")
    return Verdict(cnn.status, both, f"{cnn.status} ({summary})")  # two partial verdicts: the published baseline's


def evaluate_claim(claim: Claim, protocol: str, source: PairSource, min_seeds: int = MIN_SEEDS) -> ClaimResult:
    """The claim under ``protocol`` against every arm of COMPARED, and the joint verdict."""
    metric = claim.metric_paper if protocol == "paper" else claim.metric_fair
    if metric is None:
        none = {other: Comparison(other, None, Verdict(NO_DATA, claim.no_protocol_why)) for other in COMPARED}
        return ClaimResult(claim, protocol, None, none, Verdict(NO_DATA, claim.no_protocol_why))
    comparisons = {other: compare(claim, protocol, metric, source, other, min_seeds) for other in COMPARED}
    return ClaimResult(claim, protocol, metric, comparisons, join_verdicts(claim, comparisons))


def mark_not_testable(result: ClaimResult, why: str) -> ClaimResult:
    """The claim as the runs cannot decide it: every comparison with data reads "not testable here" with
    ``why``, whatever its interval says (the interval stays, for the reader)."""
    if not result.has_data:
        return result
    comparisons = {other: replace(c, verdict=Verdict(NOT_TESTABLE, why)) if c.interval is not None else c
                   for other, c in result.comparisons.items()}
    return replace(result, comparisons=comparisons, verdict=Verdict(NOT_TESTABLE, why, f"{NOT_TESTABLE}: {why}"))
