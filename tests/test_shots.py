"""Finite-shot readout: unbiased, 1/sqrt(N) spread, exact path untouched, parameter shift converges."""
from __future__ import annotations

import math

import mlflow
import pytest
import torch

from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY, ImageSet
from hqcbench.evaluation import shots_sweep
from hqcbench.models import readout as S
from hqcbench.models.arms import build_model
from hqcbench.models.quantum import QuantumLayer, configure_readout

CIRCUITS = [("angle", "strong"), ("angle", "basic"), ("amplitude", "basic"), ("amplitude", "strong")]


def make_layer(n: int = 3, encoding: str = "angle", ansatz: str = "strong", engine: str = "fused") -> QuantumLayer:
    return QuantumLayer(n, 2, encoding, ansatz, engine, seed=7)


def inputs(layer: QuantumLayer, batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, layer.in_features, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- exact path
@pytest.mark.parametrize("encoding,ansatz", CIRCUITS)
def test_shots_none_is_bit_for_bit_the_exact_readout(encoding, ansatz, monkeypatch):
    layer = make_layer(3, encoding, ansatz).eval()
    x = inputs(layer)
    reference = layer(x)  # never configured: the layer's own exact path
    assert torch.allclose(reference, layer.expvals(layer.final_state(x)), atol=1e-6)
    configure_readout(layer, 50, None, seed=0)
    assert not torch.equal(layer(x), reference)  # the sampled path really differs ...
    configure_readout(layer, None, None, seed=0)
    assert torch.equal(layer(x), reference)  # ... and None restores the exact values, bit for bit
    # with no shots the sampling code is never entered; eval shots never touch training mode
    monkeypatch.setattr(S, "sampled_forward", lambda *a: pytest.fail("sampled path entered"))
    assert torch.equal(layer(x), reference)
    configure_readout(layer, 50, None, seed=0)
    layer.train()
    out = layer(x)
    assert torch.equal(out, reference) and out.grad_fn is not None


def test_exact_model_outputs_unchanged_by_configure():
    cfg = RunConfig(width=4)
    torch.manual_seed(3)
    model = build_model("hybrid", REGISTRY["digits"], cfg).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = model(x)
    configure_readout(model, None, None, seed=0)
    assert torch.equal(model(x), before)


# ----------------------------------------------------------------------------- statistics
def exact_and_samples(layer: QuantumLayer, x: torch.Tensor, shots: int,
                      repeats: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact <Z> and ``repeats`` sampled readouts through the layer's forward, one seed each."""
    layer.eval()
    with torch.no_grad():
        exact = layer(x)
        samples = []
        for seed in range(repeats):
            configure_readout(layer, shots, None, seed=seed)
            samples.append(layer(x))
    return exact.double(), torch.stack(samples).double()


@pytest.mark.parametrize("encoding,ansatz", [("angle", "strong"), ("amplitude", "basic")])
def test_sampled_readout_is_unbiased(encoding, ansatz):
    layer = make_layer(3, encoding, ansatz)
    x = inputs(layer)
    repeats, shots = 400, 100
    exact, samples = exact_and_samples(layer, x, shots, repeats)
    assert (exact.abs() < 0.98).all()  # no degenerate entry with zero variance
    mean = samples.mean(0)
    standard_error = samples.std(0) / math.sqrt(repeats)
    assert ((mean - exact).abs() <= 3 * standard_error).all(), (mean - exact) / standard_error
    # and the spread is the binomial one: var of a mean of N +-1 outcomes = (1 - <Z>^2) / N
    theory = torch.sqrt((1 - exact ** 2) / shots)
    assert torch.allclose(samples.std(0), theory, rtol=0.2)
    # a sharper look at the sampler alone: 20,000 independent readouts per entry (3 SE ~ 0.002)
    many = 20_000
    probs = layer.probabilities(x).detach().double().repeat(many, 1)
    est = S.sample_expvals(probs, layer.zsigns, shots, S.make_rng(11)).view(many, *exact.shape)
    standard_error = est.std(0) / math.sqrt(many)
    assert ((est.mean(0) - exact).abs() <= 3 * standard_error).all(), (est.mean(0) - exact) / standard_error


def test_spread_shrinks_as_one_over_sqrt_shots():
    layer = make_layer(3)
    x = inputs(layer)
    exact, few = exact_and_samples(layer, x, 100, 300)
    _, many = exact_and_samples(layer, x, 10_000, 300)
    ratio = few.std(0) / many.std(0)  # sqrt(10_000 / 100) = 10
    assert ((ratio > 8) & (ratio < 12.5)).all(), ratio
    assert (many - exact).abs().max() < 0.05


def test_sampling_is_seeded():
    layer = make_layer(3).eval()
    x = inputs(layer)
    configure_readout(layer, 200, None, seed=5)
    first = layer(x)
    configure_readout(layer, 200, None, seed=5)
    assert torch.equal(layer(x), first)
    configure_readout(layer, 200, None, seed=6)
    assert not torch.equal(layer(x), first)


def test_counts_sum_to_shots_and_follow_the_probabilities():
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]])
    counts = S.sample_counts(probs, 4000, S.make_rng(0))
    assert counts.sum(1).tolist() == [4000, 4000] and counts[0, 0] == 4000 and counts[1, :2].sum() == 0
    zsigns = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    est = S.sample_expvals(probs, zsigns, 4000, S.make_rng(0))
    assert est[0].tolist() == [1.0, 1.0] and est[1, 0].item() == -1.0  # deterministic outcomes are exact
    assert abs(est[1, 1].item() - (0.25 - 0.75)) < 4 * math.sqrt((1 - 0.25) / 4000)


