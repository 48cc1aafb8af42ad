"""ART plumbing for attacks in pixel space: the attacked subset, the classifier wrapper, the attacks.

Why pixel space: the published study attacked normalised tensors that its attack library clamped to
[0, 1], so its "eps = 0.1" was neither 0.1 nor a bounded perturbation. Here every model is attacked
as a user sees it: inputs in [0, 1], normalisation inside the model, ART's ``PyTorchClassifier``
with ``clip_values=(0, 1)``, L-inf budgets in pixel units.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn

from hqcbench.config import RunConfig
from hqcbench.data.datasets import ImageSet, to_float

ATTACK_SUBSET_SEED = 2024  # the attacked subset is the same for every seed and arm
ATTACK_RNG_SEED = 0  # random starts / Square's random squares: the same draws for every arm
# SquareAttack queries per image. ART's L-inf Square predicts on the whole subset every iteration, so
# its cost is ~max_iter/40 PGD-40 runs; 300 queries keep a 1000-image MNIST check within minutes on a
# 2-core CPU. It is a check for gradient masking (does a gradient-free search beat PGD?), not a
# state-of-the-art bound: AutoAttack uses 5000 queries.
SQUARE_MAX_ITER = 300
SQUARE_P_INIT = 0.8  # ART's and the Square paper's default for L-inf


@dataclass(frozen=True)
class AttackSet:
    """A fixed subset of one split: images in [0, 1] (float32, N C H W), labels, and a note if capped."""

    x: np.ndarray
    y: np.ndarray
    note: str = ""

    def __len__(self) -> int:
        return int(self.y.shape[0])


def attack_subset(data: ImageSet, count: int | None, split: str = "test") -> AttackSet:
    """``count`` images drawn with a constant seed (same for every seed and arm); None = all.

    A request larger than the split is capped at the split's size, with a note to log.
    """
    n = len(data) if count is None else min(count, len(data))
    note = ""
    if count is not None and count > len(data):
        note = f"attack_samples={count} capped at the {split} split's size ({len(data)} images)"
    gen = torch.Generator().manual_seed(ATTACK_SUBSET_SEED)
    index = torch.randperm(len(data), generator=gen)[:n].sort().values
    return AttackSet(to_float(data.images[index]).numpy(), data.labels[index].numpy(), note)


def attack_batch_size(x: np.ndarray) -> int:
    """Images per attack batch: big batches amortise ART's per-step overhead, bounded by activation
    memory (about 2**20 input values per batch: 1024 MNIST images, 37 STL-10 images)."""
    per_image = int(np.prod(x.shape[1:])) or 1
    return int(max(16, min(1024, 2 ** 20 // per_image)))


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], classes: int, device: torch.device):
    """ART's wrapper around the *whole* model (normalisation included), inputs clipped to [0, 1]."""
    from art.estimators.classification import PyTorchClassifier  # ART's import costs ~2.4 s: only when attacking

    model.eval()
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=classes,
                             clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")


def pgd_step_size(eps: float, cfg: RunConfig) -> float:
    return cfg.pgd_step_size or eps / 10


def make_attack(name: str, classifier, eps: float, cfg: RunConfig, batch_size: int = 256):
    """An ART evasion attack under the L-inf norm.

    PGD defaults (``pgd_steps`` 40, step eps/10, ``pgd_restarts`` 1 random start): 40 steps of eps/10
    can travel 4 eps, so any point of the ball is reachable twice over and the last ~30 steps refine
    rather than travel (Madry et al. used 40 steps of 0.01 at eps 0.3 on MNIST, i.e. 1.3 eps); the
    random start avoids the zero-gradient point a saturated softmax can put at the clean image.
    """
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent, SquareAttack  # ~2.4 s import

    if name == "fgsm":
        return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=batch_size)
    if name == "pgd":
        return ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=pgd_step_size(eps, cfg),
                                        max_iter=cfg.pgd_steps, num_random_init=cfg.pgd_restarts,
                                        batch_size=batch_size, verbose=False)
    if name == "square":
        return SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=SQUARE_MAX_ITER, p_init=SQUARE_P_INIT,
                            nb_restarts=1, batch_size=batch_size, verbose=False)
    raise ValueError(f"unknown attack {name!r}")


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """ART draws random starts and Square's squares from numpy's global RNG: seed it for
    reproducible numbers, and restore it so the attacks leave training's randomness untouched."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def predict_labels(classifier, x: np.ndarray, batch_size: int) -> np.ndarray:
    return classifier.predict(x, batch_size=batch_size).argmax(1)
