"""A user model built around hqcbench's own ``QuantumLayer`` (its public API), as a user arm.

    PYTHONPATH=examples python -m hqcbench run --arms cnn,quantum_layer_block:model,twin:quantum_layer_block:model

A small conv stack, a reducer to ``n_qubits`` angles, the fused statevector ``QuantumLayer`` (angle
encoding, strong ansatz, <Z> readout), a linear head. Because the factory names ``n_qubits`` and ``depth``,
hqcbench passes the run's ``--n_qubits`` / ``--depth`` to it, and tuning searches them as for its hybrid.
"""
from torch import nn

from hqcbench.models.quantum import QuantumLayer


def model(in_shape, classes, n_qubits=4, depth=2):
    """hqcbench's factory contract: (channels, height, width), classes, then the hyperparameters it names."""
    c, _, _ = in_shape
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4, n_qubits), QuantumLayer(n_qubits, depth), nn.Linear(n_qubits, classes))
