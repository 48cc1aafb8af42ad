"""A TorchQuantum hybrid in the QuantumNAT style, as a user arm of hqcbench.

The MNIST-4 model of TorchQuantum's QuantumNAT examples: the image pooled to 4x4 = 16 values, encoded on
4 qubits by rotations (``4x4_ryzxy``), one trainable random layer, <Z> on every wire, a linear head.
Run it beside its classical twin and the CNN:

    PYTHONPATH=examples python -m hqcbench run --arms cnn,quantumnat_tq:model,twin:quantumnat_tq:model

hqcbench puts the dataset's normalisation in front, so ``forward`` receives normalised images.
"""
import torch
import torchquantum as tq
from torch import nn

N_WIRES = 4


class QuantumBlock(tq.QuantumModule):
    """16 features -> 4 expectation values <Z> in [-1, 1]."""

    def __init__(self, n_ops: int = 20, seed: int = 0):
        super().__init__()
        self.encoder = tq.GeneralEncoder(tq.encoder_op_list_name_dict["4x4_ryzxy"])
        self.layer = tq.RandomLayer(n_ops=n_ops, wires=list(range(N_WIRES)), seed=seed)
        self.measure = tq.MeasureAll(tq.PauliZ)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qdev = tq.QuantumDevice(n_wires=N_WIRES, bsz=x.shape[0], device=x.device)
        self.encoder(qdev, x)
        self.layer(qdev)
        return self.measure(qdev)


class QuantumNAT(nn.Module):
    def __init__(self, channels: int, classes: int, n_ops: int):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.quantum = QuantumBlock(n_ops)
        self.head = nn.Linear(N_WIRES, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quantum(self.pre(x)))


def model(in_shape, classes, n_ops=20):
    """hqcbench's factory contract: (channels, height, width), classes, then the hyperparameters it names."""
    return QuantumNAT(in_shape[0], classes, n_ops)
