"""MLflow naming conventions in one place (a public interface: report and tuning read them)."""
from __future__ import annotations

import contextlib
import json
import os
import platform
from typing import Any, Iterator

import mlflow

TAG_ARM = "hqcbench.arm"
TAG_PROTOCOL = "hqcbench.protocol"
TAG_DATASET = "hqcbench.dataset"
TAG_SEED = "hqcbench.seed"
TAG_KIND = "hqcbench.kind"  # main | child | tune | trial | report
TAG_ERROR = "hqcbench.error"
TAG_NOTE = "hqcbench.note"
TAG_STUDY = "hqcbench.study"  # tune: the Optuna study a trial run belongs to
TAG_TRIAL = "hqcbench.trial"  # tune: the Optuna trial number
TAG_TRIAL_STATE = "hqcbench.trial_state"  # tune: complete | pruned | failed

PER_EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "eval_time_s",
                     "samples_per_s", "lr", "cpu_util_cores", "rss_peak_mb")
FINAL_METRICS = ("best_val_acc", "best_epoch", "test_acc", "test_loss")
PARAM_COUNT_METRICS = ("params_total", "params_trainable", "params_quantum", "params_classical")


def robust_metric(attack: str, eps: float) -> str:
    """e.g. robust_acc_pgd_eps_0.1"""
    return f"robust_acc_{attack}_eps_{eps:g}"


def robust_curve_metric(attack: str) -> str:
    return f"robust_curve_{attack}"


def attack_time_metric(attack: str) -> str:
    return f"attack_time_s_{attack}"


def eps_step(eps: float) -> int:
    """Step of a robustness-curve point: round(eps * 1000)."""
    return int(round(eps * 1000))


def child_run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def child_tags(arm: str, protocol: str, dataset: str, seed: int) -> dict[str, str]:
    return {TAG_ARM: arm, TAG_PROTOCOL: protocol, TAG_DATASET: dataset, TAG_SEED: str(seed), TAG_KIND: "child"}


def library_versions() -> dict[str, str]:
    from importlib import metadata

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
    """Versions, device and CPU model: enough to tell two machines' numbers apart."""
    tags = {f"version.{k}": v for k, v in library_versions().items()}
    tags.update({"hqcbench.device": device, "hqcbench.cpu_model": cpu_model(),
                 "hqcbench.cpu_count": str(os.cpu_count()), "hqcbench.python": platform.python_version()})
    from hqcbench.resources import hardware_tags

    tags.update(hardware_tags(device))  # GPU name, driver, hqcbench.nvml status, physical cores, threads
    return tags


@contextlib.contextmanager
def parent_run(params: dict[str, Any], run_name: str, kind: str = "main",
               log_system_metrics: bool = True) -> Iterator[mlflow.ActiveRun]:
    """The parent run: the `mlflow run` run when MLFLOW_RUN_ID is set (its params already logged by
    MLflow -- never re-logged), else a new run whose params we log ourselves."""
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))
    with mlflow.start_run(run_name=None if resumed else run_name, log_system_metrics=log_system_metrics) as run:
        mlflow.set_tag(TAG_KIND, kind)
        if not resumed:
            mlflow.log_params({k: str(v) for k, v in params.items()})
        yield run


def mark_failed(run_id: str, reason: str) -> None:
    """Tag a run with the reason and end it FAILED, so a half-logged run never looks successful."""
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, TAG_ERROR, reason[:5000])
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, "FAILED")


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)


class Findings:
    """What an evaluation step (attacks, shots, hardware cost, ...) wants logged on a child run.

    Modules that compute results return one of these instead of calling MLflow themselves, so the
    naming and logging stay in one place and the computations stay testable without a tracking store.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.stepped: list[tuple[str, float, int]] = []  # (name, value, step)
        self.tags: dict[str, str] = {}
        self.figures: dict[str, Any] = {}  # artifact file name -> matplotlib figure
        self.texts: dict[str, str] = {}  # artifact file name -> text
        self.summary: list[str] = []  # human-readable lines for the run summary

    def merge(self, other: "Findings") -> "Findings":
        self.metrics.update(other.metrics)
        self.stepped.extend(other.stepped)
        self.tags.update(other.tags)
        self.figures.update(other.figures)
        self.texts.update(other.texts)
        self.summary.extend(other.summary)
        return self

    def log(self) -> None:
        """Log everything on the active run."""
        from hqcbench.plots import close

        if self.metrics:
            mlflow.log_metrics(self.metrics)
        for name, value, step in self.stepped:
            mlflow.log_metric(name, value, step=step)
        if self.tags:
            mlflow.set_tags(self.tags)
        for file_name, fig in self.figures.items():
            mlflow.log_figure(fig, file_name)
            close(fig)
        for file_name, text in self.texts.items():
            mlflow.log_text(text, file_name)
