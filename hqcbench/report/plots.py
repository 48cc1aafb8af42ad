"""The report's figures: learning curves and robustness-vs-eps curves (mean and 95 % band over seeds
per arm), seconds-per-epoch bars, and test accuracy vs the angle-encoding scale (the sweep).

Why split in two layers: the drawing functions take plain dicts (x -> y per run, grouped by arm), so
they need neither MLflow nor pandas and can be checked on hand-made data; ``make_figures`` alone maps a
RunSet's histories and final metrics onto them and writes the PNG files the report embeds.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report runs headless
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hqcbench.report.claims import DATASET_LABELS, TIME_METRIC  # noqa: E402
from hqcbench.report.load import ARM_ORDER, CURVE_PREFIX, SCALE_COLUMN, RunSet, group_rank  # noqa: E402
from hqcbench.report.stats import Interval, t_interval  # noqa: E402
from hqcbench.report.tables import arm_interval, parse_robust_metric  # noqa: E402
from hqcbench.tracking.figures import save_png  # noqa: E402

ARM_COLORS = {"cnn": "#1f77b4", "hybrid": "#d62728", "control": "#2ca02c", "hybrid_noent": "#9467bd",
              "hybrid_frozen": "#ff7f0e"}
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
                  key=lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER))
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
    ax.set_ylabel("s / training epoch (median, uncontended)")
    ax.set_title("Time per epoch: mean over seeds, 95 % t-interval", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def encoding_scale_sweep(by_arm: dict[str, dict[float, list[float]]], reference: float | None, title: str):
    """by_arm: arm -> {encoding scale / pi: per-seed test accuracies (fractions)}; ``reference``: the control's
    mean test accuracy (fraction), drawn dashed, or None. Mean with its 95 % t-interval per scale, each seed
    faint behind it, log x: a sweep spans decades (0.1 to 10 x pi), and "does the scale matter" is read
    against the classical layer that has no scale at all."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arm, points in by_arm.items():
        color = ARM_COLORS.get(arm)
        xs = sorted(points)
        intervals = [t_interval(points[x]) for x in xs]
        mean = np.array([iv.mean for iv in intervals]) * 100
        low = np.array([iv.mean - iv.low if iv.has_interval else 0.0 for iv in intervals]) * 100
        high = np.array([iv.high - iv.mean if iv.has_interval else 0.0 for iv in intervals]) * 100
        seeds = sorted({len(points[x]) for x in xs})
        ax.errorbar(xs, mean, yerr=[low, high], fmt="o-", ms=4, capsize=3, color=color,
                    label=f"{arm} (n={'/'.join(map(str, seeds))} per scale)")
        for x in xs:
            ax.plot([x] * len(points[x]), np.asarray(points[x]) * 100, ".", color=color, alpha=0.3)
    if reference is not None:
        ax.axhline(reference * 100, ls="--", color=ARM_COLORS["control"], lw=1, label="control (mean)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 0.1, 1, 10
    ax.set_xlabel("encoding scale / pi (RY(scale * tanh x))")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + " (mean, 95 % t-interval over seeds)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path: Path) -> None:
    """Write a report figure as a palette PNG (``tracking.figures.save_png``) and close it."""
    save_png(fig, path, dpi=110)


# ---------------------------------------------------------------------------------------------- from runs
# A robustness-curve point is logged at step names.eps_step(eps) = round(eps * 1000): back to eps.
CURVE_STEP_TO_EPS = 1 / 1000


def _series(runset: RunSet, run_ids, key: str, x_scale: float = 1.0) -> list[Series]:
    """One {x: value} per run that has a history of ``key`` (x = step * x_scale)."""
    out = []
    for rid in run_ids:
        h = runset.histories.get((rid, key))
        if h:
            out.append({step * x_scale: v for step, v in h.items()})
    return out


def robustness_points(runset: RunSet, rows: pd.DataFrame) -> dict[str, list[Series]]:
    """attack -> per-run {eps: robust acc}: the logged curve, else the final robust_acc_* metrics."""
    out: dict[str, list[Series]] = {}
    for key in [c for c in runset.runs.columns if c.startswith(CURVE_PREFIX)]:
        series = _series(runset, rows.run_id, key, CURVE_STEP_TO_EPS)
        if series:
            out[key[len(CURVE_PREFIX):]] = series
    finals: dict[str, list[Series]] = {}
    for _, row in rows.iterrows():
        per_attack: dict[str, Series] = {}
        for name in runset.runs.columns:
            parsed = parse_robust_metric(name)
            if parsed and parsed[0] not in out and pd.notna(row.get(name)):
                per_attack.setdefault(parsed[0], {})[parsed[1]] = float(row[name])
        for attack, points in per_attack.items():
            finals.setdefault(attack, []).append(points)
    out.update(finals)
    return out


def sweep_figures(runset: RunSet, out_dir: Path) -> list[tuple[str, str]]:
    """One encoding-scale figure per (dataset, protocol) whose sweep has an arm at two scales or more
    (RunSet.sweep); the control's default-scale mean test accuracy as the reference line."""
    sweep = runset.sweep("test_acc")
    out = []
    for (dataset, protocol), group in sorted(sweep.groupby(["dataset", "protocol"]), key=lambda g: group_rank(g[0])):
        by_arm = {arm: {scale / math.pi: rows.test_acc.astype(float).tolist()
                        for scale, rows in arm_rows.groupby(SCALE_COLUMN)}
                  for arm, arm_rows in sorted(group.groupby("arm"), key=lambda item: arm_rank(item[0]))}
        control = runset.arm_runs(dataset, protocol, "control")
        values = control.test_acc.dropna() if "test_acc" in control else pd.Series(dtype=float)
        label = f"{DATASET_LABELS.get(dataset, dataset)} / {protocol}"
        name = sweep_figure_name(dataset, protocol)
        save(encoding_scale_sweep(by_arm, float(values.mean()) if len(values) else None, label), out_dir / name)
        out.append((name, f"Test accuracy vs encoding scale, {label}"))
    return out


def sweep_figure_name(dataset: str, protocol: str) -> str:
    return f"encoding_scale_{dataset}_{protocol}.png"


def arm_rank(arm: str) -> int:
    """Display order of an arm: ARM_ORDER, unknown arms after."""
    return ARM_ORDER.index(arm) if arm in ARM_ORDER else len(ARM_ORDER)


def make_figures(runset: RunSet, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Write the PNGs; returns section (learning | robustness | time | contribution) -> [(file name, caption)]."""
    figures: dict[str, list[tuple[str, str]]] = {"learning": [], "robustness": [], "time": [], "contribution": []}
    time_groups: dict[str, dict[str, Interval]] = {}
    for dataset, protocol in runset.groups():
        label = f"{DATASET_LABELS.get(dataset, dataset)} / {protocol}"
        arms = runset.arms(dataset, protocol)
        panels = {key: {arm: _series(runset, runset.arm_runs(dataset, protocol, arm).run_id, key) for arm in arms}
                  for key in ("val_acc", "train_loss")}
        panels = {k: v for k, v in panels.items() if any(v.values())}
        if panels:
            name = f"learning_curves_{dataset}_{protocol}.png"
            save(learning_curves(panels, label), out_dir / name)
            figures["learning"].append((name, f"Learning curves, {label}"))
        attacks: dict[str, dict[str, list[Series]]] = {}
        for arm in arms:
            for attack, series in robustness_points(runset, runset.arm_runs(dataset, protocol, arm)).items():
                attacks.setdefault(attack, {})[arm] = series
        if attacks:
            name = f"robustness_{dataset}_{protocol}.png"
            save(robustness_curves(attacks, label), out_dir / name)
            figures["robustness"].append((name, f"Robust accuracy vs eps, {label}"))
        times = {arm: arm_interval(runset, runset.arm_runs(dataset, protocol, arm), TIME_METRIC)
                 for arm in arms}
        times = {a: iv for a, iv in times.items() if iv is not None}
        if times:
            time_groups[label] = times
    if time_groups:
        save(epoch_time_bars(time_groups), out_dir / "epoch_time.png")
        figures["time"].append(("epoch_time.png", "Median seconds per training epoch per arm "
                                                  "(contended epochs left out)"))
    figures["contribution"] = sweep_figures(runset, out_dir)
    return figures
