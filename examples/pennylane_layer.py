"""A PennyLane hybrid as a user arm of hqcbench: ``qml.qnn.TorchLayer`` between two linear layers.

    PYTHONPATH=examples python -m hqcbench run --arms cnn,pennylane_layer:model,twin:pennylane_layer:model

Angle embedding of 4 features, ``BasicEntanglerLayers`` (RX on every wire, then a CNOT ring: the ansatz
the published study used), <Z> on every wire, on ``default.qubit`` with backpropagation.
"""
import pennylane as qml
from torch import nn

N_QUBITS = 4


def quantum_layer(depth: int) -> nn.Module:
    device = qml.device("default.qubit", wires=N_QUBITS)

    @qml.qnode(device, interface="torch", diff_method="backprop")
    def circuit(inputs, weights):
        qml.AngleEmbedding(inputs, wires=range(N_QUBITS))
        qml.BasicEntanglerLayers(weights, wires=range(N_QUBITS))
        return [qml.expval(qml.PauliZ(w)) for w in range(N_QUBITS)]

    return qml.qnn.TorchLayer(circuit, {"weights": (depth, N_QUBITS)})


def model(in_shape, classes, depth=2):
    """hqcbench's factory contract: (channels, height, width), classes, then the hyperparameters it names."""
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, N_QUBITS), nn.Tanh(), quantum_layer(depth),
                         nn.Linear(N_QUBITS, classes))
