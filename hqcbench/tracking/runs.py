"""Parent and child runs: opening them, tagging the machine, ending them FAILED with the reason.

The names themselves live in ``hqcbench.names``."""
from __future__ import annotations

import contextlib
import json
import os
import platform
from importlib import metadata
from typing import Any, Iterator

import mlflow

from hqcbench import names


def library_versions() -> dict[str, str]:
    versions = {}
    for dist in ("torch", "torchvision", "torchquantum", "mlflow", "adversarial-robustness-toolbox", "optuna", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def system_tags(device: str) -> dict[str, str]:
    """Versions, device and CPU model (jobs add the GPU and thread tags of ``evaluation.resources``)."""
    tags = {names.VERSION_TAG_PREFIX + k: v for k, v in library_versions().items()}
    tags.update({names.TAG_DEVICE: device, names.TAG_CPU_MODEL: cpu_model(),
                 names.TAG_CPU_COUNT: str(os.cpu_count()), names.TAG_PYTHON: platform.python_version()})
    return tags


@contextlib.contextmanager
def parent_run(params: dict[str, Any], run_name: str, kind: str = "main",
               log_system_metrics: bool = True) -> Iterator[mlflow.ActiveRun]:
    """The parent run: the `mlflow run` run when MLFLOW_RUN_ID is set (its params already logged by
    MLflow -- never re-logged), else a new run whose params we log ourselves."""
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))
    with mlflow.start_run(run_name=None if resumed else run_name, log_system_metrics=log_system_metrics) as run:
        mlflow.set_tag(names.TAG_KIND, kind)
        if not resumed:
            mlflow.log_params({k: str(v) for k, v in params.items()})
        yield run


def mark_failed(run_id: str, reason: str) -> None:
    """Tag a run with the reason and end it FAILED, so a half-logged run never looks successful."""
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, names.TAG_ERROR, reason[:5000])
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, "FAILED")


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)
