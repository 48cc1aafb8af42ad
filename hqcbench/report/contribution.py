"""The report's section "What the circuit contributes": the hybrid against arms that differ from it in one
thing, over the same seeds, and the encoding-scale sweep.

Why a section of its own: the published claims compare the hybrid with classical networks, so a claim
that holds says the hybrid network is better, not that its circuit is why. Three arms take one thing
away each: the control replaces the circuit by a classical Linear+tanh layer of the same width,
hybrid_noent drops the circuit's entangling gates, hybrid_frozen keeps the circuit's weights at their
random initialisation. Whatever the hybrid gains over them is what the circuit, entanglement or training
the circuit adds. The rule is the claims' interval rule (stats.py), stated as the question the row asks
("adds accuracy", "costs accuracy", "no difference shown"), with an equivalence wording when the whole
interval lies within a margin too small to matter (a null result that is informative, unlike one that
is merely inconclusive). The rank test, Hodges-Lehmann shift and seeds needed sit beside it and never
change it.

The encoding-scale sweep (RunSet.sweep) asks a related question from the other side: if the angle
encoding's scale (pi by default) is shrunk until the circuit is nearly linear, or grown until it wraps
around, does test accuracy move? Its table and figure sit under the ablation tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hqcbench import names
from hqcbench.arms import HYBRID
from hqcbench.config import DEFAULT_ENCODING_SCALE
from hqcbench.report.claims import DATASET_LABELS, PUBLISHED_EPS
from hqcbench.report.document import Document, Inline
from hqcbench.report.formatting import (
    NO_DATA_CELL,
    fmt_interval,
    fmt_p,
    fmt_seed_values,
    fmt_seeds_needed,
    shift_and_seeds,
)
from hqcbench.report.judge import Pairs, paired_interval
from hqcbench.report.labels import arm_label, metric_label
from hqcbench.report.load import SCALE_COLUMN, RunSet, frame_pairs, group_rank, scale_text
from hqcbench.report.masking_gate import has_worst_case
from hqcbench.report.plots import arm_rank, sweep_figure_name
from hqcbench.report.sources import Sources
from hqcbench.report.stats import (
    CONFIDENCE,
    DOES_NOT_HOLD,
    HOLDS,
    MIN_SEEDS,
    NO_DATA,
    Interval,
    RankEvidence,
    directional_verdict,
    equivalence_verdict,
    hodges_lehmann,
    seeds_needed,
    seeds_of,
    signed_rank_p,
    t_interval,
)

CONTRIBUTION_CSV = "contribution.csv"
# The arms compared with the hybrid, in display order, and the question each row answers.
COMPARISONS: dict[str, str] = {
    "control": "the circuit vs a classical layer of the same width",
    "hybrid_noent": "what entanglement adds",
    "hybrid_frozen": "what training the circuit adds",
}
QUANTITIES = ("accuracy", "robustness")
EQUIVALENCE_MARGIN_PP = 0.5  # a difference inside +-0.5 pp is too small to matter at these test-set sizes
PP_PER_FRACTION = 100.0  # accuracies are stored as fractions, differences shown in percentage points
WORST_METRIC = names.robust_metric(names.WORST, PUBLISHED_EPS)  # worst case over every attack, pixel eps 0.1
PGD_METRIC = names.robust_metric("pgd", PUBLISHED_EPS)  # PGD alone: runs without the worst-case evaluation
NOT_MEASURED = "Not measured here: no ablation or control runs."
NO_VERDICT_TEXT = f"no verdict (n < {MIN_SEEDS})"
RECORD_COLUMNS = ("dataset", "protocol", "arm", "quantity", "metric", "mean", "low", "high", "n", "verdict",
                  "wilcoxon_p", "hodges_lehmann", "seeds_needed", "run_ids")


@dataclass(frozen=True)
class Difference:
    """hybrid - ``arm`` of one quantity over their shared seeds: the interval in pp, its answer, its evidence."""

    arm: str
    quantity: str  # accuracy | robustness
    metric: str | None  # the metric compared (None: nothing to compare)
    pairs: Pairs | None
    interval: Interval | None  # in pp
    verdict: str
    evidence: RankEvidence = RankEvidence()
    note: str = ""  # why there is no data, or which robustness metric stood in

    @property
    def per_seed(self) -> list[float]:
        """Each shared seed's difference, in stored units (fractions), seed order."""
        return [] if self.pairs is None else [h - o for h, o in zip(self.pairs.hybrid, self.pairs.other)]


@dataclass
class Contribution:
    """The section's records (one per group, arm and quantity; contribution.csv) and that file's path."""

    records: list[dict]
    path: Path


