"""What users meet in MLflow: the experiment a job picks, the splits as inputs, the parent row's
paired differences, and logged models that load back in a fresh process without warnings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import mlflow
import numpy as np
import pytest
import torch

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import load_splits, to_float
from hqcbench.data.lineage import digest, split_inputs
from hqcbench.jobs import headline
from hqcbench.jobs.evaluate import TrainedArm
from hqcbench.tracking.experiments import use_experiment


# ----------------------------------------------------------------------------- experiments
def _kind(experiment_id: str) -> str | None:
    return mlflow.get_experiment(experiment_id).tags.get(names.MLFLOW_EXPERIMENT_KIND)


def test_default_experiment_is_per_dataset_and_marked_for_training(mlflow_store):
    first = use_experiment("mnist")
    assert mlflow.get_experiment(first).name == "hqcbench-mnist"
    assert _kind(first) == "custom_model_development"
    second = use_experiment("digits")  # a later job in the same process gets its own default
    assert mlflow.get_experiment(second).name == "hqcbench-digits"


def test_an_explicit_experiment_wins_and_its_kind_is_kept(mlflow_store, monkeypatch):
    mine = mlflow.create_experiment("mine", tags={names.MLFLOW_EXPERIMENT_KIND: "genai_development"})
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert use_experiment("digits") == mine
    assert _kind(mine) == "genai_development"  # a user's declared kind is never overwritten
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    chosen = mlflow.set_experiment("chosen-in-process").experiment_id
    assert use_experiment("digits") == chosen
    assert _kind(chosen) == "custom_model_development"


def test_a_run_started_by_mlflow_run_keeps_its_experiment(mlflow_store, monkeypatch):
    other = mlflow.create_experiment("given-to-mlflow-run")
    run = mlflow.MlflowClient().create_run(other)
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    assert use_experiment("digits") == other
    assert mlflow.get_experiment_by_name("hqcbench-digits") is None


# ----------------------------------------------------------------------------- inputs
def test_split_inputs_name_size_and_digest_each_split():
    first = split_inputs(load_splits("digits", None, seed=0, val_fraction=0.2), seed=0, val_fraction=0.2)
    other = split_inputs(load_splits("digits", None, seed=1, val_fraction=0.2), seed=1, val_fraction=0.2)
    by_split = {item.split: item for item in first}
    assert [item.dataset.name for item in first] == ["digits-train", "digits-val", "digits-test"]
    assert [item.context for item in first] == ["training", "validation", "testing"]
    assert by_split["val"].dataset.profile["features_shape"][0] == int(by_split["val"].tags["images"]) == 287
    assert "seed 0" in json.dumps(by_split["val"].dataset.source.to_dict())
    # another seed draws another validation split, and the digest tells them apart; the test split is shared
    assert first[1].dataset.digest != other[1].dataset.digest
    assert first[2].dataset.digest == other[2].dataset.digest


def test_digest_covers_every_image_not_only_the_first_values():
    splits = load_splits("digits", None, seed=0, val_fraction=0.2)
    changed = splits.train.images.clone()
    changed[-1, 0, -1, -1] += 0.5  # the very last pixel of the last image
    assert digest(splits.train) != digest(type(splits.train)(changed, splits.train.labels))


# ----------------------------------------------------------------------------- parent row
def _arm(arm: str, seed: int, acc: float) -> TrainedArm:
    return TrainedArm(arm, seed, f"{arm}{seed}", None, {"test_acc": acc})


def test_headline_pairs_and_paired_differences():
    assert headline.pairs(["cnn", "hybrid", "control", "hybrid_noent"]) == [
        ("hybrid", "cnn"), ("control", "cnn"), ("hybrid_noent", "cnn"), ("hybrid", "control"),
        ("hybrid", "hybrid_noent")]
    assert headline.pairs(["hybrid", "control"]) == [("hybrid", "control")]
    trained = [_arm("cnn", 0, 0.90), _arm("cnn", 1, 0.92), _arm("cnn", 2, 0.91),
               _arm("hybrid", 0, 0.93), _arm("hybrid", 1, 0.93), _arm("hybrid", 2, 0.95)]
    metrics = headline.headline_metrics(headline.differences(trained))
    d = np.array([0.03, 0.01, 0.04])  # per-seed hybrid - cnn
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert metrics["test_acc_hybrid_minus_cnn"] == pytest.approx(d.mean())
    assert metrics["test_acc_hybrid_minus_cnn_ci_low"] == pytest.approx(d.mean() - half)
    assert metrics["test_acc_hybrid_minus_cnn_ci_high"] == pytest.approx(d.mean() + half)
    one_seed = headline.headline_metrics(headline.differences(trained[:1] + trained[3:4]))
    assert one_seed == {"test_acc_hybrid_minus_cnn": pytest.approx(0.03)}  # no interval from one seed
    unpaired = headline.differences([_arm("cnn", 0, 0.9), _arm("hybrid", 1, 0.9)])
    assert unpaired == []  # no seed both arms finished: nothing to pair


# ----------------------------------------------------------------------------- models
LOAD_BACK = """
import sys, warnings, numpy as np, mlflow
warnings.simplefilter("always")
model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
"""


@pytest.mark.slow
def test_logged_model_loads_back_in_a_fresh_process_with_the_same_predictions(mlflow_store, tmp_path):
    from hqcbench.jobs.run import run_main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = run_main(RunConfig(arms="hybrid", epochs=1, train_limit=200, attacks="none", width=8),
                           progress=False)
    # no warning per logged model (MLflow's own UserWarnings; its database layer's deprecations aside)
    mlflow_warnings = [str(w.message) for w in caught
                       if "mlflow" in (w.filename or "") and issubclass(w.category, UserWarning)]
    assert not mlflow_warnings, mlflow_warnings
    model = mlflow.search_logged_models(filter_string=f"source_run_id = '{trained[0].run_id}'",
                                        output_format="list")[0]
    images = to_float(load_splits("digits", None, seed=0, val_fraction=0.2).test.images).numpy()
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    done = subprocess.run([sys.executable, "-c", LOAD_BACK, model.model_uri, str(tmp_path / "images.npy"),
                           str(tmp_path / "logits.npy")], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "UserWarning" not in done.stderr, done.stderr[-2000:]
    logits = np.load(tmp_path / "logits.npy")
    with torch.no_grad():
        expected = trained[0].model.cpu().eval()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert (logits.argmax(1) == expected.argmax(1)).all()
