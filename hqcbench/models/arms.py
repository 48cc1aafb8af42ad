"""The three arms under both protocols.

fair: one backbone and one head shared by all arms; only the middle differs
    cnn:     backbone -> head
    hybrid:  backbone -> reducer Linear(F -> k) -> QuantumLayer(k -> n) -> head
    control: backbone -> reducer Linear(F -> k) -> Linear(k -> n) + tanh -> head
  with k the circuit's input width (n for angle, 2**n for amplitude encoding). The head's first
  layer takes the middle's output width (F for cnn, n otherwise); its shape is otherwise the same.
paper: the published architectures of arXiv 2509.13353 (see ``hqcbench.models.paper``).

Every model is a ``Classifier``: inputs in [0, 1], normalisation is its first layer, so attacks
and the paper attack (which bypasses it) can address ``model.normalize`` and ``model.body``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hqcbench.models.quantum import QuantumLayer, input_width

FEATURES = 64  # backbone output width
HEAD_HIDDEN = 64


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


def fair_backbone(channels: int, size: int, width: int) -> nn.Sequential:
    """Two conv blocks -> adaptive pool -> Linear(-> FEATURES) -> ReLU."""
    pool = max(1, min(4, size // 4))
    return nn.Sequential(*conv_block(channels, width), *conv_block(width, 2 * width),
                         nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                         nn.Linear(2 * width * pool * pool, FEATURES), nn.ReLU(inplace=True))


def fair_head(in_features: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, HEAD_HIDDEN), nn.ReLU(inplace=True), nn.Linear(HEAD_HIDDEN, classes))


def fair_middle(arm: str, n_qubits: int, depth: int, encoding: str, ansatz: str, engine: str,
                ) -> tuple[nn.Module, int]:
    """(middle module, its output width) for one arm."""
    if arm == "cnn":
        return nn.Identity(), FEATURES
    k = input_width(n_qubits, encoding)
    if arm == "hybrid":
        core: nn.Module = QuantumLayer(n_qubits, depth, encoding, ansatz, engine)
    elif arm == "control":
        core = TanhLinear(k, n_qubits)
    else:
        raise ValueError(f"unknown arm {arm!r}")
    return nn.Sequential(nn.Linear(FEATURES, k), core), n_qubits


def build_model(arm: str, spec, cfg) -> Classifier:
    """Build ``arm`` for dataset ``spec`` under ``cfg.protocol``. Seed torch before calling."""
    normalize = Normalize(spec.mean, spec.std)
    if cfg.protocol == "paper":
        from hqcbench.models.paper import paper_body

        return Classifier(normalize, paper_body(arm, spec, engine=cfg.engine), arm, "paper")
    middle, width = fair_middle(arm, cfg.n_qubits, cfg.depth, cfg.encoding, cfg.ansatz, cfg.engine)
    body = nn.Sequential(fair_backbone(spec.channels, spec.size, cfg.width), middle, fair_head(width, spec.classes))
    return Classifier(normalize, body, arm, "fair")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """total, trainable, quantum (circuit weights), classical (= total - quantum)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    quantum = sum(p.numel() for m in model.modules() if isinstance(m, QuantumLayer) for p in m.parameters())
    return {"params_total": total, "params_trainable": trainable, "params_quantum": quantum,
            "params_classical": total - quantum}
