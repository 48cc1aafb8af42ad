"""The noise engine against Qiskit Aer's density-matrix simulator, and its own contracts.

Aer runs the same logical circuit one image at a time, with ``depolarizing_error(P, k)`` after every
gate; hqcbench's batched density matrix must give every qubit's <Z> within 1e-5 (float64). The
trajectories must converge to it; ``depolarizing:0`` must be the noiseless layer bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hqcbench.errors import UserInputError
from hqcbench.models import noise, noise_sim
from hqcbench.models.noise_circuit import layer_ops, parameter_values
from hqcbench.models.noise_device import logical_circuit
from hqcbench.models.noise_spec import NoiseSpec, parse_noise, parse_sweep
from hqcbench.models.quantum import QuantumLayer

torch.set_num_threads(1)


def _layer(n: int, encoding: str = "angle", ansatz: str = "strong", depth: int = 2, entangle: bool = True,
           seed: int = 0) -> QuantumLayer:
    return QuantumLayer(n, depth, encoding=encoding, ansatz=ansatz, seed=seed, entangle=entangle).double()


def _inputs(layer: QuantumLayer, rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, layer.in_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def aer_expvals(layer: QuantumLayer, x: torch.Tensor, p: float, readout: float = 0.0) -> np.ndarray:
    """<Z_w> per image from Aer's density-matrix simulator: one bound circuit per image."""
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    model = NoiseModel()
    if p:
        model.add_all_qubit_quantum_error(depolarizing_error(p, 1), ["rx", "ry", "rz"])
        model.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cx"])
    sim = AerSimulator(method="density_matrix", noise_model=model)
    ops = layer_ops(layer)
    params = parameter_values(layer, x).detach().numpy()
    n = layer.n_qubits
    out = []
    for row in params:
        qc = logical_circuit(ops, n, params.shape[1]).assign_parameters(row)
        qc.save_density_matrix()
        rho = np.asarray(sim.run(qc).result().data()["density_matrix"])
        diag = np.real(np.diag(rho))
        index = np.arange(2 ** n)
        z = [float(np.sum(diag * (1 - 2 * ((index >> w) & 1)))) for w in range(n)]  # Qiskit: qubit w = bit w
        out.append(z)
    return (1 - 2 * readout) * np.asarray(out)


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text, spec", [
    ("none", NoiseSpec()), ("", NoiseSpec()), ("depolarizing:0.01", NoiseSpec(depolarizing=0.01)),
    ("readout:0.02", NoiseSpec(readout=0.02)),
    ("depolarizing:0.01+readout:0.02", NoiseSpec(depolarizing=0.01, readout=0.02)),
    (" readout:0.5 + depolarizing:1 ", NoiseSpec(depolarizing=1.0, readout=0.5)),
    ("device:FakeManilaV2", NoiseSpec(device="FakeManilaV2")),
    ("ideal_loading+depolarizing:0.03", NoiseSpec(depolarizing=0.03, ideal_loading=True)),
    ("depolarizing:0.03+readout:0.01+ideal_loading", NoiseSpec(depolarizing=0.03, readout=0.01, ideal_loading=True)),
])
def test_parse_accepts_the_contract(text, spec):
    assert parse_noise(text) == spec
    assert parse_noise(spec.text()) == spec  # the canonical spelling parses back


@pytest.mark.parametrize("text", ["depolarizing", "depolarizing:1.5", "depolarizing:-0.1", "readout:x",
                                  "depolarizing:nan", "amplitude_damping:0.1", "depolarizing:0.1+depolarizing:0.2",
                                  "device:FakeManilaV2+readout:0.1", "device:", "device:Fake Manila",
                                  "ideal_loading", "readout:0.1+ideal_loading", "device:FakeManilaV2+ideal_loading",
                                  "depolarizing:0.1+ideal_loading+ideal_loading"])
def test_parse_refuses_bad_input_naming_the_parameter(text):
    with pytest.raises(UserInputError) as info:
        parse_noise(text)
    assert info.value.parameter == "noise"
    assert "depolarizing:P" in str(info.value) and "device:NAME" in str(info.value)


