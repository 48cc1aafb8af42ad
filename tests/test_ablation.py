"""Ablation arms and the encoding scale: each changes one thing of the hybrid and nothing else.

* ``hybrid_noent``: no entangling gate, so with angle encoding the final state is a product state;
  checked against a float64 numpy reference written here (a Kronecker product of one-qubit states,
  sharing no code with the layer), in both fused methods, the TorchQuantum engine and the
  finite-shot readout's simulator.
* ``hybrid_frozen``: the circuit keeps its seeded initialisation through ``fit``; everything else trains.
* ``encoding_scale``: RY(scale * tanh x) against a dense reference with the CNOT rings; angle only.
* Fingerprints of configurations that existed before these fields and arms stay what they were.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hqcbench import arms as arm_registry
from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY, load_splits
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fields, training_fingerprint
from hqcbench.models import readout
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.models.quantum import QuantumLayer, configure_readout
from hqcbench.training.loop import fit
from hqcbench.training.recipes import make_recipe

ARMS = arm_registry.names()
CIRCUIT_ARMS = arm_registry.circuit_arms()

ANSATZES = ("strong", "basic")
METHODS = ("unitary", "gates")


# ------------------------------------------------------------------ float64 numpy reference
def rx(t: float) -> np.ndarray:
    return np.array([[math.cos(t / 2), -1j * math.sin(t / 2)], [-1j * math.sin(t / 2), math.cos(t / 2)]])


def ry(t: float) -> np.ndarray:
    return np.array([[math.cos(t / 2), -math.sin(t / 2)], [math.sin(t / 2), math.cos(t / 2)]], dtype=complex)


def rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def wire_unitary(weights: np.ndarray, wire: int, ansatz: str) -> np.ndarray:
    """The 2x2 unitary all layers apply to one wire when nothing entangles: product over layers."""
    u = np.eye(2, dtype=complex)
    for layer in weights:
        gate = rz(layer[wire, 1]) @ ry(layer[wire, 0]) if ansatz == "strong" else rx(layer[wire, 0])
        u = gate @ u
    return u


def kron_all(factors: list[np.ndarray]) -> np.ndarray:
    """Kronecker product, wire 0 the leftmost factor (the most significant bit of the basis index)."""
    out = np.ones(1, dtype=complex) if factors[0].ndim == 1 else np.ones((1, 1), dtype=complex)
    for f in factors:
        out = np.kron(out, f)
    return out


def ref_product_states(x: np.ndarray, weights: np.ndarray, ansatz: str, scale: float = math.pi) -> np.ndarray:
    """(B, 2**n) final states of the circuit without CNOTs: kron over wires of U_w RY(scale tanh x_w)|0>."""
    n = x.shape[1]
    zero = np.array([1, 0], dtype=complex)
    return np.array([kron_all([wire_unitary(weights, w, ansatz) @ ry(scale * math.tanh(s[w])) @ zero
                               for w in range(n)]) for s in x])


def _apply_1q(psi: np.ndarray, gate: np.ndarray, wire: int) -> np.ndarray:
    return np.moveaxis(np.tensordot(gate, psi, axes=([1], [wire])), 0, wire)


def _apply_cnot(psi: np.ndarray, control: int, target: int) -> np.ndarray:
    out = psi.copy()
    sel = [slice(None)] * psi.ndim
    sel[control] = 1
    axis = target - (1 if target > control else 0)  # the control axis is gone in the slice
    out[tuple(sel)] = np.flip(psi[tuple(sel)], axis=axis)
    return out


def ref_entangled_states(x: np.ndarray, weights: np.ndarray, ansatz: str, scale: float) -> np.ndarray:
    """(B, 2**n) final states with the documented CNOT ring, angle encoding RY(scale * tanh x)."""
    n = x.shape[1]
    ring = [] if n == 1 else [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)]
    states = []
    for sample in x:
        psi = np.zeros((2,) * n, dtype=complex)
        psi[(0,) * n] = 1
        for w in range(n):
            psi = _apply_1q(psi, ry(scale * math.tanh(sample[w])), w)
        for layer in weights:
            for w in range(n):
                gate = rz(layer[w, 1]) @ ry(layer[w, 0]) if ansatz == "strong" else rx(layer[w, 0])
                psi = _apply_1q(psi, gate, w)
            for control, target in ring:
                psi = _apply_cnot(psi, control, target)
        states.append(psi.reshape(-1))
    return np.array(states)


def z_expvals(states: np.ndarray) -> np.ndarray:
    n = int(math.log2(states.shape[1]))
    signs = np.array([[1 - 2 * ((i >> (n - 1 - w)) & 1) for w in range(n)] for i in range(2 ** n)])
    return (np.abs(states) ** 2) @ signs


def inputs(batch: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def weights_of(layer: QuantumLayer) -> np.ndarray:
    return layer.weights.detach().double().numpy()


# ------------------------------------------------------------------ hybrid_noent
@pytest.mark.parametrize("ansatz", ANSATZES)
@pytest.mark.parametrize("method", METHODS)
def test_noent_angle_state_is_the_product_state_of_the_reference(ansatz, method):
    for n in range(1, 6):
        for depth in range(1, 4):
            layer = QuantumLayer(n, depth, "angle", ansatz, seed=10 * n + depth, method=method,
                                 entangle=False).double()
            x = inputs(7, n, seed=n)
            expected = ref_product_states(x.numpy(), weights_of(layer), ansatz)
            state = layer.final_state(x).detach().numpy()
            np.testing.assert_allclose(state, expected, atol=1e-12, err_msg=f"n={n} depth={depth}")
            np.testing.assert_allclose(layer(x).detach().numpy(), z_expvals(expected), atol=1e-12)
            # float32 path, same weights: within single precision
            np.testing.assert_allclose(layer.float().final_state(x.float()).detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("ansatz", ANSATZES)
@pytest.mark.parametrize("method", METHODS)
def test_noent_circuit_unitary_is_a_tensor_product_of_one_qubit_unitaries(ansatz, method):
    """Amplitude-encoding the basis states e_k reads out the columns of the circuit's unitary."""
    for n in range(1, 6):
        for depth in range(1, 4):
            layer = QuantumLayer(n, depth, "amplitude", ansatz, seed=n + depth, method=method, entangle=False).double()
            unitary = layer.final_state(torch.eye(2 ** n, dtype=torch.float64)).detach().numpy().T
            expected = kron_all([wire_unitary(weights_of(layer), w, ansatz) for w in range(n)])
            np.testing.assert_allclose(unitary, expected, atol=1e-12, err_msg=f"n={n} depth={depth}")


