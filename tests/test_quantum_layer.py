"""The quantum layer against independent references.

The reference is a dense float64 state-vector simulator written here with numpy from textbook gate
definitions: it shares no code with hqcbench.models.quantum, so a wrong convention in the layer
(wire order, CNOT ring, encoding, gate sign) makes these tests fail.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hqcbench.models.circuit import choose_method, encode_state, layer_gates
from hqcbench.models.quantum import QuantumLayer

METHODS = ("unitary", "gates")

# ------------------------------------------------------------------ dense numpy reference
I2 = np.eye(2, dtype=complex)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)


def rot(pauli: np.ndarray, theta: float) -> np.ndarray:
    """exp(-i theta P / 2) = cos(theta/2) I - i sin(theta/2) P."""
    return math.cos(theta / 2) * I2 - 1j * math.sin(theta / 2) * pauli


def on_wire(gate: np.ndarray, wire: int, n: int) -> np.ndarray:
    """Dense operator of a one-qubit gate; wire 0 is the leftmost Kronecker factor (most significant bit)."""
    out = np.ones((1, 1), dtype=complex)
    for w in range(n):
        out = np.kron(out, gate if w == wire else I2)
    return out


def cnot(control: int, target: int, n: int) -> np.ndarray:
    """Dense CNOT: |b> -> |b with bit `target` flipped if bit `control` is set>."""
    dim = 2 ** n
    out = np.zeros((dim, dim), dtype=complex)
    for b in range(dim):
        bits = [(b >> (n - 1 - w)) & 1 for w in range(n)]
        if bits[control]:
            bits[target] ^= 1
        out[int("".join(map(str, bits)), 2), b] = 1
    return out


def ring(n: int) -> list[tuple[int, int]]:
    """The documented CNOT ring: (0,1), (1,2), ..., (n-1,0) for n >= 3; (0,1) for n = 2; none for n = 1."""
    return [] if n == 1 else [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)]


def ref_unitary(weights: np.ndarray, n: int, ansatz: str) -> np.ndarray:
    u = np.eye(2 ** n, dtype=complex)
    for layer in weights:
        for w in range(n):
            if ansatz == "strong":
                u = on_wire(rot(Y, layer[w, 0]), w, n) @ u
                u = on_wire(rot(Z, layer[w, 1]), w, n) @ u
            else:
                u = on_wire(rot(X, layer[w, 0]), w, n) @ u
        for c, t in ring(n):
            u = cnot(c, t, n) @ u
    return u


def ref_states(x: np.ndarray, weights: np.ndarray, n: int, encoding: str, ansatz: str,
               u: np.ndarray | None = None) -> np.ndarray:
    """(B, 2**n) final states, float64/complex128, one sample at a time (u: the ansatz, if known)."""
    u = ref_unitary(weights, n, ansatz) if u is None else u
    states = []
    for sample in x:
        if encoding == "angle":
            psi = np.zeros(2 ** n, dtype=complex)
            psi[0] = 1
            for w in range(n):
                psi = on_wire(rot(Y, math.pi * math.tanh(sample[w])), w, n) @ psi
        else:
            psi = sample.astype(complex) / np.linalg.norm(sample)
        states.append(u @ psi)
    return np.array(states)


def ref_expvals(x, weights, n, encoding, ansatz, u=None) -> np.ndarray:
    states = ref_states(x, weights, n, encoding, ansatz, u)
    zs = [on_wire(Z, w, n) for w in range(n)]
    return np.array([[np.real(np.vdot(s, zw @ s)) for zw in zs] for s in states])


def make(n, depth, encoding, ansatz, method="auto", engine="fused", seed=0) -> QuantumLayer:
    return QuantumLayer(n, depth, encoding, ansatz, engine=engine, seed=seed, method=method)


def weights_of(layer: QuantumLayer) -> np.ndarray:
    return layer.weights.detach().double().numpy()


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.2, math.pi / 2, 2.5, math.pi])
def test_ry_on_zero_gives_cos(t, method):
    """RY(t)|0> has <Z> = cos t: once through the ansatz's RY, once through angle encoding."""
    layer = make(1, 1, "angle", "strong", method)
    with torch.no_grad():
        layer.weights.copy_(torch.tensor([[[t, 0.7]]]))  # the RZ after RY cannot change <Z>
    assert layer(torch.zeros(1, 1)).item() == pytest.approx(math.cos(t), abs=1e-6)

    with torch.no_grad():
        layer.weights.zero_()
    x = torch.tensor([[math.atanh(t / math.pi) if t < math.pi else 20.0]])  # RY(pi * tanh x) = RY(t)
    assert layer(x).item() == pytest.approx(math.cos(t), abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_cnot_ring_propagates_a_bit_flip(n, method):
    """RX(pi) on wire 0 of |0..0> then the ring CNOT(0,1), (1,2), ..., (n-1,0): the flip runs down the
    chain and the closing CNOT(n-1, 0) flips wire 0 back: |0 1 1 ... 1> (n = 2: |11>)."""
    layer = make(n, 1, "amplitude", "basic", method)
    with torch.no_grad():
        layer.weights.zero_()
        layer.weights[0, 0, 0] = math.pi
    x = torch.zeros(1, 2 ** n)
    x[0, 0] = 1.0
    expected_bits = [1, 1] if n == 2 else [0] + [1] * (n - 1)
    expected = torch.tensor([[1.0 - 2 * b for b in expected_bits]])
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)
    probs = layer.probabilities(x)[0]
    assert probs[int("".join(map(str, expected_bits)), 2)].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_amplitude_encoding_of_one_hot_is_basis_state(n, method):
    dim = 2 ** n
    for k in range(dim):
        x = torch.zeros(1, dim)
        x[0, k] = 3.0  # normalisation must remove the scale
        expected = torch.zeros(1, dim, dtype=torch.complex64)
        expected[0, k] = 1
        torch.testing.assert_close(encode_state(x, n, "amplitude"), expected)

        # zero weights = identity gates, so the layer is the CNOT ring alone: a classical bit map
        layer = make(n, 1, "amplitude", "strong", method)
        with torch.no_grad():
            layer.weights.zero_()
        bits = [(k >> (n - 1 - w)) & 1 for w in range(n)]
        for c, t in ring(n):
            bits[t] ^= bits[c]
        torch.testing.assert_close(layer(x), torch.tensor([[1.0 - 2 * b for b in bits]]), atol=1e-6, rtol=0)


