"""The study's tables on disk and its figures: CSVs merged cell by cell, slopes, two PNGs.

CSVs are the study's memory: each finished cell replaces its own row (same key) and leaves the
others, so the study can run in parts, be interrupted, or be extended, and the README is always
rebuilt from everything the folder holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, SupportsInt, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hqcbench.study.gradients import TWO_DESIGN_SLOPE, ZERO_VARIANCE, fit_slope  # noqa: E402
from hqcbench.tracking.figures import save_png  # noqa: E402

GRADIENT_CSV, GRADIENT_PNG = "gradient_variance.csv", "gradient_variance.png"
ACCURACY_CSV, ACCURACY_PNG = "accuracy.csv", "accuracy.png"
GRADIENT_COLUMNS = ("n", "depth", "var_first", "var_mean", "inits", "seconds", "cpu_seconds")
GRADIENT_KEYS = ("n", "depth")
ACCURACY_COLUMNS = ("dataset", "n", "arm", "seed", "test_acc", "seconds", "cpu_seconds", "epoch_cpu_seconds", "epochs",
                    "train_limit")
ACCURACY_KEYS = ("dataset", "n", "arm", "seed")
ARM_STYLE = {"hybrid": ("tab:blue", "o"), "control": ("tab:orange", "s")}


def read_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """The CSV at ``path`` (an empty frame with ``columns`` when there is none yet)."""
    if not path.exists():
        return pd.DataFrame(columns=list(columns))
    return pd.read_csv(path)


def merge_rows(path: Path, rows: Iterable[dict], keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """Write ``rows`` into the CSV at ``path``, replacing rows with the same ``keys``; returns the table."""
    new = pd.DataFrame(list(rows), columns=list(columns))
    old = read_table(path, columns)
    if not old.empty:
        replaced = old.set_index(list(keys)).index.isin(new.set_index(list(keys)).index)
        old = old[~replaced]
    table = new if old.empty else pd.concat([old, new], ignore_index=True)
    table = table[list(columns)].sort_values(list(keys), ignore_index=True)
    table.to_csv(path, index=False)
    return table


def slope_table(grad: pd.DataFrame) -> pd.DataFrame:
    """Per depth: fitted log10-variance slopes over n (mean over weights, first weight), the factor
    per qubit, and the widths each fit used."""
    rows = []
    for depth, part in grad.groupby("depth"):
        mean_fit, first_fit = fit_slope(part["n"], part["var_mean"]), fit_slope(part["n"], part["var_first"])
        depth_int = int(cast(SupportsInt, depth))  # an integer column's key (pandas-stubs: any scalar)
        rows.append({"depth": depth_int, "slope_mean": mean_fit.slope, "factor_mean": mean_fit.factor_per_qubit,
                     "slope_first": first_fit.slope, "factor_first": first_fit.factor_per_qubit,
                     "widths_mean": _widths(mean_fit.widths), "widths_first": _widths(first_fit.widths)})
    return pd.DataFrame(rows, columns=["depth", "slope_mean", "factor_mean", "slope_first", "factor_first",
                                       "widths_mean", "widths_first"])


def _widths(widths: Sequence[int]) -> str:
    return f"{min(widths)}..{max(widths)} ({len(widths)})" if widths else "none"


def gradient_figure(grad: pd.DataFrame, path: Path) -> None:
    """Log-scale variance vs n, one line per depth with its slope; the 2**-n slope for reference."""
    slopes = slope_table(grad).set_index("depth")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(1, grad["depth"].nunique())))
    for ax, column, slope_key, title in ((axes[0], "var_first", "slope_first", "first weight"),
                                         (axes[1], "var_mean", "slope_mean", "mean over weights")):
        for colour, (depth, part) in zip(colours, grad.groupby("depth")):
            # numerically zero variances (left out of the fit too) would stretch the log axis by decades of noise
            values = part[column].where(part[column] > ZERO_VARIANCE)
            slope = slopes[slope_key].loc[depth]
            fitted = f"slope {slope:.3f}" if np.isfinite(slope) else "no fit"
            ax.plot(part["n"], values, "o-", color=colour, ms=3, label=f"depth {depth}: {fitted}")
        n = np.array(sorted(grad["n"].unique()), dtype=float)
        anchor = grad.loc[grad["n"] == n[0], column].max()
        if n.size and anchor > ZERO_VARIANCE:
            ax.plot(n, anchor * 10 ** (TWO_DESIGN_SLOPE * (n - n[0])), "k--", lw=1,
                    label=f"2^-n reference: slope {TWO_DESIGN_SLOPE:.3f}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("qubits n")
        ax.set_title(f"Var[dL/dθ], {title}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("variance over initialisations")
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def accuracy_summary(acc: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of test accuracy over seeds per (dataset, n, arm)."""
    grouped = acc.groupby(["dataset", "n", "arm"])["test_acc"]
    return grouped.agg(mean="mean", std="std", seeds="count").reset_index()


def accuracy_figure(acc: pd.DataFrame, path: Path) -> None:
    """Mean ± sd over seeds vs n, hybrid beside control, one panel per dataset."""
    summary = accuracy_summary(acc)
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for arm, part in summary[summary["dataset"] == dataset].groupby("arm"):
            colour, marker = ARM_STYLE.get(arm, ("tab:gray", "^"))
            ax.errorbar(part["n"], part["mean"], yerr=part["std"].fillna(0.0), color=colour, marker=marker,
                        capsize=3, label=arm)
        ax.set_title(dataset)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("qubits n (control: width of its middle)")
        ax.set_ylabel("test accuracy (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=120)