# ----------------------------------------------------------------------------- parameter shift
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("encoding,ansatz", CIRCUITS)
def test_shifted_circuit_evaluator_matches_the_layer(n, encoding, ansatz):
    layer = make_layer(n, encoding, ansatz)
    x = inputs(layer, 5)
    rows = layer.weights.detach().unsqueeze(0).expand(5, *layer.weights.shape)
    probs = S.circuit_probabilities(layer, S.encoding_params(layer, x), rows)
    assert torch.allclose(probs, layer.probabilities(x).detach(), atol=1e-6)


def test_shifted_circuit_evaluator_matches_the_torchquantum_engine():
    layer = make_layer(3, "angle", "strong", engine="torchquantum")
    x = inputs(layer, 3)
    rows = layer.weights.detach().unsqueeze(0).expand(3, *layer.weights.shape)
    probs = S.circuit_probabilities(layer, S.encoding_params(layer, x), rows)
    assert torch.allclose(probs, layer.probabilities(x).detach(), atol=1e-6)


def autograd_reference(layer: QuantumLayer, x: torch.Tensor, grad_out: torch.Tensor):
    layer.zero_grad()
    layer.shots = layer.train_shots = None
    x_req = x.clone().requires_grad_(True)
    (layer(x_req) * grad_out).sum().backward()
    return x_req.grad.clone(), layer.weights.grad.clone()


@pytest.mark.parametrize("encoding,ansatz", CIRCUITS)
def test_parameter_shift_without_sampling_equals_autograd(encoding, ansatz):
    layer = make_layer(3, encoding, ansatz)
    x = inputs(layer)
    grad_out = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    ref_x, ref_w = autograd_reference(layer, x, grad_out)
    gx, gw = S.parameter_shift(layer, x, grad_out, None, None)
    assert torch.allclose(gx, ref_x, atol=1e-4) and torch.allclose(gw, ref_w, atol=1e-4)
    assert ref_x.abs().max() > 1e-3 and ref_w.abs().max() > 1e-3  # not a vacuous comparison


def test_parameter_shift_in_small_chunks_gives_the_same_gradient(monkeypatch):
    layer = make_layer(3, "amplitude", "strong")
    x = inputs(layer)
    grad_out = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    whole = S.parameter_shift(layer, x, grad_out, None, None)
    monkeypatch.setattr(S, "MAX_AMPLITUDES_PER_CHUNK", 8)  # one shifted circuit (4 rows) per chunk
    chunked = S.parameter_shift(layer, x, grad_out, None, None)
    assert torch.allclose(whole[0], chunked[0], atol=1e-6) and torch.allclose(whole[1], chunked[1], atol=1e-6)


def shot_gradients(layer: QuantumLayer, x: torch.Tensor, grad_out: torch.Tensor, shots: int, seed: int):
    """Gradients through the layer in training mode with ``train_shots`` (the hook's real path)."""
    layer.zero_grad()
    configure_readout(layer, None, shots, seed=seed)
    layer.train()
    x_req = x.clone().requires_grad_(True)
    (layer(x_req) * grad_out).sum().backward()
    return x_req.grad.clone(), layer.weights.grad.clone()


