"""Robustness verdicts a referee accepts: which number stands for "ours", which masking flags keep a
verdict from settling, and what the report says about attacks averaged over readout samples (EOT).

Why a module of its own: a robust-accuracy difference is only as good as the attacks behind both of its
numbers. judge.py turns paired seeds into an interval and a verdict for every claim; this module decides,
for the robustness claims only, which metric the interval is taken on and whether the evidence beside the
interval (the runs' masking checks, docs/robustness.md) lets that verdict stand.

The rules (docs/report.md, "Robustness verdicts"):
- The number, under every protocol: the worst case over every attack run on the model
  (``robust_acc_worst_eps_0.1``) on the seeds whose runs carry it together with a non-gradient or ensemble
  attack (AutoAttack or Square: ``STRONG_ATTACKS``). A worst case over gradient attacks alone (FGSM, PGD,
  transfer) inherits their blind spot, so it does not count as one. The published measure
  (``robust_acc_pgd_paper_eps_0.1``) and its clamp alone are shown beside it (``beside_measures``), labelled,
  never judged on: most of the published measure is the clamp. Where no seed has a worst case (older
  stores), fair and tuned fall back to PGD alone (``robust_acc_pgd_eps_0.1``; a run whose ``converged``
  check failed leaves its PGD number out: that attack stopped early) and paper to the published measure on
  every seed, and a settled verdict becomes "unresolved: no worst-case evaluation": one gradient attack can
  neither show nor refute a robustness gap, because either arm's number may be inflated.
- The flags of a run: every ``check_<name>_pass`` = 0 (or tag ``hqcbench.check.<name>`` = fail where the
  metric is absent); ``possible_gradient_masking`` = 1 counts on its own only where no failed check explains
  it (older runs). An arm is flagged when any of its seeds in that dataset and protocol is: the seeds share
  the architecture that masks, so a clean seed does not clear a flagged one.
- Masking can only inflate a measured robust accuracy (an attack that fails for want of a usable gradient
  leaves the image correct). Hence:
  - "holds" needs both arms of the pair free of flags in every seed. A flag on the arm compared against
    could in principle only widen the hybrid's true advantage, but a failed check also says that arm's
    attacks did not work as intended; a gap asserted between two numbers, one of which a check disowns, is
    not one a referee signs.
  - A refutation (the interval on the other side, or outside the equivalence margin) stands when the only
    flags sit on the arm whose true number, lowered, would push the interval further the same way: e.g.
    "hybrid more robust" refuted while only the hybrid is flagged (its true robustness is lower still). A
    flag on the other arm blocks it.
  - A failed ``bounds`` check (examples outside the eps ball or the image range) makes the attack's numbers
    invalid in either direction: it blocks every settled verdict.
  - A blocked verdict reads "unresolved: possible gradient masking", naming the flags, the arms and in how
    many seeds ("hybrid: converged, zero_grad in 2/5 seeds"). Unsettled verdicts (inconclusive, no verdict)
    keep their status; their reason names the flags.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from hqcbench import names
from hqcbench.report.claims import CLAMP_ONLY_METRIC, PUBLISHED_EPS, Claim
from hqcbench.report.judge import (
    ARM_LABELS,
    COMPARED,
    ClaimResult,
    Comparison,
    Pairs,
    compare,
    evaluate_claim,
    join_verdicts,
)
from hqcbench.report.labels import arm_label, check_label, metric_label
from hqcbench.report.load import frame_pairs
from hqcbench.report.stats import DOES_NOT_HOLD, HOLDS, MIN_SEEDS, NO_DATA, Interval, Verdict, t_interval

UNRESOLVED_MASKING = "unresolved: possible gradient masking"
UNRESOLVED_NO_WORST = "unresolved: no worst-case evaluation"
BOUNDS = "bounds"  # the check whose failure invalidates the numbers themselves
CONVERGED = "converged"  # failed: PGD was stopped early, so its number is not used
CHECK_METRIC = re.compile(r"^check_(.+)_pass$")  # check_<name>_pass, 1 = passed, 0 = failed
CHECK_TAG_COLUMN = "tags." + names.TAG_CHECK_PREFIX
WORST_METRIC = names.robust_metric(names.WORST, PUBLISHED_EPS)
PGD_METRIC = names.robust_metric("pgd", PUBLISHED_EPS)
# A worst case counts only with one of these in it: AutoAttack's Square member and Square itself query the
# model without its gradient, so a masked gradient cannot hide an adversarial example from both.
STRONG_ATTACKS = ("autoattack", "square")
STRONG_METRICS = tuple(names.robust_metric(a, PUBLISHED_EPS) for a in STRONG_ATTACKS)


def has_worst_case(runs: pd.DataFrame) -> pd.Series:
    """Rows whose worst case at the published eps counts (see STRONG_ATTACKS)."""
    if WORST_METRIC not in runs.columns:
        return pd.Series(False, index=runs.index)
    strong = pd.Series(False, index=runs.index)
    for metric in STRONG_METRICS:
        if metric in runs.columns:
            strong |= runs[metric].notna()
    return runs[WORST_METRIC].notna() & strong


# ---------------------------------------------------------------------------------------------- flags
def check_names(frame: pd.DataFrame) -> list[str]:
    """Every check some run logged, as a check_<name>_pass metric or an hqcbench.check.<name> tag."""
    found = {m.group(1) for c in frame.columns if (m := CHECK_METRIC.match(str(c)))}
    found |= {str(c)[len(CHECK_TAG_COLUMN):] for c in frame.columns if str(c).startswith(CHECK_TAG_COLUMN)}
    return sorted(found)


def _value(row: pd.Series, column: str):
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def run_flags(row: pd.Series, checks: list[str]) -> set[str]:
    """The masking flags of one run: its failed checks, else possible_gradient_masking when set."""
    out = set()
    for name in checks:
        metric = _value(row, f"check_{name}_pass")
        if (metric is not None and float(metric) == 0.0) or \
                (metric is None and _value(row, CHECK_TAG_COLUMN + name) == "fail"):
            out.add(name)
    if not out:
        metric = _value(row, names.TAG_MASKING)
        if (metric is not None and float(metric) == 1.0) or \
                (metric is None and str(_value(row, f"tags.{names.TAG_MASKING}")).lower() == "true"):
            out.add(names.TAG_MASKING)
    return out


@dataclass(frozen=True)
class ArmFlags:
    """The masking flags of one arm over its seeds in one dataset and protocol."""

    arm: str
    seeds: int
    counts: dict[str, int] = field(default_factory=dict)  # flag -> seeds that raised it

    @property
    def raised(self) -> bool:
        return bool(self.counts)

    def text(self) -> str:
        """'hybrid: PGD not converged, vanishing input gradients in 2/5 seeds' (plain check names, labels.py;
        flags with the same count share their seeds' tally)."""
        by_count: dict[int, list[str]] = {}
        for flag, count in self.counts.items():
            by_count.setdefault(count, []).append(flag)
        parts = [f"{', '.join(sorted(check_label(f) for f in flags))} in {count}/{self.seeds} seeds"
                 for count, flags in sorted(by_count.items(), key=lambda item: -item[0])]
        return f"{arm_label(self.arm)}: " + "; ".join(parts)


def arm_flags(group: pd.DataFrame, arm: str) -> ArmFlags:
    """Flags of ``arm`` over its runs in ``group`` (one dataset and protocol)."""
    runs = group[group.arm == arm]
    checks = check_names(group)
    counts: dict[str, int] = {}
    for _, row in runs.iterrows():
        for flag in run_flags(row, checks):
            counts[flag] = counts.get(flag, 0) + 1
    return ArmFlags(arm, len(runs), counts)


def flags_text(flags: list[ArmFlags]) -> str:
    return "; ".join(f.text() for f in flags if f.raised)


def eot_text(group: pd.DataFrame, arm: str) -> str:
    """What the report says about an arm whose gradient attacks averaged over readout samples, or ''."""
    runs = group[group.arm == arm]
    column = f"tags.{names.TAG_ATTACK_EOT}"
    if column not in runs.columns or not runs[column].notna().any():
        return ""
    values = " / ".join(sorted({str(v) for v in runs[column].dropna()}))
    return (f"gradient attacks on {arm_label(arm)} averaged the loss gradient over readout samples (EOT) in "
            f"{int(runs[column].notna().sum())}/{len(runs)} seeds: {values}")


def group_notes(group: pd.DataFrame, arms: list[str]) -> list[str]:
    """Lines under a results table: the masking flags and the EOT attacks of each arm of the group."""
    notes = []
    flags = [arm_flags(group, arm) for arm in arms]
    flagged = flags_text(flags)
    if flagged:
        stopped = ("; a failed converged check means the PGD number stands for an attack stopped early"
                   if any(CONVERGED in f.counts for f in flags) else "")
        notes.append(f"Masking checks failed ({flagged}): robust accuracies of these arms may be inflated{stopped}.")
    for arm in arms:
        text = eot_text(group, arm)
        if text:
            notes.append(text[0].upper() + text[1:] + ".")
    return notes


# ---------------------------------------------------------------------------------------------- the gate
class FrameSource:
    """judge.PairSource over a frame of runs (robust metrics have no per-example bootstrap)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def pairs(self, dataset: str, protocol: str, metric: str, other: str = "cnn") -> tuple[Pairs | None, str]:
        return frame_pairs(self.frame, dataset, protocol, metric, other)

    def correct(self, run_id: str) -> np.ndarray | None:
        return None


def _not_converged(frame: pd.DataFrame) -> pd.Series:
    column = f"check_{CONVERGED}_pass"
    metric = frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)
    tag = frame[CHECK_TAG_COLUMN + CONVERGED] if CHECK_TAG_COLUMN + CONVERGED in frame.columns else \
        pd.Series(None, index=frame.index, dtype=object)
    return (metric == 0.0) | (metric.isna() & (tag == "fail"))


def _blocked(claim: Claim, verdict: Verdict, comparison: Comparison, hybrid: ArmFlags,
             other: ArmFlags) -> str:
    """Why the flags keep a settled verdict from standing, or '' when it stands (rules: module docstring)."""
    if BOUNDS in hybrid.counts or BOUNDS in other.counts:
        return "a failed bounds check makes the attack's numbers invalid in either direction"
    if verdict.status == HOLDS:
        return "a robustness difference holds only when neither arm raised a masking flag in any seed"
    iv = comparison.interval
    lower_is_worse = (claim.direction == "greater" or
                      (claim.direction == "equivalent" and iv is not None and iv.high is not None
                       and iv.high <= -claim.margin))
    if lower_is_worse:  # the difference lies low: an inflated other arm could be hiding a higher one
        return "" if not other.raised else (f"{other.arm}'s robust accuracy may be inflated, so the true "
                                            f"difference may be higher")
    return "" if not hybrid.raised else ("hybrid's robust accuracy may be inflated, so the true difference may "
                                         "be lower")


def gate(claim: Claim, comparison: Comparison, hybrid: ArmFlags, other: ArmFlags, worst_case: bool) -> Verdict:
    """The verdict of one robustness comparison once the evidence beside its interval is weighed."""
    verdict, metric = comparison.verdict, metric_label(comparison.metric)
    settled = verdict.status in (HOLDS, DOES_NOT_HOLD)
    flagged = flags_text([hybrid, other])
    no_worst = "" if worst_case else (f"; on {metric} alone: no run of the pair carries the worst case over "
                                      "every attack")
    if flagged and settled:
        why = _blocked(claim, verdict, comparison, hybrid, other)
        if why:
            return Verdict(UNRESOLVED_MASKING, f"{metric} alone would say {verdict.status} ({verdict.reason}); "
                           f"possible gradient masking: {flagged}; {why}{no_worst}",
                           f"{UNRESOLVED_MASKING} ({flagged})")
        verdict = Verdict(verdict.status, f"{verdict.reason}; stands despite possible gradient masking ({flagged}): "
                          "masking can only inflate the flagged arm's robust accuracy, which would move the "
                          "difference further the same way")
    if settled and not worst_case:
        return Verdict(UNRESOLVED_NO_WORST, f"{metric} alone would say {verdict.status} ({verdict.reason}); one "
                       "gradient attack can neither show nor refute a robustness gap (either arm's number may be "
                       f"inflated); needs {metric_label(WORST_METRIC)} over an evaluation that includes autoattack "
                       "or square (`python -m hqcbench evaluate --attacks ...,autoattack` adds it to finished runs "
                       "from their logged weights)"
                       + (f"; masking flags: {flagged}" if flagged else ""),
                       f"{UNRESOLVED_NO_WORST} (on {metric} alone)")
    if verdict.status == NO_DATA:
        return verdict
    extra = (f"; possible gradient masking: {flagged}" if flagged and not settled else "") + no_worst
    return Verdict(verdict.status, verdict.reason + extra, verdict.summary)


def gated_compare(claim: Claim, protocol: str, metric: str, runs: pd.DataFrame, other: str,
                  min_seeds: int = MIN_SEEDS) -> Comparison:
    """hybrid vs ``other`` on the worst-case seeds (else the fallback), gated by both arms' flags."""
    dataset = claim.datasets[0]
    group = runs[(runs.dataset == dataset) & (runs.protocol == protocol)]
    evaluated = runs[has_worst_case(runs)]
    details = []
    kept, _ = frame_pairs(evaluated, dataset, protocol, metric, other)
    fallback = claim.fallback(protocol)
    if kept is not None:
        used, frame, worst_case = metric, evaluated, True
        everyone, _ = frame_pairs(runs, dataset, protocol, fallback or metric, other)
        left = sorted(set(everyone.seeds) - set(kept.seeds)) if everyone is not None else []
        if left:
            details.append(f"seed(s) {', '.join(map(str, left))} left out: no worst-case evaluation")
    else:
        used, frame, worst_case = metric, runs, False
        if fallback:
            used, frame = fallback, runs.copy()
            stopped = _not_converged(frame) & frame.dataset.eq(dataset) & frame.protocol.eq(protocol)
            if fallback == PGD_METRIC and used in frame.columns and stopped.any():
                dropped = frame[stopped & frame.arm.isin(["hybrid", other])]
                frame.loc[stopped, used] = np.nan
                if len(dropped):
                    details.append("left out, PGD not converged (check converged failed): " + ", ".join(
                        f"{arm} seed {seed}" for arm, seed in zip(dropped.arm, dropped.seed)))
    comparison = replace(compare(claim, protocol, used, FrameSource(frame), other, min_seeds), metric=used)
    if comparison.verdict.status == NO_DATA and not comparison.run_ids:
        return comparison
    hybrid_flags, other_flags = arm_flags(group, "hybrid"), arm_flags(group, other)
    details += [t for t in (eot_text(group, "hybrid"), eot_text(group, other)) if t]
    return replace(comparison, verdict=gate(claim, comparison, hybrid_flags, other_flags, worst_case),
                   masking=flags_text([hybrid_flags, other_flags]), detail="; ".join(details),
                   beside=beside_measures(claim, runs, protocol, other, exclude=used))


BESIDE_LABELS = {names.robust_metric("pgd_paper", PUBLISHED_EPS): "published measure",
                 CLAMP_ONLY_METRIC: "published clamp alone, no attack step"}


def beside_measures(claim: Claim, runs: pd.DataFrame, protocol: str, other: str,
                    exclude: str = "") -> tuple[tuple[str, Interval, tuple[str, ...]], ...]:
    """hybrid - ``other`` of each of the claim's ``beside`` metrics over the seeds that have it, in display
    units and labelled (the published measure, its clamp alone): shown next to the verdict, never judged on."""
    out = []
    for metric in claim.beside:
        if metric == exclude:
            continue
        pairs, _ = frame_pairs(runs, claim.datasets[0], protocol, metric, other)
        iv = None if pairs is None else t_interval(np.asarray(pairs.hybrid) - np.asarray(pairs.other))
        if pairs is not None and iv is not None:
            out.append((BESIDE_LABELS.get(metric, metric), iv.scaled(claim.scale), tuple(pairs.run_ids)))
    return tuple(out)


def evaluate_robustness(claim: Claim, protocol: str, runs: pd.DataFrame, min_seeds: int = MIN_SEEDS) -> ClaimResult:
    """A robustness claim under ``protocol`` against every arm of COMPARED, and the joint verdict."""
    metric = claim.metric_paper if protocol == "paper" else claim.metric_fair
    if metric is None:
        return evaluate_claim(claim, protocol, FrameSource(runs), min_seeds)
    comparisons = {other: gated_compare(claim, protocol, metric, runs, other, min_seeds) for other in COMPARED}
    joint = join_verdicts(claim, comparisons)
    used = list(dict.fromkeys(c.metric for c in comparisons.values() if c.metric and c.run_ids))
    short = joint.short
    if UNRESOLVED_MASKING in short:  # the glance line names the flags, whichever comparison raised them
        flagged = "; ".join(dict.fromkeys(part for c in comparisons.values() if c.masking
                                          for part in c.masking.split("; ")))
        short += "" if flagged in short else f" ({flagged})"
    elif UNRESOLVED_NO_WORST in short and "alone" not in short:
        short += f" (on {' / '.join(metric_label(u) for u in used)} alone)"
    joint = Verdict(joint.status, joint.reason, short)
    shown = used[0] if len(used) == 1 else " / ".join(
        f"{c.metric} ({ARM_LABELS[o]})" for o, c in comparisons.items() if c.metric and c.run_ids) or metric
    return ClaimResult(claim, protocol, shown, comparisons, joint)
