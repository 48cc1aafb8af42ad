"""``python -m hqcbench report --experiment NAME``: MLflow runs -> report.md, report.html, PNG plots.

Reads the child runs of one experiment through ``mlflow.search_runs`` (pandas), one kept run per
(dataset, protocol, arm, seed), and writes
- the claims table: each published claim -> ours under paper -> ours under fair -> verdict;
- the table in the paper's shape per dataset x protocol x arm (mean +- 95 % t-interval over seeds;
  a bootstrap interval over test examples for a single run's test accuracy);
- paired comparisons hybrid - cnn and hybrid - control over seeds;
- learning curves, robustness-vs-eps curves and seconds-per-epoch bars;
then logs everything as artifacts of a report run (tag hqcbench.kind=report). Every number links
to a sources list naming the MLflow runs it came from, each linked into the MLflow UI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
import numpy as np
import pandas as pd

from hqcbench import names
from hqcbench.report import plots as report_plots
from hqcbench.report.claims import (DATASET_LABELS, FLAWS, PAPER_DATASETS, ClaimResult, Pairs, claims_for, evaluate_claim,
                             paired_interval)
from hqcbench.errors import UserInputError
from hqcbench.config import PAPER_BATCH_SIZE
from hqcbench.report.document import Anchor, Document, Inline, Link
from hqcbench.report.stats import (BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_SEEDS, Interval, bootstrap_interval,
                            t_interval)

log = logging.getLogger("hqcbench")

ARM_ORDER = ("cnn", "hybrid", "control")
PROTOCOL_ORDER = ("paper", "fair")
DEFAULT_UI_URL = "http://127.0.0.1:5000"
NO_DATA_CELL = "no data"
# Metrics logged per epoch: their "latest value" is not a run summary, so they are left out of the
# further-metrics table (paper_* are summarised as their mean over epochs instead).
PER_EPOCH = set(names.PER_EPOCH_METRICS) | {"cuda_alloc_peak_mb", "cuda_reserved_peak_mb", "nvml_proc_mem_peak_mb",
                                                "nvml_dev_mem_peak_mb", "nvml_gpu_util_mean"}
EPOCH_MEAN_METRICS = ("paper_memory_gb", "paper_cpu_percent")


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    fmt: str  # pct | sec | int | mb | cores | gb | pctpt | num


TABLE_METRICS = (
    Metric("best_val_acc", "best val acc (%)", "pct"),
    Metric("test_acc", "test acc (%)", "pct"),
    Metric("epoch_time_s_median", "s / epoch (median)", "sec"),
    Metric("params_total", "parameters", "int"),
    Metric("robust_acc_fgsm_eps_0.1", "FGSM eps 0.1 (%)", "pct"),
    Metric("robust_acc_pgd_eps_0.1", "PGD eps 0.1 (%)", "pct"),
    Metric("robust_acc_pgd_paper_eps_0.1", "published PGD eps 0.1 (%)", "pct"),
    Metric("rss_peak_mb_max", "peak RSS (MB)", "mb"),
    Metric("cpu_util_cores_mean", "CPU (cores busy)", "cores"),
    Metric("paper_memory_gb", "published memory measure (GB, epoch mean)", "gb"),
    Metric("paper_cpu_percent", "published CPU measure (%, epoch mean)", "pctpt"),
)
DIFF_UNITS = {"pct": "pp", "sec": "s", "int": "", "mb": "MB", "cores": "cores", "gb": "GB", "pctpt": "pp", "num": ""}


# ---------------------------------------------------------------------------------------------- formatting
def _scale(fmt: str) -> float:
    return 100.0 if fmt == "pct" else 1.0


def fmt_value(value: float, fmt: str, signed: bool = False) -> str:
    v = value * _scale(fmt)
    sign = "+" if signed else ""
    if fmt == "int":
        return f"{v:{sign},.0f}"
    if fmt == "mb":
        return f"{v:{sign}.0f}"
    if fmt == "sec":
        return f"{v:{sign}.2f}" if abs(v) >= 1 else f"{v:{sign}.3f}"
    if fmt in ("pct", "cores", "gb"):
        return f"{v:{sign}.2f}"
    if fmt == "pctpt":
        return f"{v:{sign}.1f}"
    return f"{v:{sign}.4g}"


def fmt_interval(iv: Interval | None, fmt: str, signed: bool = False, unit: str = "") -> str:
    """t: 'mean ± half'; bootstrap: 'mean [low, high] (bootstrap)'; single: 'mean (1 run)'."""
    if iv is None:
        return NO_DATA_CELL
    suffix = f" {unit}" if unit else ""
    mean = fmt_value(iv.mean, fmt, signed)
    if not iv.has_interval:
        return f"{mean}{suffix} (1 run)"
    if iv.method == "bootstrap":
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, signed)}, {fmt_value(iv.high, fmt, signed)}] (bootstrap)"
    if signed:  # differences: show the interval's ends, so its side of zero is read at a glance
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, True)}, {fmt_value(iv.high, fmt, True)}]"
    return f"{mean} ± {fmt_value(iv.half_width, fmt)}{suffix}"


def fmt_claim_interval(iv: Interval | None, unit: str) -> str:
    if iv is None:
        return NO_DATA_CELL
    digits = 2
    sign = "+" if unit in ("pp", "GB", "MB", "cores") else ""
    def f(v: float) -> str:
        return f"{v:{sign}.{digits}f}"
    mean = f(iv.mean) + ("x" if unit == "x" else f" {unit}")
    n = f"n={1 if iv.method == 'bootstrap' else iv.n}"
    if not iv.has_interval:
        return f"{mean} (no interval, {n})"
    tail = " bootstrap" if iv.method == "bootstrap" else ""
    return f"{mean} [{f(iv.low)}, {f(iv.high)}] ({n}{tail})"


def redact_uri(uri: str) -> str:
    """A tracking URI without any password (never print credentials into a report)."""
    parts = urlsplit(uri)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class RunSet:
    """The kept child runs of one experiment (one per dataset, protocol, arm, seed) and their context."""

    experiment_id: str
    experiment_name: str
    runs: pd.DataFrame  # run_id, dataset, protocol, arm, seed, shortened, note, params.*, tags.*, <metric>
    parents: pd.DataFrame
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (run_id, why)
    histories: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)
    _correct: dict[str, np.ndarray | None] = field(default_factory=dict)

    # -- PairSource (hqcbench.report.claims) --------------------------------------------------------------------
    def pairs(self, dataset: str, protocol: str, metric: str, other: str = "cnn") -> tuple[Pairs | None, str]:
        group = self.runs[(self.runs.dataset == dataset) & (self.runs.protocol == protocol)]
        label = f"{DATASET_LABELS.get(dataset, dataset)} under {protocol}"
        if group.empty:
            if protocol == "paper" and dataset not in PAPER_DATASETS:
                return None, "the paper protocol exists for MNIST, CIFAR-100 and STL-10 only"
            return None, f"no {protocol}-protocol runs on {DATASET_LABELS.get(dataset, dataset)}"
        if metric not in group.columns or group[metric].notna().sum() == 0:
            return None, f"{metric} was not logged for {label}"
        sub = group[group.arm.isin(["hybrid", other])].dropna(subset=[metric])
        wide = sub.pivot(index="seed", columns="arm", values=metric)
        ids = sub.pivot(index="seed", columns="arm", values="run_id")
        if "hybrid" not in wide or other not in wide:
            return None, f"no hybrid and {other} runs with {metric} for {label}"
        both = wide.dropna(subset=["hybrid", other]).sort_index()
        if both.empty:
            return None, f"no seed has both hybrid and {other} with {metric} for {label}"
        run_ids = [rid for seed in both.index for rid in (ids.loc[seed, "hybrid"], ids.loc[seed, other])]
        return Pairs([int(s) for s in both.index], both["hybrid"].tolist(), both[other].tolist(), run_ids), ""

    def correct(self, run_id: str) -> np.ndarray | None:
        if run_id not in self._correct:
            self._correct[run_id] = _load_correct(run_id)
        return self._correct[run_id]

    # -- helpers -----------------------------------------------------------------------------------------
    def groups(self) -> list[tuple[str, str]]:
        keys = {(d, p) for d, p in zip(self.runs.dataset, self.runs.protocol)}
        return sorted(keys, key=lambda k: (_dataset_rank(k[0]), PROTOCOL_ORDER.index(k[1])
                                           if k[1] in PROTOCOL_ORDER else 9))

    def arm_runs(self, dataset: str, protocol: str, arm: str) -> pd.DataFrame:
        r = self.runs
        return r[(r.dataset == dataset) & (r.protocol == protocol) & (r.arm == arm)].sort_values("seed")

    def arms(self, dataset: str, protocol: str) -> list[str]:
        present = set(self.runs[(self.runs.dataset == dataset) & (self.runs.protocol == protocol)].arm)
        return [a for a in ARM_ORDER if a in present] + sorted(present - set(ARM_ORDER))


def _dataset_rank(dataset: str) -> int:
    order = ("mnist", "cifar100", "stl10", "digits", "fashion_mnist")
    return order.index(dataset) if dataset in order else len(order)


def _load_correct(run_id: str) -> np.ndarray | None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="test_correct.txt", dst_path=tmp)
            text = Path(path).read_text()
    except Exception:  # artifact absent (older run) -> no bootstrap interval, said in the cell
        return None
    values = [int(line) for line in text.split() if line.strip()]
    return np.asarray(values, dtype=np.int8) if values else None


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def load_runs(experiment: str) -> RunSet:
    """All child runs of ``experiment`` (by name) -> a RunSet; raises UserInputError when there are none."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        existing = [e.name for e in mlflow.search_experiments()]
        raise UserInputError("experiment", f"no MLflow experiment named {experiment!r} in {redact_uri(mlflow.get_tracking_uri())}",
                             ", ".join(existing) or "none exist yet")
    frame = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="pandas", max_results=50_000)
    kind = _col(frame, f"tags.{names.TAG_KIND}")
    children = frame[kind == "child"].copy()
    parents = frame[kind == "main"].copy()
    if children.empty:
        raise UserInputError("experiment", f"experiment {experiment!r} has no hqcbench child runs "
                             "(run `python -m hqcbench run` with MLFLOW_EXPERIMENT_NAME set first)",
                             "an experiment holding runs of `python -m hqcbench run` / `mlflow run .`")
    children["dataset"] = _col(children, f"tags.{names.TAG_DATASET}")
    children["protocol"] = _col(children, f"tags.{names.TAG_PROTOCOL}")
    children["arm"] = _col(children, f"tags.{names.TAG_ARM}")
    children["seed"] = pd.to_numeric(_col(children, f"tags.{names.TAG_SEED}"), errors="coerce")
    children["shortened"] = _col(children, f"tags.{names.TAG_SHORTENED}")
    children["note"] = _col(children, f"tags.{names.TAG_NOTE}")
    excluded: list[tuple[str, str]] = []
    ok = children.status == "FINISHED"
    for _, row in children[~ok].iterrows():
        reason = row.get(f"tags.{names.TAG_ERROR}") if f"tags.{names.TAG_ERROR}" in children else None
        excluded.append((row.run_id, f"status {row.status}" + (f": {reason}" if isinstance(reason, str) else "")))
    kept = children[ok].dropna(subset=["dataset", "protocol", "arm", "seed"]).copy()
    kept["seed"] = kept.seed.astype(int)
    kept = kept.sort_values("start_time")
    dup = kept.duplicated(subset=["dataset", "protocol", "arm", "seed"], keep="last")
    for _, row in kept[dup].iterrows():
        excluded.append((row.run_id, f"superseded by a later run of {row.dataset}/{row.protocol}/{row.arm}/seed {row.seed}"))
    kept = kept[~dup].copy()
    for col in [c for c in kept.columns if c.startswith("metrics.")]:
        kept[col[len("metrics."):]] = kept[col]
    runset = RunSet(exp.experiment_id, exp.name, kept.reset_index(drop=True), parents, excluded)
    _load_histories(runset)
    return runset


