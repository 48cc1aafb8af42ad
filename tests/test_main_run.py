"""End to end on the offline default: one parent run, a child per (arm, seed), the names of docs/metrics.md."""
from __future__ import annotations

import mlflow
import pytest

from hqcbench import cli, names
from hqcbench.config import RunConfig
from hqcbench.jobs.fingerprint import TRAINING_VERSION
from hqcbench.jobs.run import run_main

QUICK = dict(epochs=2, train_limit=400, attacks="none", width=8)
TINY = dict(arms="cnn,hybrid", epochs=1, train_limit=200, attacks="none", width=8, device="cpu")


def children(parent_id: str):
    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return runs.sort_values(["tags.hqcbench.seed", "tags.hqcbench.arm"]).reset_index(drop=True)


@pytest.mark.slow
def test_main_run_logs_parent_and_children(mlflow_store):
    trained = run_main(RunConfig(seeds="0,1", **QUICK), progress=False)
    assert {(t.arm, t.seed) for t in trained} == {(a, s) for a in ("cnn", "hybrid", "control") for s in (0, 1)}
    parents = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'main'")
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    parent_id = parents.iloc[0]["run_id"]
    kids = children(parent_id)
    assert len(kids) == 6 and set(kids["status"]) == {"FINISHED"}
    assert set(kids["tags.hqcbench.arm"]) == {"cnn", "hybrid", "control"}
    assert set(kids["tags.hqcbench.protocol"]) == {"fair"} and set(kids["tags.hqcbench.dataset"]) == {"digits"}
    for column in ("metrics.best_val_acc", "metrics.test_acc", "metrics.params_total", "metrics.epoch_time_s"):
        assert kids[column].notna().all(), column
    hybrid = kids[kids["tags.hqcbench.arm"] == "hybrid"].iloc[0]
    cnn = kids[kids["tags.hqcbench.arm"] == "cnn"].iloc[0]
    # 4 qubits x 2 layers x (RY, RZ)
    assert hybrid["metrics.params_quantum"] == 16 and cnn["metrics.params_quantum"] == 0
    client = mlflow.MlflowClient()
    history = client.get_metric_history(hybrid["run_id"], "val_acc")
    assert [m.step for m in history] == [1, 2]
    artifacts = {f.path for f in client.list_artifacts(hybrid["run_id"])}
    assert {"learning_curves.png", "confusion_matrix.png", "test_correct.txt"} <= artifacts
    parent_artifacts = {f.path for f in client.list_artifacts(parent_id)}
    assert {"config.json", "comparison.csv", "comparison.md"} <= parent_artifacts
    # MLflow 3 stores models as LoggedModels linked to their source run
    models = mlflow.search_logged_models(filter_string=f"source_run_id = '{hybrid['run_id']}'", output_format="list")
    assert len(models) == 1
    model = mlflow.pyfunc.load_model(models[0].model_uri).unwrap_python_model().model  # a state_dict, rebuilt
    assert model.arm == "hybrid" and len(model.quantum_layers()) == 1
    # the model page shows the test metrics, tied to the test split they were measured on
    linked = {m.key: m for m in models[0].metrics or []}
    assert linked["test_acc"].value == pytest.approx(hybrid["metrics.test_acc"])
    assert linked["test_acc"].dataset_name == "digits-test"
    # experiment: hqcbench-{dataset} by default, marked so MLflow's UI opens on the runs
    experiment = mlflow.get_experiment(parents.iloc[0]["experiment_id"])
    assert experiment.name == "hqcbench-digits"
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    # each child logged its three splits as MLflow inputs; the test split is the same for all arms
    inputs = {d.dataset.name: d for d in client.get_run(hybrid["run_id"]).inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-val", "digits-test"}
    assert {t.key: t.value for t in inputs["digits-val"].tags}["mlflow.data.context"] == "validation"
    cnn_inputs = {d.dataset.name: d.dataset.digest for d in client.get_run(cnn["run_id"]).inputs.dataset_inputs}
    assert cnn_inputs["digits-test"] == inputs["digits-test"].dataset.digest
    # the answer on the parent row: mean paired difference over the seeds, with its interval ends
    parent = client.get_run(parent_id).data.metrics
    acc = {(r["tags.hqcbench.arm"], r["tags.hqcbench.seed"]): r["metrics.test_acc"] for _, r in kids.iterrows()}
    diffs = [acc[("hybrid", s)] - acc[("cnn", s)] for s in ("0", "1")]
    assert parent["test_acc_hybrid_minus_cnn"] == pytest.approx(sum(diffs) / 2)
    assert parent["test_acc_hybrid_minus_cnn_ci_low"] < parent["test_acc_hybrid_minus_cnn"] \
        < parent["test_acc_hybrid_minus_cnn_ci_high"]
    assert {"test_acc_control_minus_cnn", "test_acc_hybrid_minus_control"} <= set(parent)
    summary = mlflow.artifacts.load_text(f"runs:/{parent_id}/summary.md")
    assert "| hybrid - cnn | 2 |" in summary


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers(mlflow_store):
    # one fixed thread: with threads=0 the job gives up a thread while other processes hold a core, and a
    # different thread count sums floats in another order (the 8th decimal of train_loss differs)
    first = run_main(RunConfig(arms="hybrid,control", threads=1, **QUICK), progress=False)
    second = run_main(RunConfig(arms="hybrid,control", threads=1, **QUICK), progress=False)
    for a, b in zip(first, second):
        assert a.metrics["test_acc"] == b.metrics["test_acc"]
        assert a.metrics["best_val_acc"] == b.metrics["best_val_acc"]
    client = mlflow.MlflowClient()
    loss_a = [m.value for m in client.get_metric_history(first[0].run_id, "train_loss")]
    loss_b = [m.value for m in client.get_metric_history(second[0].run_id, "train_loss")]
    assert loss_a == loss_b


@pytest.mark.slow
def test_arms_of_one_seed_see_the_same_split(mlflow_store):
    run_main(RunConfig(arms="cnn,hybrid", **QUICK), progress=False)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    assert runs["params.n_train"].nunique() == 1 and runs["params.n_val"].nunique() == 1


@pytest.mark.slow
def test_child_runs_carry_the_training_version(mlflow_store):
    """The code version that trained a run is on the run itself, not only hashed in a fingerprint."""
    trained = run_main(RunConfig(**TINY), progress=False)
    client = mlflow.MlflowClient()
    for item in trained:
        assert client.get_run(item.run_id).data.tags[names.TAG_TRAINING_VERSION] == str(TRAINING_VERSION)


@pytest.mark.slow
def test_cli_run_ends_with_the_headline_and_the_ui_command(mlflow_store, capsys):
    argv = ["run"] + [item for k, v in TINY.items() for item in (f"--{k}", str(v))]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    (parent,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'main'",
                                   output_format="list")
    difference = parent.data.metrics["test_acc_hybrid_minus_cnn"]
    assert lines[-2] == f"  hybrid - cnn: {100 * difference:+.2f} pp (one seed, no interval)"
    assert lines[-1] == f"  open in the MLflow UI: mlflow ui --backend-store-uri {mlflow_store}"
