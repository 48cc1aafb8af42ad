"""MLflow runs of one experiment -> a RunSet: one kept child run per (dataset, protocol, arm, seed).

Why a module of its own: this is the only place the report talks to the tracking store for run data;
every table, figure and claim downstream works on the in-memory RunSet, so those modules can be read
(and tested) without thinking about MLflow's query API, run statuses or superseded reruns.

Runs trained at another angle-encoding scale than the default (param ``encoding_scale`` != pi: an
encoding-scale sweep) share dataset, protocol, arm and seed with the default runs, so keeping "the latest
per seed" would let a sweep point replace the circuit every table and claim is about. They are kept apart,
in ``RunSet.variants``, and only the sweep reads them.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.arms import HYBRID
from hqcbench.config import DATASETS, DEFAULT_ENCODING_SCALE, PAPER_DATASETS
from hqcbench.errors import UserInputError
from hqcbench.report.claims import DATASET_LABELS
from hqcbench.report.epochs import annotate
from hqcbench.report.formatting import redact_uri
from hqcbench.report.judge import Pairs
from hqcbench.report.labels import arm_label, metric_label

# Display orders. Arms: as registered in hqcbench.arms (cnn, hybrid, control, ...). Protocols: config declares
# ("fair", "paper", "tuned"); the report shows the published protocol first, then fair, then tuned.
ARM_ORDER: tuple[str, ...] = arm_registry.names()
PROTOCOL_ORDER: tuple[str, ...] = ("paper", "fair", "tuned")
# Datasets: the paper's three first (in the paper's order), then the others in config order.
DATASET_ORDER: tuple[str, ...] = PAPER_DATASETS + tuple(d for d in DATASETS if d not in PAPER_DATASETS)

# Metrics whose per-epoch history is summarised as its mean over epochs (the published resource measures).
EPOCH_MEAN_METRICS = ("paper_memory_gb", "paper_cpu_percent")
# Every metric logged per epoch (step = epoch): read back as histories, written to history.csv; their
# latest value is not a run summary (docs/metrics.md lists them).
EPOCH_METRICS: tuple[str, ...] = (*names.PER_EPOCH_METRICS, "cuda_alloc_peak_mb", "cuda_reserved_peak_mb",
                                  "nvml_proc_mem_peak_mb", "nvml_proc_mem_mean_mb", "nvml_dev_mem_peak_mb",
                                  "nvml_dev_mem_mean_mb", "nvml_gpu_util_mean", "nvml_gpu_util_peak",
                                  *EPOCH_MEAN_METRICS)
# Why a child run is left out (children's ``left_out`` column; empty for the runs the report uses).
LEFT_OUT = "left_out"
# Per-example 0/1 test correctness a child run logs (jobs/run.py writes it under this artifact name).
TEST_CORRECT_ARTIFACT = "test_correct.txt"
# Prefix of the robustness-curve metrics (names.robust_curve_metric(attack) = prefix + attack).
CURVE_PREFIX = names.robust_curve_metric("")
# The param a run's angle-encoding scale is logged under, and the column RunSet.variants carries it in.
SCALE_PARAM = "params.encoding_scale"
SCALE_COLUMN = "encoding_scale"
SCALE_RTOL = 1e-9  # a logged float read back from its text: equal to the default within this


@dataclass
class RunSet:
    """The kept child runs of one experiment (one per dataset, protocol, arm, seed) and their context."""

    experiment_id: str
    experiment_name: str
    runs: pd.DataFrame  # run_id, dataset, protocol, arm, seed, shortened, note, params.*, tags.*, <metric>
    parents: pd.DataFrame
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (run_id, why)
    histories: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)
    children: pd.DataFrame = field(default_factory=pd.DataFrame)  # every child run, LEFT_OUT says why not used
    contended: dict[str, set[int] | None] = field(default_factory=dict)  # run id -> contended epochs (None: unchecked)
    # kept runs at a non-default encoding scale (columns of ``runs`` plus SCALE_COLUMN): the sweep's only
    variants: pd.DataFrame = field(default_factory=pd.DataFrame)
    # kept runs trained under a noise model (tag hqcbench.train_noise): the device-noise section's only, so a
    # noise-aware training never supersedes the noiseless one in the claims
    noise_trained: pd.DataFrame = field(default_factory=pd.DataFrame)
    _correct: dict[str, np.ndarray | None] = field(default_factory=dict)

    # -- PairSource (hqcbench.report.judge) --------------------------------------------------------------------
    def pairs(self, dataset: str, protocol: str, metric: str, other: str = "cnn",
              arm: str = HYBRID) -> tuple[Pairs | None, str]:
        """Per-seed values of ``metric`` for ``arm`` (the hybrid unless said) and ``other`` on the seeds both
        have, or why there are none."""
        return frame_pairs(self.runs, dataset, protocol, metric, other, arm)

    def correct(self, run_id: str) -> np.ndarray | None:
        """Per-test-example correctness of a run (downloaded once, then cached)."""
        if run_id not in self._correct:
            self._correct[run_id] = _load_correct(run_id)
        return self._correct[run_id]

    # -- helpers -----------------------------------------------------------------------------------------
    def groups(self) -> list[tuple[str, str]]:
        """The (dataset, protocol) pairs present, in display order."""
        return sorted({(d, p) for d, p in zip(self.runs.dataset, self.runs.protocol)}, key=group_rank)

    def group(self, dataset: str, protocol: str) -> pd.DataFrame:
        r = self.runs
        return r[(r.dataset == dataset) & (r.protocol == protocol)]

    def arm_runs(self, dataset: str, protocol: str, arm: str) -> pd.DataFrame:
        r = self.runs
        return r[(r.dataset == dataset) & (r.protocol == protocol) & (r.arm == arm)].sort_values("seed")

    def arms(self, dataset: str, protocol: str) -> list[str]:
        """Arms present in a group: the known ones in display order, then any others alphabetically."""
        present = set(self.group(dataset, protocol).arm)
        return [a for a in ARM_ORDER if a in present] + sorted(present - set(ARM_ORDER))

    def sweep(self, metric: str = "test_acc") -> pd.DataFrame:
        """The encoding-scale sweep: one row per run (dataset, protocol, arm, seed, encoding_scale, run_id,
        ``metric``) of every (dataset, protocol, arm) that ran at two scales or more, its default-scale runs
        counted at scale pi. Empty (same columns) when no variant has ``metric``."""
        columns = ["dataset", "protocol", "arm", "seed", SCALE_COLUMN, "run_id", metric]
        if self.variants.empty or metric not in self.variants.columns:
            return pd.DataFrame(columns=columns)
        added: dict[str, float | pd.Series] = {SCALE_COLUMN: float(DEFAULT_ENCODING_SCALE),
                                               metric: col(self.runs, metric)}
        base = self.runs.assign(**added)
        both = pd.concat([base[columns], self.variants[columns]], ignore_index=True).dropna(subset=[metric])
        scales = both.groupby(["dataset", "protocol", "arm"])[SCALE_COLUMN].transform("nunique")
        return both[scales >= 2].sort_values(["dataset", "protocol", "arm", SCALE_COLUMN, "seed"],
                                             ignore_index=True)


class WithRelated:
    """A PairSource over the kept runs plus rows of other reports' runs.csv (the growth proxy's datasets).

    A (dataset, protocol) the experiment itself has is never taken from a related folder."""

    def __init__(self, runset: RunSet, related: pd.DataFrame):
        self.runset = runset
        own = set(zip(runset.runs.dataset, runset.runs.protocol))
        keep = [(d, p) not in own for d, p in zip(related.dataset, related.protocol)] if len(related) else []
        self.frame = pd.concat([runset.runs, related[keep]], ignore_index=True) if any(keep) else runset.runs

    def pairs(self, dataset: str, protocol: str, metric: str, other: str = "cnn") -> tuple[Pairs | None, str]:
        return frame_pairs(self.frame, dataset, protocol, metric, other)

    def correct(self, run_id: str) -> np.ndarray | None:
        return self.runset.correct(run_id) if run_id in set(self.runset.runs.run_id) else None


def frame_pairs(frame: pd.DataFrame, dataset: str, protocol: str, metric: str,
                other: str = "cnn", arm: str = HYBRID) -> tuple[Pairs | None, str]:
    """Per-seed values of ``metric`` for ``arm`` (the hybrid unless said) and ``other`` on the seeds both have
    in ``frame`` (one row per dataset, protocol, arm, seed), or why there are none."""
    group = frame[(frame.dataset == dataset) & (frame.protocol == protocol)]
    label = f"{DATASET_LABELS.get(dataset, dataset)} under {protocol}"
    if group.empty:
        if protocol == "paper" and dataset not in PAPER_DATASETS:
            return None, "the paper protocol exists for MNIST, CIFAR-100 and STL-10 only"
        return None, f"no {protocol}-protocol runs on {DATASET_LABELS.get(dataset, dataset)}"
    if metric not in group.columns or group[metric].notna().sum() == 0:
        return None, f"{metric_label(metric)} was not logged for {label}"
    if other not in set(group.arm):
        return None, f"no {arm_label(other)} runs for {label}"
    sub = group[group.arm.isin([arm, other])].dropna(subset=[metric])
    wide = sub.pivot(index="seed", columns="arm", values=metric)
    ids = sub.pivot(index="seed", columns="arm", values="run_id")
    if arm not in wide or other not in wide:
        return None, f"no {arm_label(arm)} and {arm_label(other)} runs with {metric_label(metric)} for {label}"
    both = wide.dropna(subset=[arm, other]).sort_index()
    if both.empty:
        return None, (f"no seed has both {arm_label(arm)} and {arm_label(other)} with {metric_label(metric)} "
                      f"for {label}")
    run_ids = [rid for seed in both.index for rid in (ids.loc[seed, arm], ids.loc[seed, other])]
    return Pairs([int(s) for s in both.index], [float(v) for v in both[arm]],
                 [float(v) for v in both[other]], [str(r) for r in run_ids]), ""


def dataset_rank(dataset: str) -> int:
    return DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)


def group_rank(key: tuple[str, str]) -> tuple[int, int]:
    """Display order of a (dataset, protocol) pair: datasets as DATASET_ORDER, then protocols as PROTOCOL_ORDER."""
    dataset, protocol = key
    return dataset_rank(dataset), PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)


def col(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or all-None when the store never saw that param/tag/metric (search_runs omits it)."""
    return frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index, dtype=object)


