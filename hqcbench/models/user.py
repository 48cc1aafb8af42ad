"""A researcher's own model as an arm: built from its factory, checked, twinned or frozen, normalised.

Why a module of its own: a user arm's model comes from outside hqcbench (``arms.resolve`` names its
factory), so everything hqcbench promises about an arm has to be established here, once: the factory
gets ``(in_shape, classes)`` and only the hyperparameters its signature names; the model's output must
be logits ``(batch, classes)``, checked on a probe batch before any training (bad models are one error
line, not a crash ten minutes in); ``twin:`` and ``frozen:`` are applied (``models.twin``); and the
dataset's normalisation goes in front as for the built-in arms, so the factory's module receives
normalised images while attacks and their eps stay in [0, 1] pixel space.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hqcbench.arms import ArmSpec
from hqcbench.errors import UserInputError
from hqcbench.models.blocks import Classifier, Normalize
from hqcbench.models.twin import Swap, evaluating, freeze_quantum, make_twin

PROBE_BATCH = 2
PROBE_SEED = 0  # the probe batch has its own generator: building a model draws nothing from torch's global RNG


def probe_batch(channels: int, size: int) -> torch.Tensor:
    """A normalised-looking batch of the dataset's shape, from a private generator."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randn(PROBE_BATCH, channels, size, size, generator=generator)


def build_user_model(spec: ArmSpec, dataset, cfg) -> Classifier:
    """The user arm ``spec`` for ``dataset`` (a data.datasets spec) under ``cfg``; seed torch before calling."""
    in_shape = (dataset.channels, dataset.size, dataset.size)
    hparams: dict[str, Any] = cfg.hparams_for(spec.name)
    try:
        body = spec.resolve_factory()(in_shape, dataset.classes, **hparams)
    except UserInputError:
        raise
    except Exception as exc:  # the factory is the user's code: its failure is one line naming the arm
        raise UserInputError("arms", f"arm {spec.name!r}: its factory raised {type(exc).__name__}: {exc}",
                             "factory(in_shape, classes, **hparams) -> torch.nn.Module") from None
    if not isinstance(body, nn.Module):
        raise UserInputError("arms", f"arm {spec.name!r}: its factory returned {type(body).__name__}",
                             "a torch.nn.Module returning logits (batch, classes)")
    probe = probe_batch(dataset.channels, dataset.size)
    check_output(body, probe, dataset.classes, spec.name)
    swaps: list[Swap] = []
    if spec.transform == "twin":
        swaps = make_twin(body, probe, spec.name)
        check_output(body, probe, dataset.classes, spec.name)
    elif spec.transform == "frozen":
        freeze_quantum(body, spec.name)
    model = Classifier(Normalize(dataset.mean, dataset.std), body, spec.name, cfg.protocol)
    model.swaps = swaps  # logged on the run (what the twin replaced)
    return model


def check_output(body: nn.Module, probe: torch.Tensor, classes: int, arm: str) -> None:
    """The model maps (batch, C, H, W) to logits (batch, classes); checked in eval mode, state untouched."""
    try:
        with evaluating(body):
            out = body(probe)
    except Exception as exc:
        raise UserInputError("arms", f"arm {arm!r}: its model failed on a batch of shape {tuple(probe.shape)} "
                             f"({type(exc).__name__}: {exc})",
                             "a model taking (batch, channels, height, width)") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(probe), classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserInputError("arms", f"arm {arm!r}: its model returned {shape} for a batch of {len(probe)}",
                             f"logits of shape (batch, {classes})")
