"""The report's figures: learning curves and robustness-vs-eps curves (mean and 95 % band over seeds
per arm), seconds-per-epoch bars, and test accuracy vs the angle-encoding scale (the sweep).

The robustness figure has three kinds of panel, in a grid of at most three columns: one per attack
measured at several eps; one for every attack measured at a single eps (attacks as categories, a point
per arm), since a panel per such attack would hold a lone point each; and the PGD convergence curves,
read against PGD steps and random restarts rather than eps, on their own axes.

Why split in two layers: the drawing functions take plain dicts (x -> y per run, grouped by arm), so
they need neither MLflow nor pandas and can be checked on hand-made data; ``make_figures`` alone maps a
RunSet's histories and final metrics onto them and writes the PNG files the report embeds.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report runs headless
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hqcbench import names  # noqa: E402
from hqcbench.config import ATTACKS  # noqa: E402
from hqcbench.report.claims import DATASET_LABELS, TIME_METRIC  # noqa: E402
from hqcbench.report.load import ARM_ORDER, CURVE_PREFIX, SCALE_COLUMN, RunSet, col, group_rank  # noqa: E402
from hqcbench.report.stats import Interval, t_interval  # noqa: E402
from hqcbench.report.tables import ATTACK_LABELS, arm_interval, parse_robust_metric  # noqa: E402
from hqcbench.tracking.figures import save_png  # noqa: E402

MAX_COLUMNS = 3  # panels per figure row
MAX_WIDTH_IN = 11.0  # a landscape page
# The PGD convergence curves (their metric name without CURVE_PREFIX) and what their step counts.
CONVERGENCE_LABELS = {names.CONVERGENCE_STEPS_CURVE[len(CURVE_PREFIX):]: "PGD steps",
                      names.CONVERGENCE_RESTARTS_CURVE[len(CURVE_PREFIX):]: "random restarts"}
CONVERGENCE_EPS_METRIC = "pgd_convergence_eps"  # final metric: the eps the convergence curves ran at
# The tables' attack labels, shorter where a plot's tick or title has less room.
ATTACK_PLOT_LABELS = {**ATTACK_LABELS, names.WORST: "worst case",
                      "pgd_paper": "published PGD\n(normalised eps, clamped)"}
ARM_COLORS = {"cnn": "#1f77b4", "hybrid": "#d62728", "control": "#2ca02c", "hybrid_noent": "#9467bd",
              "hybrid_frozen": "#ff7f0e"}
Series = dict[float, float]  # x -> y for one run


def _error_bar(iv: Interval) -> tuple[float, float]:
    """Distances from the mean down to the interval's low end and up to its high end (0 without an interval)."""
    if iv.low is None or iv.high is None:
        return 0.0, 0.0
    return iv.mean - iv.low, iv.high - iv.mean


