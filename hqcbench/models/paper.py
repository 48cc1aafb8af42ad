"""The published architectures of arXiv 2509.13353, as read from the authors' public code.

Kept verbatim in shape (including the Softmax before amplitude encoding) so their parameter
counts match the paper: MNIST hybrid 142,530, MNIST CNN 151,754. ``control`` is the paper hybrid
with its circuit (16 amplitudes -> 4 values) replaced by Linear(16 -> 4) + tanh. The published
circuit is basic-entangler layers, so both ablations exist here too (``blocks.arm_circuit``):
hybrid_noent drops its CNOT rings, hybrid_frozen freezes its 8 weights; counts stay the published ones.
"""
from __future__ import annotations

from torch import nn

from hqcbench import arms as arm_registry
from hqcbench.arms import Middle
from hqcbench.models.blocks import TanhLinear, arm_circuit, conv_block

PAPER_QUBITS, PAPER_DEPTH = 4, 2


def _hybrid_like(arm: str, channels: list[int], reducer_hidden: int, classes: int, engine: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += conv_block(c_in, c_out)
    amplitudes = 2 ** PAPER_QUBITS
    layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(),
               nn.Linear(channels[-1] * 16, reducer_hidden), nn.ReLU(inplace=True),
               nn.Linear(reducer_hidden, amplitudes), nn.Softmax(dim=1)]
    if arm_registry.get(arm).has_circuit:
        layers.append(arm_circuit(arm, PAPER_QUBITS, PAPER_DEPTH, "amplitude", "basic", engine))
    else:
        layers.append(TanhLinear(amplitudes, PAPER_QUBITS))
    layers += [nn.Linear(PAPER_QUBITS, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(0.3),
               nn.Linear(128, classes)]
    return nn.Sequential(*layers)


def _paper_cnn(dataset: str, channels_in: int, classes: int) -> nn.Sequential:
    if dataset == "mnist":
        return nn.Sequential(*conv_block(channels_in, 32), *conv_block(32, 64), nn.AdaptiveAvgPool2d(4),
                             nn.Flatten(), nn.Linear(1024, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                             nn.Dropout(0.3), nn.Linear(128, classes))
    dropout = 0.4 if dataset == "stl10" else 0.3
    return nn.Sequential(*conv_block(channels_in, 64), *conv_block(64, 128), *conv_block(128, 256),
                         nn.Conv2d(256, 512, 3, padding=1), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 256), nn.BatchNorm1d(256),
                         nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, classes))


def paper_body(arm: str, spec, engine: str = "fused") -> nn.Sequential:
    """The published network of ``arm`` for dataset ``spec``: the CNN, or the hybrid with the arm's middle."""
    arm_spec = arm_registry.get(arm)
    if arm_spec.builder:
        raise ValueError(f"arm {arm!r} has no published architecture (its middle is built by {arm_spec.builder})")
    if arm_spec.middle is Middle.NONE:
        return _paper_cnn(spec.name, spec.channels, spec.classes)
    if spec.name == "mnist":
        return _hybrid_like(arm, [spec.channels, 16, 32], 256, spec.classes, engine)
    if spec.name == "cifar100":
        return _hybrid_like(arm, [spec.channels, 32, 64, 128], 512, spec.classes, engine)
    if spec.name == "stl10":
        return _hybrid_like(arm, [spec.channels, 32, 64, 128, 256], 1024, spec.classes, engine)
    raise ValueError(f"the paper protocol has no architecture for {spec.name!r}")
