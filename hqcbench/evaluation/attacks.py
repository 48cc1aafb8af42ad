"""ART plumbing for attacks in pixel space: the attacked subset, the classifier wrapper, the attacks.

Why pixel space: the published study attacked normalised tensors that its attack library clamped to
[0, 1], so its "eps = 0.1" was neither 0.1 nor a bounded perturbation. Here every model is attacked
as a user sees it: inputs in [0, 1], normalisation inside the model, ART's ``PyTorchClassifier``
with ``clip_values=(0, 1)``, L-inf budgets in pixel units.

A model whose circuit readout is sampled (``QuantumLayer.shots`` set) is wrapped so that every loss
gradient is the mean over ``EOT_SAMPLES`` readout samples (expectation over transformation,
``evaluation.art_ext.EOTClassifier``): one sampled gradient is noise an attack would follow blindly.
The losses AutoAttack needs besides cross-entropy (margin, DLR) live here, free of ART's import.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from hqcbench.config import RunConfig
from hqcbench.data.datasets import ImageSet, to_float
from hqcbench.models.quantum import QuantumLayer

ATTACK_SUBSET_SEED = 2024  # the attacked subset is the same for every seed and arm
ATTACK_RNG_SEED = 0  # random starts / Square's random squares: the same draws for every arm
# SquareAttack queries per image. ART's L-inf Square predicts on the whole subset every iteration, so
# its cost is ~max_iter/40 PGD-40 runs; 300 queries keep a 1000-image MNIST check within minutes on a
# 2-core CPU. It is a check for gradient masking (does a gradient-free search beat PGD?), not a
# state-of-the-art bound: AutoAttack uses 5000 queries.
SQUARE_MAX_ITER = 300
SQUARE_P_INIT = 0.8  # ART's and the Square paper's default for L-inf
# Square's queries when ``autoattack`` is requested (the masking check's Square and AutoAttack's own):
# AutoAttack's published budget. A gradient-free search with thousands of queries is what exposes a
# model whose gradients are useless; 300 queries only catch gross masking.
SQUARE_MAX_ITER_STRONG = 5000
# Readout samples whose loss gradients are averaged per attack step on a finite-shot model. The
# L-inf attacks use only each pixel's gradient sign; averaging 10 samples cuts the sampling noise of
# the gradient by sqrt(10) ~ 3.2x (as 10x the shots would) at 10x the gradient cost. Athalye et al.
# (2018) used EOT with 10-30 samples against randomised defences.
EOT_SAMPLES = 10
APGD_ITER = 100  # AutoAttack's standard budget per APGD run (make_autoattack)
APGD_RESTARTS = 1
APGD_TARGETS = 9  # target classes of APGD-T (AutoAttack's standard version)


@dataclass(frozen=True)
class AttackSet:
    """A fixed subset of one split: images in [0, 1] (float32, N C H W), labels, and a note if capped."""

    x: np.ndarray
    y: np.ndarray
    note: str = ""
    index: np.ndarray | None = None  # each image's position in its split (for per-example artifacts)

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
    return AttackSet(to_float(data.images[index]).numpy(), data.labels[index].numpy(), note, index.numpy())


def attack_batch_size(x: np.ndarray) -> int:
    """Images per attack batch: big batches amortise ART's per-step overhead, bounded by activation
    memory (about 2**20 input values per batch: 1024 MNIST images, 37 STL-10 images)."""
    per_image = int(np.prod(x.shape[1:])) or 1
    return int(max(16, min(1024, 2 ** 20 // per_image)))


def sampled_shots(model: nn.Module) -> int | None:
    """Shots of the model's sampled circuit readout in eval mode (what attacks see); None = exact."""
    shots = [layer.shots for layer in model.modules() if isinstance(layer, QuantumLayer) and layer.shots]
    return max(shots) if shots else None


