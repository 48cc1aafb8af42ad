"""The report's tables: runs, results in the paper's shape, paired comparisons, the hybrid's hardware
bill, and every further metric (the claims tables are in claim_tables.py).

Why a module of its own: each builder turns a RunSet into (header, rows) of cells that link to their
sources, and nothing else; the document decides where they go (build.py). Which metrics the results
table shows is decided here too, from what the runs actually logged: the robustness columns are one
per (attack, eps) found among the ``robust_acc_{attack}_eps_{eps}`` metrics, not a fixed eps. The
published measure gets its clamp-only baseline and the worst case at its eps as neighbours, so a reader
sees how much of the published "attack" is the clamp and what the strongest evidence says beside it.

A mean and its interval hide the spread a reader may want to judge, so the results table has a
"per seed" row under each arm (when an arm has more than one run) and the paired table lists each
seed's difference; an interval that leaves the metric's possible values (an accuracy above 100 %)
is flagged in its cell. Seconds per epoch leave out contended epochs (epochs.py); the results table
counts them per arm.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from hqcbench import names
from hqcbench.config import ATTACKS, PAPER_BATCH_SIZE
from hqcbench.report import labels
from hqcbench.report.claims import DATASET_LABELS, PUBLISHED_EPS, TIME_METRIC
from hqcbench.report.document import Inline
from hqcbench.report.epochs import EPOCHS_COLUMN, SHORT_COLUMN, budget_text, contended_cell
from hqcbench.report.formatting import DIFF_UNITS, NO_DATA_CELL, fmt_interval, fmt_seed_values, range_flag
from hqcbench.report.judge import paired_interval
from hqcbench.report.labels import arm_label
from hqcbench.report.load import CURVE_PREFIX, EPOCH_MEAN_METRICS, EPOCH_METRICS, RunSet, col
from hqcbench.report.sources import Sources
from hqcbench.report.stats import Interval, bootstrap_interval, t_interval


@dataclass(frozen=True)
class Metric:
    """A metric as a table row/column: its MLflow name, its label and its format code (formatting.fmt_value)."""

    name: str
    label: str
    fmt: str  # pct | sec | int | mb | cores | gb | pctpt | num


# The results table: these, with the robustness columns found in the runs between them.
HEAD_METRICS = (
    Metric("best_val_acc", "best val acc (%)", "pct"),
    Metric("test_acc", "test acc (%)", "pct"),
    Metric(TIME_METRIC, "s / epoch (median, uncontended epochs)", "sec"),
    Metric("params_total", "parameters", "int"),
)
TAIL_METRICS = (
    Metric("rss_peak_mb_max", "peak RSS (MB)", "mb"),
    Metric("cpu_util_cores_mean", "CPU (cores busy)", "cores"),
    Metric(EPOCH_MEAN_METRICS[0], "published memory measure (GB, epoch mean)", "gb"),
    Metric(EPOCH_MEAN_METRICS[1], "published CPU measure (%, epoch mean)", "pctpt"),
)
# Stands in for the robustness columns when no run of the experiment logged any: it is never a
# column, so it lands in "not measured here", as robustness should when no attack ran.
NO_ROBUSTNESS = Metric("robust_acc", "robust accuracy (%)", "pct")
# column headers: labels.ATTACK_LABELS, with the two the header's "eps 0.1 (%)" tail words differently
ATTACK_LABELS = {**labels.ATTACK_LABELS, "pgd_paper": "published PGD",
                 names.WORST: "worst case over every attack, pixel"}
# The published measure, and beside it what a reader needs to weigh it: accuracy after the published clamp
# alone (no attack step: how much of the published "attack" is the clamp) and the worst case at the same eps
# in pixel units. Where the group has the published measure, both columns stand even without data ("no data").
PUBLISHED_METRIC = names.robust_metric("pgd_paper", PUBLISHED_EPS)
CLAMP_ONLY = Metric("pgd_paper_clamp_only_acc", "published clamp alone, no attack step (%)", "pct")
WORST_PUBLISHED = names.robust_metric(names.WORST, PUBLISHED_EPS)
# names.robust_metric(attack, eps) read backwards: robust_acc_<attack>_eps_<eps:g>
ROBUST_METRIC = re.compile(r"^robust_acc_(.+)_eps_([0-9.eE+-]+)$")
SHOTS_PREFIX = "test_acc_shots_"  # names.sweep_metric(shots) = prefix + shots
# Left out of the further-metrics table: metrics logged per epoch (their "latest value" is not a run
# summary; paper_* are summarised as their mean over epochs instead), and the logged median over every
# epoch, which the results table replaces by the median over uncontended epochs.
PER_EPOCH = set(EPOCH_METRICS) | {"epoch_time_s_median"}
CONTENDED_LABEL = "contended epochs (left out of timings)"
HARDWARE_METRICS = (
    Metric("hw_circuit_executions_train", "circuit executions, training", "int"),
    Metric("hw_circuit_executions", "circuit executions, whole run", "int"),
    Metric("hw_shots_total", "shots, whole run", "int"),
    Metric("hw_time_est_s", "estimated hardware time", "dur"),
    Metric("test_acc_exact", "test acc, exact readout (%)", "pct"),
)


# ---------------------------------------------------------------------------------------------- which metrics
def parse_robust_metric(name: str) -> tuple[str, float] | None:
    """'robust_acc_pgd_eps_0.2' -> ('pgd', 0.2); None for any other name."""
    match = ROBUST_METRIC.match(name)
    if match is None:
        return None
    try:
        return match.group(1), float(match.group(2))
    except ValueError:
        return None


def robust_metrics(columns: Iterable[str]) -> list[Metric]:
    """One column per (attack, eps) logged: attacks in config order (unknown ones after), eps ascending; then
    the published measure, its clamp-only baseline and the worst case at its eps side by side, then the
    worst case at other eps. The clamp-only and worst-case columns are added whenever the published measure
    was logged, so a store without them says "no data" beside it instead of dropping the comparison."""
    found = {name: parsed for name in columns if (parsed := parse_robust_metric(name)) is not None}
    if PUBLISHED_METRIC in found:
        found.setdefault(WORST_PUBLISHED, (names.WORST, PUBLISHED_EPS))
    last = ("pgd_paper", names.WORST)

    def rank(item: tuple[str, tuple[str, float]]) -> tuple:
        name, (attack, eps) = item
        if attack in last:
            return (len(ATTACKS) + 1, last.index(attack) if name != WORST_PUBLISHED else 0.5, attack, eps)
        return (ATTACKS.index(attack) if attack in ATTACKS else len(ATTACKS), 0, attack, eps)

    out = []
    for name, (attack, eps) in sorted(found.items(), key=rank):
        out.append(Metric(name, f"{ATTACK_LABELS.get(attack, attack)} eps {eps:g} (%)", "pct"))
        if name == PUBLISHED_METRIC:
            out.append(CLAMP_ONLY)
    return out


def table_metrics(runset: RunSet) -> tuple[Metric, ...]:
    """The results/paired tables' metrics for this experiment, robustness from the eps values logged."""
    robust = robust_metrics(runset.runs.columns) or [NO_ROBUSTNESS]
    return (*HEAD_METRICS, *robust, *TAIL_METRICS)


