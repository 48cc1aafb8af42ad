"""Which MLflow experiment a job logs into, and marking it as a model-training experiment.

Without this, every run lands in MLflow's "Default" experiment, and MLflow 3's UI opens an
experiment without a kind on its GenAI overview (traces, token usage) instead of the runs table.
The rule, in order: a run that already exists (``mlflow run`` creates the parent before hqcbench
starts, in the experiment it was given) keeps its experiment; an experiment chosen in this process
(``mlflow.set_experiment``) or by the environment (``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME``)
is used as given; otherwise ``hqcbench-{dataset}``. Whichever it is gets MLflow's
``mlflow.experimentKind`` tag set to ``custom_model_development`` unless the experiment already
declares a kind (a user's choice is never overwritten).
"""
from __future__ import annotations

import contextlib
import os

import mlflow
import mlflow.tracking.fluent as fluent

from hqcbench import names

_DEFAULTED: set[tuple[str, str]] = set()  # (tracking URI, experiment id) chosen here by default, not by a user


def _defaulted(experiment_id: object) -> bool:
    return (mlflow.get_tracking_uri(), str(experiment_id)) in _DEFAULTED


def _chosen_in_process() -> str | None:
    """The experiment id ``mlflow.set_experiment`` made active in this process, if any.

    MLflow keeps it in a private attribute; read defensively, so a rename in MLflow only loses this
    one convenience (the environment variables still work)."""
    active = getattr(fluent, "_active_experiment_id", None)
    return None if active is None or _defaulted(active) else str(active)


def use_experiment(dataset: str) -> str:
    """Make the experiment this job logs into active and marked; returns its id."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:  # `mlflow run` (or a resumed run): the run's own experiment
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    elif (chosen := _chosen_in_process()) is not None:
        experiment_id = chosen
    elif os.environ.get("MLFLOW_EXPERIMENT_ID") and not _defaulted(os.environ["MLFLOW_EXPERIMENT_ID"]):
        # (mlflow.set_experiment exports the variable too: our own default is not a user's choice)
        experiment_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    else:
        explicit = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        experiment_id = mlflow.set_experiment(explicit or names.default_experiment(dataset)).experiment_id
        if not explicit:  # a later job in this process picks its own dataset's default again
            _DEFAULTED.add((mlflow.get_tracking_uri(), str(experiment_id)))
    mark_training_experiment(experiment_id)
    return experiment_id


def mark_training_experiment(experiment_id: str) -> None:
    """Tag the experiment so MLflow's UI opens it on the training runs (only if it has no kind yet)."""
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):  # a read-only or restricted server: the runs still log
        experiment = client.get_experiment(experiment_id)
        if names.MLFLOW_EXPERIMENT_KIND not in (experiment.tags or {}):
            client.set_experiment_tag(experiment_id, names.MLFLOW_EXPERIMENT_KIND, names.EXPERIMENT_KIND_TRAINING)