# ---------------------------------------------------------------------------------------------- which metric
def accuracy_metric(protocol: str) -> str:
    """Test accuracy; under the paper protocol the published measure (best validation accuracy), as the
    claims compare it."""
    return "best_val_acc" if protocol == "paper" else "test_acc"


def _shared_seeds(runset: RunSet, dataset: str, protocol: str, arm: str, base: str = HYBRID) -> set[int]:
    return (set(runset.arm_runs(dataset, protocol, base).seed)
            & set(runset.arm_runs(dataset, protocol, arm).seed))


def robustness_pairs(runset: RunSet, dataset: str, protocol: str, arm: str,
                     base: str = HYBRID) -> tuple[str | None, Pairs | None, str]:
    """The pairs the robustness claims judge on (masking_gate.gated_compare), so one comparison has one number
    wherever it appears: the worst case over every attack on the seeds where both arms have it (counted only
    with AutoAttack or Square among its attacks, masking_gate.STRONG_ATTACKS), else PGD alone (a weaker
    attack: it can overstate a robust accuracy); with the words that say which one stands."""
    shared = _shared_seeds(runset, dataset, protocol, arm, base)
    worst, _ = frame_pairs(runset.runs[has_worst_case(runset.runs)], dataset, protocol, WORST_METRIC, arm, base)
    if worst is not None:
        left = sorted(shared - set(worst.seeds))
        note = f"worst case over every attack; seed(s) {', '.join(map(str, left))} without it left out" if left \
            else "worst case over every attack"
        return WORST_METRIC, worst, note
    pgd, why = runset.pairs(dataset, protocol, PGD_METRIC, arm, base)
    if pgd is not None:
        return PGD_METRIC, pgd, "PGD alone: no seed has a worst case with AutoAttack or Square"
    return None, None, "neither a counting worst case nor PGD logged for both arms"


# ---------------------------------------------------------------------------------------------- the answer
def answer(quantity: str, interval: Interval | None, margin: float = EQUIVALENCE_MARGIN_PP) -> str:
    """The interval rule as the row's question answered: 'adds accuracy' (whole interval above 0), 'costs
    accuracy' (wholly below), else 'no difference shown', or 'equivalent within ±0.5 pp' when the whole
    interval lies inside the margin; no verdict under MIN_SEEDS seeds. ``interval`` in pp."""
    if interval is None:
        return NO_DATA
    if seeds_of(interval) < MIN_SEEDS or not interval.has_interval:
        return NO_VERDICT_TEXT
    direction = directional_verdict(interval, "greater", 0.0).status
    equivalent = equivalence_verdict(interval, margin).status == HOLDS
    small = f", by less than {margin:g} pp" if equivalent else ""
    if direction == HOLDS:
        return f"adds {quantity}{small}"
    if direction == DOES_NOT_HOLD:
        return f"costs {quantity}{small}"
    return f"equivalent within ±{margin:g} pp" if equivalent else "no difference shown"