@pytest.mark.parametrize("encoding,ansatz", [("angle", "strong"), ("amplitude", "basic")])
def test_parameter_shift_on_sampled_estimates_converges_to_the_exact_gradient(encoding, ansatz):
    layer = make_layer(3, encoding, ansatz)
    x = inputs(layer)
    grad_out = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    ref_x, ref_w = autograd_reference(layer, x, grad_out)
    errors = {}
    for shots in (1_000, 1_000_000):
        gx, gw = shot_gradients(layer, x, grad_out, shots, seed=3)
        errors[shots] = max((gx - ref_x).abs().max().item(), (gw - ref_w).abs().max().item())
    # shot noise of a shift-rule derivative ~ |grad_out| * sqrt(2) / (2 sqrt(N)) per term: ~1e-3 at 10^6
    assert errors[1_000_000] < 0.02, errors
    assert errors[1_000_000] < errors[1_000] / 5, errors  # expected ratio sqrt(1000) ~ 32


def test_training_with_train_shots_uses_the_sampled_forward():
    layer = make_layer(3)
    x = inputs(layer)
    configure_readout(layer, None, 64, seed=0)
    layer.train()
    out = layer(x)
    assert "ShotReadout" in type(out.grad_fn).__name__
    counts = (out.detach() + 1) / 2 * 64  # mean of 64 outcomes of +-1 -> an integer count of +1s
    assert torch.allclose(counts, counts.round(), atol=1e-4)


# ----------------------------------------------------------------------------- sweep and runner
def test_shots_sweep_reports_every_count_and_restores_the_readout():
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).eval()
    gen = torch.Generator().manual_seed(0)
    test = ImageSet(torch.rand(40, 1, 8, 8, generator=gen), torch.randint(0, 10, (40,), generator=gen))
    configure_readout(model, 77, None, seed=0)
    found = shots_sweep.shots_sweep(model, test, [10, 1000], 32, torch.device("cpu"), seed=0, repeats=2)
    assert {"test_acc_exact", "test_acc_shots_10", "test_acc_shots_1000", "test_acc_shots_10_std"} <= set(found.metrics)
    assert all(0.0 <= found.metrics[k] <= 1.0 for k in ("test_acc_shots_10", "test_acc_shots_1000"))
    assert [(name, step) for name, _, step in found.stepped] == [("test_acc_vs_shots", 10), ("test_acc_vs_shots", 1000)]
    assert "shots_sweep.png" in found.figures and "exact," in found.texts["shots_sweep.csv"]
    assert model.quantum_layers()[0].shots == 77  # readout restored
    from hqcbench.training.loop import evaluate
    model.quantum_layers()[0].shots = None
    assert found.metrics["test_acc_exact"] == evaluate(model, test, 32, torch.device("cpu")).acc


def test_main_run_logs_shots_and_hardware_cost(mlflow_store):
    from hqcbench.jobs.run import run_main

    cfg = RunConfig(arms="hybrid,control", epochs=1, train_limit=120, width=4, attacks="fgsm", attack_samples="20",
                    shots="200", train_shots="100", shots_sweep="20,2000")
    trained = run_main(cfg, progress=False)
    by_arm = {t.arm: t for t in trained}
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    hybrid = runs[runs["tags.hqcbench.arm"] == "hybrid"].iloc[0]
    control = runs[runs["tags.hqcbench.arm"] == "control"].iloc[0]
    for name in ("test_acc_exact", "test_acc_shots_20", "test_acc_shots_2000", "hw_circuit_executions",
                 "hw_circuit_executions_train", "hw_shots_total", "hw_time_est_s", "hw_time_est_s_train"):
        assert hybrid[f"metrics.{name}"] == hybrid[f"metrics.{name}"], name  # logged (not NaN)
        assert f"metrics.{name}" not in control or control[f"metrics.{name}"] != control[f"metrics.{name}"]
    assert hybrid["tags.hqcbench.readout"] == "200 shots"
    assert hybrid["tags.hqcbench.train_readout"] == "100 shots, parameter shift"
    n_train = int(hybrid["params.n_train"])
    assert hybrid["metrics.hw_circuit_executions_train"] == n_train * 1 * (1 + 2 * (16 + 4))
    assert hybrid["metrics.hw_shots_train"] == hybrid["metrics.hw_circuit_executions_train"] * 100
    # attacks were counted: at least one FGSM gradient (1 forward + 2 x 4 shifts) per attacked image
    assert hybrid["metrics.hw_circuit_executions_attack"] >= 20 * 9
    assert hybrid["metrics.hw_shots_attack"] == hybrid["metrics.hw_circuit_executions_attack"] * 200
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(hybrid["run_id"])}
    assert {"shots_sweep.png", "hardware_cost.json"} <= artifacts
    assert by_arm["hybrid"].model.quantum_layers()[0].train_shots == 100
