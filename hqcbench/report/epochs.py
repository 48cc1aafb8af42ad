"""What each run's epochs say about its numbers: which epochs were contended (left out of timings), and
whether the run had the published budget of epochs.

Why a module of its own: both rules decide which numbers a reader may trust, and both are read off
the per-epoch history rather than the final metrics, so they are computed once, on load, into
columns every table, claim and export then uses alike.

Contention: an epoch whose process got less CPU than ``CONTENDED_SHARE`` x its intra-op threads
(per-epoch ``cpu_util_cores`` < 0.85 x per-epoch ``torch_threads``, else the run tag
``hqcbench.torch_threads``) was sharing the machine, so its wall time says more about the neighbours
than about the model. Such epochs are left out of every timing statistic: the report's seconds per
epoch is the median over the other epochs (``TIME_METRIC``), and a run whose every epoch was contended
has no timing. Runs on a GPU are not checked (their CPU is not what bounds an epoch); runs without a
per-epoch CPU history are not checked either, and keep their logged median.

Budget: the published runs trained ``PAPER_EPOCHS`` (50) epochs. A run with fewer epochs (metric
``epochs_run``, else the ``epochs`` param) is short, unless it is a fair-protocol run that stopped
early on a validation plateau (metric ``stopped_early`` = 1): that run finished its training.
"""
from __future__ import annotations

from typing import Iterable, SupportsFloat, SupportsIndex

import numpy as np
import pandas as pd

from hqcbench import names
from hqcbench.config import FAIR_RECIPE_PROTOCOLS, PAPER_EPOCHS
from hqcbench.report.claims import TIME_METRIC

CONTENDED_SHARE = 0.85
CONTENDED_COLUMN = "contended_epochs"  # per run: epochs left out of timings (NaN: not checked)
CHECKED_COLUMN = "checked_epochs"  # per run: epochs checked for contention (NaN: not checked)
EPOCHS_COLUMN = "epochs_run"  # per run: epochs trained (names.METRIC_EPOCHS_RUN, else the epochs param)
SHORT_COLUMN = "short_of_budget"  # per run: True when it ran fewer than the published epochs


def _number(value: str | bytes | SupportsFloat | SupportsIndex | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def contended_epochs(cpu: dict[int, float], threads: dict[int, float], tag_threads: float | None) -> set[int] | None:
    """Epochs with cpu_util_cores < CONTENDED_SHARE x threads; None when it cannot be told (no CPU
    history, or no thread count for an epoch that has one)."""
    if not cpu:
        return None
    out = set()
    for epoch, used in cpu.items():
        n = threads.get(epoch, tag_threads)
        if n is None:
            return None
        if used < CONTENDED_SHARE * n:
            out.add(epoch)
    return out


def annotate(runs: pd.DataFrame, histories: dict[tuple[str, str], dict[int, float]]) -> dict[str, set[int] | None]:
    """Add the contention, timing and budget columns to ``runs`` (in place); returns run id -> contended
    epochs (None: not checked), which history.csv writes per epoch."""
    contended: dict[str, set[int] | None] = {}
    counts: list[float] = []
    checked: list[float] = []
    medians: list[float | None] = []
    epochs_run: list[float] = []
    short: list[bool] = []
    for _, row in runs.iterrows():
        rid = row.run_id
        times = histories.get((rid, "epoch_time_s"), {})
        on_gpu = str(row.get(f"tags.{names.TAG_DEVICE}") or "").startswith("cuda")
        bad = None if on_gpu else contended_epochs(histories.get((rid, "cpu_util_cores"), {}),
                                                   histories.get((rid, names.METRIC_TORCH_THREADS), {}),
                                                   _number(row.get(f"tags.{names.TAG_TORCH_THREADS}")))
        contended[rid] = bad
        counts.append(np.nan if bad is None else len(bad))
        checked.append(np.nan if bad is None else len(histories.get((rid, "cpu_util_cores"), {})))
        if times:
            kept = [t for epoch, t in times.items() if not bad or epoch not in bad]
            medians.append(float(np.median(kept)) if kept else np.nan)
        else:  # no per-epoch history: the logged median, unchecked
            medians.append(_number(row.get("epoch_time_s_median")) if "epoch_time_s_median" in row else np.nan)
        ran = _number(row.get(names.METRIC_EPOCHS_RUN))
        ran = ran if ran is not None else _number(row.get("params.epochs"))
        epochs_run.append(np.nan if ran is None else int(ran))
        complete = ran is None or ran >= PAPER_EPOCHS or (
            row.get("protocol") in FAIR_RECIPE_PROTOCOLS and _number(row.get(names.METRIC_STOPPED_EARLY)) == 1.0)
        short.append(not complete)
    runs[CONTENDED_COLUMN] = counts
    runs[CHECKED_COLUMN] = checked
    runs[TIME_METRIC] = [np.nan if m is None else m for m in medians]
    runs[EPOCHS_COLUMN] = epochs_run
    runs[SHORT_COLUMN] = short
    return contended


def budget_text(epochs: Iterable[float]) -> str:
    """'ran 3 of the published 50 epochs' (a range when the runs differ)."""
    values = sorted({int(e) for e in epochs if pd.notna(e)})
    if not values:
        return ""
    span = str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
    return f"ran {span} of the published {PAPER_EPOCHS} epochs"


def budget_mark(runs: pd.DataFrame, run_ids: Iterable[str]) -> str:
    """' [ran 3 of the published 50 epochs]' when any of these runs is short of the budget, else ''."""
    ids = set(run_ids)
    short = runs[runs.run_id.isin(ids) & runs[SHORT_COLUMN].astype(bool)]
    text = budget_text(short[EPOCHS_COLUMN])
    return f" [{text}]" if text else ""


def epochs_span(runs: pd.DataFrame, run_ids: Iterable[str]) -> str:
    """Epochs trained by these runs: '3', '2-5' or '' (claims.csv's epochs column)."""
    values = sorted({int(e) for e in runs[runs.run_id.isin(set(run_ids))][EPOCHS_COLUMN] if pd.notna(e)})
    return "" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def contended_cell(runs: pd.DataFrame) -> str:
    """Per arm: 'k of n' contended epochs over its runs; which runs could not be checked."""
    checked = runs[runs[CONTENDED_COLUMN].notna()]
    if checked.empty:
        return "not checked"
    total = int(checked[CHECKED_COLUMN].sum())
    text = f"{int(checked[CONTENDED_COLUMN].sum())} of {total}"
    unchecked = len(runs) - len(checked)
    return text + (f" ({unchecked} run(s) not checked)" if unchecked else "")


def banner(runs: pd.DataFrame, labels: dict[str, str]) -> str:
    """The line at the top when runs are shorter than the published budget, per dataset / protocol."""
    short = runs[runs[SHORT_COLUMN].astype(bool)]
    if short.empty:
        return ""
    parts = []
    for (dataset, protocol), group in short.groupby(["dataset", "protocol"], sort=False):
        total = len(runs[(runs.dataset == dataset) & (runs.protocol == protocol)])
        parts.append(f"{labels.get(str(dataset), dataset)} / {protocol}: {len(group)} of {total} runs "
                     f"{budget_text(group[EPOCHS_COLUMN])}")
    return ("Shorter than the published budget: " + "; ".join(parts) + ". Every verdict resting on such runs is "
            "marked; a fair-protocol run that stopped early on a validation plateau counts as complete.")