def evidence(per_seed_pp: list[float], unsettled: bool) -> RankEvidence:
    """One-sided Wilcoxon signed-rank p (H1: the hybrid is higher), Hodges-Lehmann shift (pp), and when the
    answer is unsettled the seeds a paired t-test would need to settle the sign the data lean to (80 %
    power at the observed mean and spread)."""
    values = np.asarray(per_seed_pp, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return RankEvidence()
    needed = seeds_needed(abs(float(values.mean())), float(values.std(ddof=1))) if unsettled else None
    return RankEvidence("signed-rank", signed_rank_p(values, "greater"), hodges_lehmann(values), needed, unsettled)


def evidence_text(ev: RankEvidence) -> str:
    """'Wilcoxon p = 0.031 (one-sided, hybrid higher); Hodges-Lehmann +1.50 pp; would need 12 seeds (80 %
    power)'; empty without a test."""
    if not ev.test:
        return ""
    parts = [f"Wilcoxon p = {fmt_p(ev.p)} (one-sided, hybrid higher)"] if ev.p is not None else []
    return "; ".join(parts + shift_and_seeds(ev, "pp"))


def difference(runset: RunSet, dataset: str, protocol: str, arm: str, quantity: str,
               base: str = HYBRID) -> Difference:
    """``base`` (the hybrid unless said) - ``arm`` of ``quantity`` (accuracy | robustness) in the group, over
    the seeds both have."""
    metric: str | None
    if quantity == "accuracy":
        metric, note = accuracy_metric(protocol), ""
        pairs, why = runset.pairs(dataset, protocol, metric, arm, base)
    else:
        metric, pairs, note = robustness_pairs(runset, dataset, protocol, arm, base)
        why = note
    if metric is None:
        return Difference(arm, quantity, None, None, None, NO_DATA, note=note)
    if pairs is None:
        return Difference(arm, quantity, metric, None, None, NO_DATA, note=why)
    raw = paired_interval("diff", pairs, metric, runset)
    interval = None if raw is None else raw.scaled(PP_PER_FRACTION)
    verdict = answer(quantity, interval)
    per_seed_pp = [(h - o) * PP_PER_FRACTION for h, o in zip(pairs.hybrid, pairs.other)]
    unsettled = verdict in (NO_VERDICT_TEXT, "no difference shown")
    return Difference(arm, quantity, metric, pairs, interval, verdict, evidence(per_seed_pp, unsettled), note)


# ---------------------------------------------------------------------------------------------- tables
def difference_cell(diff: Difference, sources: Sources) -> Inline:
    """'+1.40 pp [+0.72, +2.08] (n=5); per seed (0, 1, ...): +1.0 / ...; Wilcoxon ...; metric'."""
    if diff.pairs is None or diff.interval is None:
        return f"{NO_DATA_CELL} ({diff.note})" if diff.note else NO_DATA_CELL
    fraction = diff.interval.scaled(1 / PP_PER_FRACTION)
    text = fmt_interval(fraction, "pct", signed=True, unit="pp")
    if diff.interval.method == "t":
        text += f" (n={diff.interval.n})"
    parts: list[Inline] = [sources.link(text, diff.pairs.run_ids)]
    if len(diff.pairs.seeds) > 1:
        parts.append(f"; per seed ({', '.join(map(str, diff.pairs.seeds))}): "
                     f"{fmt_seed_values(diff.per_seed, 'pct', signed=True)}")
    extra = evidence_text(diff.evidence)
    if extra:
        parts.append(f"; {extra}")
    if diff.quantity == "robustness" and diff.note:
        parts.append(f"; {diff.note}")
    return parts


def _record(dataset: str, protocol: str, diff: Difference) -> dict:
    iv, ev = diff.interval, diff.evidence
    return {"dataset": dataset, "protocol": protocol, "arm": diff.arm, "quantity": diff.quantity,
            "metric": diff.metric or "", "mean": None if iv is None else iv.mean,
            "low": iv.low if iv is not None else None, "high": iv.high if iv is not None else None,
            "n": 0 if iv is None else seeds_of(iv), "verdict": diff.verdict, "wilcoxon_p": ev.p,
            "hodges_lehmann": ev.shift, "seeds_needed": fmt_seeds_needed(ev),
            "run_ids": " ".join(diff.pairs.run_ids) if diff.pairs is not None else ""}


def compared_arms(runset: RunSet, dataset: str, protocol: str) -> list[str]:
    """The arms of COMPARISONS present in the group beside the hybrid (none without the hybrid)."""
    arms = set(runset.arms(dataset, protocol))
    return [a for a in COMPARISONS if a in arms] if HYBRID in arms else []


def contribution_table(runset: RunSet, sources: Sources, dataset: str,
                       protocol: str) -> tuple[list[Inline], list[list[Inline]], list[dict]]:
    """One row per arm compared with the hybrid: accuracy and robustness differences and their answers;
    also the rows as records (contribution.csv)."""
    accuracy = accuracy_metric(protocol)
    header: list[Inline] = ["compared with", f"accuracy: hybrid - arm ({metric_label(accuracy)}, pp)",
                            "does it add accuracy?",
                            "robustness: hybrid - arm (eps 0.1, pp)", "does it add robustness?"]
    rows, records = [], []
    for arm in compared_arms(runset, dataset, protocol):
        row: list[Inline] = [f"{arm_label(arm)}: {COMPARISONS[arm]}"]
        for quantity in QUANTITIES:
            diff = difference(runset, dataset, protocol, arm, quantity)
            row += [difference_cell(diff, sources), diff.verdict]
            records.append(_record(dataset, protocol, diff))
        rows.append(row)
    return header, rows, records


def sweep_table(runset: RunSet, sources: Sources, sweep: pd.DataFrame, dataset: str,
                protocol: str) -> tuple[list[Inline], list[list[Inline]]]:
    """Per arm and scale: seeds and mean test accuracy ± its 95 % t half-width; the control's default-scale
    accuracy last, as the reference the figure draws dashed."""
    header: list[Inline] = ["arm", "encoding scale (x pi)", "seeds", "test acc (%)"]
    rows: list[list[Inline]] = []
    group = sweep[(sweep.dataset == dataset) & (sweep.protocol == protocol)]
    for arm in sorted(set(group.arm), key=lambda a: (arm_rank(a), a)):
        for scale, runs in group[group.arm == arm].groupby(SCALE_COLUMN):
            default = " (default)" if math.isclose(scale, DEFAULT_ENCODING_SCALE, rel_tol=1e-9) else ""
            iv = t_interval(runs.test_acc.astype(float).tolist())
            rows.append([arm, f"{scale / math.pi:.4g}{default}", str(len(runs)),
                         sources.link(fmt_interval(iv, "pct"), runs.run_id)])
    control = runset.arm_runs(dataset, protocol, "control")
    if "test_acc" in control and control.test_acc.notna().any():
        present = control.dropna(subset=["test_acc"])
        rows.append(["control (reference: no circuit, no scale)", "-", str(len(present)),
                     sources.link(fmt_interval(t_interval(present.test_acc.tolist()), "pct"), present.run_id)])
    return header, rows


# ---------------------------------------------------------------------------------------------- the section
def intro() -> str:
    margin = f"±{EQUIVALENCE_MARGIN_PP:g} pp"
    return (
        "Does the circuit itself do anything? Each row compares the hybrid, over the same seeds, with an arm that "
        "differs from it in one thing: the control (the circuit replaced by a classical Linear+tanh layer of the "
        "same width), the hybrid without entanglement (the circuit without its entangling gates) or the hybrid "
        "with frozen circuit (the circuit's weights left at their random initialisation). Each cell is the paired "
        f"difference hybrid - arm with its {CONFIDENCE:.0%} t-interval over seeds and each seed's difference. A "
        "difference holds only on the interval rule: 'adds' when the whole interval lies above 0, 'costs' when it "
        f"lies wholly below, otherwise 'no difference shown' ('equivalent within {margin}' when the whole interval "
        f"lies inside {margin}); no verdict from fewer than {MIN_SEEDS} seeds. The Wilcoxon p, Hodges-Lehmann shift "
        "and seeds needed beside it inform and do not decide. Accuracy is test accuracy (paper protocol: best "
        "validation accuracy, the published measure); robustness is the worst case over every attack at eps 0.1 "
        "on the seeds where both arms have it, exactly as the robustness verdicts take it (so the hybrid - "
        "control row repeats the verdict table's number), else PGD alone (the cell says which). Masking checks do "
        "not gate these rows: the results tables name the arms whose checks failed. contribution.csv beside this "
        "report holds every row.")


def contribution_section(doc: Document, runset: RunSet, sources: Sources, figures: list[tuple[str, str]],
                         out_dir: Path) -> Contribution:
    """Write the section's blocks into ``doc`` (its h2 is the caller's) and contribution.csv into
    ``out_dir``; ``figures``: the sweep figures of plots.make_figures (section 'contribution')."""
    groups = [g for g in runset.groups() if compared_arms(runset, *g)]
    records: list[dict] = []
    if groups:
        doc.p(intro())
    else:
        doc.p(NOT_MEASURED)
    for dataset, protocol in groups:
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        header, rows, group_records = contribution_table(runset, sources, dataset, protocol)
        doc.table(header, rows, f"contribution-{dataset}-{protocol}")
        records += group_records
    _sweep_blocks(doc, runset, sources, figures)
    path = out_dir / CONTRIBUTION_CSV
    pd.DataFrame(records, columns=list(RECORD_COLUMNS)).to_csv(path, index=False)
    return Contribution(records, path)


def _sweep_blocks(doc: Document, runset: RunSet, sources: Sources, figures: list[tuple[str, str]]) -> None:
    """The encoding-scale sweep: per (dataset, protocol) its figure and table, or one line saying none ran."""
    doc.h3("Encoding-scale sweep")
    sweep = runset.sweep("test_acc")
    keys = sorted({(d, p) for d, p in zip(sweep.dataset, sweep.protocol)}, key=group_rank)
    if not keys:
        doc.p(f"Not measured here: no arm ran at more than one encoding scale (default {scale_text(math.pi)}).")
        return
    doc.p("Test accuracy against the angle encoding's scale, RY(scale * tanh x): the default is pi (angles span a "
          "full turn); a small scale keeps the circuit near its linear regime, a large one wraps the angles "
          "around. Runs at other scales are kept apart from the tables and claims above (runs.csv: column "
          f"{SCALE_COLUMN}); the default-scale runs count as scale 1 x pi.")
    images = dict(figures)
    for dataset, protocol in keys:
        label = f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol"
        name = sweep_figure_name(dataset, protocol)
        doc.p(f"{label}:")
        if name in images:
            doc.img(name, images[name])
        header, rows = sweep_table(runset, sources, sweep, dataset, protocol)
        doc.table(header, rows, f"encoding-scale-{dataset}-{protocol}")