# ---------------------------------------------------------------------------------------------- cells
def arm_interval(runset: RunSet, rows: pd.DataFrame, metric: str) -> Interval | None:
    """Mean and 95 % t-interval over seeds; one run: bootstrap over test examples (test accuracy only)."""
    if metric not in rows.columns:
        return None
    vals = rows.dropna(subset=[metric])
    if len(vals) == 1 and metric == "test_acc":
        correct = runset.correct(vals.run_id.iloc[0])
        if correct is not None:
            return bootstrap_interval(correct.astype(float))
    return t_interval(vals[metric].tolist())


# ---------------------------------------------------------------------------------------------- tables
def run_rows(runset: RunSet) -> list[list[Inline]]:
    """The runs table: one row per (dataset, protocol) with its arms, seeds, sizes and caveats."""
    rows: list[list[Inline]] = []
    for dataset, protocol in runset.groups():
        group = runset.group(dataset, protocol)

        def values(name: str) -> str:
            return "/".join(sorted({str(v) for v in col(group, name).dropna()})) or "?"

        short = group[group[SHORT_COLUMN].astype(bool)]
        caveats = sorted({str(v) for v in group.shortened.dropna()} | {str(v) for v in group.note.dropna()}
                         | ({f"{len(short)} of {len(group)} runs {budget_text(short[EPOCHS_COLUMN])}"}
                            if len(short) else set()))
        for name in ("params.epochs", "params.train_limit", "params.n_train"):
            if len({str(v) for v in col(group, name).dropna()}) > 1:
                caveats.append(f"mixed {name[len('params.'):]} across runs")
        batch = str(PAPER_BATCH_SIZE) if protocol == "paper" else values("params.batch_size")
        rows.append([DATASET_LABELS.get(dataset, dataset), protocol,
                     ", ".join(arm_label(a) for a in runset.arms(dataset, protocol)),
                     ", ".join(str(s) for s in sorted(set(group.seed))), epochs_cell(group, values("params.epochs")),
                     f"{values('params.n_train')} / {values('params.n_val')} / {values('params.n_test')}", batch,
                     "; ".join(caveats) or "-"])
    return rows


