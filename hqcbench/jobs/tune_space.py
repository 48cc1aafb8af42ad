"""The search space of every arm, and how the tune job samples and prunes it (one place for all arms).

Optuna's parameter names are RunConfig field names, so a trial's point is a main-run config and
its MLflow params read the same as a main run's.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import optuna

from hqcbench import arms as arm_registry
from hqcbench.config import MAX_QUBITS, RunConfig, TuneConfig
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
    spec = arm_registry.get(arm)
    declared = dict(spec.search_space)
    # drawn in the arm's order (hqcbench.arms): the order fixes what a seeded sampler draws
    params: dict[str, Any] = {key: draw[key]() if key in draw else _draw_declared(trial, key, declared[key])
                              for key in spec.search}
    return params


def _draw_declared(trial: optuna.Trial, key: str, space: Any) -> Any:
    """One hyperparameter of a user factory's own ``search_space`` (forms checked by ``arms.resolve``)."""
    if isinstance(space, list):
        return trial.suggest_categorical(key, space)
    low, high, *scale = space
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(key, low, high, log=bool(scale))
    return trial.suggest_float(key, float(low), float(high), log=bool(scale))


def config_fields(arm: str, params: dict[str, Any], arm_params: str = "") -> dict[str, Any]:
    """A trial's point (or a study's best) as RunConfig fields: run settings as themselves, a user
    factory's own hyperparameters merged into ``arm_params`` under the arm's name (its factory receives
    them like any other; the training fingerprint sees them there)."""
    fields = {k: v for k, v in params.items() if k in RunConfig.__dataclass_fields__}
    own = {k: v for k, v in params.items() if k not in fields}
    if own:
        table = json.loads(arm_params) if arm_params.strip() else {}
        table[arm] = {**table.get(arm, {}), **own}
        fields["arm_params"] = json.dumps(table, sort_keys=True)
    return fields


def make_sampler(sampler_seed: int, trial_index: int) -> optuna.samplers.BaseSampler:
    """TPE seeded per trial: a single worker is reproducible, and concurrent workers started with
    the same command never draw the same random start-up configurations (one seed per worker would).
    ``constant_liar``: trials running on other workers count as bad guesses, so workers spread out."""
    return optuna.samplers.TPESampler(seed=seeding.sampler_seed(sampler_seed, trial_index), constant_liar=True)


def make_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)