def tag_col(frame: pd.DataFrame, tag: str) -> pd.Series:
    """The ``tags.<tag>`` column of a search_runs frame (see :func:`col`)."""
    return col(frame, f"tags.{tag}")


def _load_correct(run_id: str) -> np.ndarray | None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_CORRECT_ARTIFACT,
                                                       dst_path=tmp)
            text = Path(path).read_text()
    except Exception:  # artifact absent (older run) -> no bootstrap interval, said in the cell
        return None
    values = [int(line) for line in text.split() if line.strip()]
    return np.asarray(values, dtype=np.int8) if values else None


def load_runs(experiment: str) -> RunSet:
    """All child runs of ``experiment`` (by name) -> a RunSet; raises UserInputError when there are none."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        existing = [e.name for e in mlflow.search_experiments()]
        raise UserInputError("experiment", f"no MLflow experiment named {experiment!r} in "
                             f"{redact_uri(mlflow.get_tracking_uri())}", ", ".join(existing) or "none exist yet")
    frame = mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="pandas", max_results=50_000)
    kind = tag_col(frame, names.TAG_KIND)
    children = frame[kind == "child"].copy()
    parents = frame[kind.isin(["main", "campaign"])].copy()  # the jobs that started child runs
    if children.empty:
        raise UserInputError("experiment", f"experiment {experiment!r} has no hqcbench child runs "
                             "(run `python -m hqcbench run` with MLFLOW_EXPERIMENT_NAME set first)",
                             "an experiment holding runs of `python -m hqcbench run` / `mlflow run .`")
    children["dataset"] = tag_col(children, names.TAG_DATASET)
    children["protocol"] = tag_col(children, names.TAG_PROTOCOL)
    children["arm"] = tag_col(children, names.TAG_ARM)
    children["seed"] = pd.to_numeric(tag_col(children, names.TAG_SEED), errors="coerce")
    children["shortened"] = tag_col(children, names.TAG_SHORTENED)
    children["note"] = tag_col(children, names.TAG_NOTE)
    excluded = _failed(children)
    ok = children.status == "FINISHED"
    untagged = ok & children[["dataset", "protocol", "arm", "seed"]].isna().any(axis=1)
    excluded += [(rid, "no dataset, protocol, arm or seed tag") for rid in children[untagged].run_id]
    kept = children[ok & ~untagged].copy()
    kept["seed"] = kept.seed.astype(int)
    kept = kept.sort_values("start_time")
    for name in [c for c in kept.columns if c.startswith("metrics.")]:
        kept[name[len("metrics."):]] = kept[name]
    scale = encoding_scales(kept)
    default = is_default_scale(scale)
    variants = kept[~default].assign(**{SCALE_COLUMN: scale[~default]})
    kept = kept[default]
    train_noise = tag_col(kept, names.TAG_TRAIN_NOISE).fillna("").astype(str)
    under_noise = (train_noise != "") & ~train_noise.str.startswith("not modelled")
    noise_trained = kept[under_noise].copy()
    if not noise_trained.empty:  # the tag's column exists only when some run carries it
        noise_trained = noise_trained[~noise_trained.duplicated(
            subset=["dataset", "protocol", "arm", "seed", f"tags.{names.TAG_TRAIN_NOISE}"], keep="last")]
    kept = kept[~under_noise]
    dup = kept.duplicated(subset=["dataset", "protocol", "arm", "seed"], keep="last")
    for _, row in kept[dup].iterrows():
        excluded.append((row.run_id,
                         f"superseded by a later run of {row.dataset}/{row.protocol}/{row.arm}/seed {row.seed}"))
    kept = kept[~dup].copy()
    dup = variants.duplicated(subset=["dataset", "protocol", "arm", "seed", SCALE_COLUMN], keep="last")
    for _, row in variants[dup].iterrows():
        excluded.append((row.run_id, f"superseded by a later run of {row.dataset}/{row.protocol}/{row.arm}/seed "
                                     f"{row.seed} at encoding scale {scale_text(row[SCALE_COLUMN])}"))
    variants = variants[~dup].copy()
    why = dict(excluded)
    why.update({rid: sweep_note(s) for rid, s in zip(variants.run_id, variants[SCALE_COLUMN])})
    why.update({rid: "trained under noise: in the device-noise section only" for rid in noise_trained.run_id})
    children[LEFT_OUT] = [why.get(rid, "") for rid in children.run_id]
    runset = RunSet(exp.experiment_id, exp.name, kept.reset_index(drop=True), parents, excluded,
                    children=children.reset_index(drop=True), variants=variants.reset_index(drop=True),
                    noise_trained=noise_trained.reset_index(drop=True))
    _load_histories(runset)
    runset.contended = annotate(runset.runs, runset.histories)
    return runset


def encoding_scales(frame: pd.DataFrame) -> pd.Series:
    """Each run's angle-encoding scale as a float; the default (pi) where the param is missing or unreadable
    (runs logged before the field existed trained at pi)."""
    values = pd.to_numeric(col(frame, SCALE_PARAM), errors="coerce").astype(float)
    return values.fillna(float(DEFAULT_ENCODING_SCALE))


def is_default_scale(scale: pd.Series) -> pd.Series:
    """True where a run's encoding scale is the default (pi), within SCALE_RTOL."""
    return scale.map(lambda v: math.isclose(v, DEFAULT_ENCODING_SCALE, rel_tol=SCALE_RTOL, abs_tol=0.0)).astype(bool)