def epochs_cell(group: pd.DataFrame, planned: str) -> str:
    """Epochs the runs actually trained, min-max, with the planned number: '14-36 (50 planned)'; a fair run
    stops early on a validation plateau, so the planned number alone overstates the training."""
    ran = pd.to_numeric(group[EPOCHS_COLUMN], errors="coerce").dropna() if EPOCHS_COLUMN in group else pd.Series()
    if ran.empty:
        return f"{planned} planned"
    low, high = int(ran.min()), int(ran.max())
    span = str(low) if low == high else f"{low}-{high}"
    return span if span == planned else f"{span} ({planned} planned)"


def _per_seed_cell(runs: pd.DataFrame, metric: Metric) -> str:
    values = [None if metric.name not in runs or pd.isna(v) else float(v)
              for v in (runs[metric.name] if metric.name in runs else [None] * len(runs))]
    return fmt_seed_values(values, metric.fmt)


def results_table(runset: RunSet, sources: Sources, dataset: str,
                  protocol: str) -> tuple[list[Inline], list[list[Inline]], list[Metric]]:
    """Per arm: mean ± interval of each metric with data in this group (a "per seed" row under it when an
    arm has several runs), contended epochs per arm; also the metrics without data."""
    group = runset.group(dataset, protocol)
    candidates = table_metrics(runset)

    def has_data(name: str) -> bool:
        return name in group.columns and bool(group[name].notna().any())

    beside = {CLAMP_ONLY.name, WORST_PUBLISHED} if has_data(PUBLISHED_METRIC) else set()
    metrics = [m for m in candidates if has_data(m.name) or m.name in beside]
    missing = [m for m in candidates if m not in metrics]
    timed = any(m.name == TIME_METRIC for m in metrics)
    header: list[Inline] = ["arm", "seeds", *[m.label for m in metrics], *([CONTENDED_LABEL] if timed else [])]
    arms = runset.arms(dataset, protocol)
    several = any(len(runset.arm_runs(dataset, protocol, arm)) > 1 for arm in arms)
    rows = []
    for arm in arms:
        runs = runset.arm_runs(dataset, protocol, arm)
        row: list[Inline] = [arm_label(arm), ", ".join(str(s) for s in runs.seed)]
        for m in metrics:
            iv = arm_interval(runset, runs, m.name)
            used: Iterable[str] = runs.dropna(subset=[m.name]).run_id if m.name in runs else []
            row.append([sources.link(fmt_interval(iv, m.fmt), used), range_flag(iv, m.fmt)])
        if timed:
            row.append(contended_cell(runs))
        rows.append(row)
        if several:
            rows.append([f"{arm_label(arm)}, per seed", "", *[_per_seed_cell(runs, m) for m in metrics],
                         *([""] if timed else [])])
    return header, rows, missing