def _load_histories(runset: RunSet) -> None:
    """Per-epoch curves for the plots, and the epoch means of the published resource measurements."""
    client = mlflow.MlflowClient()
    runs = runset.runs
    curve_keys = [c for c in runs.columns if c.startswith("robust_curve_")]
    for idx, row in runs.iterrows():
        keys = ["val_acc", "train_loss", *curve_keys, *[k for k in EPOCH_MEAN_METRICS if k in runs.columns]]
        for key in keys:
            if key in runs.columns and pd.isna(row.get(key)):
                continue
            history = client.get_metric_history(row.run_id, key)
            if history:
                runset.histories[(row.run_id, key)] = {m.step: m.value for m in history}
        for key in EPOCH_MEAN_METRICS:
            series = runset.histories.get((row.run_id, key))
            if series:
                runs.loc[idx, key] = float(np.mean(list(series.values())))


# ---------------------------------------------------------------------------------------------- sources
class Sources:
    """Numbered lists of run ids; a number in the report links to its list, the list into the MLflow UI."""

    def __init__(self, runset: RunSet, ui_url: str):
        self.runset, self.ui_url = runset, ui_url.rstrip("/")
        self.ids: dict[tuple[str, ...], str] = {}

    def ref(self, run_ids) -> str:
        key = tuple(sorted(dict.fromkeys(str(r) for r in run_ids)))
        if key not in self.ids:
            self.ids[key] = f"s{len(self.ids) + 1}"
        return self.ids[key]

    def link(self, text: str, run_ids) -> Inline:
        run_ids = list(run_ids)
        return Link(text, f"#{self.ref(run_ids)}") if run_ids and text != NO_DATA_CELL else text

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.runset.experiment_id}/runs/{run_id}"

    def items(self) -> list[Inline]:
        labels = {r.run_id: f"{r.dataset}/{r.protocol}/{r.arm}/seed {r.seed}" for r in self.runset.runs.itertuples()}
        out: list[Inline] = []
        for key, ref in self.ids.items():
            links: list[Inline] = []
            for k, rid in enumerate(key):
                links += [", " if k else "", Link(f"{labels.get(rid, '')} {rid[:8]}".strip(), self.run_url(rid))]
            out.append(Anchor(ref, [f"{ref}: ", *links]))
        return out


