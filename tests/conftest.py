"""Shared fixtures: every test gets its own MLflow store; nothing touches ./mlruns or the network."""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")
# tests never wait for (or block) the machine's real timed jobs: their timing lock is their own
os.environ["HQCBENCH_TIMING_LOCK"] = os.path.join(tempfile.mkdtemp(prefix="hqcbench-tests-"), "timing.lock")


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store (and artifact root) in a temp dir; returns its URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    _forget_active_experiment()
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to cwd
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    _forget_active_experiment()
    mlflow.set_tracking_uri(None)


@contextlib.contextmanager
def private_mlflow_store(folder: Path) -> Iterator[str]:
    """A SQLite tracking store in ``folder`` for a module-scoped fixture (``mlflow_store`` is per test):
    environment, working directory and tracking URI set while it is open, every run ended after."""
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mp.chdir(folder)
        _forget_active_experiment()
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            _forget_active_experiment()  # else a later test logs into this store's experiment id
            mlflow.set_tracking_uri(None)


def _forget_active_experiment() -> None:
    """mlflow.set_experiment() caches the experiment id process-wide; a later test with a fresh
    store would then log into an experiment id that does not exist there."""
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None


# imports inside the fixtures: conftest loads before every test, most need neither torch nor data
@pytest.fixture(scope="module")
def digits():
    from hqcbench.data.datasets import load_splits

    return load_splits("digits", None, seed=0, val_fraction=0.2)


@pytest.fixture(scope="module")
def small_cnn(digits):
    """Shared by the robustness and worst-case tests. The fair cnn arm (width 8) trained for a few epochs on
    digits: ~97 % test accuracy, undefended."""
    import torch
    from torch import nn

    from hqcbench.config import RunConfig
    from hqcbench.data.datasets import to_float
    from hqcbench.models.arms import build_model

    torch.manual_seed(0)
    model = build_model("cnn", digits.spec, RunConfig(width=8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = to_float(digits.train.images), digits.train.labels
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(6):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(to_float(digits.test.images)).argmax(1) == digits.test.labels).float().mean().item()
    assert acc > 0.9, f"fixture model did not train ({acc:.3f})"
    return model
