"""The report's figures: learning curves and robustness-vs-eps curves (mean and 95 % band over seeds
per arm), and seconds-per-epoch bars. Inputs are plain dicts so the figures need no MLflow."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hqcbench.report.stats import Interval, t_interval  # noqa: E402

ARM_COLORS = {"cnn": "#1f77b4", "hybrid": "#d62728", "control": "#2ca02c"}
Series = dict[float, float]  # x -> y for one run


def _mean_band(runs: list[Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, low, high over the runs that have each x (band: 95 % t-interval; none for one run)."""
    xs = sorted({x for run in runs for x in run})
    mean, low, high = [], [], []
    for x in xs:
        iv = t_interval([run[x] for run in runs if x in run])
        mean.append(iv.mean)
        low.append(iv.low if iv.has_interval else iv.mean)
        high.append(iv.high if iv.has_interval else iv.mean)
    return np.array(xs), np.array(mean), np.array(low), np.array(high)


def _draw(ax, by_arm: dict[str, list[Series]], scale: float = 1.0) -> None:
    for arm, runs in by_arm.items():
        if not runs:
            continue
        x, mean, low, high = _mean_band(runs)
        color = ARM_COLORS.get(arm)
        ax.plot(x, mean * scale, "o-", ms=3, color=color, label=f"{arm} (n={len(runs)})")
        ax.fill_between(x, low * scale, high * scale, color=color, alpha=0.2, linewidth=0)
    ax.grid(alpha=0.3)


def learning_curves(panels: dict[str, dict[str, list[Series]]], title: str):
    """panels: metric name -> arm -> per-run {epoch: value}."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (metric, by_arm) in zip(axes[0], panels.items()):
        _draw(ax, by_arm)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(title + " (mean and 95 % band over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def robustness_curves(attacks: dict[str, dict[str, list[Series]]], title: str):
    """attacks: attack -> arm -> per-run {eps: robust accuracy (fraction)}."""
    fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 3.6), squeeze=False)
    for ax, (attack, by_arm) in zip(axes[0], attacks.items()):
        _draw(ax, by_arm, scale=100.0)
        ax.set_xlabel("eps (L-inf, pixel units)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(attack, fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title + " (mean and 95 % band over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def epoch_time_bars(groups: dict[str, dict[str, Interval]]):
    """groups: 'dataset / protocol' -> arm -> interval of the median seconds per epoch."""
    arms = sorted({arm for by_arm in groups.values() for arm in by_arm},
                  key=lambda a: list(ARM_COLORS).index(a) if a in ARM_COLORS else 99)
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(groups) + 2), 3.6))
    for k, arm in enumerate(arms):
        xs, ys, err = [], [], [[], []]
        for g, by_arm in enumerate(groups.values()):
            iv = by_arm.get(arm)
            if iv is None:
                continue
            xs.append(g + (k - (len(arms) - 1) / 2) * width)
            ys.append(iv.mean)
            err[0].append(iv.mean - iv.low if iv.has_interval else 0.0)
            err[1].append(iv.high - iv.mean if iv.has_interval else 0.0)
        ax.bar(xs, ys, width, yerr=err, capsize=3, color=ARM_COLORS.get(arm), label=arm)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("seconds per training epoch (median)")
    ax.set_title("Time per epoch: mean over seeds, 95 % t-interval", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