def paired_table(runset: RunSet, sources: Sources, dataset: str,
                 protocol: str) -> tuple[list[Inline], list[list[Inline]]]:
    """hybrid - cnn and hybrid - control over the seeds both arms have, per metric with data, with each
    seed's difference."""
    header: list[Inline] = ["metric", "hybrid - CNN", "hybrid - control"]
    rows = []
    for m in table_metrics(runset):
        cells: list[Inline] = [m.label.replace("(%)", "(pp)").replace("(%, epoch mean)", "(pp, epoch mean)")]
        any_data = False
        for other in ("cnn", "control"):
            pairs, _ = runset.pairs(dataset, protocol, m.name, other)
            if pairs is None:
                cells.append(NO_DATA_CELL)
                continue
            any_data = True
            iv = paired_interval("diff", pairs, m.name, runset)
            text = fmt_interval(iv, m.fmt, signed=True, unit=DIFF_UNITS[m.fmt])
            if iv is not None and iv.method == "t":
                text += f" (n={len(pairs.seeds)})"
            cell: list[Inline] = [sources.link(text, pairs.run_ids)]
            if len(pairs.seeds) > 1:
                diffs = [h - c for h, c in zip(pairs.hybrid, pairs.other)]
                cell.append(f"; per seed ({', '.join(map(str, pairs.seeds))}): "
                            f"{fmt_seed_values(diffs, m.fmt, signed=True)}")
            cells.append(cell)
        if any_data:
            rows.append(cells)
    return header, rows


def further_metrics(runset: RunSet, sources: Sources, dataset: str,
                    protocol: str) -> tuple[list[Inline], list[list[Inline]]]:
    """Every other final metric of the group (latest logged value), mean ± interval per arm."""
    known = {m.name for m in table_metrics(runset)} | PER_EPOCH | set(EPOCH_MEAN_METRICS)
    group = runset.group(dataset, protocol)
    metric_names = sorted(c[len("metrics."):] for c in group.columns if c.startswith("metrics.")
                          and c[len("metrics."):] not in known and not c.startswith("metrics." + CURVE_PREFIX)
                          and group[c].notna().any())
    arms = runset.arms(dataset, protocol)
    rows = []
    for name in metric_names:
        row: list[Inline] = [name]
        for arm in arms:
            runs = runset.arm_runs(dataset, protocol, arm).dropna(subset=[name])
            iv = t_interval(runs[name].tolist())
            row.append(sources.link(fmt_interval(iv, "num"), runs.run_id))
        rows.append(row)
    return ["metric (latest logged value)", *arms], rows


def hardware_table(runset: RunSet, sources: Sources, dataset: str,
                   protocol: str) -> tuple[list[Inline], list[list[Inline]]]:
    """The hybrid's hardware bill and its finite-shot accuracies (docs/hardware_cost.md), mean over seeds."""
    runs = runset.arm_runs(dataset, protocol, "hybrid")
    if runs.empty:
        return [], []
    shot_metrics = sorted((c[len("metrics."):] for c in runs.columns
                           if c.startswith("metrics." + SHOTS_PREFIX) and not c.endswith("_std")
                           and runs[c].notna().any()), key=lambda n: int(n.rsplit("_", 1)[1]))
    metrics = [*HARDWARE_METRICS,
               *(Metric(n, f"test acc, {int(n.rsplit('_', 1)[1]):,} shots (%)", "pct") for n in shot_metrics)]
    rows = []
    for metric in metrics:
        if metric.name not in runs or not runs[metric.name].notna().any():
            continue
        present = runs.dropna(subset=[metric.name])
        rows.append([metric.label, sources.link(fmt_interval(t_interval(present[metric.name].tolist()), metric.fmt),
                                                present.run_id)])
    return (["hybrid", "value"], rows) if rows else ([], [])