def _mean_band(runs: list[Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, low, high over the runs that have each x (band: 95 % t-interval; none for one run)."""
    xs = sorted({x for run in runs for x in run})
    mean, low, high = [], [], []
    for x in xs:
        iv = t_interval([run[x] for run in runs if x in run])
        assert iv is not None  # some run has a value at x
        mean.append(iv.mean)
        low.append(iv.mean if iv.low is None or iv.high is None else iv.low)
        high.append(iv.mean if iv.low is None or iv.high is None else iv.high)
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


def _grid(panels: int, column_in: float, row_in: float):
    """A figure of at most MAX_COLUMNS columns (more rows when needed), at most MAX_WIDTH_IN wide, and its
    axes in reading order; the grid's unused cells are removed so no empty frame is drawn."""
    columns = min(MAX_COLUMNS, max(1, panels))
    rows = math.ceil(max(1, panels) / columns)
    fig, grid = plt.subplots(rows, columns, figsize=(min(MAX_WIDTH_IN, column_in * columns), row_in * rows + 0.7),
                             squeeze=False, layout="constrained")
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.remove()
    return fig, axes[:panels]


def learning_curves(panels: dict[str, dict[str, list[Series]]], title: str):
    """panels: metric name -> arm -> per-run {epoch: value}."""
    fig, axes = _grid(len(panels), 5.0, 3.4)
    for ax, (metric, by_arm) in zip(axes, panels.items()):
        _draw(ax, by_arm)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(title + " (mean and 95 % band over seeds)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------- robustness
def _x_values(by_arm: dict[str, list[Series]]) -> set[float]:
    return {x for runs in by_arm.values() for run in runs for x in run}


def attack_rank(attack: str) -> tuple[int, str]:
    """Display order: config.ATTACKS, then the published measure and the worst case, then unknown ones."""
    last = ("pgd_paper", names.WORST)
    if attack in last:
        return len(ATTACKS) + 1 + last.index(attack), attack
    return (ATTACKS.index(attack) if attack in ATTACKS else len(ATTACKS) + len(last) + 1), attack


def split_attacks(attacks: dict[str, dict[str, list[Series]]]) -> tuple[dict, dict, dict]:
    """(eps curves, attacks at a single x, PGD convergence curves), each attack -> arm -> runs.

    A convergence curve is read against steps or restarts, not eps, so it never joins the others; an
    attack measured at one eps only would be a panel with a point per arm, so those share one panel."""
    curves, single, convergence = {}, {}, {}
    for attack, by_arm in attacks.items():
        xs = _x_values(by_arm)
        if not xs:
            continue
        if attack in CONVERGENCE_LABELS:
            convergence[attack] = by_arm
        elif len(xs) == 1:
            single[attack] = by_arm
        else:
            curves[attack] = by_arm
    steps_first = list(CONVERGENCE_LABELS)
    return _by_rank(curves), _by_rank(single), dict(sorted(convergence.items(), key=lambda i: steps_first.index(i[0])))


def _by_rank(attacks: dict) -> dict:
    return dict(sorted(attacks.items(), key=lambda item: attack_rank(item[0])))


def _eps_panel(ax, attack: str, by_arm: dict[str, list[Series]]) -> None:
    _draw(ax, by_arm, scale=100.0)
    ax.set_xlabel("eps (L-inf, pixel units)")
    ax.set_title(ATTACK_PLOT_LABELS.get(attack, attack), fontsize=9)


def _single_panel(ax, single: dict[str, dict[str, list[Series]]], arms: list[str]) -> None:
    """Attacks as categories, one point per arm (mean, 95 % t-interval over seeds), arms side by side."""
    eps_of = {attack: next(iter(_x_values(by_arm))) for attack, by_arm in single.items()}
    one_eps = len(set(eps_of.values())) == 1
    width = 0.7 / max(1, len(arms))
    for k, arm in enumerate(arms):
        xs, ys = [], []
        err: list[list[float]] = [[], []]
        for i, (attack, by_arm) in enumerate(single.items()):
            values = [v for run in by_arm.get(arm, []) for v in run.values()]
            if not values:
                continue
            iv = t_interval(values)
            assert iv is not None  # values is not empty
            below, above = _error_bar(iv)
            xs.append(i + (k - (len(arms) - 1) / 2) * width)
            ys.append(iv.mean * 100)
            err[0].append(below * 100)
            err[1].append(above * 100)
        if xs:
            ax.errorbar(xs, ys, yerr=err, fmt="o", ms=4, capsize=3, color=ARM_COLORS.get(arm))
    labels = [ATTACK_PLOT_LABELS.get(a, a) + ("" if one_eps else f"\neps {eps_of[a]:g}") for a in single]
    ax.set_xticks(range(len(single)), labels, fontsize=8, rotation=20 if len(single) > 3 else 0,
                  ha="right" if len(single) > 3 else "center")
    ax.set_xlim(-0.6, len(single) - 0.4)
    ax.set_title(f"at eps {next(iter(eps_of.values())):g}" if one_eps else "at a single eps each", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _convergence_panel(ax, attack: str, by_arm: dict[str, list[Series]], eps: float | None) -> None:
    """x: the raw PGD steps or restarts, log when they span more than a decade, ticked at each value."""
    _draw(ax, by_arm, scale=100.0)
    xs = sorted(_x_values(by_arm))
    if xs[0] > 0 and xs[-1] / xs[0] > 10:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(CONVERGENCE_LABELS[attack])
    ax.set_title("PGD convergence" + (f" (eps {eps:g})" if eps is not None else ""), fontsize=9)


def _arm_legend(fig, attacks: dict[str, dict[str, list[Series]]], arms: list[str], title: str) -> None:
    """One legend above every panel: arm colours and seeds per arm (a range when attacks differ)."""
    handles = []
    for arm in arms:
        counts = sorted({len(by_arm[arm]) for by_arm in attacks.values() if by_arm.get(arm)})
        n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        handles.append(matplotlib.lines.Line2D([], [], marker="o", ms=4, color=ARM_COLORS.get(arm),
                                               label=f"{arm} (n={n})"))
    # the title as the legend's title: both sit above the panels and constrained layout keeps them apart
    fig.legend(handles=handles, loc="outside upper center", ncol=max(1, len(handles)), fontsize=8,
               frameon=False, title=title, title_fontsize=10)


def robustness_curves(attacks: dict[str, dict[str, list[Series]]], title: str, convergence_eps: float | None = None):
    """attacks: attack -> arm -> per-run {x: robust accuracy (fraction)}, x = eps, or the raw PGD steps /
    restarts for the convergence curves (CONVERGENCE_LABELS); ``convergence_eps``: the eps those ran at.

    Panels: one per eps curve, one for every attack measured at a single eps, one per convergence curve."""
    curves, single, convergence = split_attacks(attacks)
    arms = sorted({arm for by_arm in attacks.values() for arm, runs in by_arm.items() if runs}, key=arm_rank)
    fig, axes = _grid(len(curves) + bool(single) + len(convergence), 3.6, 2.9)
    panels = iter(axes)
    for attack, by_arm in curves.items():
        _eps_panel(next(panels), attack, by_arm)
    if single:
        _single_panel(next(panels), single, arms)
    for attack, by_arm in convergence.items():
        _convergence_panel(next(panels), attack, by_arm, convergence_eps)
    for ax in axes:
        ax.set_ylabel("robust accuracy (%)", fontsize=8)
        ax.xaxis.label.set_size(9)
        ax.tick_params(labelsize=8)
    _arm_legend(fig, attacks, arms, title + " (mean and 95 % interval over seeds)")
    return fig


def epoch_time_bars(groups: dict[str, dict[str, Interval]]):
    """groups: 'dataset / protocol' -> arm -> interval of the median seconds per epoch."""
    arms = sorted({arm for by_arm in groups.values() for arm in by_arm},
                  key=lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER))
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(groups) + 2), 3.6))
    for k, arm in enumerate(arms):
        xs, ys = [], []
        err: list[list[float]] = [[], []]
        for g, by_arm in enumerate(groups.values()):
            iv = by_arm.get(arm)
            if iv is None:
                continue
            below, above = _error_bar(iv)
            xs.append(g + (k - (len(arms) - 1) / 2) * width)
            ys.append(iv.mean)
            err[0].append(below)
            err[1].append(above)
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
        intervals: list[Interval] = []
        for x in xs:
            iv = t_interval(points[x])
            assert iv is not None  # every scale of the sweep has a seed's accuracy
            intervals.append(iv)
        mean = np.array([iv.mean for iv in intervals]) * 100
        low = np.array([_error_bar(iv)[0] for iv in intervals]) * 100
        high = np.array([_error_bar(iv)[1] for iv in intervals]) * 100
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
    """attack -> per-run {eps: robust acc}: the logged curve, else the final robust_acc_* metrics; the
    convergence curves (CONVERGENCE_LABELS) keep their raw step (PGD steps, restarts) as x."""
    out: dict[str, list[Series]] = {}
    for key in [c for c in runset.runs.columns if c.startswith(CURVE_PREFIX)]:
        attack = key[len(CURVE_PREFIX):]
        series = _series(runset, rows.run_id, key, 1.0 if attack in CONVERGENCE_LABELS else CURVE_STEP_TO_EPS)
        if series:
            out[attack] = series
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


