"""A campaign's MLflow store, kept in its report folder and committed with it.

MLflow writes absolute artifact locations by default (``file:///home/.../mlruns``), which break in
any other clone. Here the experiment's artifact location is the relative path ``artifacts``, and
every campaign call works from inside the store's folder, so run artifact URIs read
``artifacts/<run id>/artifacts`` and resolve wherever the folder is. One command opens the UI on
exactly these runs: ``cd reports/mnist && mlflow ui --backend-store-uri sqlite:///mlflow.db``.
Nothing else absolute goes in either: the source tag names the command, not the script's path, and
the data folder comes from ``HQCBENCH_DATA_DIR`` (never a logged parameter).

Several workers may share one store (one per core). SQLite alone does not make that safe twice over:
MLflow creates and migrates a new database in many steps, and two processes doing it at once fail
(``duplicate column name``); and "is this cell taken? then take it" is two statements, between which
another worker can take it too. Both happen under one inter-process lock, ``mlflow.db.lock`` beside
the database (``Store.lock``), which the OS releases when its holder dies.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import filelock
import mlflow
import pandas as pd

from hqcbench import names
from hqcbench.data.datasets import DATA_DIR_ENV
from hqcbench.tracking.experiments import mark_training_experiment

_RUN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
DB_FILE = "mlflow.db"
LOCK_FILE = "mlflow.db.lock"  # beside the database; ignored by git (the store is committed, the lock is not)
LOCK_TIMEOUT_S = 600.0  # creating a store or claiming a training holds it for seconds; longer means a hung holder
ARTIFACTS = "artifacts"
# Training images per dataset after the default 80/20 split (for estimates before anything ran)
DEFAULT_TRAIN_SIZES = {"digits": 1149, "mnist": 48_000, "fashion_mnist": 48_000, "cifar100": 40_000, "stl10": 4_000}


def store_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S) -> contextlib.AbstractContextManager:
    """The lock every worker of the store in ``folder`` takes to create the store or to claim a training.

    A file lock, so it only orders processes that see the same file system with working locks (one
    machine); it is released by the OS when its holder dies, so a killed worker never blocks the rest.
    """
    return _held(filelock.FileLock(str(Path(folder) / LOCK_FILE)), timeout)


@contextlib.contextmanager
def _held(lock: filelock.FileLock, timeout: float) -> Iterator[None]:
    """Hold ``lock``; a holder that never lets go is one clear error, not a silent wait forever."""
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise RuntimeError(f"the store's lock {Path(lock.lock_file).name} was held for over {timeout:.0f} s by "
                           "another worker; if no worker is running, delete that file") from None
    try:
        yield
    finally:
        lock.release()


@dataclass
class Store:
    folder: Path
    experiment_id: str

    def lock(self) -> contextlib.AbstractContextManager:
        """The store's inter-process lock (``store_lock``): held while a worker claims a training."""
        return store_lock(self.folder)

    @property
    def uri(self) -> str:
        """Absolute, for this process's connection only (MLflow caches stores by URI); the store
        itself records no absolute path."""
        return f"sqlite:///{self.folder / DB_FILE}"

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Work from the store's folder, with its tracking URI and experiment; restore all afterwards.

        Under `mlflow run` the project's run (MLFLOW_RUN_ID) lives in another store: inside, the
        campaign opens a parent run of its own in this store instead.
        """
        saved = {key: os.environ.get(key) for key in (DATA_DIR_ENV, *_RUN_ENV)}
        previous_uri, previous_cwd = mlflow.get_tracking_uri(), Path.cwd()
        data_dir = saved[DATA_DIR_ENV]
        if data_dir:  # relative to where the user stood, not to the store
            os.environ[DATA_DIR_ENV] = str(Path(data_dir).resolve())
        for key in _RUN_ENV:
            os.environ.pop(key, None)
        if self.experiment_id:
            os.environ["MLFLOW_EXPERIMENT_ID"] = self.experiment_id
        os.chdir(self.folder)
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            os.chdir(previous_cwd)
            mlflow.set_tracking_uri(previous_uri)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def open_store(folder: Path, experiment: str) -> Store:
    """Create or open ``folder/mlflow.db`` and its experiment, with a relative artifact location.

    Under the store's lock: MLflow's schema migration of a new database, and the creation of its
    experiment, fail when two workers started together run them at once; the later one waits, then
    finds the store migrated and the experiment there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder.resolve(), "")
    with store.lock(), store.inside():
        exp = mlflow.get_experiment_by_name(experiment)
        experiment_id = exp.experiment_id if exp else mlflow.create_experiment(experiment)
        if exp is None or exp.artifact_location != ARTIFACTS:
            _set_artifact_location(experiment_id, ARTIFACTS)
            _set_artifact_location("0", f"{ARTIFACTS}/default")  # MLflow's "Default" experiment, unused
        mark_training_experiment(experiment_id)
    store.experiment_id = experiment_id
    return store


