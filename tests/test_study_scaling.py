"""The scaling study: gradient variances against independent computations, the slope fit, the CLI's
errors, and one tiny end-to-end run whose CSVs, figures, README and MLflow runs are checked."""
from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from hqcbench.cli import main
from hqcbench.data.datasets import DATA_DIR_ENV
from hqcbench.errors import UserInputError
from hqcbench.study import gradients
from hqcbench.study.accuracy import run_config
from hqcbench.study.readme import accuracy_sentences, vanishing_sentence
from hqcbench.study.settings import parse_ints
from hqcbench.study.summary import ACCURACY_COLUMNS, GRADIENT_COLUMNS, slope_table
from tests.dataset_files import write_mnist_like
from tests.test_quantum_layer import ref_expvals


def test_one_qubit_gradients_and_variances_match_the_closed_form():
    # one qubit, depth 1: <Z> = cos(a + theta_RY) with a = pi tanh x, RZ leaves it unchanged, so
    # dL/dtheta_RY = -mean_b sin(a_b + theta_RY) and dL/dtheta_RZ = 0
    inits = 6
    grads = gradients.init_gradients(1, 1, inits, dtype=torch.float64)
    a = math.pi * np.tanh(gradients.input_batch(1, torch.float64).numpy()[:, 0])
    theta = np.array([gradients.hybrid_circuit(1, 1, i).weights.detach().double()[0, 0, 0].item()
                      for i in range(inits)])
    expected = -np.sin(a[None, :] + theta[:, None]).mean(axis=1)
    np.testing.assert_allclose(grads[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(grads[:, 1], 0.0, atol=1e-12)
    var_first, var_mean = gradients.variances(grads)
    assert var_first == pytest.approx(np.var(expected, ddof=1), rel=1e-9)
    assert var_mean == pytest.approx(np.var(expected, ddof=1) / 2, rel=1e-9)


def test_three_qubit_gradients_match_parameter_shift_on_the_dense_float64_reference():
    n, depth, inits = 3, 2, 3
    grads = gradients.init_gradients(n, depth, inits)  # float32, as the hybrid trains
    x = gradients.input_batch(n, torch.float64).numpy()
    for init in range(inits):
        w = gradients.hybrid_circuit(n, depth, init).weights.detach().double().numpy()
        shifted = []
        for k in range(w.size):
            plus, minus = w.copy().reshape(-1), w.copy().reshape(-1)
            plus[k] += math.pi / 2
            minus[k] -= math.pi / 2
            cost = [ref_expvals(x, v.reshape(w.shape), n, "angle", "strong")[:, 0].mean() for v in (plus, minus)]
            shifted.append((cost[0] - cost[1]) / 2)  # exact for RY / RZ gates
        np.testing.assert_allclose(grads[init], shifted, atol=2e-6)


def test_initialisations_are_the_hybrid_layers_own_seeded_draws():
    layer = gradients.hybrid_circuit(4, 3, init=7)
    torch.manual_seed(7)
    expected = torch.rand(3, 4, 2) * 2 * math.pi  # QuantumLayer's init, from the seeded global stream
    assert torch.equal(layer.weights.detach(), expected)
    assert not torch.equal(gradients.hybrid_circuit(4, 3, init=8).weights, layer.weights)


def test_slope_fit_recovers_a_known_slope_and_skips_zero_variances():
    n = np.arange(2, 11)
    values = list(10 ** (0.5 - 0.3 * n)) + [0.0]  # a numerically zero cell at n = 11
    fit = gradients.fit_slope(list(n) + [11], values)
    assert fit.slope == pytest.approx(-0.3, abs=1e-9) and fit.intercept == pytest.approx(0.5, abs=1e-9)
    assert fit.widths == tuple(range(2, 11))
    assert fit.factor_per_qubit == pytest.approx(10 ** 0.3)
    assert math.isnan(gradients.fit_slope([2, 3], [1e-3, 0.0]).slope)


def test_option_parsing():
    assert parse_ints("2..4,8", "qubits", 1) == (2, 3, 4, 8)
    with pytest.raises(UserInputError, match="^qubits:"):
        parse_ints("4..2", "qubits", 1)
    assert run_config("digits", 3, "hybrid", 0, 1, 2000).train_limit == 0  # digits: all of it
    assert run_config("mnist", 3, "control", 0, 1, 2000).train_limit == 2000


@pytest.mark.parametrize("argv, parameter", [(["study", "nope"], "name"),
                                             (["study", "scaling", "--inits", "1"], "inits")])
def test_bad_name_or_inits_is_one_clear_error(argv, parameter, mlflow_store, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"hqcbench: error: {parameter}:")
    assert not (tmp_path / "out").exists()  # nothing ran


def test_sentences_are_computed_from_the_numbers():
    slopes = pd.DataFrame({"depth": [1, 2, 3], "slope_mean": [-0.01, -0.29, -0.31]})
    text = vanishing_sentence(slopes)
    assert text.startswith("At depth >= 2 ") and "close to the 2^-n" in text
    flat = vanishing_sentence(pd.DataFrame({"depth": [1, 2], "slope_mean": [-0.01, -0.02]}))
    assert flat.startswith("No depth shows exponential decay")
    acc = pd.DataFrame({"dataset": "digits", "n": [2, 2, 4, 4], "arm": ["hybrid", "control"] * 2,
                        "seed": 0, "test_acc": [0.80, 0.85, 0.90, 0.86]})
    (sentence,) = accuracy_sentences(acc)
    assert "grows with n: 80.0% at n=2 to 90.0% at n=4" in sentence
    assert "ahead at 1 of 2 widths" in sentence
    assert "near chance" not in sentence
    stuck = pd.concat([acc, pd.DataFrame({"dataset": "digits", "n": [4], "arm": ["hybrid"], "seed": 1,
                                          "test_acc": [0.12]})])
    (sentence,) = accuracy_sentences(stuck)
    assert sentence.endswith("Ended near chance (test accuracy below 15%, 1.5 x 1/10): 1 of 3 hybrid trainings "
                             "(n=4 seed 1).")


def test_tiny_study_writes_csvs_figures_readme_and_runs(mlflow_store, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)  # restored after the CLI exports --data_dir
    write_mnist_like(tmp_path / "data", "MNIST", n_train=60, n_test=20)
    out = tmp_path / "out"
    argv = ["study", "scaling", "--qubits", "2,3", "--depths", "1,2", "--inits", "4", "--train_qubits", "2",
            "--seeds", "0", "--datasets", "digits,mnist", "--train_limit", "40", "--epochs", "1",
            "--data_dir", str(tmp_path / "data"), "--out", str(out)]
    assert main(argv) == 0

    grad = pd.read_csv(out / "gradient_variance.csv")
    assert tuple(grad.columns) == GRADIENT_COLUMNS and len(grad) == 4
    assert set(zip(grad["n"], grad["depth"])) == {(2, 1), (2, 2), (3, 1), (3, 2)} and (grad["inits"] == 4).all()
    assert (grad["var_mean"] > 0).all()
    acc = pd.read_csv(out / "accuracy.csv")
    assert tuple(acc.columns) == ACCURACY_COLUMNS and len(acc) == 4 and (acc["epoch_cpu_seconds"] >= 0).all()
    assert set(zip(acc["dataset"], acc["arm"])) == {(d, a) for d in ("digits", "mnist") for a in ("hybrid", "control")}
    assert acc["test_acc"].between(0, 1).all() and (acc["seconds"] > 0).all()
    assert dict(zip(acc["dataset"], acc["train_limit"])) == {"digits": 0, "mnist": 40}
    for name in ("gradient_variance.png", "accuracy.png", "study.json"):
        assert (out / name).stat().st_size > 0

    readme = (out / "README.md").read_text()
    for slope in slope_table(grad)["slope_mean"].dropna():
        assert f"| {slope:.3f} |" in readme
    assert "python -m hqcbench study scaling --part gradients --qubits 2,3 --depths 1,2 --inits 4" in readme
    assert "--data_dir DATA_DIR" in readme and str(tmp_path / "data") not in readme  # no machine-specific data path
    assert "Default gradient part not estimated: its widest cell (n = 16)" in readme  # no wild extrapolation
    assert "On digits, hybrid test accuracy is" in readme and "The control is at" in readme

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("hqcbench-study-scaling")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "scaling-all")
    assert "scaling_grad_slope_var_mean_depth_2" in parent.data.metrics
    children = [r for r in runs if r.data.tags.get("hqcbench.kind") == "child"]
    assert len(children) == 4 and all("test_acc" in r.data.metrics for r in children)

    # one part alone: its cells replace their rows, the others stay, the README is rebuilt from both
    assert main(["study", "scaling", "--part", "gradients", "--qubits", "2,3", "--depths", "1", "--inits", "3",
                 "--out", str(out)]) == 0
    grad = pd.read_csv(out / "gradient_variance.csv")
    assert dict(zip(grad["depth"], grad["inits"])) == {1: 3, 2: 4} and len(grad) == 4
    assert len(pd.read_csv(out / "accuracy.csv")) == 4
    assert "## Trained test accuracy against width" in (out / "README.md").read_text()