def test_parse_sweep():
    assert parse_sweep("0, 0.001,0.01") == [0.0, 0.001, 0.01]
    assert parse_sweep("") == []
    for bad in ("0.1,2", "a", "0.1,0.1"):
        with pytest.raises(UserInputError) as info:
            parse_sweep(bad)
        assert info.value.parameter == "noise_sweep"


# ------------------------------------------------------------------------------------------ against Aer
@pytest.mark.parametrize("n, encoding, ansatz, entangle", [
    (2, "angle", "strong", True), (3, "angle", "basic", True), (4, "angle", "strong", True),
    (2, "amplitude", "basic", True), (3, "amplitude", "strong", True), (4, "amplitude", "strong", True),
    (3, "angle", "strong", False),
])
def test_density_matches_aer(n, encoding, ansatz, entangle):
    layer = _layer(n, encoding, ansatz, entangle=entangle, seed=n)
    x = _inputs(layer, 3, seed=n)
    spec = parse_noise("depolarizing:0.03+readout:0.02")
    ours = noise.noisy_expvals(layer, x, spec, method="density").values.detach().numpy()
    ref = aer_expvals(layer, x, 0.03, 0.02)
    assert np.abs(ours - ref).max() < 1e-5
    clean = layer(x).detach().numpy()
    assert np.abs(ours - clean).max() > 1e-3  # the noise is there: a test that could not tell would pass anyway


def aer_ideal_loading_expvals(layer: QuantumLayer, x: torch.Tensor, p: float) -> np.ndarray:
    """<Z_w> per image from Aer when the encoded state is handed over exactly (Qiskit's noiseless
    statevector of the encoding's gates, set as Aer's density matrix) and only the ansatz's gates get
    depolarizing_error(P, k)."""
    from qiskit.circuit import QuantumCircuit
    from qiskit.quantum_info import DensityMatrix, Statevector
    from qiskit_aer import AerSimulator
    from qiskit_aer.library import SetDensityMatrix
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    from hqcbench.models.noise_circuit import encoding_op_count

    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(p, 1), ["rx", "ry", "rz"])
    model.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cx"])
    sim = AerSimulator(method="density_matrix", noise_model=model)
    ops, n = layer_ops(layer), layer.n_qubits
    split = encoding_op_count(n, layer.encoding)
    params = parameter_values(layer, x).detach().numpy()
    out = []
    for row in params:
        def bound(part):
            qc = logical_circuit(part, n, params.shape[1])
            return qc.assign_parameters({q: row[q.index] for q in qc.parameters})
        qc = QuantumCircuit(n)
        qc.append(SetDensityMatrix(DensityMatrix(Statevector(bound(ops[:split])))), range(n))  # no error on it
        qc.compose(bound(ops[split:]), inplace=True)
        qc.save_density_matrix()
        diag = np.real(np.diag(np.asarray(sim.run(qc).result().data()["density_matrix"])))
        index = np.arange(2 ** n)
        out.append([float(np.sum(diag * (1 - 2 * ((index >> w) & 1)))) for w in range(n)])
    return np.asarray(out)


@pytest.mark.parametrize("n, encoding", [(3, "amplitude"), (4, "amplitude"), (3, "angle")])
def test_ideal_loading_matches_aer_from_the_exact_encoded_state(n, encoding):
    """+ideal_loading: the encoding's gates error-free, every ansatz gate noisy, as Aer computes it from the
    exactly loaded state; and it differs from the fully noisy circuit (the loading's own errors)."""
    layer = _layer(n, encoding, seed=n + 10)
    x = _inputs(layer, 3, seed=n + 10)
    ideal = noise.noisy_expvals(layer, x, parse_noise("depolarizing:0.05+ideal_loading"), method="density")
    ours = ideal.values.detach().numpy()
    assert np.abs(ours - aer_ideal_loading_expvals(layer, x, 0.05)).max() < 1e-5
    full = noise.noisy_expvals(layer, x, parse_noise("depolarizing:0.05"), method="density").values.detach().numpy()
    assert np.abs(ours - full).max() > 1e-3


def test_noiseless_gate_list_is_the_layer():
    """The compiled circuit (amplitude encoding as an RY tree) computes the layer's own output."""
    for encoding in ("angle", "amplitude"):
        layer = _layer(3, encoding, seed=5)
        x = _inputs(layer, 4, seed=5)
        steps = noise.logical_steps(layer, x, 0.0, torch.complex128)
        z = noise_sim.density_expvals(steps, 3, 4, torch.complex128, torch.device("cpu"))
        assert torch.allclose(z, layer(x), atol=1e-12)