# ---------------------------------------------------------------------------------------------- tables
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


def results_table(runset: RunSet, sources: Sources, dataset: str, protocol: str) -> tuple[list, list, list]:
    metrics = [m for m in TABLE_METRICS if m.name in runset.runs.columns
               and runset.runs.loc[(runset.runs.dataset == dataset) & (runset.runs.protocol == protocol), m.name]
               .notna().any()]
    missing = [m for m in TABLE_METRICS if m not in metrics]
    header: list[Inline] = ["arm", "seeds", *[m.label for m in metrics]]
    rows = []
    for arm in runset.arms(dataset, protocol):
        runs = runset.arm_runs(dataset, protocol, arm)
        row: list[Inline] = [arm, ", ".join(str(s) for s in runs.seed)]
        for m in metrics:
            iv = arm_interval(runset, runs, m.name)
            used = runs.dropna(subset=[m.name]).run_id if m.name in runs else []
            row.append(sources.link(fmt_interval(iv, m.fmt), used))
        rows.append(row)
    return header, rows, missing


def paired_table(runset: RunSet, sources: Sources, dataset: str, protocol: str) -> tuple[list, list]:
    header: list[Inline] = ["metric", "hybrid - cnn", "hybrid - control"]
    rows = []
    for m in TABLE_METRICS:
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
            cells.append(sources.link(text, pairs.run_ids))
        if any_data:
            rows.append(cells)
    return header, rows