def _set_artifact_location(experiment_id: str, location: str) -> None:
    """MLflow's API resolves a relative location to an absolute one; the store keeps it relative."""
    with contextlib.closing(sqlite3.connect(Path.cwd() / DB_FILE)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                   (location, int(experiment_id)))


def child_runs(experiment_id: str) -> pd.DataFrame:
    """Every run of the experiment (all statuses), one row each, MLflow's search_runs columns."""
    frame = mlflow.search_runs(experiment_ids=[experiment_id], output_format="pandas", max_results=50_000)
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()


def source_tags() -> dict[str, str]:
    """MLflow's source tag names the command, not the absolute path of the script."""
    return {names.MLFLOW_SOURCE_NAME: names.SOURCE_COMMAND}


def median_metric(runs: pd.DataFrame, training, metric: str) -> float | None:
    """Median of ``metric`` over FINISHED runs of the same dataset, protocol and arm (else protocol)."""
    col = f"metrics.{metric}"
    if col not in runs or not len(runs):
        return None
    kind = runs.get(f"tags.{names.TAG_KIND}")
    done = runs[(runs.status == "FINISHED") & runs[col].notna() & (kind == "child" if kind is not None else True)]
    for keys in ((names.TAG_DATASET, names.TAG_PROTOCOL, names.TAG_ARM), (names.TAG_DATASET, names.TAG_PROTOCOL)):
        rows = done
        for key in keys:
            value = {names.TAG_DATASET: training.cfg.dataset_name, names.TAG_PROTOCOL: training.cfg.protocol,
                     names.TAG_ARM: training.arm}[key]
            rows = rows[rows.get(f"tags.{key}") == value] if f"tags.{key}" in rows else rows.iloc[0:0]
        if len(rows):
            return float(rows[col].median())
    return None


def train_size(cfg) -> int:
    """Training images of one configuration (after the validation split), for time estimates."""
    full = DEFAULT_TRAIN_SIZES.get(cfg.dataset, 48_000)
    return min(full, int(cfg.train_limit * (1 - cfg.val_fraction))) if cfg.train_limit else full


def relative(path: Path) -> str:
    """``path`` relative to the working directory when below it, else its name: never absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def absolute_paths(db_file: Path, roots: tuple[str, ...] = ("/home", "/root", "/tmp", "/work", "/Users")) -> list[str]:
    """Strings in the store's tables that look like absolute paths of some machine (for the hygiene check)."""
    found = []
    with contextlib.closing(sqlite3.connect(db_file)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                for (value,) in db.execute(f'SELECT "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\''):
                    if any(root in value for root in roots) or value.startswith("file:///"):
                        found.append(f"{table}.{column}: {value[:120]}")
    return found


_ABSOLUTE_MODEL_PATH = re.compile(r"^(\s*(?:uri|model_code_path): )(/\S+)$", re.M)


def scrub_model_files(folder: Path) -> int:
    """MLflow's MLmodel files record where a model's files came from (a temp folder, the code file's
    absolute path); loading uses only their base names. Keep the base names: no machine path in the
    store. Returns the number of files rewritten."""
    changed = 0
    for mlmodel in (folder / ARTIFACTS).rglob("MLmodel"):
        text = mlmodel.read_text()
        clean = _ABSOLUTE_MODEL_PATH.sub(lambda m: m.group(1) + os.path.basename(m.group(2)), text)
        if clean != text:
            mlmodel.write_text(clean)
            changed += 1
    return changed


def absolute_paths_in_artifacts(folder: Path,
                                roots: tuple[str, ...] = ("/home/", "/root/", "/tmp/", "/work/")) -> list[str]:
    """Text artifacts (MLmodel, yaml, json, txt, csv) of the store that name a machine path."""
    found = []
    for path in (folder / ARTIFACTS).rglob("*"):
        if path.is_file() and (path.name == "MLmodel" or path.suffix in (".yaml", ".json", ".txt", ".csv")):
            text = path.read_text(errors="replace")
            found += [f"{path.relative_to(folder)}: {root}" for root in roots if root in text]
    return found