def scale_text(scale: float) -> str:
    """An encoding scale as a multiple of pi ('0.1 x pi'), how a sweep is specified."""
    return f"{scale / math.pi:.4g} x pi"


def sweep_note(scale: float) -> str:
    """The ``left_out`` text of a sweep run: not in the main tables, only in the encoding-scale sweep (so a
    reader of runs.csv who keeps the rows with an empty ``left_out`` sees one run per seed, as before)."""
    return f"encoding-scale sweep at {scale_text(scale)}: in the sweep only, not in the tables or claims"


def _failed(children: pd.DataFrame) -> list[tuple[str, str]]:
    """(run id, why) for every child run that did not finish: listed in the report, never used."""
    error_col = f"tags.{names.TAG_ERROR}"
    out = []
    for _, row in children[children.status != "FINISHED"].iterrows():
        reason = row.get(error_col) if error_col in children else None
        out.append((row.run_id, f"status {row.status}" + (f": {reason}" if isinstance(reason, str) else "")))
    return out


def _load_histories(runset: RunSet) -> None:
    """Every per-epoch metric (plots, contention, history.csv), the robustness curves, and the epoch means
    of the published resource measurements. Only metrics a run logged are asked for (one query each)."""
    client = mlflow.MlflowClient()
    runs = runset.runs
    keys = [k for k in (*EPOCH_METRICS, *(c for c in runs.columns if c.startswith(CURVE_PREFIX)))
            if k in runs.columns]
    for idx, row in runs.iterrows():
        for key in keys:
            if pd.isna(row.get(key)):
                continue
            history = client.get_metric_history(row.run_id, key)
            if history:
                runset.histories[(row.run_id, key)] = {m.step: m.value for m in history}
        for key in EPOCH_MEAN_METRICS:
            series = runset.histories.get((row.run_id, key))
            if series:
                runs.loc[idx, key] = float(np.mean(list(series.values())))