def test_noent_differs_from_the_entangling_circuit_and_keeps_its_weights():
    x = inputs(5, 4)
    ent = QuantumLayer(4, 2, seed=3).double()
    noent = QuantumLayer(4, 2, seed=3, entangle=False).double()
    assert torch.equal(ent.weights, noent.weights)
    assert (ent(x) - noent(x)).abs().max() > 1e-3
    assert "entangle=False" in repr(noent) and "entangle" not in repr(ent)


def test_torchquantum_engine_applies_no_cnot_without_entanglement(monkeypatch):
    import torchquantum.functional as tqf

    calls = []
    real = tqf.cnot
    monkeypatch.setattr(tqf, "cnot", lambda *a, **k: (calls.append(k.get("wires")), real(*a, **k))[1])
    x = inputs(3, 4).float()
    QuantumLayer(4, 2, engine="torchquantum", seed=0, entangle=False)(x)
    assert calls == []
    QuantumLayer(4, 2, engine="torchquantum", seed=0)(x)
    assert len(calls) == 2 * 4  # two rings of four CNOTs: the counter does see them


@pytest.mark.parametrize("encoding", ("angle", "amplitude"))
@pytest.mark.parametrize("ansatz", ANSATZES)
def test_torchquantum_engine_equals_fused_without_entanglement(encoding, ansatz):
    for n in (1, 2, 3, 5):
        fused = QuantumLayer(n, 2, encoding, ansatz, seed=n, entangle=False)
        tq = QuantumLayer(n, 2, encoding, ansatz, engine="torchquantum", seed=n, entangle=False)
        x = inputs(6, fused.in_features, seed=n).float()
        xf, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_f, out_t = fused(xf), tq(xt)
        torch.testing.assert_close(out_f, out_t, atol=1e-5, rtol=0)
        (out_f ** 2).sum().backward()
        (out_t ** 2).sum().backward()
        torch.testing.assert_close(fused.weights.grad, tq.weights.grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(xf.grad, xt.grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(fused.probabilities(x), tq.probabilities(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ansatz", ANSATZES)
def test_finite_shot_readout_simulates_the_same_ablated_circuit(ansatz):
    """The parameter-shift simulator (one gate set per row) honours entangle and encoding_scale."""
    layer = QuantumLayer(3, 2, "angle", ansatz, seed=5, entangle=False, encoding_scale=1.3).double()
    x = inputs(4, 3)
    rows = layer.weights.detach().unsqueeze(0).expand(4, *layer.weights.shape)
    probs = readout.circuit_probabilities(layer, readout.encoding_params(layer, x), rows).numpy()
    expected = ref_product_states(x.numpy(), weights_of(layer), ansatz, scale=1.3)
    np.testing.assert_allclose(probs, np.abs(expected) ** 2, atol=1e-12)


# ------------------------------------------------------------------ encoding_scale
@pytest.mark.parametrize("ansatz", ANSATZES)
@pytest.mark.parametrize("method", METHODS)
def test_encoding_scale_encodes_ry_of_scale_times_tanh(ansatz, method):
    for n in (1, 2, 3, 5):
        for scale in (0.5, 1.0, 2 * math.pi):
            layer = QuantumLayer(n, 2, "angle", ansatz, seed=n, method=method, encoding_scale=scale).double()
            x = inputs(5, n, seed=n)
            expected = ref_entangled_states(x.numpy(), weights_of(layer), ansatz, scale)
            np.testing.assert_allclose(layer.final_state(x).detach().numpy(), expected, atol=1e-12,
                                       err_msg=f"n={n} scale={scale}")
            np.testing.assert_allclose(layer(x).detach().numpy(), z_expvals(expected), atol=1e-12)
        default = QuantumLayer(n, 2, "angle", ansatz, seed=n, method=method).double()
        np.testing.assert_allclose(default.final_state(x).detach().numpy(),
                                   ref_entangled_states(x.numpy(), weights_of(default), ansatz, math.pi), atol=1e-12)


def test_encoding_scale_in_the_torchquantum_engine_and_through_build_model():
    fused = QuantumLayer(3, 2, seed=1, encoding_scale=0.7)
    tq = QuantumLayer(3, 2, engine="torchquantum", seed=1, encoding_scale=0.7)
    x = inputs(4, 3).float()
    torch.testing.assert_close(fused(x), tq(x), atol=1e-5, rtol=0)
    for arm in CIRCUIT_ARMS:
        model = build_model(arm, REGISTRY["digits"], RunConfig(width=4, encoding_scale=0.7))
        assert model.quantum_layers()[0].encoding_scale == 0.7
    assert build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).quantum_layers()[0].encoding_scale == math.pi


@pytest.mark.parametrize("changes", [
    {"encoding": "amplitude", "encoding_scale": 1.0},
    {"dataset": "mnist", "protocol": "paper", "encoding_scale": 1.0},  # the published circuit is amplitude-encoded
    {"encoding_scale": 0.0},
    {"encoding_scale": -1.0},
    {"encoding_scale": float("nan")},
    {"encoding_scale": float("inf")},
])
def test_bad_encoding_scale_is_one_clear_error(changes):
    with pytest.raises(UserInputError) as info:
        RunConfig(**changes).validate()
    assert info.value.parameter == "encoding_scale"
    assert str(info.value).startswith("encoding_scale:") and "allowed" in str(info.value)


def test_encoding_scale_defaults_pass_and_the_layer_refuses_an_amplitude_scale():
    RunConfig(encoding="amplitude").validate()
    RunConfig(dataset="mnist", protocol="paper").validate()
    assert RunConfig.from_strings({"encoding_scale": "1.5"}).validate().encoding_scale == 1.5
    with pytest.raises(ValueError, match="encoding_scale"):
        QuantumLayer(2, 1, "amplitude", encoding_scale=1.0)


# ------------------------------------------------------------------ the arms
def test_new_arms_follow_control_and_validate():
    assert ARMS[:3] == ("cnn", "hybrid", "control") and ARMS[3:] == ("hybrid_noent", "hybrid_frozen")
    assert RunConfig(arms=",".join(ARMS)).validate().arm_list == list(ARMS)
    assert RunConfig().arm_list == ["cnn", "hybrid", "control"]  # ablations are opt-in


def _built(arm: str, cfg: RunConfig, dataset: str = "digits"):
    torch.manual_seed(0)
    return build_model(arm, REGISTRY[dataset], cfg)


@pytest.mark.parametrize("protocol,dataset,quantum", [("fair", "digits", 16), ("paper", "mnist", 8)])
def test_ablations_change_only_their_one_thing(protocol, dataset, quantum):
    cfg = RunConfig(dataset=dataset, protocol=protocol, width=4)
    hybrid = _built("hybrid", cfg, dataset)
    counts = count_parameters(hybrid)
    assert counts["params_quantum"] == quantum and counts["params_trainable"] == counts["params_total"]
    for arm in ("hybrid_noent", "hybrid_frozen"):
        model = _built(arm, cfg, dataset)
        assert model.arm == arm and model.protocol == protocol
        same = hybrid.state_dict()
        assert list(model.state_dict()) == list(same)
        assert all(torch.equal(value, same[name]) for name, value in model.state_dict().items()), arm
        layer = model.quantum_layers()[0]
        assert layer.entangle is (arm != "hybrid_noent")
        assert layer.weights.requires_grad is (arm != "hybrid_frozen")
        assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == (
            quantum if arm == "hybrid_frozen" else 0)  # nothing else frozen
        got = count_parameters(model)
        frozen = quantum if arm == "hybrid_frozen" else 0
        assert got == {**counts, "params_trainable": counts["params_total"] - frozen}, arm
    if protocol == "paper":
        assert counts["params_total"] == 142_530  # the published count, for the ablations too


@pytest.mark.parametrize("arm", ("hybrid_noent", "hybrid_frozen"))
def test_paper_protocol_trains_the_ablations_with_the_hybrid_recipe(arm):
    cfg = RunConfig(dataset="mnist", protocol="paper")
    model = _built(arm, cfg, "mnist").train()
    recipe = make_recipe("paper", arm, model, cfg.lr, 1, 100, "mnist", REGISTRY["mnist"].mean)
    assert recipe.description.startswith("paper hybrid")
    layer = model.quantum_layers()[0]
    before = layer.weights.detach().clone()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    loss = recipe.criterion(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    recipe.optimizer.step()
    assert torch.equal(layer.weights, before) is (arm == "hybrid_frozen")


def test_frozen_circuit_does_not_train_in_fit_and_the_rest_does():
    cfg = RunConfig(width=4, epochs=1, train_limit=96)
    splits = load_splits("digits", None, 0, cfg.val_fraction, cfg.train_limit)
    model = _built("hybrid_frozen", cfg)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    recipe = make_recipe("fair", "hybrid_frozen", model, cfg.lr, cfg.epochs, 3, "digits", splits.spec.mean)
    fit(model, splits.train, splits.val, recipe, cfg.epochs, 32, torch.device("cpu"), 0, progress=False)
    after = dict(model.named_parameters())
    circuit = [name for name in after if name.endswith("weights")]
    assert len(circuit) == 1 and torch.equal(after[circuit[0]], before[circuit[0]])
    assert after[circuit[0]].grad is None
    changed = [name for name in after if name not in circuit and not torch.equal(after[name], before[name])]
    assert len(changed) == len(after) - 1  # every other parameter moved


def test_frozen_circuit_under_parameter_shift_computes_input_gradients_only():
    layer = QuantumLayer(3, 2, seed=0)
    layer.weights.requires_grad_(False)
    configure_readout(layer, None, 50, 0)
    layer.train()
    x = inputs(4, 3).float().requires_grad_(True)
    layer(x).sum().backward()
    assert layer.weights.grad is None and x.grad is not None and x.grad.abs().sum() > 0


# ------------------------------------------------------------------ fingerprints
# Computed with the code before encoding_scale and the ablation arms existed: they must not move.
KNOWN_FINGERPRINTS = [
    ({}, "cnn", 0, "7486dde38a170a2d"),
    ({}, "hybrid", 0, "987b69579747d98b"),
    ({}, "control", 1, "122760dca34383b2"),
    ({"encoding": "amplitude", "ansatz": "basic", "depth": 3, "n_qubits": 5, "epochs": 3}, "hybrid", 2,
     "f6a6ec99102de5f4"),
    ({"dataset": "mnist", "protocol": "paper", "epochs": 50}, "hybrid", 0, "8c3bcffb18f09788"),
    ({"dataset": "mnist", "protocol": "paper", "epochs": 50}, "cnn", 3, "4925243edcc78f48"),
    ({"shots": "1000", "train_shots": "100", "engine": "torchquantum"}, "hybrid", 0, "f408c88c70c3b30e"),
    ({"dataset": "mnist", "protocol": "paper", "epochs": 3, "lr": 1e-3}, "control", 1, "11ce5307cf8b323f"),
    ({"n_qubits": 6, "encoding": "amplitude", "lr": 1e-3, "patience": 3, "train_limit": 500}, "control", 0,
     "666b0d69d7caf1c5"),
    ({"n_qubits": 6, "encoding": "amplitude", "depth": 4, "width": 8}, "cnn", 4, "bc7ac5d3faaeedfe"),
]


@pytest.mark.parametrize("changes,arm,seed,expected", KNOWN_FINGERPRINTS)
def test_fingerprints_of_existing_configurations_are_unchanged(changes, arm, seed, expected):
    assert training_fingerprint(RunConfig(**changes), arm, seed)[0] == expected


def test_encoding_scale_counts_only_where_there_is_an_angle_encoded_circuit():
    scaled = RunConfig(encoding_scale=1.0)
    for arm in CIRCUIT_ARMS:
        assert training_fields(scaled, arm, 0)["encoding_scale"] == 1.0
        assert training_fingerprint(scaled, arm, 0)[0] != training_fingerprint(RunConfig(), arm, 0)[0]
    for arm in ("cnn", "control"):
        assert "encoding_scale" not in training_fields(scaled, arm, 0)
        assert training_fingerprint(scaled, arm, 0)[0] == training_fingerprint(RunConfig(), arm, 0)[0]
    paper = RunConfig(dataset="mnist", protocol="paper", encoding_scale=1.0)  # validate refuses it; never hashed
    assert "encoding_scale" not in training_fields(paper, "hybrid", 0)
    assert "encoding_scale" not in training_fields(RunConfig(encoding_scale=math.pi), "hybrid", 0)
    ablations = {training_fingerprint(RunConfig(), arm, 0)[0] for arm in CIRCUIT_ARMS}
    assert len(ablations) == len(CIRCUIT_ARMS)  # the arm's name tells the trainings apart
