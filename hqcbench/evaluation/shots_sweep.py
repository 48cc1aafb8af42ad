"""The shots sweep: test accuracy of a trained hybrid when <Z> is read from N measurements.

The sampled readout itself is a model component (``hqcbench.models.readout``); this module only
evaluates a finished model at several shot counts and hands the numbers and a plot to tracking.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from hqcbench import names
from hqcbench.data.datasets import ImageSet
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.readout import make_rng
from hqcbench.tracking.figures import plt
from hqcbench.tracking.findings import Findings
from hqcbench.training.loop import evaluate
from hqcbench.training.recipes import effective_batch_size

SWEEP_REPEATS = 3  # sampled test evaluations per shot count in a sweep: mean and spread are logged


def readout_tags(eval_shots: int | None, train_shots: int | None) -> dict[str, str]:
    return {names.TAG_READOUT: "exact" if eval_shots is None else f"{eval_shots} shots",
            names.TAG_TRAIN_READOUT: "exact (autograd)" if train_shots is None
            else f"{train_shots} shots, parameter shift"}


def shots_sweep(model: torch.nn.Module, test: "ImageSet", shot_counts: Sequence[int], batch_size: int,
                device: torch.device, seed: int, repeats: int = SWEEP_REPEATS, title: str = "") -> Findings:
    """Test accuracy of a trained model at each shot count (``repeats`` sampled evaluations each) and exact.

    Restores the layers' readout afterwards. Findings: ``test_acc_exact``, ``test_acc_shots_{N}``
    (mean over repeats), ``test_acc_shots_{N}_std``, stepped ``test_acc_vs_shots`` (step = N), and
    the curve ``shots_sweep.png``.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer)]
    saved = [(getattr(layer, "shots", None), getattr(layer, "shot_rng", None)) for layer in layers]
    findings = Findings()
    if not layers:
        return findings
    try:
        for layer in layers:
            layer.shots = None
        exact = evaluate(model, test, batch_size, device).acc
        findings.metrics["test_acc_exact"] = exact
        curve: list[tuple[int, float, float]] = []
        for shots in shot_counts:
            accs = []
            for rep in range(repeats):
                for i, layer in enumerate(layers):
                    layer.shots, layer.shot_rng = int(shots), make_rng(seed, 1000 + i, int(shots), rep)
                accs.append(evaluate(model, test, batch_size, device).acc)
            mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
            findings.metrics[names.sweep_metric(shots)] = mean
            if repeats > 1:
                findings.metrics[f"{names.sweep_metric(shots)}_std"] = std
            findings.stepped.append(("test_acc_vs_shots", mean, int(shots)))
            curve.append((int(shots), mean, std))
            findings.summary.append(f"test acc at {shots} shots: {mean:.4f} +- {std:.4f} "
                                    f"(sd over {repeats} samplings; exact {exact:.4f})")
    finally:
        for layer, (saved_shots, saved_rng) in zip(layers, saved):
            layer.shots, layer.shot_rng = saved_shots, saved_rng
    findings.figures["shots_sweep.png"] = sweep_figure(curve, exact, title, repeats)
    findings.texts["shots_sweep.csv"] = "shots,test_acc_mean,test_acc_std\n" + "".join(
        f"{n},{m:.6f},{s:.6f}\n" for n, m, s in curve) + f"exact,{exact:.6f},0\n"
    return findings


def sweep_figure(curve: Iterable[tuple[int, float, float]], exact: float, title: str, repeats: int):
    points = sorted(curve)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if points:
        xs, ms, ss = zip(*points)
        ax.errorbar(xs, ms, yerr=ss, fmt="o-", capsize=3, label=f"sampled readout (mean +- sd of {repeats})")
    ax.axhline(exact, color="k", linestyle="--", label=f"exact <Z> ({exact:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("shots per circuit evaluation")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy vs shots")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_all(trained, splits, cfg, device: torch.device) -> dict[str, Findings]:
    """Per arm with a quantum layer: readout tags and, when ``cfg.shots_sweep`` is set, the sweep."""
    out: dict[str, Findings] = {}
    for item in trained:
        if not any(isinstance(m, QuantumLayer) for m in item.model.modules()):
            continue
        findings = Findings()
        findings.tags.update(readout_tags(cfg.eval_shots, cfg.train_shot_count))
        if cfg.shots_sweep_list:
            findings.merge(shots_sweep(item.model, splits.test, cfg.shots_sweep_list, effective_batch_size(cfg),
                                       device, item.seed, title=f"{cfg.dataset_name} / {item.arm} / seed {item.seed}"))
        out[item.arm] = findings
    return out
