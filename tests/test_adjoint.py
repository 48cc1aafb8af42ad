"""The adjoint method and the memory check, against references that share no code with the layer.

* Gradients: a float64 numpy state-vector simulator written here from textbook gates (checked
  against the dense reference of tests/test_quantum_layer.py), differentiated by the parameter-shift
  rule (weights) and central finite differences (inputs); and the backpropagated engine itself.
  1..8 qubits, both encodings and ansatzes, with and without CNOT rings, batch > 1.
* Memory: bytes autograd keeps for the backward pass, counted with
  ``torch.autograd.graph.saved_tensors_hooks``, must not grow with depth on the adjoint path (and
  must grow on the backpropagated one, or the count would prove nothing).
* The memory check: a configuration within ``MAX_QUBITS`` but too large for the memory available
  (monkeypatched small) is one clear UserInputError naming n_qubits, the estimate and the memory.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hqcbench.config import MAX_QUBITS, RunConfig, TuneConfig
from hqcbench.errors import UserInputError
from hqcbench.models import adjoint, circuit, memory
from hqcbench.models.quantum import QuantumLayer, configure_readout
from tests.test_quantum_layer import X, Y, Z, ref_expvals, ring, rot

ENCODINGS = ("angle", "amplitude")
ANSATZES = ("strong", "basic")


# ------------------------------------------------------------------ float64 state-vector reference
def _apply(psi: np.ndarray, gate: np.ndarray, wire: int) -> np.ndarray:
    """One-qubit gate on axis wire + 1 of (B, 2, ..., 2) states."""
    return np.moveaxis(np.tensordot(gate, psi, axes=([1], [wire + 1])), 0, wire + 1)


def _cnot(psi: np.ndarray, control: int, target: int) -> np.ndarray:
    """Flip the target axis where the control bit is 1."""
    out = psi.copy()
    where = [slice(None)] * psi.ndim
    where[control + 1] = 1
    sub = psi[tuple(where)]  # the control axis is gone: later axes move down by one
    out[tuple(where)] = np.flip(sub, axis=target + 1 if target < control else target)
    return out


def sv_expvals(x: np.ndarray, weights: np.ndarray, n: int, encoding: str, ansatz: str,
               entangle: bool = True) -> np.ndarray:
    """(B, n) <Z_w>, float64, gate by gate on (B, 2, ..., 2) states."""
    bsz = x.shape[0]
    if encoding == "angle":
        psi = np.zeros((bsz,) + (2,) * n, dtype=complex)
        psi[(slice(None),) + (0,) * n] = 1
        for w in range(n):  # each sample its own angle: one wire at a time, sample by sample
            psi = np.stack([_apply(psi[b:b + 1], rot(Y, math.pi * math.tanh(x[b, w])), w)[0] for b in range(bsz)])
    else:
        psi = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(complex).reshape((bsz,) + (2,) * n)
    for layer in weights:
        for w in range(n):
            if ansatz == "strong":
                psi = _apply(_apply(psi, rot(Y, layer[w, 0]), w), rot(Z, layer[w, 1]), w)
            else:
                psi = _apply(psi, rot(X, layer[w, 0]), w)
        for c, t in (ring(n) if entangle else []):
            psi = _cnot(psi, c, t)
    probs = np.abs(psi.reshape(bsz, -1)) ** 2
    signs = np.array([[1 - 2 * ((i >> (n - 1 - w)) & 1) for w in range(n)] for i in range(2 ** n)])
    return probs @ signs


def _layer(n: int, depth: int, encoding: str, ansatz: str, diff_method: str, entangle: bool = True,
           seed: int = 0, method: str = "auto") -> QuantumLayer:
    return QuantumLayer(n, depth, encoding, ansatz, seed=seed, method=method, entangle=entangle,
                        diff_method=diff_method)


def _grads(layer: QuantumLayer, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(outputs, weight gradient, input gradient) of sum(layer(x) @ v)."""
    layer.weights.grad = None
    xi = x.clone().requires_grad_(True)
    out = layer(xi)
    (out @ v).sum().backward()
    return out.detach(), layer.weights.grad.clone(), xi.grad


