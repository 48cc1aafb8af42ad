"""The ``tuned`` protocol inside a campaign: one equal-budget Optuna study per arm, then its cells.

A block with ``protocols = ["tuned"]`` and a ``[blocks.tune]`` table (``n_trials`` and, optionally,
the search ranges of ``python -m hqcbench tune``) asks: would each arm do better with its own best
hyperparameters, found with the same number of trials over the same search of what the arms share?
For every dataset of the block the campaign

1. runs (or continues) one study per arm in ``optuna.db`` beside the spec, ``n_trials`` each, the
   trials training under the fair recipe on the block's first seed (``jobs.tune``'s trial, pruner,
   budget lock and dead-worker handling, unchanged); the trials are ``trial`` runs of the store;
2. once every study of the block holds its budget with nothing running, turns each arm's best
   configuration into the block's cells: protocol ``tuned``, the block's fields plus the study's best
   parameters, one training per seed, tested once like every other cell.

The studies are part of the store (committed with the report); the report prints each arm's budget,
search space and best configuration from them. Until a study is complete its cells are not known,
so ``--dry-run`` lists them as waiting for their study.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import mlflow
import optuna
import torch

from hqcbench import names
from hqcbench.config import TuneConfig
from hqcbench.data.datasets import load_splits
from hqcbench.jobs import store as campaign_store
from hqcbench.jobs.campaign_spec import CampaignSpec, Training, Tuning, make_training
from hqcbench.jobs.tune import Objective, run_trials, wait_for_running
from hqcbench.jobs.tune_space import config_fields, make_pruner
from hqcbench.jobs.tune_storage import StorageLock, check_storage, count_trials, open_storage, open_studies
from hqcbench.resources import ResourceMonitor

log = logging.getLogger(__name__)

OPTUNA_FILE = "optuna.db"


def storage_url(store: Path) -> str:
    """The studies' SQLite file in the campaign's folder (absolute at run time, never stored)."""
    return f"sqlite:///{(Path(store) / OPTUNA_FILE).resolve()}"


def tune_config(tuning: Tuning, spec: CampaignSpec) -> TuneConfig:
    """The ``tune`` job's configuration of one tuned block and dataset (validated)."""
    return tuning.tune_config(storage_url(spec.store), spec.name)


def load_studies(tuning: Tuning, spec: CampaignSpec) -> dict[str, optuna.Study | None]:
    """arm -> its study, or None where none exists yet; creates nothing (a dry run writes no file)."""
    path = Path(spec.store) / OPTUNA_FILE
    if not path.is_file():
        return {arm: None for arm in tuning.arms}
    tcfg = tune_config(tuning, spec)
    storage = optuna.storages.RDBStorage(storage_url(spec.store), engine_kwargs={"connect_args": {"timeout": 60}})
    out: dict[str, optuna.Study | None] = {}
    for arm in tuning.arms:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                out[arm] = optuna.load_study(study_name=tcfg.study_name_for(arm), storage=storage)
            except KeyError:
                out[arm] = None
    return out


def trials_left(tuning: Tuning, spec: CampaignSpec,
                studies: dict[str, optuna.Study | None] | None = None) -> dict[str, int]:
    """arm -> trials its study still lacks (finished or running count as taken); empty when complete.
    ``studies``: as ``load_studies`` returns them, when the caller has them already."""
    left = {}
    for arm, study in (studies if studies is not None else load_studies(tuning, spec)).items():
        counts = count_trials(study) if study is not None else None
        finished = counts.finished if counts else 0
        # a running trial (a live worker's, or a dead one's not failed yet) leaves the study incomplete
        if finished < tuning.n_trials or (counts and counts.running):
            left[arm] = max(tuning.n_trials - finished, 1)
    return left


def best_params(tuning: Tuning, spec: CampaignSpec) -> dict[str, dict] | None:
    """arm -> the best trial's parameters once every study of the block is complete, else None."""
    studies = load_studies(tuning, spec)
    if trials_left(tuning, spec, studies):
        return None
    out: dict[str, dict] = {}
    for arm, study in studies.items():
        assert study is not None  # no trials left: every study exists
        try:
            out[arm] = dict(study.best_trial.params)
        except ValueError:  # no complete trial: every trial pruned or failed
            raise RuntimeError(f"study {study.study_name!r} finished its {tuning.n_trials} trials without a "
                               "complete one; see the failed trial runs' hqcbench.error tag") from None
    return out


def resolve(spec: CampaignSpec) -> tuple[CampaignSpec, list[Tuning], list[str]]:
    """(the spec with the cells of every complete tuned block added, the tunings still missing trials,
    labels of the cells waiting for them)."""
    added: list[Training] = []
    missing: list[Tuning] = []
    waiting: list[str] = []
    for tuning in spec.tunings:
        best = best_params(tuning, spec)
        if best is None:
            missing.append(tuning)
            waiting += [f"{tuning.block}/{tuning.dataset}/tuned/{arm}/seed{seed}"
                        for seed in tuning.seeds for arm in tuning.arms]
            continue
        for seed in tuning.seeds:
            for arm in tuning.arms:
                fields = config_fields(arm, best[arm], tuning.settings.get("arm_params", ""))
                added.append(make_training(tuning.block, {**tuning.settings, **fields}, tuning.dataset, "tuned",
                                           arm, seed))
    return dataclasses.replace(spec, trainings=spec.trainings + tuple(added)), missing, waiting


def run_tuning(tuning: Tuning, spec: CampaignSpec, device: torch.device, monitor: ResourceMonitor,
               system: dict[str, str]) -> None:
    """Run the block's studies to their budget (trials are nested runs of the active campaign run),
    then wait for trials other workers are running, so the cells are planned from complete studies."""
    tcfg = tune_config(tuning, spec)
    url = check_storage(tcfg.storage)
    lock = StorageLock(url)
    try:
        with lock():
            studies = open_studies(open_storage(url, tcfg), tcfg, make_pruner())
        base = tcfg.base_config()
        splits = load_splits(base.dataset, base.data_dir or None, tcfg.trial_seed, base.val_fraction,
                             base.train_limit)
        for arm, study in studies.items():
            objective = Objective(arm, tcfg, study.study_name, splits, device, lock, monitor,
                                  {**system, names.TAG_BLOCK: tuning.block, names.TAG_CAMPAIGN: spec.name,
                                   **campaign_store.source_tags()})  # the command, not this machine's path
            ran = run_trials(study, objective, lock, tcfg.n_trials, tcfg.sampler_seed, deadline=None)
            log.info("campaign: %s/%s: %d trial(s) run here", tuning.label(), arm, ran)
            mlflow.log_metric(f"tune_trials_run_here_{tuning.block}_{tuning.dataset}_{arm}", ran)
        wait_for_running(studies, lock, poll_s=2.0)
    finally:
        lock.release()
