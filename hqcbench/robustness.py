"""Adversarial robustness with ART, in pixel space ([0, 1] inputs, normalisation inside the model)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from hqcbench import tracking
from hqcbench.config import RunConfig
from hqcbench.data import ImageSet, Splits, to_float
from hqcbench.tracking import Findings

ATTACK_SUBSET_SEED = 2024  # the attacked subset is the same for every seed and arm


def attack_subset(test: ImageSet, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A fixed subset of the test split: (x in [0, 1] float32, y int64)."""
    n = len(test) if count is None else min(count, len(test))
    gen = torch.Generator().manual_seed(ATTACK_SUBSET_SEED)
    index = torch.randperm(len(test), generator=gen)[:n].sort().values
    return to_float(test.images[index]).numpy(), test.labels[index].numpy()


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], classes: int, device: torch.device):
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=classes,
                             clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")


def make_attack(name: str, classifier, eps: float, cfg: RunConfig):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    if name == "fgsm":
        return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=256)
    if name == "pgd":
        step = cfg.pgd_step_size or eps / 10
        return ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=step, max_iter=cfg.pgd_steps,
                                        num_random_init=cfg.pgd_restarts, batch_size=256, verbose=False)
    raise ValueError(f"unknown attack {name!r}")


def accuracy(classifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((classifier.predict(x, batch_size=512).argmax(1) == y).mean())


def evaluate_model(model: nn.Module, splits: Splits, cfg: RunConfig, device: torch.device) -> Findings:
    findings = Findings()
    x, y = attack_subset(splits.test, cfg.attack_sample_count)
    spec = splits.spec
    classifier = art_classifier(model, (spec.channels, spec.size, spec.size), spec.classes, device)
    findings.metrics["clean_acc_attack_subset"] = accuracy(classifier, x, y)
    for attack_name in cfg.attack_list:
        if attack_name not in ("fgsm", "pgd"):
            continue
        t0 = time.perf_counter()
        for eps in cfg.eps_list:
            x_adv = make_attack(attack_name, classifier, eps, cfg).generate(x, y)
            findings.metrics[tracking.robust_metric(attack_name, eps)] = accuracy(classifier, x_adv, y)
        findings.metrics[tracking.attack_time_metric(attack_name)] = time.perf_counter() - t0
    return findings


def run_all(trained, splits: Splits, cfg: RunConfig, device: torch.device) -> dict[str, Findings]:
    if not cfg.attack_list:
        return {}
    return {item.arm: evaluate_model(item.model, splits, cfg, device) for item in trained}


def make_epoch_hook(cfg: RunConfig, splits: Splits, device: torch.device) -> Callable[[int, nn.Module], Findings]:
    def hook(epoch: int, model: nn.Module) -> Findings:
        return Findings()
    return hook
