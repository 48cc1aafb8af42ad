"""``noise=device:NAME`` against Qiskit Aer with ``NoiseModel.from_backend`` on the same transpiled circuit.

Aer's saved density matrix ignores readout errors, so the reference applies each qubit's confusion
matrix to it as an affine map of <Z> (from the backend's own readout calibration, read here through
Aer's NoiseModel independently of the engine's reading).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hqcbench.errors import UserInputError
from hqcbench.models import noise, noise_device
from hqcbench.models.noise_circuit import layer_ops, parameter_values
from hqcbench.models.noise_spec import parse_noise
from hqcbench.models.quantum import QuantumLayer

pytest.importorskip("qiskit_ibm_runtime")
pytest.importorskip("qiskit_aer")
torch.set_num_threads(1)


def aer_device_expvals(layer: QuantumLayer, x: torch.Tensor, device: str) -> np.ndarray:
    from qiskit_aer import AerSimulator

    model = noise_device.noise_model(device)
    ops = layer_ops(layer)
    params = parameter_values(layer, x).detach().numpy()
    tqc = noise_device.transpile_circuit(ops, layer.n_qubits, params.shape[1], device)
    layout = tqc.layout.final_index_layout()
    sim = AerSimulator(method="density_matrix", noise_model=model)
    out = []
    for row in params:
        qc = tqc.assign_parameters({p: row[p.index] for p in tqc.parameters})
        qc.save_density_matrix()
        rho = np.asarray(sim.run(qc, optimization_level=0).result().data()["density_matrix"])
        diag = np.real(np.diag(rho))
        index = np.arange(diag.size)
        z = []
        for phys in layout:
            ideal = float(np.sum(diag * (1 - 2 * ((index >> phys) & 1))))
            confusion = np.asarray(model._local_readout_errors[(phys,)].probabilities)  # rows: prepared
            p0 = (1 + ideal) / 2 * confusion[0, 0] + (1 - ideal) / 2 * confusion[1, 0]
            z.append(2 * p0 - 1)
        out.append(z)
    return np.asarray(out)


@pytest.mark.parametrize("device, n, encoding, ansatz", [
    ("FakeManilaV2", 2, "angle", "strong"), ("FakeManilaV2", 4, "amplitude", "strong"),
    ("FakeNairobiV2", 3, "angle", "basic"), ("FakeNairobiV2", 5, "angle", "strong"),
    ("FakeLimaV2", 3, "amplitude", "basic"),
])
def test_device_density_matches_aer(device, n, encoding, ansatz):
    layer = QuantumLayer(n, 2, encoding=encoding, ansatz=ansatz, seed=n).double()
    x = torch.randn(2, layer.in_features, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    ours = noise.noisy_expvals(layer, x, parse_noise(f"device:{device}"), method="density").values.detach().numpy()
    ref = aer_device_expvals(layer, x, device)
    assert np.abs(ours - ref).max() < 1e-5
    assert np.abs(ours - layer(x).detach().numpy()).max() > 1e-3  # noise is there


def test_device_trajectories_agree_with_density():
    layer = QuantumLayer(2, 1, seed=1).double()
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = parse_noise("device:FakeManilaV2")
    exact = noise.noisy_expvals(layer, x, spec, method="density").values
    sampled = noise.noisy_expvals(layer, x, spec, method="trajectories", trajectories=2000,
                                  generator=torch.Generator().manual_seed(3))
    assert ((sampled.values - exact).abs() <= 4 * sampled.stderr + 1e-9).all()


def test_program_metrics_and_layout():
    layer = QuantumLayer(3, 2, seed=0)
    program = noise_device.device_program(layer, "FakeManilaV2")
    metrics = program.metrics()
    assert metrics["noise_qubits"] >= 3 and metrics["noise_gates_2q"] >= 6 and metrics["noise_gates_1q"] > 0
    assert sorted(program.logical_wires) == sorted(set(program.logical_wires))
    assert all(0 <= w < program.n_active for w in program.logical_wires)


def test_wider_than_the_device_and_unknown_devices_are_refused():
    with pytest.raises(UserInputError) as info:
        noise.noisy_expvals(QuantumLayer(6, 1, seed=0), torch.randn(1, 6), parse_noise("device:FakeManilaV2"))
    assert "FakeManilaV2 only 5" in str(info.value)
    with pytest.raises(UserInputError) as info:
        noise_device.load_backend("FakeNowhereV2")
    assert "FakeManilaV2" in str(info.value) and info.value.parameter == "noise"
