"""runs.csv and history.csv beside report.md, and reading other reports' runs.csv back.

Why a module of its own: a reader without MLflow must be able to recompute every number of the report,
so the two files hold everything the numbers come from (final metrics per run, every per-epoch
metric, which runs were left out and why, which epochs were contended); and the growth proxy reads the
same runs.csv of other report folders, so the writer and the reader of that format sit together.

runs.csv: one row per child run of the experiment (also the ones left out, ``left_out`` saying why;
the report's tables and claims use the rows where it is empty): identity (run_id, arm, seed, dataset,
protocol, status, left_out, fingerprint, epochs_run, device, torch_threads_tag, encoding_scale), the
report's derived columns
(``DERIVED``), then every final metric under its MLflow name (the metrics logged per epoch are in
history.csv instead; the robustness curves, logged per eps, only feed a figure and stay in MLflow).
Runs of an encoding-scale sweep (``encoding_scale`` != pi) share dataset, protocol, arm and seed with the
default runs; their ``left_out`` names the sweep, so the rows with an empty ``left_out`` stay one per seed,
and the sweep is recomputed from the rows of its (dataset, protocol, arm) whose ``left_out`` is empty or
names the sweep, grouped by ``encoding_scale``.
history.csv: one row per (run_id, epoch) of the runs the report uses, every per-epoch metric as a
column, and ``contended`` (1 / 0; empty when the run was not checked).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from hqcbench import names
from hqcbench.config import DEFAULT_ENCODING_SCALE
from hqcbench.errors import UserInputError
from hqcbench.report.claims import TIME_METRIC
from hqcbench.report.epochs import CHECKED_COLUMN, CONTENDED_COLUMN, EPOCHS_COLUMN, SHORT_COLUMN
from hqcbench.report.load import (
    CURVE_PREFIX,
    EPOCH_MEAN_METRICS,
    EPOCH_METRICS,
    LEFT_OUT,
    SCALE_COLUMN,
    RunSet,
    col,
    encoding_scales,
    is_default_scale,
    tag_col,
)

RUNS_CSV = "runs.csv"
HISTORY_CSV = "history.csv"
IDENTITY = ("run_id", "arm", "seed", "dataset", "protocol", "status", LEFT_OUT, "fingerprint", EPOCHS_COLUMN,
            "device", "torch_threads_tag", SCALE_COLUMN)
# Columns the report derives from the history (epochs.py): recomputable from history.csv, written so a
# reader can check them. The epoch means of the published measures are what the report compares.
DERIVED = (TIME_METRIC, CONTENDED_COLUMN, CHECKED_COLUMN, SHORT_COLUMN,
           *(f"{m}_epoch_mean" for m in EPOCH_MEAN_METRICS))


def runs_frame(runset: RunSet) -> pd.DataFrame:
    """The runs.csv table (see the module docstring)."""
    children = runset.children if len(runset.children) else runset.runs
    out = pd.DataFrame({"run_id": children.run_id.astype(str), "arm": children.arm,
                        "seed": pd.to_numeric(children.seed, errors="coerce").astype("Int64"),
                        "dataset": children.dataset, "protocol": children.protocol, "status": children.status,
                        LEFT_OUT: col(children, LEFT_OUT).fillna(""),
                        "fingerprint": tag_col(children, names.TAG_FINGERPRINT),
                        "device": tag_col(children, names.TAG_DEVICE),
                        "torch_threads_tag": tag_col(children, names.TAG_TORCH_THREADS),
                        SCALE_COLUMN: encoding_scales(children)})
    kept = runset.runs.set_index("run_id")
    derived = {TIME_METRIC: TIME_METRIC, CONTENDED_COLUMN: CONTENDED_COLUMN, CHECKED_COLUMN: CHECKED_COLUMN,
               SHORT_COLUMN: SHORT_COLUMN, **{f"{m}_epoch_mean": m for m in EPOCH_MEAN_METRICS}}
    epochs = pd.to_numeric(col(children, f"metrics.{names.METRIC_EPOCHS_RUN}"), errors="coerce")
    out[EPOCHS_COLUMN] = epochs.fillna(pd.to_numeric(col(children, "params.epochs"), errors="coerce")).astype("Int64")
    for name, source in derived.items():
        values = kept[source] if source in kept.columns else pd.Series(dtype=float)
        out[name] = [values.get(rid) if rid in values.index else None for rid in out.run_id]
    metrics = sorted(c for c in children.columns
                     if c.startswith("metrics.") and c[len("metrics."):] not in EPOCH_METRICS
                     and not c.startswith("metrics." + CURVE_PREFIX))
    for c in metrics:
        name = c[len("metrics."):]
        if name not in out.columns:
            out[name] = children[c].values
    out = out[[*IDENTITY, *DERIVED, *[c for c in out.columns if c not in IDENTITY and c not in DERIVED]]]
    return out.sort_values(["dataset", "protocol", "arm", "seed", "run_id"], na_position="last")


def history_frame(runset: RunSet) -> pd.DataFrame:
    """The history.csv table: (run_id, epoch) rows, per-epoch metrics as columns, and ``contended``."""
    metrics = [m for m in EPOCH_METRICS if any((rid, m) in runset.histories for rid in runset.runs.run_id)]
    rows = []
    for rid in runset.runs.run_id:
        series = {m: runset.histories.get((rid, m), {}) for m in metrics}
        epochs = sorted({e for s in series.values() for e in s})
        bad = runset.contended.get(rid)
        for epoch in epochs:
            row = {"run_id": rid, "epoch": epoch, **{m: series[m].get(epoch) for m in metrics}}
            row["contended"] = "" if bad is None else int(epoch in bad)
            rows.append(row)
    return pd.DataFrame(rows, columns=["run_id", "epoch", *metrics, "contended"])


def write_exports(runset: RunSet, out_dir: Path) -> list[Path]:
    """Write runs.csv and history.csv into ``out_dir``; returns their paths."""
    runs_path, history_path = out_dir / RUNS_CSV, out_dir / HISTORY_CSV
    runs_frame(runset).to_csv(runs_path, index=False)
    history_frame(runset).to_csv(history_path, index=False)
    return [runs_path, history_path]


def read_related(folders: list[str]) -> pd.DataFrame:
    """The used rows (``left_out`` empty, status FINISHED) of each folder's runs.csv, with a ``source``
    column naming the folder; raises UserInputError for a folder without runs.csv."""
    frames = []
    for folder in folders:
        path = Path(folder) / RUNS_CSV
        if not path.is_file():
            raise UserInputError("related", f"{folder!r} holds no {RUNS_CSV}",
                                 "report folders written by `python -m hqcbench report`, comma-separated")
        frame = pd.read_csv(path, dtype={"run_id": str, LEFT_OUT: str})
        left_out = frame[LEFT_OUT].fillna("") if LEFT_OUT in frame else pd.Series("", index=frame.index)
        status = frame.status if "status" in frame else pd.Series("FINISHED", index=frame.index)
        scale = pd.to_numeric(col(frame, SCALE_COLUMN), errors="coerce").astype(float).fillna(DEFAULT_ENCODING_SCALE)
        used = frame[(left_out == "") & (status == "FINISHED") & is_default_scale(scale)]  # never a sweep run
        used = used.dropna(subset=["dataset", "protocol", "arm", "seed"]).copy()
        used["seed"] = used.seed.astype(int)
        used["source"] = os.path.normpath(folder)
        frames.append(used)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run_id", "dataset", "protocol", "arm", "seed", "source"])