def test_gate_formulas_match_torchquantum():
    import torchquantum.functional as tqf

    theta = torch.tensor([-2.0, 0.0, 0.4, 3.0])
    strong = torch.stack([theta, theta.flip(0)], dim=-1).reshape(1, 4, 2)
    expected = tqf.rz_matrix(strong[0, :, 1:2]) @ tqf.ry_matrix(strong[0, :, 0:1])
    torch.testing.assert_close(layer_gates(strong, "strong")[0], expected)
    basic = theta.reshape(1, 4, 1)
    torch.testing.assert_close(layer_gates(basic, "basic")[0], tqf.rx_matrix(basic[0]))


# ------------------------------------------------------------------ random circuits vs reference
@pytest.mark.parametrize("method", ("auto",) + METHODS)
@pytest.mark.parametrize("encoding", ["angle", "amplitude"])
@pytest.mark.parametrize("ansatz", ["strong", "basic"])
@pytest.mark.parametrize("n", range(1, 7))
def test_random_circuits_match_dense_reference(n, ansatz, encoding, method):
    rng = np.random.default_rng(100 * n + len(ansatz) + len(encoding))
    for depth in range(1, 5):
        layer = make(n, depth, encoding, ansatz, method, seed=int(rng.integers(1 << 30)))
        x = rng.normal(size=(3, layer.in_features))
        want_states = ref_states(x, weights_of(layer), n, encoding, ansatz)
        want = ref_expvals(x, weights_of(layer), n, encoding, ansatz)
        got = layer(torch.tensor(x, dtype=torch.float32))
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5, rtol=0)
        states = layer.final_state(torch.tensor(x, dtype=torch.float32)).detach().numpy()
        np.testing.assert_allclose(states, want_states, atol=1e-5, rtol=0)
        # float64 inputs are simulated in complex128
        got64 = layer(torch.tensor(x))
        assert got64.dtype == torch.float64
        np.testing.assert_allclose(got64.detach().numpy(), want, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ gradients
GRAD_CASES = [(1, 2, "angle", "strong"), (2, 3, "amplitude", "basic"), (3, 2, "angle", "basic"),
              (4, 2, "amplitude", "strong"), (5, 3, "angle", "strong"), (6, 1, "amplitude", "basic")]


def _readout_weights(n: int, seed: int) -> np.ndarray:
    """A random linear functional of the outputs, so every <Z_w> enters the checked gradient."""
    return np.random.default_rng(seed).normal(size=n)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_weight_gradients_match_parameter_shift(case, method):
    n, depth, encoding, ansatz = case
    layer = make(n, depth, encoding, ansatz, method, seed=n + depth)
    rng = np.random.default_rng(n)
    x = rng.normal(size=(4, layer.in_features))
    v = _readout_weights(n, n)

    layer.double()
    (layer(torch.tensor(x)) @ torch.tensor(v)).sum().backward()
    autograd = layer.weights.grad.numpy()

    # parameter shift: every weight drives one RX/RY/RZ (generator P/2), so
    # dF/dtheta = (F(theta + pi/2) - F(theta - pi/2)) / 2 exactly; F from the float64 reference
    w0 = weights_of(layer)
    shift = np.zeros_like(w0)
    for idx in np.ndindex(*w0.shape):
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += math.pi / 2
        minus[idx] -= math.pi / 2
        f_plus = (ref_expvals(x, plus, n, encoding, ansatz) @ v).sum()
        f_minus = (ref_expvals(x, minus, n, encoding, ansatz) @ v).sum()
        shift[idx] = (f_plus - f_minus) / 2
    assert np.abs(shift).max() > 1e-3  # not a vacuous comparison of zeros
    np.testing.assert_allclose(autograd, shift, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_input_gradients_match_finite_differences(case, method):
    n, depth, encoding, ansatz = case
    layer = make(n, depth, encoding, ansatz, method, seed=2 * n + depth).double()
    rng = np.random.default_rng(n + 7)
    x = rng.normal(size=(3, layer.in_features))
    v = _readout_weights(n, n + 1)

    xt = torch.tensor(x, requires_grad=True)
    (layer(xt) @ torch.tensor(v)).sum().backward()

    w, h = weights_of(layer), 1e-5
    u = ref_unitary(w, n, ansatz)
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = ((ref_expvals(plus, w, n, encoding, ansatz, u) @ v).sum()
                   - (ref_expvals(minus, w, n, encoding, ansatz, u) @ v).sum()) / (2 * h)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(xt.grad.numpy(), fd, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ batch independence
@pytest.mark.parametrize("encoding", ["angle", "amplitude"])
@pytest.mark.parametrize("n", [3, 8])
def test_sample_output_does_not_depend_on_its_batch(n, encoding):
    """A published implementation normalised across the batch; ours must not. The sample alone and in
    batches of other (larger-scale) samples, through every method, since ``auto`` switches by batch."""
    layers = {m: make(n, 2, encoding, "strong", m, seed=5) for m in ("auto",) + METHODS}
    gen = torch.Generator().manual_seed(n)
    sample = torch.randn(1, layers["auto"].in_features, generator=gen)
    alone = layers["gates"](sample)
    for batch in (2, 17, 300):
        others = torch.randn(batch - 1, sample.shape[1], generator=gen) * 5
        for pos in (0, batch // 2, batch - 1):
            x = torch.cat([others[:pos], sample, others[pos:]])
            for layer in layers.values():
                torch.testing.assert_close(layer(x)[pos:pos + 1], alone, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the TorchQuantum engine
TQ_CASES = [(1, 1, "angle", "strong"), (2, 2, "amplitude", "basic"), (4, 2, "angle", "strong"),
            (4, 2, "amplitude", "basic"), (5, 3, "angle", "basic"), (7, 2, "amplitude", "strong")]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", TQ_CASES, ids=lambda c: "-".join(map(str, c)))
def test_fused_equals_torchquantum_outputs_and_gradients(case, method):
    n, depth, encoding, ansatz = case
    fused = make(n, depth, encoding, ansatz, method, seed=11)
    tq = make(n, depth, encoding, ansatz, engine="torchquantum", seed=11)
    torch.testing.assert_close(fused.weights, tq.weights)
    x = torch.randn(6, fused.in_features, generator=torch.Generator().manual_seed(n))
    v = torch.randn(n, generator=torch.Generator().manual_seed(n + 1))
    grads = []
    for layer in (fused, tq):
        xi = x.clone().requires_grad_(True)
        out = layer(xi)
        (out @ v).sum().backward()
        grads.append((out.detach(), layer.weights.grad, xi.grad, layer.probabilities(x).detach()))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert grads[1][1].abs().max() > 1e-3


# ------------------------------------------------------------------ devices and API
def test_layer_follows_its_device_meta_fake():
    """Every tensor made in forward follows the input's device: on PyTorch's `meta` device (shapes
    only, no data) a stray CPU tensor raises, so this catches what would break on CUDA."""
    for method in METHODS:
        for encoding in ("angle", "amplitude"):
            layer = make(5, 2, encoding, "strong", method).to("meta")
            x = torch.empty(8, layer.in_features, device="meta", requires_grad=True)
            out = layer(x)
            assert out.shape == (8, 5) and out.device.type == "meta"
            out.sum().backward()
            assert layer.weights.grad.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    layer = make(6, 3, "angle", "strong", method, seed=3)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    cpu_out = layer(x)
    cpu_out.sum().backward()
    cpu_grad = layer.weights.grad.clone()
    gpu = make(6, 3, "angle", "strong", method, seed=3).cuda()
    gpu_out = gpu(x.cuda())
    gpu_out.sum().backward()
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(gpu.weights.grad.cpu(), cpu_grad, atol=1e-4, rtol=0)


def test_auto_method_uses_unitary_when_state_is_small_and_gates_when_large():
    assert choose_method(4, 2, 64) == "unitary"
    assert choose_method(10, 4, 64) == "gates"
    assert choose_method(12, 4, 256) == "gates"


def test_bad_arguments_and_shapes_raise():
    with pytest.raises(ValueError, match="method"):
        QuantumLayer(3, 1, method="magic")
    with pytest.raises(ValueError, match="encoding"):
        QuantumLayer(3, 1, encoding="basis")
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        QuantumLayer(3, 1)(torch.zeros(2, 4))


def test_public_api_is_kept():
    layer = QuantumLayer(3, 2, "amplitude", "basic", "fused", 0)
    assert layer.in_features == 8 and tuple(layer.weights.shape) == (2, 3, 1)
    x = torch.rand(4, 8)
    state = layer.final_state(x)
    torch.testing.assert_close(layer.expvals(state), layer(x))
    torch.testing.assert_close(layer.probabilities(x).sum(1), torch.ones(4))


def test_pickle_round_trip_keeps_outputs(tmp_path):
    """MLflow logs models with pickle: the layer (buffers, cached tables) must survive it."""
    layer = QuantumLayer(5, 2, "angle", "basic", seed=4)
    x = torch.randn(3, 5)
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), layer(x), atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_explicit_default_ablation_arguments_give_the_same_layer_bit_for_bit(method):
    """entangle=True and encoding_scale=pi are the circuit above, not a nearby one."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    plain = make(4, 3, "angle", "strong", method=method)
    explicit = QuantumLayer(4, 3, "angle", "strong", seed=0, method=method, entangle=True, encoding_scale=math.pi)
    torch.testing.assert_close(explicit(x), plain(x), atol=0, rtol=0)
    assert repr(explicit) == repr(plain)


def test_without_entanglement_nothing_is_folded_into_the_sign_table():
    layer = QuantumLayer(4, 2, entangle=False)
    assert torch.equal(layer.zsigns2_folded, layer.zsigns2)
    assert not torch.equal(QuantumLayer(4, 2).zsigns2_folded, layer.zsigns2)
    with pytest.raises(ValueError, match="encoding_scale"):
        QuantumLayer(3, 1, encoding_scale=0.0)