def test_depolarizing_zero_is_the_noiseless_output_exactly():
    layer = QuantumLayer(4, 2, encoding="amplitude", seed=3)
    x = torch.randn(6, layer.in_features)
    result = noise.noisy_expvals(layer, x, parse_noise("depolarizing:0"))
    assert torch.equal(result.values, layer(x))
    with_readout = noise.noisy_expvals(layer, x, parse_noise("depolarizing:0+readout:0.1")).values
    assert torch.allclose(with_readout, 0.8 * layer(x))


def test_full_depolarizing_gives_the_maximally_mixed_state():
    one = _layer(1, depth=1, seed=2)
    steps = noise.logical_steps(one, _inputs(one, 2), 1.0, torch.complex128)
    rho = torch.zeros(2, 4, dtype=torch.complex128)
    rho[:, 0] = 1
    rho = rho.reshape(2, 2, 2)
    for step in steps:
        rho = noise_sim._apply(rho, noise_sim.step_superop(step, torch.complex128, torch.device("cpu")), [1, 2])
    assert torch.allclose(rho.reshape(2, 2, 2), torch.eye(2, dtype=torch.complex128).expand(2, 2, 2) / 2, atol=1e-12)
    layer = _layer(3, "amplitude", seed=1)
    z = noise.noisy_expvals(layer, _inputs(layer, 3), parse_noise("depolarizing:1"), method="density").values
    assert z.abs().max() < 1e-12


def test_trajectories_converge_to_the_density_matrix():
    layer = _layer(3, "angle", "strong", seed=4)
    x = _inputs(layer, 4, seed=4)
    spec = parse_noise("depolarizing:0.05+readout:0.01")
    exact = noise.noisy_expvals(layer, x, spec, method="density").values
    sampled = noise.noisy_expvals(layer, x, spec, method="trajectories", trajectories=2000,
                                  generator=torch.Generator().manual_seed(1))
    assert sampled.method == "trajectories" and sampled.stderr is not None
    assert ((sampled.values - exact).abs() <= 4 * sampled.stderr + 1e-9).all()
    assert sampled.stderr.max() < 0.03
    again = noise.noisy_expvals(layer, x, spec, method="trajectories", trajectories=2000,
                                generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.values, sampled.values)  # seeded


def test_kraus_trajectories_converge():
    """A general channel (amplitude damping, as in a device's thermal relaxation) unravelled by Kraus jumps."""
    gamma = 0.3
    kraus = torch.tensor([[[1, 0], [0, (1 - gamma) ** 0.5]], [[0, gamma ** 0.5], [0, 0]]], dtype=torch.complex128)
    h = torch.tensor([[1, 1], [1, -1]], dtype=torch.complex128) / 2 ** 0.5
    steps = [noise_sim.Step((0,), h, 0.0, kraus), noise_sim.Step((1,), h, 0.0, kraus)]
    exact = noise_sim.density_expvals(steps, 2, 1, torch.complex128, torch.device("cpu"))
    assert torch.allclose(exact, torch.full((1, 2), gamma, dtype=torch.float64))
    mean, err = noise_sim.trajectory_expvals(steps, 2, 1, 4000, torch.Generator().manual_seed(0), torch.complex128,
                                         torch.device("cpu"))
    assert ((mean - exact).abs() <= 4 * err).all()


def test_chunks_give_the_same_result(monkeypatch):
    layer = _layer(3, "angle", seed=6)
    x = _inputs(layer, 7, seed=6)
    spec = parse_noise("depolarizing:0.02")
    whole = noise.noisy_expvals(layer, x, spec, method="density").values
    monkeypatch.setattr(noise, "chunk_images", lambda *args, **kwargs: 2)
    assert torch.allclose(noise.noisy_expvals(layer, x, spec, method="density").values, whole, atol=1e-14)


