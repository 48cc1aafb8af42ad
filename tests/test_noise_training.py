"""Noise-aware training (``train_noise``): gradients through the noisy circuit, the training fingerprint, the run."""
from __future__ import annotations

import mlflow
import pytest
import torch

from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fields, training_fingerprint
from hqcbench.models.arms import build_model
from hqcbench.models.noise import check_settings, training_noise
from hqcbench.models.quantum import QuantumLayer

torch.set_num_threads(1)


def test_gradients_flow_through_the_noisy_circuit():
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4))
    x = torch.rand(8, 1, 8, 8)
    layer = next(m for m in model.modules() if isinstance(m, QuantumLayer))

    def weight_grad() -> torch.Tensor:
        model.zero_grad()
        model(x).logsumexp(1).sum().backward()
        assert layer.weights.grad is not None
        return layer.weights.grad.clone()

    clean = weight_grad()
    context, tag = training_noise(model, RunConfig(train_noise="depolarizing:0.05"), seed=0)
    assert tag == "depolarizing:0.05; density"
    with context:
        noisy = weight_grad()
    assert noisy.abs().sum() > 0 and (noisy - clean).abs().max() > 1e-4
    # the noisy gradient is the exact one of the noisy circuit: a finite difference of the density result agrees
    with training_noise(model, RunConfig(train_noise="depolarizing:0.05"), seed=0)[0], torch.no_grad():
        layer.weights.data = layer.weights.data.double()
        model.double()
        base = layer.weights.data.clone()
        h = 1e-6
        layer.weights.data = base.clone()
        layer.weights.data[0, 0, 0] += h
        up = model(x.double()).logsumexp(1).sum()
        layer.weights.data = base.clone()
        layer.weights.data[0, 0, 0] -= h
        down = model(x.double()).logsumexp(1).sum()
    assert abs(float((up - down) / (2 * h)) - float(noisy[0, 0, 0])) < 1e-3
    assert training_noise(model, RunConfig(), seed=0)[1] == ""


def test_training_fingerprint_baseline():
    base = RunConfig()
    noisy = RunConfig(train_noise="depolarizing:0.01")
    assert "train_noise" not in training_fields(base, "hybrid", 0)  # old fingerprints unchanged
    assert training_fields(noisy, "hybrid", 0)["train_noise"] == "depolarizing:0.01"
    assert training_fields(noisy, "hybrid", 0)["train_noise_method"] == ["auto", 200]
    assert training_fingerprint(noisy, "hybrid", 0)[0] != training_fingerprint(base, "hybrid", 0)[0]
    for arm in ("cnn", "control"):  # no circuit: the same training with or without train_noise
        assert training_fingerprint(noisy, arm, 0)[0] == training_fingerprint(base, arm, 0)[0]
    # noise_method and noise_trajectories alone are evaluation settings: training unchanged
    assert training_fingerprint(RunConfig(noise_method="trajectories"), "hybrid", 0) == training_fingerprint(
        base, "hybrid", 0)


def test_train_noise_is_checked_up_front():
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(train_noise="depolarizing:1.5"))
    assert info.value.parameter == "train_noise"
    assert "no effect" in check_settings(RunConfig(arms="cnn", train_noise="depolarizing:0.1"))


def test_main_run_trains_under_noise(mlflow_store):
    from hqcbench.jobs.run import run_main

    common = dict(arms="hybrid", epochs=1, train_limit=60, width=4, attacks="none")
    clean = run_main(RunConfig(**common), progress=False)[0]
    noisy = run_main(RunConfig(**common, train_noise="depolarizing:0.05+readout:0.02"), progress=False)[0]
    layer_clean = next(m for m in clean.model.modules() if isinstance(m, QuantumLayer))
    layer_noisy = next(m for m in noisy.model.modules() if isinstance(m, QuantumLayer))
    assert (layer_clean.weights - layer_noisy.weights).abs().max() > 1e-6  # same seed, different training
    assert "forward" not in vars(layer_noisy)  # the model leaves training noiseless
    run = mlflow.get_run(noisy.run_id)
    assert run.data.tags["hqcbench.train_noise"] == "depolarizing:0.05+readout:0.02; density"
    assert "hqcbench.train_noise" not in mlflow.get_run(clean.run_id).data.tags
