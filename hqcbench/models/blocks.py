"""Building blocks shared by the fair arms and the published architectures.

``Classifier`` (normalisation inside the model, so attacks work in pixel space), the control's
bounded middle ``TanhLinear`` and the conv block both protocols stack.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hqcbench.models.quantum import QuantumLayer


class Normalize(nn.Module):
    """(x - mean) / std per channel; part of the model so attacks stay in pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalize -> body. ``arm`` and ``protocol`` travel with the model for logging."""

    def __init__(self, normalize: Normalize, body: nn.Module, arm: str, protocol: str):
        super().__init__()
        self.normalize, self.body, self.arm, self.protocol = normalize, body, arm, protocol

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def quantum_layers(self) -> list[QuantumLayer]:
        return [m for m in self.modules() if isinstance(m, QuantumLayer)]


class TanhLinear(nn.Module):
    """The control arm's middle: Linear(k -> n) + tanh, bounded in [-1, 1] like <Z>."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.linear = nn.Linear(k, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