def convergence_eps(rows: pd.DataFrame) -> float | None:
    """The eps the group's PGD convergence curves ran at, when every run that logged it agrees."""
    values = {float(v) for v in col(rows, CONVERGENCE_EPS_METRIC).dropna()}
    return values.pop() if len(values) == 1 else None


def sweep_figures(runset: RunSet, out_dir: Path) -> list[tuple[str, str]]:
    """One encoding-scale figure per (dataset, protocol) whose sweep has an arm at two scales or more
    (RunSet.sweep); the control's default-scale mean test accuracy as the reference line."""
    sweep = runset.sweep("test_acc")
    out = []
    groups = {(str(dataset), str(protocol)): group
              for (dataset, protocol), group in sweep.groupby(["dataset", "protocol"])}
    for (dataset, protocol), group in sorted(groups.items(), key=lambda item: group_rank(item[0])):
        # pandas types a group's key as any scalar: SCALE_COLUMN holds floats
        by_arm = {str(arm): {cast(float, scale) / math.pi: rows.test_acc.astype(float).tolist()
                             for scale, rows in arm_rows.groupby(SCALE_COLUMN)}
                  for arm, arm_rows in sorted(group.groupby("arm"), key=lambda item: arm_rank(str(item[0])))}
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
            save(robustness_curves(attacks, label, convergence_eps(runset.group(dataset, protocol))), out_dir / name)
            figures["robustness"].append((name, f"Robust accuracy vs eps, {label}"))
        times = {arm: arm_interval(runset, runset.arm_runs(dataset, protocol, arm), TIME_METRIC)
                 for arm in arms}
        measured = {a: iv for a, iv in times.items() if iv is not None}
        if measured:
            time_groups[label] = measured
    if time_groups:
        save(epoch_time_bars(time_groups), out_dir / "epoch_time.png")
        figures["time"].append(("epoch_time.png", "Median seconds per training epoch per arm "
                                                  "(contended epochs left out)"))
    figures["contribution"] = sweep_figures(runset, out_dir)
    return figures
