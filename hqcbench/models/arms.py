"""The arms under both protocols.

fair: one backbone and one head shared by all arms; only the middle differs
    cnn:     backbone -> head
    hybrid:  backbone -> reducer Linear(F -> k) -> QuantumLayer(k -> n) -> head
    control: backbone -> reducer Linear(F -> k) -> Linear(k -> n) + tanh -> head
    hybrid_noent, hybrid_frozen: the hybrid with one change to its circuit (``blocks.arm_circuit``):
             no entangling gate; circuit weights frozen at their seeded initialisation
  with k the circuit's input width (n for angle, 2**n for amplitude encoding). The head's first
  layer takes the middle's output width (F for cnn, n otherwise); its shape is otherwise the same.
paper: the published architectures of arXiv 2509.13353 (see ``hqcbench.models.paper``).

Every model is a ``Classifier`` (``models.blocks``): inputs in [0, 1], normalisation is its first
layer, so attacks and the paper attack (which bypasses it) can address ``model.normalize`` and
``model.body``.
"""
from __future__ import annotations

import math

from torch import nn

from hqcbench import arms as arm_registry
from hqcbench.arms import Middle
from hqcbench.models.blocks import Classifier, Normalize, TanhLinear, arm_circuit, conv_block
from hqcbench.models.paper import paper_body
from hqcbench.models.quantum import input_width
from hqcbench.models.twin import quantum_parameter_count
from hqcbench.models.user import build_user_model

FEATURES = 64  # backbone output width
HEAD_HIDDEN = 64


def fair_backbone(channels: int, size: int, width: int) -> nn.Sequential:
    """Two conv blocks -> adaptive pool -> Linear(-> FEATURES) -> ReLU."""
    pool = max(1, min(4, size // 4))
    return nn.Sequential(*conv_block(channels, width), *conv_block(width, 2 * width),
                         nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                         nn.Linear(2 * width * pool * pool, FEATURES), nn.ReLU(inplace=True))


def fair_head(in_features: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, HEAD_HIDDEN), nn.ReLU(inplace=True), nn.Linear(HEAD_HIDDEN, classes))


def fair_middle(arm: str, n_qubits: int, depth: int, encoding: str, ansatz: str, engine: str,
                encoding_scale: float = math.pi) -> tuple[nn.Module, int]:
    """(middle module, its output width) for one arm, from its record in ``hqcbench.arms``."""
    spec = arm_registry.get(arm)
    if spec.middle is Middle.NONE:
        return nn.Identity(), FEATURES
    k = input_width(n_qubits, encoding)
    if spec.builder:
        core: nn.Module = spec.resolve_builder()(spec, k, n_qubits, depth, encoding, ansatz, engine, encoding_scale)
    elif spec.middle is Middle.CIRCUIT:
        core = arm_circuit(arm, n_qubits, depth, encoding, ansatz, engine, encoding_scale)
    else:
        core = TanhLinear(k, n_qubits)
    return nn.Sequential(nn.Linear(FEATURES, k), core), n_qubits


def build_model(arm: str, spec, cfg) -> Classifier:
    """Build ``arm`` for dataset ``spec`` under ``cfg.protocol``. Seed torch before calling."""
    arm_spec = arm_registry.get(arm)
    if arm_spec.is_user:
        return build_user_model(arm_spec, spec, cfg)
    normalize = Normalize(spec.mean, spec.std)
    if cfg.protocol == "paper":
        return Classifier(normalize, paper_body(arm, spec, engine=cfg.engine), arm, "paper")
    middle, width = fair_middle(arm, cfg.n_qubits, cfg.depth, cfg.encoding, cfg.ansatz, cfg.engine,
                                cfg.encoding_scale)
    body = nn.Sequential(fair_backbone(spec.channels, spec.size, cfg.width), middle, fair_head(width, spec.classes))
    return Classifier(normalize, body, arm, cfg.protocol)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """total, trainable, quantum (circuit weights), classical (= total - quantum).

    trainable counts ``requires_grad`` only, so a frozen circuit (hybrid_frozen) shows as total -
    trainable = its weights, while quantum still counts them (they are part of the model).
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    quantum = quantum_parameter_count(model)  # every quantum submodule, TorchQuantum and PennyLane ones too
    return {"params_total": total, "params_trainable": trainable, "params_quantum": quantum,
            "params_classical": total - quantum}
