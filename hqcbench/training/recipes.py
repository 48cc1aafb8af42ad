"""Training recipes: optimiser, schedule, loss, augmentation and selection, per protocol and arm.

fair: one recipe for every arm -- AdamW(lr, wd 1e-4), cosine decay over the run stepped per epoch,
      plain cross-entropy, no augmentation; the checkpoint with the best validation accuracy is tested.
paper: the published recipes of arXiv 2509.13353 (docs/published_study.md, "Recipes"):
      hybrid (and the paper control): AdamW(1e-3, wd 0.01) + OneCycleLR(max_lr 2e-3, pct_start 0.3)
      stepped per batch, grad-norm clip 1.0; cnn: Adam(3e-3, wd 5e-3) +
      CosineAnnealingWarmRestarts(T_0=5, eta_min=1e-5) stepped per *batch* (as published);
      both: cross-entropy with label smoothing 0.1, batch 64, augmentation as published, validation
      on an augmented split (STL-10: the official test split), best validation epoch reported.
      Schedules are built for the epochs actually run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.arms import PaperRecipe
from hqcbench.config import FAIR_RECIPE_PROTOCOLS, PAPER_BATCH_SIZE, PAPER_EPOCHS, PAPER_VAL_FRACTION, RunConfig
from hqcbench.data.augment import Augmentation


def shortened_note(protocol: str, epochs: int) -> str | None:
    """Why: a paper-protocol run with fewer than the published 50 epochs is not the published
    procedure; the report must say so beside every number it produces."""
    if protocol == "paper" and epochs < PAPER_EPOCHS:
        return f"ran {epochs} of the published {PAPER_EPOCHS} epochs"
    return None


def effective_batch_size(cfg: RunConfig) -> int:
    """paper: the published batch of 64, whatever batch_size says."""
    return PAPER_BATCH_SIZE if cfg.protocol == "paper" else cfg.batch_size


def effective_val_fraction(cfg: RunConfig) -> float:
    """paper: the published 80/20 split, whatever val_fraction says (as batch 64 overrides batch_size)."""
    return PAPER_VAL_FRACTION if cfg.protocol == "paper" else cfg.val_fraction


def protocol_tags(cfg: RunConfig) -> dict[str, str]:
    """Tags that qualify every number of the run (e.g. a shortened paper run); the report reads them."""
    note = shortened_note(cfg.protocol, cfg.epochs)
    return {names.TAG_SHORTENED: note} if note else {}


@dataclass
class Recipe:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    step_per_batch: bool
    criterion: nn.Module
    grad_clip: float | None = None
    augment: Augmentation = field(default_factory=Augmentation)
    augment_val: bool = False  # paper: validation came from the augmented training set
    description: str = ""


def paper_augmentation(dataset: str, mean: tuple[float, ...]) -> Augmentation:
    if dataset == "mnist":
        # published: Normalize then RandomAffine, so uncovered pixels are 0 in normalised space = the mean
        # as torchvision's RandomAffine(5, translate=(0.1, 0.1)): nearest interpolation, whole-pixel shifts
        return Augmentation(rotate_deg=5.0, translate=0.1, fill=mean, nearest=True, whole_pixel_shift=True)
    if dataset == "cifar100":
        return Augmentation(pad_crop=4, hflip=True, fill=tuple(0.0 for _ in mean))
    if dataset == "stl10":
        return Augmentation(pad_crop=8, hflip=True, fill=tuple(0.0 for _ in mean))
    raise ValueError(f"no paper augmentation for {dataset!r}")


def make_recipe(protocol: str, arm: str, model: nn.Module, lr: float, epochs: int, steps_per_epoch: int,
                dataset: str, mean: tuple[float, ...]) -> Recipe:
    params = model.parameters()
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    if protocol in FAIR_RECIPE_PROTOCOLS:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return Recipe(opt, sched, False, nn.CrossEntropyLoss(),
                      description=f"AdamW(lr={lr:g}, wd=1e-4) + cosine over {epochs} epochs, no augmentation")
    augment = paper_augmentation(dataset, mean)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    if arm_registry.get(arm).paper_recipe is PaperRecipe.CNN:
        opt = torch.optim.Adam(params, lr=3e-3, weight_decay=5e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=5, eta_min=1e-5)
        return Recipe(opt, sched, True, criterion, None, augment, True,
                      "paper cnn: Adam(3e-3, wd 5e-3) + CosineAnnealingWarmRestarts(T_0=5) stepped per batch")
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, pct_start=0.3,
                                                total_steps=max(1, epochs * steps_per_epoch))
    return Recipe(opt, sched, True, criterion, 1.0, augment, True,
                  f"paper hybrid: AdamW(1e-3, wd 0.01) + OneCycleLR(2e-3, 0.3) over {epochs} epochs, clip 1.0")


