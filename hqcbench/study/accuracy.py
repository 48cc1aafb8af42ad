"""Trained test accuracy against circuit width: the hybrid beside its classical control.

A barren plateau predicts that the hybrid stops learning from its circuit as n grows; the control
(the same model with the circuit swapped for Linear + tanh of the same width, ``n_qubits`` wide)
tells whether any change is the circuit's doing or just the width's. Each (dataset, n, seed, arm)
is trained by the main job's own ``jobs.run.train_arms`` under the fair protocol (same recipe,
validation-only selection, the test set once), so a number here means what it means in a main run.
Attacks are off: this study asks about trainability, not robustness.

MLflow: the study's parent run holds one nested run per (dataset, n), named ``{dataset}-n{n}``, and
``train_arms`` opens the usual child runs (``{arm}-seed{seed}``) under it.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import mlflow
import torch

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.jobs.run import train_arms
from hqcbench.models.memory import check_memory
from hqcbench.tracking import runs as tracking

ARMS = (arm_registry.HYBRID, arm_registry.CONTROL)
UNLIMITED = ("digits",)  # datasets small enough to train on all their images (train_limit ignored)


@dataclass(frozen=True)
class AccuracyCell:
    """One training: which model, on what, and what it gave."""

    dataset: str
    n: int
    arm: str
    seed: int
    test_acc: float
    seconds: float
    cpu_seconds: float
    epoch_cpu_seconds: float  # CPU of one epoch, training pass + validation (median wall x mean cores busy)
    epochs: int
    train_limit: int

    def row(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def cell_metric(arm: str) -> str:
    """Per (dataset, n) nested run: mean test accuracy of ``arm`` over seeds, e.g. test_acc_mean_hybrid."""
    return f"test_acc_mean_{arm}"


def width_metric(dataset: str, arm: str) -> str:
    """Parent run, step = n: mean test accuracy over seeds, e.g. scaling_test_acc_mnist_hybrid."""
    return f"scaling_test_acc_{dataset}_{arm}"


def run_config(dataset: str, n: int, arm: str, seed: int, epochs: int, train_limit: int) -> RunConfig:
    """The fair protocol's main-run config for one training; every other field keeps its default."""
    limit = 0 if dataset in UNLIMITED else train_limit
    cfg = RunConfig(dataset=dataset, arms=arm, seeds=str(seed), n_qubits=n, epochs=epochs, train_limit=limit,
                    attacks="none").validate()
    check_memory(cfg)
    return cfg


def trainings(datasets: Sequence[str], widths: Sequence[int], seeds: Sequence[int]
              ) -> Iterator[tuple[str, int, list[tuple[int, str]]]]:
    """(dataset, n, [(seed, arm), ...]) in the order they run: one nested MLflow run per (dataset, n)."""
    for dataset in datasets:
        for n in widths:
            yield dataset, n, [(seed, arm) for seed in seeds for arm in ARMS]


def train_one(cfg: RunConfig, device: torch.device, progress: bool) -> AccuracyCell:
    """Train, select and test one (arm, seed) with the main job's code, timing it (wall and CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    (trained,) = train_arms(cfg, device, progress=progress)
    m = trained.metrics
    epoch_wall = m.get("epoch_time_s_median", math.nan) + m.get("eval_time_s_median", math.nan)
    epoch_cpu = epoch_wall * m.get("cpu_util_cores_mean", math.nan)
    return AccuracyCell(cfg.dataset, cfg.n_qubits, trained.arm, trained.seed, float(m["test_acc"]),
                        time.perf_counter() - wall, time.process_time() - cpu, epoch_cpu, cfg.epochs, cfg.train_limit)


def run_width(dataset: str, n: int, pairs: list[tuple[int, str]], epochs: int, train_limit: int,
              device: torch.device, progress: bool, done: Callable[[AccuracyCell], None]) -> list[AccuracyCell]:
    """Every (seed, arm) of one (dataset, n) inside its nested run; ``done`` hears of each training."""
    cells: list[AccuracyCell] = []
    tags = {names.TAG_DATASET: dataset, names.TAG_KIND: "study-cell"}
    with tracking.open_run(run_name=f"{dataset}-n{n}", nested=True, tags=tags):
        mlflow.log_params({"dataset": dataset, "n_qubits": n, "epochs": epochs, "train_limit": train_limit})
        for seed, arm in pairs:
            cell = train_one(run_config(dataset, n, arm, seed, epochs, train_limit), device, progress)
            cells.append(cell)
            done(cell)
        for arm in ARMS:
            accs = [c.test_acc for c in cells if c.arm == arm]
            if accs:
                mlflow.log_metric(cell_metric(arm), statistics.fmean(accs))
    for arm in ARMS:  # on the parent: one curve per (dataset, arm) over n
        accs = [c.test_acc for c in cells if c.arm == arm]
        if accs:
            mlflow.log_metric(width_metric(dataset, arm), statistics.fmean(accs), step=n)
    return cells
