"""Building blocks shared by the fair arms and the published architectures.

``Classifier`` (normalisation inside the model, so attacks work in pixel space), the control's
bounded middle ``TanhLinear``, the conv block both protocols stack, and ``arm_circuit``: the
circuit of every arm that has one, so the hybrid and its ablations differ in exactly one place
whichever protocol builds them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from hqcbench import arms as arm_registry
from hqcbench.models.quantum import QuantumLayer


class Normalize(nn.Module):
    """(x - mean) / std per channel; part of the model so attacks stay in pixel space."""

    mean: torch.Tensor  # buffers, registered below
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalize -> body. ``arm`` and ``protocol`` travel with the model for logging."""

    swaps: list  # set on user arms' models only (models.user): the twin's models.twin.Swap list

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


def arm_circuit(arm: str, n_qubits: int, depth: int, encoding: str, ansatz: str, engine: str,
                encoding_scale: float = math.pi) -> QuantumLayer:
    """The circuit of ``arm`` (one of ``arms.circuit_arms()``): the hybrid's, or one ablation of it.

    hybrid_noent: the same gates without any CNOT ring (a product-state circuit), to see what the
    entanglement adds. hybrid_frozen: the weights stay at their random initialisation (drawn from
    the same seeded torch stream as the hybrid's, so the same seed gives the same circuit), to see
    whether training the circuit matters or a fixed random feature map does as well. Either way the
    layer is built with the same calls in the same order as the hybrid's, so every other module of
    the model is initialised identically too.
    """
    circuit = arm_registry.get(arm).circuit
    if circuit is None:
        raise ValueError(f"arm {arm!r} has no circuit (circuit arms: {', '.join(arm_registry.circuit_arms())})")
    layer = QuantumLayer(n_qubits, depth, encoding, ansatz, engine, entangle=circuit.entangle,
                         encoding_scale=encoding_scale)
    if not circuit.trained:
        layer.weights.requires_grad_(False)  # the circuit only; the optimiser skips a parameter without grad
    return layer
