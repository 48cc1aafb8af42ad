"""Worst-case robustness per example, and the evidence that the attacks behind it worked.

A model's robust accuracy is only as low as the best attack found; a model that hides its gradients
(a saturated Softmax in front of amplitude encoding, a bounded <Z> readout) keeps a high number
under PGD for reasons other than robustness. So besides the attacks themselves (``robustness``):

* **worst case** (``robust_acc_worst_eps_{eps}``): an image counts as robust only if it survives
  *every* attack run on the model at that eps or a smaller one (white-box, AutoAttack, Square, BPDA,
  transfer, curve points, the convergence runs): the union of the per-example fooled masks.
* **gradient diagnostic** (check ``zero_grad``, ``gradient_diagnostic``): the input gradient of the
  logit margin at each correctly classified image and at a random start in the eps ball.
* **BPDA** (check ``bpda``, ``run_bpda``): PGD through a surrogate backward pass (``evaluation.bpda``).
* **convergence** (check ``converged``, ``pgd_convergence``): robust accuracy against PGD's steps and
  restarts, on a 200-image subset.

Hand-written here: the per-example bookkeeping and the diagnostic's thresholds; the attacks and the
gradients are ART's.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.evaluation.attack_table import build_attack
from hqcbench.evaluation.attacks import (
    ATTACK_RNG_SEED,
    AttackSet,
    MarginLoss,
    art_classifier,
    predict_labels,
    seeded_numpy,
)
from hqcbench.evaluation.bpda import bpda_model
from hqcbench.evaluation.masking import BoundCheck, Convergence, ZeroGrad
from hqcbench.tracking.figures import plt
from hqcbench.tracking.findings import Findings

# A gradient "vanishes" when its largest entry is below ZERO_GRAD_ABS (numerically zero for float32
# models whose inputs live in [0, 1]), or when the largest first-order change it predicts anywhere in
# the eps ball, eps * ||g||_1, is below ZERO_GRAD_REL of the margin itself: float32 logits carry a
# relative rounding error of ~6e-8, so a change a millionth of the margin is within ~16 rounding steps
# and the gradient's sign (all an L-inf attack uses) is rounding noise.
ZERO_GRAD_ABS = 1e-10
ZERO_GRAD_REL = 1e-6
CONVERGENCE_IMAGES = 200  # the first images of the attacked subset
CONVERGENCE_STEPS = (10, 40, 100, 200)  # PGD iterations, 1 random start each (same start)
CONVERGENCE_RESTARTS = (1, 5, 10)  # random restarts of PGD with ``pgd_steps`` iterations
CONVERGENCE_FILE = "pgd_convergence.png"


def gradient_diagnostic(model: nn.Module, data: AttackSet, input_shape: tuple[int, ...], classes: int,
                        device: torch.device, eps: float, batch: int, clean_wrong: np.ndarray) -> ZeroGrad:
    """How many correctly classified images have a vanishing margin gradient at the image (where
    FGSM starts) or at a uniform random point of the eps ball (where PGD starts). ART computes the
    gradients (with EOT averaging on a finite-shot model); the margin loss is summed, so each image's
    gradient is its own, whatever the batch."""
    idx = np.flatnonzero(~clean_wrong)
    if not idx.size:
        return ZeroGrad(0, 0, eps)
    clf = art_classifier(model, input_shape, classes, device, loss=MarginLoss(reduction="sum"))
    x, y = data.x[idx], data.y[idx]
    with seeded_numpy(ATTACK_RNG_SEED):
        start = np.clip(x + np.random.uniform(-eps, eps, x.shape), 0.0, 1.0).astype(np.float32)
    vanishing = np.zeros(len(idx), dtype=bool)
    for point in (x, start):
        for s in range(0, len(idx), batch):
            grad = clf.loss_gradient(point[s:s + batch], y[s:s + batch])
            margin = clf.compute_loss(point[s:s + batch], y[s:s + batch], reduction="none")
            flat = np.abs(grad.reshape(len(grad), -1)).astype(np.float64)
            vanishing[s:s + batch] |= ((flat.max(1) < ZERO_GRAD_ABS)
                                       | (eps * flat.sum(1) < ZERO_GRAD_REL * np.abs(margin)))
    return ZeroGrad(int(vanishing.sum()), len(idx), eps)


def run_bpda(model: nn.Module, classifier, data: AttackSet, input_shape: tuple[int, ...], classes: int,
             device: torch.device, cfg: RunConfig, batch: int, bounds: BoundCheck
             ) -> tuple[list[str], dict[float, np.ndarray], float]:
    """PGD (the run's own settings, so only the backward pass differs from ``pgd``) on the BPDA
    surrogate at every eps; examples judged on the real model (``classifier``).
    Returns (what was replaced, eps -> fooled mask, seconds); nothing runs when nothing saturates."""
    surrogate, replaced = bpda_model(model)
    if not replaced:
        return replaced, {}, 0.0
    t0 = time.perf_counter()
    crafting = art_classifier(surrogate, input_shape, classes, device)
    fooled: dict[float, np.ndarray] = {}
    for eps in cfg.eps_list:
        with seeded_numpy(ATTACK_RNG_SEED):
            x_adv = build_attack("pgd", crafting, eps, cfg, batch).generate(data.x, data.y)
        bounds.update(data.x, x_adv, eps)
        fooled[eps] = predict_labels(classifier, x_adv, batch) != data.y
    return replaced, fooled, time.perf_counter() - t0


def pgd_convergence(classifier, data: AttackSet, eps: float, cfg: RunConfig, batch: int, bounds: BoundCheck
                    ) -> tuple[Convergence, np.ndarray]:
    """Robust accuracy on the first ``CONVERGENCE_IMAGES`` images against PGD's iterations (one run
    per count, the same random start) and against random restarts (restart r is a ``pgd_steps`` run
    from seed ATTACK_RNG_SEED + r - 1; an image falls at r restarts if any of the first r fooled it).
    Returns the curves and the fooled mask of every run together (in the subset's length)."""
    t0 = time.perf_counter()
    m = min(CONVERGENCE_IMAGES, len(data))
    x, y = data.x[:m], data.y[:m]
    clean_wrong = predict_labels(classifier, x, batch) != y

    def run(steps: int, seed: int, todo: np.ndarray) -> np.ndarray:
        """Fooled mask (over the m images) of one PGD run on the images ``todo``."""
        fooled = clean_wrong.copy()
        if todo.size:
            with seeded_numpy(seed):
                x_adv = build_attack("pgd", classifier, eps, cfg.replace(pgd_steps=steps, pgd_restarts=1),
                                    batch).generate(x[todo], y[todo])
            bounds.update(x[todo], x_adv, eps)
            fooled[todo] |= predict_labels(classifier, x_adv, batch) != y[todo]
        return fooled

    conv = Convergence(eps, m)
    every = np.arange(m)
    by_steps = {steps: run(steps, ATTACK_RNG_SEED, every) for steps in CONVERGENCE_STEPS}
    conv.steps = {steps: 1.0 - float(mask.mean()) for steps, mask in by_steps.items()}
    any_fooled = np.logical_or.reduce(list(by_steps.values()))
    broken = clean_wrong.copy()
    for r in range(1, max(CONVERGENCE_RESTARTS) + 1):  # a restart only matters for images not yet broken
        mask = by_steps.get(cfg.pgd_steps) if r == 1 else None
        broken |= mask if mask is not None else run(cfg.pgd_steps, ATTACK_RNG_SEED + r - 1, np.flatnonzero(~broken))
        if r in CONVERGENCE_RESTARTS:
            conv.restarts[r] = 1.0 - float(broken.mean())
    any_fooled |= broken
    full = np.zeros(len(data), dtype=bool)
    full[:m] = any_fooled
    conv.seconds = time.perf_counter() - t0
    return conv, full


def worst_mask(fooled: dict[str, dict[float, np.ndarray]], clean_wrong: np.ndarray, eps: float) -> np.ndarray:
    """Images broken at ``eps``: wrong already, or fooled by any attack at ``eps`` or a smaller eps
    (an example inside a smaller ball is inside this one)."""
    broken = clean_wrong.copy()
    for per_eps in fooled.values():
        for e, mask in per_eps.items():
            if e <= eps + 1e-12:
                broken |= mask
    return broken


def correct_table(data: AttackSet, clean_wrong: np.ndarray, fooled: dict[str, dict[float, np.ndarray]],
                  eps_list: Sequence[float]) -> str:
    """CSV, one row per attacked image (its index in the test split): 1 if still correct after each
    attack at each eps of the run, then after all of them (``worst``)."""
    columns = {"clean": ~clean_wrong}
    for attack, per_eps in sorted(fooled.items()):
        for eps in sorted(e for e in per_eps if e in eps_list):
            columns[f"{attack}_eps_{eps:g}"] = ~(per_eps[eps] | clean_wrong)
    for eps in eps_list:
        columns[f"{names.WORST}_eps_{eps:g}"] = ~worst_mask(fooled, clean_wrong, eps)
    index = data.index if data.index is not None else np.arange(len(data))
    lines = [",".join(["index", "label", *columns])]
    for i in range(len(data)):
        lines.append(",".join([str(int(index[i])), str(int(data.y[i])), *(str(int(c[i])) for c in columns.values())]))
    return "\n".join(lines) + "\n"


def convergence_figure(conv: Convergence, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, curve, label in ((axes[0], conv.steps, "PGD iterations (1 random start)"),
                             (axes[1], conv.restarts, "random restarts")):
        points = sorted(curve.items())
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
        ax.set_xscale("log")
        ax.set_xticks([p[0] for p in points])
        ax.set_xticklabels([str(p[0]) for p in points])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"robust accuracy (eps {conv.eps:g}, {conv.n} images)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def worst_findings(fooled: dict[str, dict[float, np.ndarray]], clean_wrong: np.ndarray, data: AttackSet,
                   cfg: RunConfig, zero: ZeroGrad | None, surrogates: list[str] | None,
                   conv: Convergence | None, eot: int, shots: int | None, title: str) -> Findings:
    """Metrics, curves, tags, the per-example table and summary lines of the worst case and the
    diagnostics of one model."""
    found = Findings()
    m = found.metrics
    attacks = sorted({a.split("_curve")[0] for a in fooled})
    for eps in cfg.eps_list:
        acc = 1.0 - float(worst_mask(fooled, clean_wrong, eps).mean())
        m[names.robust_metric(names.WORST, eps)] = acc
        found.summary.append(f"worst case over {', '.join(attacks) or 'no attack'} at eps {eps:g}: {acc:.4f} "
                             f"(an image counts only if it survives every one)")
    if fooled:
        found.texts[names.ROBUST_CORRECT_ARTIFACT] = correct_table(data, clean_wrong, fooled, cfg.eps_list)
    if zero is not None and zero.checked:
        m[names.METRIC_ZERO_GRAD_FRACTION] = zero.fraction
    if surrogates is not None:
        found.tags[names.TAG_BPDA_SURROGATES] = "; ".join(surrogates) if surrogates else "none"
        found.summary.append("bpda surrogates: " + ("; ".join(surrogates) if surrogates else
                                                    "none (nothing saturating to replace; bpda not run)"))
    if eot > 1:
        text = (f"{eot} readout samples averaged per gradient (EOT; sampled readout, {shots} shots); "
                f"predictions are single draws")
        found.tags[names.TAG_ATTACK_EOT] = text
        found.summary.append(f"finite-shot model: gradient attacks use {text}")
    if conv is not None:
        for steps, acc in sorted(conv.steps.items()):
            found.stepped.append((names.CONVERGENCE_STEPS_CURVE, acc, int(steps)))
        for restarts, acc in sorted(conv.restarts.items()):
            found.stepped.append((names.CONVERGENCE_RESTARTS_CURVE, acc, int(restarts)))
        m["pgd_convergence_eps"] = conv.eps
        m["pgd_convergence_images"] = float(conv.n)
        m[names.attack_time_metric("pgd_convergence")] = conv.seconds
        found.figures[CONVERGENCE_FILE] = convergence_figure(conv, title)
        found.summary.append(
            f"pgd convergence (eps {conv.eps:g}, {conv.n} images): steps "
            + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(conv.steps.items())) + "; restarts "
            + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(conv.restarts.items())) + f" ({conv.seconds:.1f} s)")
    return found