def test_memory_check_and_method_choice():
    assert noise.density_bytes(4) == 8 * 4 ** 4
    assert noise.choose_method(4) == "density" and noise.choose_method(14) == "trajectories"
    with pytest.raises(UserInputError) as info:
        noise.check_memory(16, "density", available=2 ** 30)
    assert info.value.parameter == "noise_method" and "GiB" in str(info.value)
    noise.check_memory(16, "trajectories", trajectories=10, available=2 ** 30)  # fits
    assert noise.chunk_images(4, "density") > 1000 and noise.chunk_images(12, "density") == 1
    with pytest.raises(UserInputError):
        noise.choose_method(4, "exact")


def test_noisy_layers_swaps_the_forward_and_restores_it():
    layer = QuantumLayer(2, 1, seed=0)
    model = torch.nn.Sequential(layer)
    x = torch.randn(3, 2)
    clean = model(x)
    with noise.noisy_layers(model, parse_noise("depolarizing:0.2")) as used:
        noisy = model(x)
    assert used == {"density"}
    assert (noisy - clean).abs().max() > 1e-3
    assert torch.equal(model(x), clean) and "forward" not in vars(layer)


def test_finite_shots_on_top_of_noise():
    from hqcbench.models.quantum import configure_readout

    layer = QuantumLayer(3, 2, seed=7)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    exact = {text: noise.noisy_expvals(layer, x, parse_noise(text)).values
             for text in ("depolarizing:0.05+readout:0.02", "readout:0.1")}
    configure_readout(layer, 200_000, None, seed=3)
    layer.eval()
    for text, reference in exact.items():
        sampled = noise.noisy_expvals(layer, x, parse_noise(text)).values
        counts = (sampled.detach().double() + 1) / 2 * 200_000  # means of +-1 outcomes: integer counts of +1
        assert torch.allclose(counts, counts.round(), atol=1e-3)
        assert (sampled - reference).abs().max() < 0.015  # sd <= 1 / sqrt(200000) ~ 0.0022
        assert (sampled - reference).abs().max() > 0  # sampled, not exact
    # depolarizing:0 with shots is the layer's own sampled readout, draw for draw
    configure_readout(layer, 64, None, seed=5)
    own = layer(x)
    configure_readout(layer, 64, None, seed=5)
    assert torch.equal(noise.noisy_expvals(layer, x, parse_noise("depolarizing:0")).values, own)
    # the gradient through sampled noisy values is the exact noisy gradient (straight-through)
    configure_readout(layer, 1000, None, seed=5)
    xg = x.clone().requires_grad_(True)
    noise.noisy_expvals(layer, xg, parse_noise("depolarizing:0.05")).values.sum().backward()
    configure_readout(layer, None, None, seed=5)
    xe = x.clone().requires_grad_(True)
    noise.noisy_expvals(layer, xe, parse_noise("depolarizing:0.05")).values.sum().backward()
    assert torch.allclose(xg.grad, xe.grad)


def test_gradients_through_checkpointed_chunks_equal_the_whole_batch(monkeypatch):
    """With autograd on, chunks are sized by the graph autograd keeps and recomputed in the backward pass:
    the values and the input and weight gradients equal one unchunked pass's."""
    assert noise.graph_chunk_images(8, 600) == 1 and noise.graph_chunk_images(3, 20) > 1000
    layer = _layer(3, "angle", seed=8)
    spec = parse_noise("depolarizing:0.03+readout:0.01")

    def grads(chunk: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if chunk is None:  # the reference: autograd through one plain pass, nothing recomputed
            monkeypatch.setattr(noise, "_needs_graph", lambda *args: False)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(noise, "graph_chunk_images", lambda *args, **kwargs: chunk)
        x = _inputs(layer, 5, seed=8).clone().requires_grad_(True)
        layer.zero_grad()
        values = noise.noisy_expvals(layer, x, spec, method="density").values
        (values * torch.arange(1, 4, dtype=values.dtype)).sum().backward()
        assert x.grad is not None and layer.weights.grad is not None
        return values.detach(), x.grad.clone(), layer.weights.grad.clone()

    whole = grads(None)
    chunked = grads(2)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-12)


def test_a_graph_too_large_for_memory_is_refused_up_front():
    with pytest.raises(UserInputError) as info:
        noise.check_graph_memory(8, 600, available=2 ** 28)
    assert info.value.parameter == "noise_method" and "GiB per image" in str(info.value)
    noise.check_graph_memory(4, 50, available=2 ** 28)  # fits
