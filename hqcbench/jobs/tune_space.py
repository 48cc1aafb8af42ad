"""The search space of every arm, and how the tune job samples and prunes it (one place for all arms).

Optuna's parameter names are RunConfig field names, so a trial's point is a main-run config and
its MLflow params read the same as a main run's.
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

from hqcbench import arms as arm_registry
from hqcbench.config import MAX_QUBITS, TuneConfig
from hqcbench.training import seeding

PRUNER_STARTUP_TRIALS = 5  # median pruner: never prune before this many trials have finished
PRUNER_WARMUP_EPOCHS = 2  # ... nor before this epoch: a low lr starts slowly but may still win


def suggest(trial: optuna.Trial, arm: str, tcfg: TuneConfig) -> dict[str, Any]:
    """The search space of ``arm`` (its ``search`` keys in ``hqcbench.arms``): RunConfig field -> value.

    Every arm tunes what it shares (backbone width, learning rate), so the classical baseline is
    tuned as hard as the hybrid; the circuit arms (hybrid and its ablations) add their circuit, control
    the width of its middle. The ablations search exactly the hybrid's space, so a difference after
    tuning is the ablation's, not the search's.
    """
    draw: dict[str, Callable[[], Any]] = {
        "width": lambda: trial.suggest_int("width", tcfg.width_min, tcfg.width_max, log=True),
        "lr": lambda: trial.suggest_float("lr", tcfg.lr_min, tcfg.lr_max, log=True),
        # TuneConfig.validate keeps qubits_max within MAX_QUBITS and checks the largest circuit fits in
        # memory; the bound here keeps a hand-built TuneConfig from drawing past the simulator's limit
        "n_qubits": lambda: trial.suggest_int("n_qubits", min(tcfg.qubits_min, MAX_QUBITS),
                                              min(tcfg.qubits_max, MAX_QUBITS)),
        "depth": lambda: trial.suggest_int("depth", tcfg.depth_min, tcfg.depth_max),
        "encoding": lambda: trial.suggest_categorical("encoding", tcfg.encoding_list),
        "ansatz": lambda: trial.suggest_categorical("ansatz", tcfg.ansatz_list),
    }
    # drawn in the arm's order (hqcbench.arms): the order fixes what a seeded sampler draws
    params: dict[str, Any] = {key: draw[key]() for key in arm_registry.get(arm).search}
    return params


def make_sampler(sampler_seed: int, trial_index: int) -> optuna.samplers.BaseSampler:
    """TPE seeded per trial: a single worker is reproducible, and concurrent workers started with
    the same command never draw the same random start-up configurations (one seed per worker would).
    ``constant_liar``: trials running on other workers count as bad guesses, so workers spread out."""
    return optuna.samplers.TPESampler(seed=seeding.sampler_seed(sampler_seed, trial_index), constant_liar=True)


def make_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)
