"""The hardware cost formula on hand-computed cases, and against the circuit queries a run really makes."""
from __future__ import annotations

import json

import pytest
import torch

from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.evaluation import hardware_cost as H
from hqcbench.models import readout as S
from hqcbench.models.arms import build_model
from hqcbench.models.quantum import QuantumLayer, configure_readout


def test_circuit_shape_angle_strong_by_hand():
    shape = H.CircuitShape(4, 2, "angle", "strong")
    assert shape.weights == 16  # 2 layers x 4 wires x (RY, RZ)
    assert shape.encoding_angles == 4  # one RY per wire
    assert shape.stateprep_gates == 4
    assert shape.ansatz_gates == 2 * (8 + 4)  # 8 rotations + CNOT ring of 4 per layer
    assert shape.gates == 28
    assert shape.executions_per_train_sample == 1 + 2 * (16 + 4) == 41
    assert shape.executions_per_input_gradient == 1 + 2 * 4 == 9


def test_circuit_shape_amplitude_basic_by_hand():
    shape = H.CircuitShape(4, 2, "amplitude", "basic")  # the paper's circuit
    assert shape.weights == 8
    assert shape.encoding_angles == 15  # 2**4 - 1 RY angles of the state preparation
    assert shape.stateprep_gates == 15 + 14  # + 2**4 - 2 CNOTs
    assert shape.ansatz_gates == 2 * (4 + 4)
    assert shape.executions_per_train_sample == 1 + 2 * (8 + 15) == 47
    assert shape.executions_per_input_gradient == 31
    assert H.CircuitShape(1, 3, "angle", "basic").ansatz_gates == 3  # no ring for one wire
    assert H.CircuitShape(2, 1, "amplitude", "strong").gates == (3 + 2) + (4 + 1)  # ring of 2 = one CNOT


def test_the_formula_on_a_hand_computed_run():
    cfg = RunConfig(epochs=3, attacks="fgsm,pgd", shots="200", shots_sweep="10,100", shot_rate_hz=1000.0).validate()
    layer = QuantumLayer(4, 2, "angle", "strong")
    # attack queries as counted while attacks ran: 210 samples forward, 660 of them with input gradient
    setattr(layer, H.QUERY_ATTR, {"forward": 210, "gradient": 660})
    cost = H.cost_for(layer, cfg, n_train=100, n_val=20, n_test=50)
    # train: 100 samples x 3 epochs x 41 executions; training read exactly -> 1024 reference shots each
    assert cost.executions["train"] == 12_300 and cost.shots["train"] == 12_300 * 1024
    assert cost.executions["val"] == 60 and cost.shots["val"] == 60 * 200  # 20 x 3 epochs, eval shots
    assert cost.executions["test"] == 50 and cost.shots["test"] == 10_000
    # sweep: 50 test samples x 3 repeats x 2 shot counts; shots 50 x 3 x (10 + 100)
    assert cost.executions["sweep"] == 300 and cost.shots["sweep"] == 16_500
    # attacks: 210 forwards + 660 gradients x 2 x 4 encoding angles
    assert cost.executions["attack"] == 210 + 660 * 8 == 5_490
    assert cost.shots["attack"] == 5_490 * 200
    assert cost.total_shots == 12_595_200 + 12_000 + 10_000 + 16_500 + 1_098_000 == 13_731_700
    assert cost.time_s() == pytest.approx(13_731.7)
    assert cost.time_s("train") == pytest.approx(12_595.2)
    metrics = cost.metrics()
    assert metrics["hw_circuit_executions"] == 12_300 + 60 + 50 + 300 + 5_490
    assert metrics["hw_time_est_s_attack"] == pytest.approx(1_098.0)
    assert json.loads(cost.to_json())["total"]["shots"] == 13_731_700
    no_attack = H.cost_for(QuantumLayer(4, 2, "angle", "strong"), cfg, 100, 20, 50)
    assert no_attack.executions["attack"] == 0


