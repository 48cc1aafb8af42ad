"""Every seeded random stream of a training run, derived from the run's seed in one place.

Why one module: each purpose needs a stream of its own (the same batches for every arm of a seed,
validation augmentation that does not shift when the training stream changes, a distinct Optuna
sampler per trial), and the formulas below are part of what makes two runs comparable. Change one
and every stored run stops being reproducible: the numbers are fixed, only their home is here.

Streams that do not depend on the run's seed live with the data they fix (``data.datasets``:
the ``train_limit`` subset and the digits test split; ``evaluation.robustness``: the attacked subset and
the attacks' random starts; ``models.readout``: the finite-shot sampler, salted per layer).
"""
from __future__ import annotations

import torch


def seed_model_init(seed: int) -> None:
    """Weights of a freshly built model: torch's global generator, seeded per (arm, seed) run."""
    torch.manual_seed(seed)


def batch_order(seed: int, epoch: int) -> torch.Generator:
    """Training batch order (and training augmentation) of one epoch: depends on (seed, epoch) only,
    so every arm of one seed sees the same batches in the same order."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def validation_augmentation(seed: int, epoch: int) -> torch.Generator:
    """The paper protocol's augmented validation split, per epoch (a stream apart from the batches)."""
    return torch.Generator().manual_seed(seed * 7919 + epoch)


def sampler_seed(base_seed: int, trial_index: int) -> int:
    """Optuna's TPE sampler for the trial created at ``trial_index``: one seed per trial, so a single
    worker is reproducible and concurrent workers never draw the same start-up configurations."""
    return base_seed * 1_000_003 + trial_index
