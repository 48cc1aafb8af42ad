"""Trained weights kept as each child run's MLflow model: a state_dict plus what rebuilds the model.

Why not MLflow's pytorch flavour: its pickle format runs code on load and breaks when a class moves,
so it does not belong in a store committed beside a report; its pt2 (torch.export) format is an
inference graph, while a later evaluation (attacks need input gradients, finite-shot readout needs
the layer's sampler) needs the real ``nn.Module``. Here the model is an MLflow pyfunc "model from
code" (``jobs/pyfunc_model.py``) whose artifacts are ``state_dict.pt`` (tensors only, read with
``torch.load(weights_only=True)``) and ``build.json`` (the resolved config from which
``models.arms.build_model`` rebuilds the same architecture). It appears in MLflow's model list,
loads back with ``mlflow.pyfunc.load_model`` in any process where hqcbench is installed, and
``load_weights`` gives evaluations the ``nn.Module`` itself.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.config import RunConfig, is_user_dataset
from hqcbench.data.datasets import REGISTRY, DatasetSpec, dataset_spec
from hqcbench.models.arms import build_model
from hqcbench.models.blocks import Classifier
from hqcbench.models.quantum import configure_readout

MODEL_NAME = "model"
FORMAT = "hqcbench-state-dict-1"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
# Pinned requirements for logged models: letting MLflow infer them costs ~6 s per model.
def _installed_version() -> str:
    """hqcbench's installed version (its metadata; the package's __init__ would import the notebook API)."""
    try:
        return importlib.metadata.version("hqcbench")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.1.0"


MODEL_PIP_REQUIREMENTS = ["torch==2.14.1", "torchquantum==0.1.8", "mlflow==3.17.2",
                          f"hqcbench=={_installed_version()}"]
CODE_DIR = "code"  # where MLflow keeps a model's code_paths: a user arm's module travels there



def log_weights(model: Classifier, cfg: RunConfig, arm: str, seed: int, example: np.ndarray) -> str:
    """Log ``model`` as the active run's MLflow model; returns its model id (metrics logged with
    ``model_id`` appear on the model's page in MLflow's model list)."""
    build = {"format": FORMAT, "arm": arm, "seed": int(seed), "config": cfg.to_dict()}
    if is_user_dataset(cfg.dataset):  # rebuilt where the images are not: the shape and statistics suffice
        spec = dataset_spec(cfg.dataset, cfg.image_size)
        build["dataset_spec"] = {"name": spec.name, "channels": spec.channels, "size": spec.size,
                                 "classes": spec.classes, "mean": list(spec.mean), "std": list(spec.std)}
    code_paths = user_code_paths(arm)
    if code_paths:  # rebuilt elsewhere, a user arm needs its module: it travels with the model
        build["user_code"] = [Path(path).name for path in code_paths]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "state_dict.pt")
        (folder / "build.json").write_text(json.dumps(build, indent=2))
        info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(MODEL_CODE),
                                       artifacts={"state_dict": str(folder / "state_dict.pt"),
                                                  "build": str(folder / "build.json")},
                                       pip_requirements=MODEL_PIP_REQUIREMENTS, input_example=example,
                                       code_paths=code_paths or None,
                                       tags={names.MLFLOW_SOURCE_NAME: names.SOURCE_COMMAND})
    return info.model_id


def _no_images(_: str | None):
    raise ValueError("a rebuilt model carries its dataset's shape and statistics, not its images")


def user_code_paths(arm: str) -> list[str]:
    """The source file of a user arm's module (none for built-in arms)."""
    spec = arm_registry.get(arm)
    if not spec.is_user:
        return []
    module = importlib.import_module(spec.factory.partition(":")[0])
    path = getattr(module, "__file__", None)
    return [path] if path else []


def rebuild(build_file: str | Path, state_file: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """The model described by ``build.json`` with the weights of ``state_dict.pt``, in eval mode."""
    build = json.loads(Path(build_file).read_text())
    if build.get("format") != FORMAT:
        raise ValueError(f"weights in format {build.get('format')!r}, expected {FORMAT!r}")
    cfg = build_config(build)
    saved = build.get("dataset_spec")
    spec = (DatasetSpec(saved["name"], saved["channels"], saved["size"], saved["classes"], tuple(saved["mean"]),
                        tuple(saved["std"]), _no_images, "") if saved else REGISTRY[cfg.dataset])
    model = build_model(build["arm"], spec, cfg)
    model.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    configure_readout(model, cfg.eval_shots, cfg.train_shot_count, int(build["seed"]))
    return model.eval(), build


def logged_model(run_id: str) -> mlflow.entities.LoggedModel:
    """The model a child run logged (MLflow 3 keeps models apart from runs)."""
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id  # not the active experiment
    models = mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         output_format="list")
    if not models:
        raise ValueError(f"run {run_id} logged no model")
    return models[-1]


def load_weights(run_id: str, device: torch.device | str = "cpu") -> tuple[Classifier, RunConfig, dict[str, Any]]:
    """Rebuild a child run's model from its logged weights: (model in eval mode, its config, build info).

    Reads the model's two files and rebuilds it with this code, rather than ``mlflow.pyfunc.load_model``:
    that would execute the copy of ``pyfunc_model.py`` stored with each model (an older store carries
    an older copy, and MLflow warns on every load of one without ``predict`` type hints)."""
    root = logged_model(run_id).artifact_location.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/artifacts/{name}", dst_path=tmp)
                 for name in ("build.json", "state_dict.pt")}
        if json.loads(Path(files["build.json"]).read_text()).get("user_code"):  # the user's module, as logged
            code = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{CODE_DIR}", dst_path=tmp)
            sys.path.insert(0, code)
        model, build = rebuild(files["build.json"], files["state_dict.pt"])
    return model.to(device), build_config(build), build


def build_config(build: dict[str, Any]) -> RunConfig:
    """The RunConfig a model was trained with; fields a later version added take their defaults."""
    known = set(RunConfig.__dataclass_fields__)
    return RunConfig(**{k: v for k, v in build["config"].items() if k in known})
