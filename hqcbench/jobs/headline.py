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

import shlex
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.jobs.evaluate import TrainedArm
from hqcbench.report.stats import Interval, t_interval

HEADLINE_METRIC = "test_acc"
BASELINE = arm_registry.CNN
HYBRID = arm_registry.HYBRID


@dataclass(frozen=True)
class Difference:
    arm: str
    baseline: str
    interval: Interval


def pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, baseline) pairs among ``arms``: each arm minus the CNN, then the hybrid minus its ablations, then
    each user arm minus its twin and its frozen variant."""
    out = [(arm, BASELINE) for arm in arms if arm != BASELINE] if BASELINE in arms else []
    if HYBRID in arms:
        out += [(HYBRID, arm) for arm in arms if arm not in (BASELINE, HYBRID)]
    # a user arm against its classical twin (and its frozen variant): what its circuit contributes
    out += [(arm, f"{prefix}:{arm}") for arm in arms for prefix in ("twin", "frozen") if f"{prefix}:{arm}" in arms]
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
        low, high = d.interval.low, d.interval.high
        out[names.headline_metric(metric, d.arm, d.baseline)] = d.interval.mean
        if low is not None and high is not None:  # Interval.has_interval
            out[names.headline_metric(metric, d.arm, d.baseline, "ci_low")] = low
            out[names.headline_metric(metric, d.arm, d.baseline, "ci_high")] = high
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


def headline_lines(diffs: Sequence[Difference]) -> list[str]:
    """The parent row's answer as the ``run`` command prints it last, one line per difference, in
    percentage points: the terminal then ends with the comparison, not with per-run accuracies."""
    lines = []
    for d in diffs:
        i = d.interval.scaled(100)
        if i.has_interval:
            span = f"[{i.low:+.2f}, {i.high:+.2f}] (95 % t-interval, {i.n} seeds)"
        else:
            span = "(one seed, no interval)"
        lines.append(f"  {d.arm} - {d.baseline}: {i.mean:+.2f} pp {span}")
    return lines


def _hide_password(uri: str) -> str:
    """``uri`` with the password of its user part replaced by ``***``: the line lands in terminals and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def ui_command(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """What opens the runs just logged: a tracking server's page of the parent run, else the
    ``mlflow ui`` command over the same store (a database or a folder), the URI as MLflow uses it, so
    the printed command opens the store the job wrote to. A password in the URI is shown as ``***``."""
    scheme = tracking_uri.partition(":")[0].lower()
    if scheme in ("http", "https"):
        return f"{_hide_password(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    if scheme == "databricks":  # a workspace has its own UI and no local one: name the run instead
        return f"run {run_id} in experiment {experiment_id} of {tracking_uri}"
    return f"mlflow ui --backend-store-uri {shlex.quote(_hide_password(tracking_uri))}"
