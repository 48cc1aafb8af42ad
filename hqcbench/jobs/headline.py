"""The answer on the parent row: paired differences between arms, logged on the parent run.

MLflow's runs table shows a parent's own metrics without expanding it. So the main job and the tune
retrain log, on their parent, each headline difference of test accuracy (e.g.
``test_acc_hybrid_minus_cnn``) as the mean over seeds of the per-seed paired difference, and with two
or more seeds its Student-t 95 % interval ends (``..._ci_low`` / ``..._ci_high``), the same interval
the report's verdicts use. ``summary.md`` holds the same numbers as a small table. Fractions, like
``test_acc`` itself (0.012 = 1.2 percentage points).

Pairs: every arm against the CNN (the published question), and the hybrid against each arm that
changes only its quantum layer (control, hybrid_noent, hybrid_frozen: what the circuit contributes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from hqcbench import names
from hqcbench.jobs.evaluate import TrainedArm
from hqcbench.report.stats import Interval, t_interval

HEADLINE_METRIC = "test_acc"
BASELINE = "cnn"
HYBRID = "hybrid"


@dataclass(frozen=True)
class Difference:
    arm: str
    baseline: str
    interval: Interval


def pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, baseline) pairs among ``arms``: each arm minus the CNN, then the hybrid minus its ablations."""
    out = [(arm, BASELINE) for arm in arms if arm != BASELINE] if BASELINE in arms else []
    if HYBRID in arms:
        out += [(HYBRID, arm) for arm in arms if arm not in (BASELINE, HYBRID)]
    return out


def differences(trained: Sequence[TrainedArm], metric: str = HEADLINE_METRIC) -> list[Difference]:
    """Per-seed paired differences of ``metric`` for each pair, over the seeds both arms finished."""
    by_arm: dict[str, dict[int, float]] = {}
    for item in trained:
        if metric in item.metrics:
            by_arm.setdefault(item.arm, {})[item.seed] = float(item.metrics[metric])
    out = []
    for arm, baseline in pairs(list(by_arm)):
        seeds = sorted(set(by_arm[arm]) & set(by_arm[baseline]))
        interval = t_interval([by_arm[arm][s] - by_arm[baseline][s] for s in seeds])
        if interval is not None:
            out.append(Difference(arm, baseline, interval))
    return out


def headline_metrics(diffs: Sequence[Difference], metric: str = HEADLINE_METRIC) -> dict[str, float]:
    """The parent-run metrics: the mean difference, and the interval ends when there is an interval."""
    out: dict[str, float] = {}
    for d in diffs:
        out[names.headline_metric(metric, d.arm, d.baseline)] = d.interval.mean
        if d.interval.has_interval:
            out[names.headline_metric(metric, d.arm, d.baseline, "ci_low")] = d.interval.low
            out[names.headline_metric(metric, d.arm, d.baseline, "ci_high")] = d.interval.high
    return out


def summary_markdown(diffs: Sequence[Difference], trained: Sequence[TrainedArm], title: str,
                     metric: str = HEADLINE_METRIC) -> str:
    """Per-arm mean test accuracy, then each paired difference with its interval, in percent."""
    lines = [f"# {title}", "", f"| arm | seeds | mean {metric} (%) |", "|---|---|---|"]
    arms: dict[str, list[float]] = {}
    for item in trained:
        if metric in item.metrics:
            arms.setdefault(item.arm, []).append(float(item.metrics[metric]))
    for arm, values in arms.items():
        lines.append(f"| {arm} | {len(values)} | {100 * sum(values) / len(values):.2f} |")
    lines += ["", "| difference | seeds | mean (pp) | 95 % t-interval (pp) |", "|---|---|---|---|"]
    for d in diffs:
        i = d.interval.scaled(100)
        span = f"[{i.low:+.2f}, {i.high:+.2f}]" if i.has_interval else "one seed: no interval"
        lines.append(f"| {d.arm} - {d.baseline} | {i.n} | {i.mean:+.2f} | {span} |")
    if not diffs:
        lines.append("| (needs two arms, one of them cnn or hybrid) | | | |")
    return "\n".join(lines) + "\n"
