"""The published attack (arXiv 2509.13353, authors' code), kept to reproduce its number.

PGD eps 0.1, step 0.01, 10 steps on *normalised* inputs clamped to [0, 1], every 5 epochs on the
validation split. On MNIST the clamp moves pixels by about 0.56, not 0.1: ``paper_findings`` logs
the perturbation actually applied and the accuracy the clamp alone leaves, beside the number.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import Splits
from hqcbench.evaluation.attacks import ATTACK_RNG_SEED, AttackSet, attack_batch_size, attack_subset
from hqcbench.tracking.findings import Findings

PAPER_EPS, PAPER_STEP, PAPER_STEPS, PAPER_EVERY = 0.1, 0.01, 10, 5
PAPER_METRIC = names.robust_metric("pgd_paper", PAPER_EPS)  # robust_acc_pgd_paper_eps_0.1
PAPER_SUMMARY_FILE = "robustness_pgd_paper.txt"


@dataclass
class PaperResult:
    acc: float
    clamp_only_acc: float  # accuracy on the clamped, unattacked inputs: what the clamp alone costs
    pixel_linf_mean: float  # the perturbation actually applied, in pixel units
    pixel_linf_max: float
    n: int
    seconds: float


def paper_attack(model: nn.Module, data: AttackSet, device: torch.device, seed: int = ATTACK_RNG_SEED) -> PaperResult:
    """The published procedure, kept to reproduce its number: PGD eps 0.1, step 0.01, 10 steps, one
    uniform random start, run on ``model.body`` (no normalisation) against *normalised* inputs, every
    iterate clamped to [0, 1] in that normalised space.

    Hand-written on purpose: ART projects after clipping, so its PGD never returns the clamped tensor
    the published attack produced, and torchattacks (whose PGD clamps exactly like this) pins
    requests~=2.25, which conflicts with mlflow. The 10-line loop below is that library's PGD.
    """
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    normalize, body = model.normalize, model.body
    assert isinstance(normalize, nn.Module) and isinstance(body, nn.Module)  # a Classifier's two parts
    gen = torch.Generator().manual_seed(seed)
    batch = attack_batch_size(data.x)
    correct = clamp_correct = 0
    linf: list[torch.Tensor] = []
    try:
        for start in range(0, len(data), batch):
            x = torch.from_numpy(data.x[start:start + batch]).to(device)
            y = torch.from_numpy(data.y[start:start + batch]).to(device)
            with torch.no_grad():
                xn = normalize(x)
                clamp_correct += int((body(xn.clamp(0, 1)).argmax(1) == y).sum())
            noise = (torch.rand(xn.shape, generator=gen) * 2 - 1).to(device) * PAPER_EPS
            adv = (xn + noise).clamp(0, 1)
            for _ in range(PAPER_STEPS):
                adv.requires_grad_(True)
                loss = nn.functional.cross_entropy(body(adv), y)
                grad, = torch.autograd.grad(loss, adv)
                adv = adv.detach() + PAPER_STEP * grad.sign()
                delta = (adv - xn).clamp(-PAPER_EPS, PAPER_EPS)
                adv = (xn + delta).clamp(0, 1).detach()
            with torch.no_grad():
                correct += int((body(adv).argmax(1) == y).sum())
                pixels = adv * normalize.std + normalize.mean  # what the attacked image is in pixel units
                linf.append((pixels - x).abs().flatten(1).max(1).values.cpu())
    finally:
        model.train(was_training)
    n = max(1, len(data))
    dist = torch.cat(linf) if linf else torch.zeros(1)
    return PaperResult(correct / n, clamp_correct / n, float(dist.mean()), float(dist.max()), len(data),
                       time.perf_counter() - t0)


def paper_findings(result: PaperResult, step: int | None = None) -> Findings:
    """Metrics of one paper-mode evaluation; ``step`` = epoch when run during training."""
    found = Findings()
    values = {PAPER_METRIC: result.acc, "pgd_paper_clamp_only_acc": result.clamp_only_acc,
              "pgd_paper_pixel_linf_mean": result.pixel_linf_mean, "pgd_paper_pixel_linf_max": result.pixel_linf_max,
              names.attack_time_metric("pgd_paper"): result.seconds}
    if step is None:
        found.metrics.update(values)
    else:
        found.stepped.extend((name, value, step) for name, value in values.items())
    found.summary.append(
        f"pgd_paper (published procedure, {result.n} validation images{'' if step is None else f', epoch {step}'}): "
        f"robust acc {result.acc:.4f} at a claimed eps {PAPER_EPS:g}; the perturbation actually applied is "
        f"{result.pixel_linf_mean:.3f} mean / {result.pixel_linf_max:.3f} max in pixel units "
        f"(clamping alone leaves accuracy {result.clamp_only_acc:.4f})")
    return found


def paper_epochs(epochs: int) -> list[int]:
    """Epochs at which the paper protocol runs the published attack: every 5th, and the last one (so a
    shortened run still gets a figure)."""
    return sorted({e for e in range(PAPER_EVERY, epochs + 1, PAPER_EVERY)} | {epochs})


def make_epoch_hook(cfg: RunConfig, splits: Splits, device: torch.device) -> Callable[[int, nn.Module], Findings]:
    """Under protocol=paper with ``pgd_paper`` in attacks: the published attack on the validation
    split every 5 epochs (step = epoch), as the authors did; otherwise a no-op."""
    active = cfg.protocol == "paper" and "pgd_paper" in cfg.attack_list
    due = set(paper_epochs(cfg.epochs)) if active else set()
    cache: dict[str, AttackSet] = {}
    lines: list[str] = []

    def hook(epoch: int, model: nn.Module) -> Findings:
        if epoch not in due:
            return Findings()
        if "val" not in cache:
            cache["val"] = attack_subset(splits.val, cfg.attack_sample_count, split="validation")
        found = paper_findings(paper_attack(model, cache["val"], device), step=epoch)
        if cache["val"].note:
            found.tags[names.TAG_ATTACK_NOTE] = cache["val"].note
        lines.extend(found.summary)
        found.texts[PAPER_SUMMARY_FILE] = "\n".join(lines) + "\n"  # rewritten with every evaluation so far
        return found

    return hook