def saved_bytes(fn) -> tuple[torch.Tensor, int]:
    """fn()'s result and the bytes autograd packed for its backward pass (numel x element size)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


# ------------------------------------------------------------------ the reference itself
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("ansatz", ANSATZES)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_state_vector_reference_equals_the_dense_reference(n, ansatz, encoding):
    rng = np.random.default_rng(n)
    w = rng.uniform(0, 2 * math.pi, size=circuit.weight_shape(n, 2, ansatz))
    x = rng.normal(size=(3, circuit.input_width(n, encoding)))
    np.testing.assert_allclose(sv_expvals(x, w, n, encoding, ansatz), ref_expvals(x, w, n, encoding, ansatz),
                               atol=1e-12, rtol=0)


# ------------------------------------------------------------------ gradients
CASES = [(n, enc, ans, ent) for n in range(1, 9) for enc in ENCODINGS for ans in ANSATZES for ent in (True, False)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}q-{c[1]}-{c[2]}-{'ent' if c[3] else 'noent'}")
def test_adjoint_gradients_match_parameter_shift_finite_differences_and_backprop(case):
    n, encoding, ansatz, entangle = case
    depth = 1 + n % 3
    adj = _layer(n, depth, encoding, ansatz, "adjoint", entangle, seed=n).double()
    bp = _layer(n, depth, encoding, ansatz, "backprop", entangle, seed=n).double()
    rng = np.random.default_rng(10 * n + len(encoding) + len(ansatz))
    x = rng.normal(size=(3, adj.in_features))
    v = rng.normal(size=n)
    out, w_grad, x_grad = _grads(adj, torch.tensor(x), torch.tensor(v))
    w0 = adj.weights.detach().numpy()

    def f(xx: np.ndarray, ww: np.ndarray) -> float:
        return float((sv_expvals(xx, ww, n, encoding, ansatz, entangle) @ v).sum())

    np.testing.assert_allclose(out.numpy(), sv_expvals(x, w0, n, encoding, ansatz, entangle), atol=1e-12, rtol=0)
    shift = np.zeros_like(w0)  # every weight drives one Pauli rotation: the two-term rule is exact
    for idx in np.ndindex(*w0.shape):
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += math.pi / 2
        minus[idx] -= math.pi / 2
        shift[idx] = (f(x, plus) - f(x, minus)) / 2
    assert np.abs(shift).max() > 1e-3  # not a vacuous comparison of zeros
    np.testing.assert_allclose(w_grad.numpy(), shift, atol=1e-9, rtol=0)
    fd, h = np.zeros_like(x), 1e-6
    for idx in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = (f(plus, w0) - f(minus, w0)) / (2 * h)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(x_grad.numpy(), fd, atol=1e-7, rtol=0)
    for got, want in zip((out, w_grad, x_grad), _grads(bp, torch.tensor(x), torch.tensor(v))):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("n, depth, batch", [(4, 3, 5), (8, 2, 40), (11, 2, 33)])
def test_float32_adjoint_equals_backprop_and_its_outputs_the_gates_method_bit_for_bit(n, depth, batch, encoding):
    adj = _layer(n, depth, encoding, "strong", "adjoint", seed=3)
    gates = _layer(n, depth, encoding, "strong", "backprop", seed=3, method="gates")
    auto = _layer(n, depth, encoding, "strong", "backprop", seed=3)
    gen = torch.Generator().manual_seed(n)
    x, v = torch.randn(batch, adj.in_features, generator=gen), torch.randn(n, generator=gen)
    got = _grads(adj, x, v)
    torch.testing.assert_close(got[0], _grads(gates, x, v)[0], atol=0, rtol=0)
    for a, b in zip(got, _grads(auto, x, v)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_frozen_weights_get_no_gradient_and_inputs_get_the_same_one():
    """hybrid_frozen: only input gradients (what attacks ask for) leave the adjoint backward."""
    layers = [_layer(6, 2, "angle", "basic", dm, seed=2) for dm in ("adjoint", "backprop")]
    grads = []
    for layer in layers:
        layer.weights.requires_grad_(False)
        x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
        layer(x).sum().backward()
        assert layer.weights.grad is None
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=0)


def test_chunks_give_the_same_outputs_and_gradients(monkeypatch):
    layer = _layer(6, 2, "amplitude", "strong", "adjoint", seed=1).double()  # float64: summation order aside
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(10, 64, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    whole = _grads(layer, x, v)
    state = layer.final_state(x)
    monkeypatch.setattr(memory, "CHUNK_AMPLITUDES", 4 * 64)  # 4 rows per chunk: 4 + 4 + 2
    assert memory.chunk_rows(6) == 4
    for a, b in zip(_grads(layer, x, v), whole):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.final_state(x), state, atol=1e-12, rtol=0)


def test_a_pass_autograd_does_not_record_never_runs_the_adjoint(monkeypatch):
    """Evaluation (no_grad) keeps the plain forward: nothing to differentiate, nothing saved."""
    layer = _layer(7, 2, "angle", "strong", "adjoint", method="gates")
    x = torch.randn(4, 7, requires_grad=True)
    want = layer(x).detach()

    def fail(*args, **kwargs):
        raise AssertionError("adjoint called without autograd")

    monkeypatch.setattr("hqcbench.models.quantum.adjoint_expvals", fail)
    with torch.no_grad():  # the same operations; matmul may pick other kernels without autograd
        torch.testing.assert_close(layer(x), want, atol=1e-6, rtol=0)


def test_second_derivatives_are_refused_loudly():
    """Nothing asks for them (attacks need first-order input gradients); a request must not be silently wrong."""
    layer = _layer(3, 2, "angle", "strong", "adjoint")
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    layer.diff_method = "backprop"  # the way to a second derivative
    (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    g.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_finite_shot_readout_keeps_its_own_path_with_the_adjoint_layer(monkeypatch):
    calls = []
    monkeypatch.setattr("hqcbench.models.quantum.adjoint_expvals",
                        lambda *a, **k: calls.append(1) or adjoint.adjoint_expvals(*a, **k))
    layer = _layer(3, 2, "angle", "strong", "adjoint", seed=4)
    configure_readout(layer, eval_shots=200, train_shots=200, seed=0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert not calls and torch.isfinite(x.grad).all() and torch.isfinite(layer.weights.grad).all()
    assert out.abs().max() <= 1


def test_adjoint_runs_on_the_meta_device():
    for encoding in ENCODINGS:
        layer = _layer(5, 2, encoding, "strong", "adjoint").to("meta")
        x = torch.empty(8, layer.in_features, device="meta", requires_grad=True)
        out = layer(x)
        out.sum().backward()
        assert out.device.type == "meta" and x.grad.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cuda_adjoint_matches_cpu(encoding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, circuit.input_width(9, encoding), generator=gen)
    v = torch.randn(9, generator=gen)
    cpu = _grads(_layer(9, 3, encoding, "strong", "adjoint", seed=3), x, v)
    gpu = _grads(_layer(9, 3, encoding, "strong", "adjoint", seed=3).cuda(), x.cuda(), v.cuda())
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ which method, and what it keeps
def test_auto_keeps_backprop_for_small_states_and_picks_adjoint_for_large_ones():
    assert adjoint.choose_diff_method(4, 2, 256) == "backprop"  # the unitary method
    assert adjoint.choose_diff_method(8, 2, 32) == "backprop"
    assert adjoint.choose_diff_method(16, 2, 32) == "adjoint"
    assert _layer(16, 6, "angle", "strong", "auto").diff_method_for(32) == "adjoint"
    assert _layer(16, 6, "angle", "strong", "auto", method="unitary").diff_method_for(32) == "backprop"
    with pytest.raises(ValueError, match="diff_method"):
        QuantumLayer(3, 1, diff_method="magic")
    with pytest.raises(ValueError, match="adjoint"):
        QuantumLayer(3, 1, method="unitary", diff_method="adjoint")


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_saved_bytes_do_not_grow_with_depth_on_the_adjoint_path(encoding):
    """Depth 2 against depth 8: the adjoint keeps the final state whatever the depth (plus the gates'
    small matrices, which grow with depth but not with the batch); backpropagation keeps a state
    vector per wire group and layer, so the same count grows by more than 6 of them."""
    n, batch = 12, 16
    state = batch * 2 ** n * 8

    def kept(diff_method: str, depth: int) -> int:
        layer = _layer(n, depth, encoding, "strong", diff_method)
        x = torch.randn(batch, layer.in_features, requires_grad=True)
        return saved_bytes(lambda: layer(x))[1]

    adj2, adj8 = kept("adjoint", 2), kept("adjoint", 8)
    bp2, bp8 = kept("backprop", 2), kept("backprop", 8)
    assert adj8 <= 1.3 * adj2 and adj8 - adj2 < state, (adj2 / state, adj8 / state)
    assert bp8 >= 2.5 * bp2 and bp8 - bp2 > 6 * state, (bp2 / state, bp8 / state)  # the count sees what it must


def test_backprop_saved_states_model_matches_what_autograd_keeps():
    n, depth, batch = 12, 4, 32  # large enough a state that the gates' small matrices do not count
    layer = _layer(n, depth, "angle", "strong", "backprop")
    x = torch.randn(batch, n, requires_grad=True)
    kept = saved_bytes(lambda: layer(x))[1] / (batch * 2 ** n * 8)
    assert abs(kept - adjoint.backprop_saved_states(n, depth, batch)) <= 1.0, kept


# ------------------------------------------------------------------ memory estimate and check
def test_estimate_is_at_least_what_autograd_keeps_and_adjoint_does_not_grow_with_depth():
    for diff_method in ("backprop", "adjoint"):
        for depth in (2, 6):
            layer = _layer(11, depth, "angle", "strong", diff_method)
            x = torch.randn(32, 11, requires_grad=True)
            assert layer.peak_bytes(32) >= saved_bytes(lambda: layer(x))[1]
    adj = [memory.estimate_peak_bytes(18, d, 32, "adjoint") for d in (2, 6, 12)]
    bp = [memory.estimate_peak_bytes(18, d, 32, "backprop") for d in (2, 6, 12)]
    state = 32 * 2 ** 18 * 8
    assert adj[2] - adj[0] < state / 8 and bp[2] - bp[0] > 10 * state  # only the gates' small matrices grow
    assert memory.estimate_peak_bytes(18, 6, 32, "auto") == adj[1]
    assert memory.estimate_peak_bytes(16, 2, 32, backward=False) < memory.estimate_peak_bytes(16, 2, 32)
    assert memory.estimate_peak_bytes(14, 2, 32, dtype=torch.float64) > memory.estimate_peak_bytes(14, 2, 32)


def test_a_config_within_the_limit_but_too_large_for_memory_names_n_qubits_estimate_and_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 300 * 2 ** 20)
    cfg = RunConfig(arms="cnn,hybrid", n_qubits=16, depth=6, attacks="none", device="cpu").validate()
    with pytest.raises(UserInputError) as info:
        memory.check_memory(cfg)  # explicit: the jobs call it after validate, no import side effect
    text = str(info.value)
    assert info.value.parameter == "n_qubits" and text.startswith("n_qubits: 16 qubits")
    assert "GiB for the quantum layer" in text and "0.29 GiB available on cpu" in text, text
    memory.check_memory(RunConfig(arms="cnn,control", n_qubits=16, device="cpu"))  # no circuit: nothing to check
    memory.check_memory(RunConfig(arms="hybrid", n_qubits=8, device="cpu"))
    with pytest.raises(UserInputError, match="attacks none"):
        memory.check_memory(RunConfig(arms="hybrid", n_qubits=14, depth=2, attacks="fgsm", device="cpu"))


def test_the_check_allows_for_the_freed_memory_the_heap_keeps_on_cpu(monkeypatch):
    cfg = RunConfig(arms="hybrid", n_qubits=16, depth=2, attacks="none", device="cpu")
    peak, _ = memory.run_peak_bytes(cfg)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(1.5 * peak / memory.MEMORY_FRACTION))
    text = memory.memory_shortfall(cfg)  # the live peak fits, the live peak with the heap's allowance does not
    assert text is not None and f"x{memory.HEAP_ALLOWANCE:g} for freed memory the heap keeps" in text, text
    monkeypatch.setattr(memory, "available_bytes",
                        lambda device: int(1.05 * memory.HEAP_ALLOWANCE * peak / memory.MEMORY_FRACTION))
    assert memory.memory_shortfall(cfg) is None


def test_qubit_limit_is_checked_before_memory_and_twenty_qubits_fit_a_large_machine(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2 ** 30)
    assert MAX_QUBITS == 20
    memory.check_memory(RunConfig(arms="hybrid", n_qubits=20, depth=6, attacks="none", device="cpu").validate())
    with pytest.raises(UserInputError, match=r"n_qubits: 30 qubits need 8\.00 GiB per sample .* batch of 32.*"
                                             r"GiB available.*allowed: 1\.\.20"):
        RunConfig(arms="hybrid", n_qubits=30, device="cpu").validate()


def test_tune_refuses_a_qubit_range_whose_largest_circuit_would_not_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 300 * 2 ** 20)
    with pytest.raises(UserInputError) as info:
        memory.check_tune_memory(TuneConfig(arms="hybrid", qubits_max=16, depth_max=6, device="cpu",
                                            attacks="none").validate())
    assert info.value.parameter == "qubits_max" and "16 qubits" in str(info.value)
    memory.check_tune_memory(TuneConfig(arms="hybrid", qubits_max=8, device="cpu").validate())


def test_tune_space_draws_qubits_within_the_limit():
    import optuna  # only the tune job needs it

    from hqcbench.jobs.tune_space import suggest

    trial = optuna.trial.FixedTrial({"width": 8, "lr": 1e-3, "n_qubits": MAX_QUBITS, "depth": 1,
                                     "encoding": "angle", "ansatz": "strong"})
    assert suggest(trial, "hybrid", TuneConfig(qubits_max=MAX_QUBITS))["n_qubits"] == MAX_QUBITS


def test_pass_sizes_follow_the_evaluation_and_attack_code():
    """memory.py mirrors two batch sizes it may not import; these keep the copies honest."""
    from hqcbench.data.datasets import ImageSet
    from hqcbench.evaluation.attacks import attack_batch_size
    from hqcbench.training.loop import evaluate

    assert attack_batch_size(np.zeros((1, 1, 2, 2))) == memory.ATTACK_BATCH_MAX
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return torch.zeros(x.shape[0], 2)

    data = ImageSet(torch.zeros(300, 1, 2, 2, dtype=torch.uint8), torch.zeros(300, dtype=torch.long))
    evaluate(Spy(), data, 8, torch.device("cpu"))
    assert seen[0] == memory.EVAL_BATCH_MIN


def test_validate_checks_fields_only_and_the_main_job_checks_memory(monkeypatch, mlflow_store):
    """validate() no longer depends on what happens to be imported: in a fresh interpreter it accepts a
    circuit too large for memory (fields are fine), and the main job refuses it before any run opens."""
    import subprocess
    import sys
    code = ("from hqcbench.config import RunConfig\n"
            "RunConfig(arms='hybrid', n_qubits=20, depth=6, device='cpu').validate()\n"
            "import sys; sys.exit(1 if 'hqcbench.models' in sys.modules else 0)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    monkeypatch.setattr(memory, "available_bytes", lambda device: 300 * 2 ** 20)
    from hqcbench.jobs.run import run_main
    with pytest.raises(UserInputError, match="n_qubits: 16 qubits"):
        run_main(RunConfig(arms="hybrid", n_qubits=16, depth=6, attacks="none", device="cpu"), progress=False)
    import mlflow
    assert mlflow.search_runs(search_all_experiments=True).empty