def test_attack_queries_are_counted_while_attacks_run():
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).eval()
    layer = model.quantum_layers()[0]
    x = torch.rand(10, 1, 8, 8)
    model(x)  # outside the block: not counted
    with H.count_queries([model]):
        with torch.no_grad():
            model(x)  # a prediction: 10 forwards
        x_req = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(x_req), torch.zeros(10, dtype=torch.long)).backward()
        model(x[:3]).sum()  # forward with autograd on but never differentiated: forwards only
    model(x_req).sum().backward()  # after the block: not counted
    assert H.attack_queries(layer) == {"forward": 23, "gradient": 10}
    hook = H.counting_epoch_hook(lambda epoch, m: m(x[:4]))
    hook(5, model)
    assert H.attack_queries(layer) == {"forward": 27, "gradient": 10}  # accumulated
    cost = H.cost_for(layer, RunConfig(attacks="fgsm"), 1, 1, 1)
    assert cost.executions["attack"] == 27 + 10 * 2 * 4


def test_shot_rate_default_and_override():
    layer = QuantumLayer(2, 1, "angle", "basic")
    default = H.cost_for(layer, RunConfig(attacks="none"), 10, 2, 5)
    assert default.shot_rate_hz == H.DEFAULT_SHOT_RATE_HZ == 5000.0
    custom = H.cost_for(layer, RunConfig(attacks="none", shot_rate_hz=250.0), 10, 2, 5)
    assert custom.time_s() == pytest.approx(default.time_s() * 20)
    with pytest.raises(ValueError):
        H.estimate(H.CircuitShape(2, 1, "angle", "basic"), H.Workload(1, 1, 1, 1), 10, 10, 0.0)


@pytest.mark.parametrize("encoding", ["angle", "amplitude"])
def test_billed_executions_per_training_sample_are_what_the_shot_training_runs(encoding, monkeypatch):
    """Count the circuits the train_shots path really evaluates: forward + every shifted pair."""
    layer = QuantumLayer(3, 2, encoding, "strong", seed=0)
    rows = {"n": 0}
    real = S.circuit_probabilities

    def counting(layer_, enc, weights):
        rows["n"] += enc.shape[0]
        return real(layer_, enc, weights)

    monkeypatch.setattr(S, "circuit_probabilities", counting)
    configure_readout(layer, None, 32, seed=0)
    layer.train()
    batch = 5
    x = torch.randn(batch, layer.in_features, requires_grad=True)
    layer(x).sum().backward()
    shape = H.CircuitShape.of(layer)
    assert batch + rows["n"] == batch * shape.executions_per_train_sample  # 1 forward + shifted circuits


def test_billed_forward_passes_match_a_real_fit(monkeypatch):
    """train and val executions: the forward samples the quantum layer sees during ``fit``."""
    from hqcbench.data.datasets import load_splits
    from hqcbench.models.arms import build_model
    from hqcbench.training.loop import fit
    from hqcbench.training.recipes import make_recipe

    cfg = RunConfig(epochs=2, width=4, train_limit=100, attacks="none")
    splits = load_splits("digits", None, 0, cfg.val_fraction, cfg.train_limit)
    torch.manual_seed(0)
    model = build_model("hybrid", splits.spec, cfg)
    layer = model.quantum_layers()[0]
    seen = {"train": 0, "eval": 0}
    layer.register_forward_hook(lambda mod, inp, out: seen.__setitem__(
        "train" if mod.training else "eval", seen["train" if mod.training else "eval"] + inp[0].shape[0]))
    recipe = make_recipe("fair", "hybrid", model, cfg.lr, cfg.epochs, 4, "digits", splits.spec.mean)
    fit(model, splits.train, splits.val, recipe, cfg.epochs, 32, torch.device("cpu"), 0, progress=False)
    cost = H.cost_for(layer, cfg, len(splits.train), len(splits.val), len(splits.test))
    assert seen["train"] * H.CircuitShape.of(layer).executions_per_train_sample == cost.executions["train"]
    assert seen["eval"] == cost.executions["val"]