def further_metrics(runset: RunSet, sources: Sources, dataset: str, protocol: str) -> tuple[list, list]:
    known = {m.name for m in TABLE_METRICS} | PER_EPOCH | set(EPOCH_MEAN_METRICS)
    group = runset.runs[(runset.runs.dataset == dataset) & (runset.runs.protocol == protocol)]
    metric_names = sorted(c[len("metrics."):] for c in group.columns if c.startswith("metrics.")
                   and c[len("metrics."):] not in known and not c.startswith("metrics.robust_curve_")
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


# ---------------------------------------------------------------------------------------------- beyond the simulator
HARDWARE_METRICS = (
    Metric("hw_circuit_executions_train", "circuit executions, training", "int"),
    Metric("hw_circuit_executions", "circuit executions, whole run", "int"),
    Metric("hw_shots_total", "shots, whole run", "int"),
    Metric("hw_time_est_s", "estimated hardware time (s)", "sec"),
    Metric("test_acc_exact", "test acc, exact readout (%)", "pct"),
)


def hardware_table(runset: RunSet, sources: Sources, dataset: str, protocol: str) -> tuple[list, list]:
    """The hybrid's hardware bill and its finite-shot accuracies (docs/hardware_cost.md), mean over seeds."""
    runs = runset.arm_runs(dataset, protocol, "hybrid")
    if runs.empty:
        return [], []
    shot_metrics = sorted((c[len("metrics."):] for c in runs.columns
                           if c.startswith("metrics.test_acc_shots_") and not c.endswith("_std")
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


# ---------------------------------------------------------------------------------------------- claims table
def claim_rows(runset: RunSet, sources: Sources) -> tuple[list, list, list[dict]]:
    datasets = sorted(set(runset.runs.dataset), key=_dataset_rank)
    header: list[Inline] = ["claim", "published", "known flaw of the published number", "measure (paper / fair)",
                            "ours, paper protocol", "verdict (paper)", "ours, fair protocol", "verdict (fair)",
                            "published magnitude in our interval (paper / fair)"]
    rows, records = [], []
    for claim in claims_for(datasets):
        results = {p: evaluate_claim(claim, p, runset) for p in PROTOCOL_ORDER}
        flaw = Link(FLAWS[claim.flaw][0], f"#flaw-{claim.flaw}") if claim.flaw else "-"
        row: list[Inline] = [claim.claim, claim.published, flaw,
                             f"{claim.metric_paper or '-'} / {claim.metric_fair or '-'}"]
        for p in PROTOCOL_ORDER:
            res = results[p]
            row.append([sources.link(fmt_claim_interval(res.interval, claim.unit), res.run_ids), _caveat(runset, res)])
            row.append(f"{res.verdict.status} ({res.verdict.reason})")
        row.append(f"{results['paper'].magnitude} / {results['fair'].magnitude}")
        rows.append(row)
        records.append({"claim": claim.key, **{f"{p}_{k}": v for p in PROTOCOL_ORDER
                                               for k, v in _record(results[p]).items()}})
    return header, rows, records


def _caveat(runset: RunSet, res: ClaimResult) -> str:
    if not res.run_ids:
        return ""
    notes = set(runset.runs[runset.runs.run_id.isin(res.run_ids)].shortened.dropna())
    return (" [shortened: " + "; ".join(sorted(notes)) + "]") if notes else ""


def _record(res: ClaimResult) -> dict:
    iv = res.interval
    return {"mean": None if iv is None else iv.mean, "low": None if iv is None else iv.low,
            "high": None if iv is None else iv.high, "verdict": res.verdict.status}


# ---------------------------------------------------------------------------------------------- provenance
def git_commit() -> str:
    """The commit of the hqcbench checkout that wrote the report (+ '-dirty' when the package's tracked
    files differ from it; other folders do not change what the report computes)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty" if dirty else "")


def run_commands(runset: RunSet) -> list[str]:
    """Equivalent commands of the main jobs behind the runs (non-default parameters only)."""
    from hqcbench.config import FIELD_DEFAULTS

    parent_ids = set(_col(runset.runs, "tags.mlflow.parentRunId").dropna())
    parents = runset.parents[runset.parents.run_id.isin(parent_ids)] if len(runset.parents) else runset.parents
    commands = []
    for _, row in parents.sort_values("start_time").iterrows():
        args = []
        for name, default in FIELD_DEFAULTS.items():
            value = row.get(f"params.{name}")
            if isinstance(value, str) and value != str(default):
                args.append(f"--{name} {shlex.quote(value)}")
        prefix = f"MLFLOW_EXPERIMENT_NAME={shlex.quote(runset.experiment_name)} "
        via = " (launched via `mlflow run`)" if isinstance(row.get("tags.mlflow.project.entryPoint"), str) else ""
        commands.append(f"{prefix}python -m hqcbench run {' '.join(args)}".rstrip() + f"   # parent run {row.run_id}{via}")
    return commands


def _unique(runset: RunSet, column: str) -> list[str]:
    frames = [runset.runs, runset.parents]
    values = set()
    for f in frames:
        if column in f.columns:
            values |= {str(v) for v in f[column].dropna()}
    return sorted(values)


def provenance(runset: RunSet, report_command: str, report_run_id: str | None, rebuild: str = "",
               note: str = "") -> list[Inline]:
    versions = sorted(c for c in runset.runs.columns if c.startswith("tags.version."))
    version_text = ", ".join(f"{c[len('tags.version.'):]} {'/'.join(_unique(runset, c))}" for c in versions)
    machine = "; ".join(" / ".join(_unique(runset, f"tags.hqcbench.{k}")) or "?" for k in ("cpu_model", "cpu_count", "device"))
    items: list[Inline] = [
        f"Report written {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `{report_command}` "
        f"at hqcbench commit {git_commit()}" + (f"; logged as MLflow run {report_run_id}" if report_run_id else ""),
        f"Experiment {runset.experiment_name!r} (id {runset.experiment_id}) in {redact_uri(mlflow.get_tracking_uri())}",
        "Runs' source commit(s): " + (", ".join(_unique(runset, "tags.mlflow.source.git.commit")) or "not recorded"),
        f"Machine (from the runs' tags: CPU model; cores; device): {machine}",
        f"Python {'/'.join(_unique(runset, 'tags.hqcbench.python')) or '?'}; libraries: {version_text or 'not recorded'}",
    ]
    if rebuild:
        items.insert(0, f"Rebuild runs and report with: `{rebuild}`")
    if note:
        items.append(note)
    return items


# ---------------------------------------------------------------------------------------------- figures
def _series(runset: RunSet, run_ids, key: str, x_scale: float = 1.0) -> list[dict[float, float]]:
    out = []
    for rid in run_ids:
        h = runset.histories.get((rid, key))
        if h:
            out.append({step * x_scale: v for step, v in h.items()})
    return out


def robustness_points(runset: RunSet, rows: pd.DataFrame) -> dict[str, list[dict[float, float]]]:
    """attack -> per-run {eps: robust acc}: the logged curve, else the final robust_acc_* metrics."""
    out: dict[str, list[dict[float, float]]] = {}
    curve_keys = [c for c in runset.runs.columns if c.startswith("robust_curve_")]
    for key in curve_keys:
        series = _series(runset, rows.run_id, key, 1 / 1000)
        if series:
            out[key[len("robust_curve_"):]] = series
    pattern = re.compile(r"^robust_acc_(.+)_eps_([0-9.eE+-]+)$")
    finals: dict[str, list[dict[float, float]]] = {}
    for _, row in rows.iterrows():
        per_attack: dict[str, dict[float, float]] = {}
        for col in runset.runs.columns:
            match = pattern.match(col)
            if match and match.group(1) not in out and pd.notna(row.get(col)):
                per_attack.setdefault(match.group(1), {})[float(match.group(2))] = float(row[col])
        for attack, points in per_attack.items():
            finals.setdefault(attack, []).append(points)
    out.update(finals)
    return out


def make_figures(runset: RunSet, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the PNGs; returns section -> [(file name, caption)]."""
    figures: dict[str, list[tuple[str, str]]] = {"learning": [], "robustness": [], "time": []}
    time_groups: dict[str, dict[str, Interval]] = {}
    for dataset, protocol in runset.groups():
        label = f"{DATASET_LABELS.get(dataset, dataset)} / {protocol}"
        arms = runset.arms(dataset, protocol)
        panels = {key: {arm: _series(runset, runset.arm_runs(dataset, protocol, arm).run_id, key) for arm in arms}
                  for key in ("val_acc", "train_loss")}
        panels = {k: v for k, v in panels.items() if any(v.values())}
        if panels:
            name = f"learning_curves_{dataset}_{protocol}.png"
            report_plots.save(report_plots.learning_curves(panels, label), out_dir / name)
            figures["learning"].append((name, f"Learning curves, {label}"))
        attacks: dict[str, dict[str, list]] = {}
        for arm in arms:
            for attack, series in robustness_points(runset, runset.arm_runs(dataset, protocol, arm)).items():
                attacks.setdefault(attack, {})[arm] = series
        if attacks:
            name = f"robustness_{dataset}_{protocol}.png"
            report_plots.save(report_plots.robustness_curves(attacks, label), out_dir / name)
            figures["robustness"].append((name, f"Robust accuracy vs eps, {label}"))
        times = {arm: arm_interval(runset, runset.arm_runs(dataset, protocol, arm), "epoch_time_s_median")
                 for arm in arms}
        times = {a: iv for a, iv in times.items() if iv is not None}
        if times:
            time_groups[label] = times
    if time_groups:
        report_plots.save(report_plots.epoch_time_bars(time_groups), out_dir / "epoch_time.png")
        figures["time"].append(("epoch_time.png", "Median seconds per training epoch per arm"))
    return figures


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class Report:
    document: Document
    claims: list[dict]  # per claim: paper_/fair_ mean, low, high, verdict
    files: list[Path]


def build_report(runset: RunSet, out_dir: Path, ui_url: str = DEFAULT_UI_URL, report_command: str = "",
                 report_run_id: str | None = None, rebuild: str = "", note: str = "") -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = Sources(runset, ui_url)
    doc = Document(f"hqcbench report: {runset.experiment_name}")
    doc.ul(provenance(runset, report_command or "python -m hqcbench report", report_run_id, rebuild, note))
    doc.h2("Runs")
    doc.p("Main jobs behind these runs (equivalent commands, parameters that differ from the defaults):")
    doc.code("\n".join(run_commands(runset)) or "(parent runs not found)")
    doc.table(["dataset", "protocol", "arms", "seeds", "epochs", "train / val / test images", "batch", "caveats"],
              _run_rows(runset), "runs")
    if runset.excluded:
        doc.p(f"Left out ({len(runset.excluded)}):")
        doc.ul([[Link(rid[:8], sources.run_url(rid)), f": {why}"] for rid, why in runset.excluded])
    doc.h2("How to read this report")
    doc.ul([
        f"Each number is the mean over seeds ± the half-width of its {CONFIDENCE:.0%} Student-t interval "
        "(scipy.stats.t, df = seeds - 1). With a single run, test accuracy gets a percentile bootstrap interval "
        f"over test examples ({BOOTSTRAP_RESAMPLES:,} resamples, seeded); other single-run numbers carry no interval.",
        "Accuracies are percent; differences of accuracies are percentage points (pp). Every number links to the "
        "list of MLflow runs it came from (Sources, at the end), each linked into the MLflow UI.",
        "Paired comparisons use the same seeds for both arms: same seed = same split and batch order.",
        f"A claim is a directional hypothesis on the paired per-seed differences (hybrid vs cnn): it holds when "
        f"the whole 95 % interval lies on the claimed side, does not hold when it lies wholly on the other side, and "
        f"is inconclusive otherwise. No verdict from fewer than {MIN_SEEDS} seeds or without data.",
        "Under the paper protocol the accuracy claims compare the published measure (best validation epoch, "
        "augmented validation split); under the fair protocol they compare test accuracy of the checkpoint "
        "selected on validation.",
        "'no data' / 'not measured here: no data': that metric was not logged for that configuration.",
    ])
    header, rows, records = claim_rows(runset, sources)
    doc.h2("Claims of the published abstract")
    doc.table(header, rows, "claims")
    doc.p("Known flaws of the published measurements (named beside each published number above):")
    doc.ul([Anchor(f"flaw-{key}", f"{short}: {full}") for key, (short, full) in FLAWS.items()])
    doc.h2("Results in the paper's shape")
    for dataset, protocol in runset.groups():
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        head, body, missing = results_table(runset, sources, dataset, protocol)
        doc.table(head, body, f"results-{dataset}-{protocol}")
        if missing:
            doc.p("Not measured here (no data): " + ", ".join(m.label for m in missing) + ".")
    doc.h2("Paired comparisons (same seeds)")
    for dataset, protocol in runset.groups():
        head, body = paired_table(runset, sources, dataset, protocol)
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        if body:
            doc.table(head, body, f"paired-{dataset}-{protocol}")
        else:
            doc.p("No seed has hybrid together with cnn or control: no paired comparison.")
    doc.h2("Beyond the simulator: finite shots and the hardware bill")
    doc.p("What the hybrid's training and evaluation would cost on quantum hardware (circuit executions, "
          "shots, time at the configured shot rate; formula in docs/hardware_cost.md), and its test accuracy "
          "with finite-shot readout where a shots sweep ran.")
    any_hardware = False
    for dataset, protocol in runset.groups():
        head, body = hardware_table(runset, sources, dataset, protocol)
        if body:
            any_hardware = True
            doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
            doc.table(head, body, f"hardware-{dataset}-{protocol}")
    if not any_hardware:
        doc.p("Not measured here: no data (no hybrid run logged hw_* metrics).")
    doc.h2("Further metrics")
    for dataset, protocol in runset.groups():
        head, body = further_metrics(runset, sources, dataset, protocol)
        if body:
            doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
            doc.table(head, body, f"further-{dataset}-{protocol}")
    figures = make_figures(runset, out_dir)
    doc.h2("Figures")
    for section, title in (("learning", "Learning curves"), ("robustness", "Robustness vs eps"),
                           ("time", "Time per epoch")):
        doc.h3(title)
        if not figures[section]:
            doc.p("Not measured here: no data.")
        for name, caption in figures[section]:
            doc.img(name, caption)
    doc.h2("Sources")
    doc.ul(sources.items())
    files = [out_dir / name for items in figures.values() for name, _ in items]
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(doc.to_markdown())
    html_path.write_text(doc.to_html(out_dir))
    pd.DataFrame(records).to_csv(out_dir / "claims.csv", index=False)
    return Report(doc, records, [md_path, html_path, out_dir / "claims.csv", *files])


def _run_rows(runset: RunSet) -> list[list[Inline]]:
    rows = []
    for dataset, protocol in runset.groups():
        group = runset.runs[(runset.runs.dataset == dataset) & (runset.runs.protocol == protocol)]
        def values(col: str) -> str:
            return "/".join(sorted({str(v) for v in _col(group, col).dropna()})) or "?"
        caveats = sorted({str(v) for v in group.shortened.dropna()} | {str(v) for v in group.note.dropna()})
        for col in ("params.epochs", "params.train_limit", "params.n_train"):
            if len({str(v) for v in _col(group, col).dropna()}) > 1:
                caveats.append(f"mixed {col[len('params.'):]} across runs")
        batch = str(PAPER_BATCH_SIZE) if protocol == "paper" else values("params.batch_size")
        rows.append([DATASET_LABELS.get(dataset, dataset), protocol, ", ".join(runset.arms(dataset, protocol)),
                     ", ".join(str(s) for s in sorted(set(group.seed))), values("params.epochs"),
                     f"{values('params.n_train')} / {values('params.n_val')} / {values('params.n_test')}", batch,
                     "; ".join(caveats) or "-"])
    return rows


def write_report(experiment: str, out: str = "", ui_url: str = "", log_run: bool = True,
                 report_command: str = "", rebuild: str = "", note: str = "") -> Report:
    """Load, write and (by default) log the report as artifacts of a report run."""
    runset = load_runs(experiment)
    out_dir = Path(out or os.path.join("reports", experiment))
    ui_url = ui_url or os.environ.get("HQCBENCH_MLFLOW_UI", DEFAULT_UI_URL)
    if not log_run:
        return build_report(runset, out_dir, ui_url, report_command, None, rebuild, note)
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))  # `mlflow run . -e report`: reuse the project run
    start = {} if resumed else {"experiment_id": runset.experiment_id, "run_name": f"report-{experiment}"}
    with mlflow.start_run(**start) as run:
        mlflow.set_tags({names.TAG_KIND: "report", "hqcbench.report_of": runset.experiment_name})
        report = build_report(runset, out_dir, ui_url, report_command, run.info.run_id, rebuild, note)
        for path in report.files:
            mlflow.log_artifact(str(path))
    return report


# ---------------------------------------------------------------------------------------------- CLI
def handle(args: argparse.Namespace) -> int:
    """The ``report`` subcommand (``cli`` registers it with ``add_arguments``)."""
    if not args.experiment:
        raise UserInputError("experiment", "an experiment name is required", "the name of an MLflow experiment")
    if args.log_run not in ("true", "false"):
        raise UserInputError("log_run", f"got {args.log_run!r}", "true|false")
    command = "python -m hqcbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    report = write_report(args.experiment, args.out or "", args.ui_url or "", args.log_run == "true", command,
                          args.rebuild or "", args.note or "")
    print(f"hqcbench: report written to {report.files[0].parent} ({', '.join(p.name for p in report.files)})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's flags (= the MLproject ``report`` parameters)."""
    parser.add_argument("--experiment", default=None, help="MLflow experiment name holding the runs")
    parser.add_argument("--out", default="", help="output folder (default: reports/<experiment>)")
    parser.add_argument("--ui_url", default="", help=f"MLflow UI base URL for run links (default: env "
                        f"HQCBENCH_MLFLOW_UI or {DEFAULT_UI_URL})")
    parser.add_argument("--log_run", default="true", help="log the report as a report run (true|false)")
    parser.add_argument("--rebuild", default="", help="command that rebuilds runs and report, named in the report")
    parser.add_argument("--note", default="", help="a line added to the provenance (e.g. how timings were taken)")