def eot_samples_for(model: nn.Module) -> int:
    """Readout samples per gradient: ``EOT_SAMPLES`` for a finite-shot model, 1 for a deterministic one."""
    return EOT_SAMPLES if sampled_shots(model) else 1


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], classes: int, device: torch.device,
                   loss: nn.Module | None = None, eot_samples: int | None = None):
    """ART's wrapper around the *whole* model (normalisation included), inputs clipped to [0, 1].

    ``loss``: what ``loss_gradient`` differentiates (cross-entropy unless given: APGD's DLR, the
    margin of the gradient diagnostic). ``eot_samples`` (default: ``eot_samples_for(model)``) > 1
    gives ``art_ext.EOTClassifier``, which averages loss gradients over that many readout samples.
    """
    from art.estimators.classification import PyTorchClassifier  # ART's import costs ~2.4 s: only when attacking

    model.eval()
    samples = eot_samples_for(model) if eot_samples is None else eot_samples
    kwargs = dict(model=model, loss=loss if loss is not None else nn.CrossEntropyLoss(), input_shape=input_shape,
                  nb_classes=classes, clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    if samples > 1:
        from hqcbench.evaluation.art_ext import EOTClassifier  # imports ART (~2.4 s): only when attacking

        return EOTClassifier(eot_samples=samples, **kwargs)
    return PyTorchClassifier(**kwargs)


def with_loss(classifier, loss: nn.Module):
    """The same model (and the same EOT averaging) as ``classifier``, differentiating ``loss`` instead.

    Why not ART's ``loss_type``: APGD then builds a plain ``PyTorchClassifier`` from the model, which
    would drop the EOT averaging of a finite-shot model.
    """
    device = torch.device("cuda" if classifier.device.type == "cuda" else "cpu")
    return art_classifier(classifier.model, classifier.input_shape, classifier.nb_classes, device, loss,
                          getattr(classifier, "eot_samples", 1))


def _labels(target: torch.Tensor) -> torch.Tensor:
    """Index labels from ART's one-hot (a loss ART does not recognise gets them one-hot) or index labels."""
    return target.argmax(1) if target.dim() > 1 else target.long()


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


class MarginLoss(nn.modules.loss._Loss):
    """max_{j != y} z_j - z_y per example: positive once the image is misclassified. The gradient
    diagnostic differentiates it because, unlike cross-entropy, it does not vanish when a correct
    prediction's softmax saturates (a confident model is not a masked one)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = _labels(target)
        z_y = logits.gather(1, y[:, None])[:, 0]
        others = logits.scatter(1, y[:, None], float("-inf"))
        return _reduce(others.max(1).values - z_y, self.reduction)


class DLRLoss(nn.modules.loss._Loss):
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3),
    with z_pi sorted decreasingly. Invariant to shifting and scaling the logits, so a model whose
    logits are small (a bounded <Z> readout feeding a linear head) or saturated gets the same step as
    any other. Hand-written because ART defines its DLR inside APGD and only attaches it to a plain
    classifier it builds itself (see ``with_loss``); vectorised, where ART's loops over examples.
    With y = a target class and the gradient reversed (ART's targeted APGD) it is the targeted DLR."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = _labels(target)
        ordered = logits.sort(dim=1).values
        z_y = logits.gather(1, y[:, None])[:, 0]
        top_is_y = logits.argmax(1) == y
        z_other = torch.where(top_is_y, ordered[:, -2], ordered[:, -1])
        dlr = -(z_y - z_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)
        return _reduce(dlr, self.reduction)


@contextlib.contextmanager
def inputs_only(models: Iterable[nn.Module]) -> Iterator[None]:
    """Attacks need input gradients only: switch off parameter gradients while they run (restored
    afterwards). On a finite-shot circuit this skips the parameter-shift of every circuit weight."""
    params = [p for model in models for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def pgd_step_size(eps: float, cfg: RunConfig) -> float:
    return cfg.pgd_step_size or eps / 10


def square_queries(cfg: RunConfig) -> int:
    """Square's query budget: AutoAttack's 5000 when ``autoattack`` is requested, else 300."""
    return SQUARE_MAX_ITER_STRONG if "autoattack" in cfg.attack_list else SQUARE_MAX_ITER


def input_gradient_problem(model: nn.Module, x: np.ndarray, device: torch.device) -> str | None:
    """Why ``model`` gives no gradient with respect to its input (None when it does).

    Gradient attacks differentiate the model's loss with respect to the image; a user's circuit on a
    non-differentiable simulator, or a forward pass that leaves autograd (``.detach()``, numpy), has
    no such gradient at all, and an ART gradient attack would fail or, worse, step on zeros. A
    gradient that exists but vanishes is another matter: the gradient diagnostic reports that one
    (masking). Called under ``inputs_only``, so only the input asks for a gradient here."""
    probe = torch.as_tensor(x[:2], dtype=torch.float32, device=device).clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(probe)
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                return "its output does not depend on the input through autograd"
            out.float().sum().backward()
    except RuntimeError as exc:
        return f"backward through it fails ({str(exc).splitlines()[0][:160]})"
    if probe.grad is None:
        return "no gradient reaches the input"
    return None


def make_autoattack(classifier, eps: float, batch_size: int):
    """ART's ``AutoAttack`` on ``classifier`` (CE loss) with this set, each attack run only on the
    images every earlier one failed on (so a weak model pays little):

      1. APGD-CE: APGD with cross-entropy, ``APGD_ITER`` (100) iterations, 1 random start;
      2. APGD-DLR, the same budget: the margin divided by the spread of the top logits, invariant
         to their scale. A bounded <Z> readout feeding a linear head gives small logits, a Softmax
         in front of amplitude encoding saturates: there CE's gradient is tiny and its sign
         unreliable, DLR's is not;
      3. APGD-T: targeted APGD-DLR, 100 iterations towards each of the ``APGD_TARGETS`` (9) classes
         an image scores highest after its true one (``art_ext.TopTargetsAPGD``);
      4. Square, ``SQUARE_MAX_ITER_STRONG`` (5000) queries, p_init 0.8: gradient-free, so no kind of
         gradient masking hides from it.
    Budgets are AutoAttack's "standard" version (Croce & Hein 2020). Its FAB-T is left out: a
    minimum-norm attack that rarely adds to APGD-T under L-inf, and ART ships none. APGD starts with
    a step of 2 eps and adapts it, as published. The DLR attacks reach the same model (and the same
    EOT averaging) through ``with_loss``.
    """
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack  # ~2.4 s import

    from hqcbench.evaluation.art_ext import TopTargetsAPGD  # imports ART: only when attacking

    common = dict(norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=APGD_ITER, nb_random_init=APGD_RESTARTS,
                  batch_size=batch_size, loss_type=None, verbose=False)
    classes = classifier.nb_classes
    dlr = with_loss(classifier, DLRLoss())
    build = {  # member -> its attack; autoattack_members names them in AutoAttack's order
        "apgd_ce": lambda: AutoProjectedGradientDescent(classifier, targeted=False, **common),
        "apgd_dlr": lambda: AutoProjectedGradientDescent(dlr, targeted=False, **common),
        "apgd_t": lambda: TopTargetsAPGD(AutoProjectedGradientDescent(dlr, targeted=True, **common),
                                         min(APGD_TARGETS, classes - 1), batch_size),
        "square": lambda: SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=SQUARE_MAX_ITER_STRONG,
                                       p_init=SQUARE_P_INIT, nb_restarts=1, batch_size=batch_size, verbose=False),
    }
    attacks = [build[name]() for name in autoattack_members(classes)]
    return AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=attacks, batch_size=batch_size,
                      targeted=False)


def autoattack_members(classes: int) -> tuple[str, ...]:
    """Names of ``make_autoattack``'s attacks in the order AutoAttack runs them (the DLR attacks need a
    third class)."""
    return ("apgd_ce", "apgd_dlr", "apgd_t", "square") if classes >= 3 else ("apgd_ce", "square")  # DLR: 3 logits


def first_breaks(autoattack, classes: int) -> dict[str, np.ndarray]:
    """member -> mask of the images that member broke first, read from ART's ``AutoAttack.best_attacks``
    after ``generate`` (per image: the index of the first successful attack, negative when none was
    or the image was misclassified already). Each member only attacks what the earlier ones left, so
    Square's mask is the images a gradient-free search broke after every APGD variant had failed."""
    best = np.asarray(autoattack.best_attacks)
    return {name: best == i for i, name in enumerate(autoattack_members(classes))}


def autoattack_settings() -> str:
    """One line naming the AutoAttack set and its budgets (for the settings tag and the summary)."""
    return (f"autoattack: ART AutoAttack of APGD-CE, APGD-DLR ({APGD_ITER} iterations, {APGD_RESTARTS} start each), "
            f"APGD-T (DLR, top {APGD_TARGETS} targets, {APGD_ITER} iterations each), "
            f"Square ({SQUARE_MAX_ITER_STRONG} queries)")


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
