"""Optuna studies: tune every arm with the same budget, resumable, many workers on one storage.

One ``tune`` command is one *worker*. Start it once, or on many processes / machines against one
PostgreSQL URL: they share the studies. What a worker does:

1. validate every parameter, then check the storage URL (connect, nothing written);
2. under the storage lock: create or load one study per arm (``<study_name>-<arm>``) and refuse a
   study created with other settings (its trials would not be comparable);
3. per arm, until the study holds ``n_trials`` finished or running trials: under the lock, fail
   trials whose worker stopped sending heartbeats, count, and create the next trial; then train it
   (nested MLflow run; val_acc per epoch feeds the median pruner; objective = best val_acc);
4. log each study's best params / value and Optuna's plots on the ``tune`` parent run;
5. once every study is finished (no trial running anywhere), exactly one worker retrains each
   arm's best configuration with the configured seeds and tests once (``runner.train_arms``:
   logged exactly like a main run).

Where the parts live: the parameters in ``config.TuneConfig``; the search space, sampler and pruner
in ``tune_space``; the storage, its lock, trial counting and dead-worker handling (and why the budget
is counted under a lock rather than with Optuna's ``MaxTrialsCallback``) in ``tune_storage``. This
module holds one trial (``Objective``), the worker loop, the retrain claim and the parent run.
"""
from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import mlflow
import optuna
import torch
from optuna.trial import TrialState

# Optuna's plots cost about 25 ms to import once matplotlib is loaded (jobs.run loads it, 8 s with
# torch and MLflow): not worth deferring to the first plot.
from optuna.visualization import matplotlib as optuna_plots

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.arms import Role
from hqcbench.config import RunConfig, TuneConfig, dataset_name
from hqcbench.data.datasets import Splits, load_splits
from hqcbench.jobs import run as runner
from hqcbench.jobs.evaluate import TrainedArm
from hqcbench.jobs.fingerprint import TRAINING_VERSION
from hqcbench.jobs.tune_space import config_fields, make_pruner, make_sampler, suggest
from hqcbench.jobs.tune_storage import (
    StorageLock,
    check_storage,
    count_trials,
    fail_stale,
    open_storage,
    open_studies,
    worker_id,
)
from hqcbench.models import arms as models
from hqcbench.models.memory import check_tune_memory
from hqcbench.resources import ResourceMonitor
from hqcbench.tracking import figures
from hqcbench.tracking import runs as tracking
from hqcbench.tracking.experiments import use_experiment
from hqcbench.training import loop, seeding
from hqcbench.training.recipes import effective_batch_size, make_recipe

log = logging.getLogger(__name__)


# ============================================================================ one trial
class Objective:
    """Train one trial of ``arm`` as a nested MLflow run; return its best validation accuracy.

    ``monitor`` measures on the job's device (CUDA / NVML peaks on a GPU); the caller closes it.
    ``system``: the machine tags every trial run carries (read once per job).
    """

    def __init__(self, arm: str, tcfg: TuneConfig, study_name: str, splits: Splits, device: torch.device,
                 lock: StorageLock, monitor: ResourceMonitor, system: dict[str, str]):
        self.arm, self.tcfg, self.study_name = arm, tcfg, study_name
        self.splits, self.device, self.lock = splits, device, lock
        self.monitor, self.system = monitor, system
        self.base = tcfg.base_config().replace(arms=arm)
        self.ran: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.lock.release()  # the trial exists: other workers may count and create theirs now
        self.ran.append(trial.number)
        point = suggest(trial, self.arm, self.tcfg)
        cfg = self.base.replace(**config_fields(self.arm, point, self.base.arm_params))
        seed = self.tcfg.trial_seed
        tags = {**names.child_tags(self.arm, cfg.protocol, cfg.dataset_name, seed), names.TAG_KIND: "trial",
                names.TAG_STUDY: self.study_name, names.TAG_TRIAL: str(trial.number),
                names.TAG_WORKER: worker_id(), names.TAG_TRAINING_VERSION: str(TRAINING_VERSION), **self.system}
        retried = _retried_trial_number(trial)
        if retried is not None:
            tags[names.TAG_RETRY_OF_TRIAL] = str(retried)
        pruned: optuna.TrialPruned | None = None
        with tracking.open_run(run_name=f"{self.arm}-trial{trial.number}", nested=True, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            trial.set_user_attr("worker", worker_id())
            mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items()})
            try:
                value = self._train(trial, cfg, seed)
            except optuna.TrialPruned as exc:
                pruned = exc
            except Exception:
                mlflow.set_tag(names.TAG_TRIAL_STATE, "failed")
                raise  # open_run ends the run FAILED with hqcbench.error, Optuna records FAIL
            finally:
                mlflow.set_tags(self.monitor.tags())  # why NVML metrics are absent, how the RSS peak was taken
            mlflow.set_tag(names.TAG_TRIAL_STATE, "pruned" if pruned else "complete")
        if pruned is not None:
            raise pruned
        return value

    def _train(self, trial: optuna.Trial, cfg: RunConfig, seed: int) -> float:
        seeding.seed_model_init(seed)
        # models.build_model / loop.fit looked up at call time: tests replace them to fail or kill a trial
        model = models.build_model(self.arm, self.splits.spec, cfg).to(self.device)
        parameter_counts: dict[str, float] = dict(models.count_parameters(model))
        mlflow.log_metrics(parameter_counts)
        batch_size = effective_batch_size(cfg)
        steps = (len(self.splits.train) + batch_size - 1) // batch_size
        recipe = make_recipe(cfg.protocol, self.arm, model, cfg.lr, cfg.epochs, steps, cfg.dataset,
                             self.splits.spec.mean)
        mlflow.set_tag(names.TAG_RECIPE, recipe.description)

        def on_epoch(epoch: int, metrics: dict[str, float], _model) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                mlflow.set_tag(names.TAG_PRUNED_AT_EPOCH, str(epoch))
                raise optuna.TrialPruned(f"val_acc {metrics['val_acc']:.4f} at epoch {epoch} is below the median")

        result = loop.fit(model, self.splits.train, self.splits.val, recipe, cfg.epochs, batch_size, self.device,
                          seed, self.monitor, on_epoch=on_epoch, progress=False,
                          desc=f"{self.arm} trial {trial.number}")
        mlflow.log_metrics({"best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch})
        return result.best_val_acc


def _retried_trial_number(trial: optuna.Trial) -> int | None:
    """The number of the dead-worker trial this one retries (Trial itself no longer exposes system attrs)."""
    for frozen in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == trial.number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return None


# ============================================================================ the worker loop
def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], lock: StorageLock,
               n_trials: int, sampler_seed: int, deadline: float | None) -> int:
    """Run trials until the study holds ``n_trials`` finished + running ones (or the deadline passes).

    The lock is held from the count until the new trial exists; ``objective`` releases it first thing
    (``Objective`` does), and it is released here whatever happens.
    """
    ran = 0
    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        try:
            fail_stale(study)
            counts = count_trials(study)
            if counts.finished + counts.running >= n_trials:
                break
            study.sampler = make_sampler(sampler_seed, counts.total)
            study.optimize(objective, n_trials=1, catch=(Exception,))
            ran += 1
        finally:
            lock.release()
    return ran


def wait_for_running(studies: dict[str, optuna.Study], lock: StorageLock, poll_s: float) -> None:
    """Wait until no trial runs in any study: other workers finish theirs; a dead worker's trial is
    failed once its heartbeat is older than the grace period."""
    announced = False
    while True:
        with lock():
            running = 0
            for study in studies.values():
                fail_stale(study)
                running += count_trials(study).running
        if not running:
            return
        if not announced:
            log.info("waiting for %d trial(s) running on other workers (or stale ones to be failed)", running)
            announced = True
        time.sleep(poll_s)


def claim_retrain(studies: dict[str, optuna.Study], lock: StorageLock, mode: str, run_id: str) -> tuple[bool, str]:
    """Decide under the lock whether this worker retrains (exactly one worker per study state)."""
    if mode == "never":
        return False, "retrain=never"
    key = names.RETRAIN_CLAIM_ATTR + ",".join(sorted(studies))
    anchor = studies[sorted(studies)[0]]
    with lock():
        snapshot = {}
        for arm, study in studies.items():
            fail_stale(study)
            counts = count_trials(study)
            if counts.running:
                return False, f"study {study.study_name!r} still has running trials: the last worker retrains"
            snapshot[arm] = counts.finished
        previous = anchor.user_attrs.get(key)
        if mode == "auto" and previous and previous.get("finished") == snapshot:
            return False, f"already retrained by MLflow run {previous.get('run_id')} (retrain=always to redo)"
        anchor.set_user_attr(key, {"run_id": run_id, "worker": worker_id(), "finished": snapshot})
    return True, "claimed"


# ============================================================================ parent-run logging
def log_study(arm: str, study: optuna.Study) -> dict[str, Any]:
    """Best params / value, trial counts and Optuna's plots on the active (parent) run."""
    counts = count_trials(study)
    mlflow.log_metrics({f"tune_trials_complete_{arm}": counts.complete, f"tune_trials_pruned_{arm}": counts.pruned,
                        f"tune_trials_failed_{arm}": counts.failed})
    mlflow.log_text(study.trials_dataframe().to_csv(index=False), f"tuning/{arm}/trials.csv")
    if counts.complete == 0:
        return {}
    best = study.best_trial
    assert best.value is not None  # the best trial is a complete one
    mlflow.log_metric(f"tune_best_val_acc_{arm}", best.value)
    mlflow.log_params({f"best_{arm}_{k}": v for k, v in best.params.items()})
    mlflow.set_tags({names.best_trial_tag(arm): str(best.number),
                     names.best_run_tag(arm): str(best.user_attrs.get("mlflow_run_id", ""))})
    _log_plots(arm, study)
    return {"study": study.study_name, "trial": best.number, "best_val_acc": best.value, "params": best.params,
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}


def _log_plots(arm: str, study: optuna.Study) -> None:
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("optimization_history.png", lambda: optuna_plots.plot_optimization_history(study)),
        ("param_importances.png", lambda: optuna_plots.plot_param_importances(study))]
    if arm_registry.get(arm).role is Role.HYBRID:
        plots.append(("contour_n_qubits_depth.png",
                      lambda: optuna_plots.plot_contour(study, params=["n_qubits", "depth"])))
    skipped = []
    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = make()
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figures.log_png(first.figure, f"tuning/{arm}/{name}")
            figures.close(first.figure)
        except Exception as exc:  # e.g. importances need two complete trials with differing params
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
    if skipped:
        mlflow.log_text("\n".join(skipped) + "\n", f"tuning/{arm}/plots_skipped.txt")


# ============================================================================ the job
@dataclass
class TuneResult:
    best: dict[str, dict[str, Any]]  # arm -> best trial summary
    ran_here: dict[str, list[int]]  # arm -> trial numbers this worker ran
    retrained: list[TrainedArm]  # empty when another worker retrains
    retrain_note: str
    parent_run_id: str


def run_tune(tcfg: TuneConfig, pruner: optuna.pruners.BasePruner | None = None) -> TuneResult:
    """The ``tune`` entry point (one worker). ``pruner`` is for tests; default: median pruner."""
    tcfg.validate()
    check_tune_memory(tcfg)  # the largest circuit the search may draw must fit, before any trial runs
    url = check_storage(tcfg.storage)
    device = runner.resolve_device(tcfg.device)
    t_start = time.perf_counter()
    lock = StorageLock(url)
    with lock():
        storage = open_storage(url, tcfg)
        studies = open_studies(storage, tcfg, pruner or make_pruner())
    deadline = time.monotonic() + tcfg.timeout if tcfg.timeout else None
    params = tcfg.to_dict()
    use_experiment(dataset_name(tcfg.dataset))  # hqcbench-{dataset} unless one was given
    # parent_run ends the parent itself (FAILED with hqcbench.error, or KILLED on a stop)
    run_name = f"tune-{dataset_name(tcfg.dataset)}-{'-'.join(tcfg.arm_list)}"
    with tracking.parent_run(params, run_name, kind="tune") as parent:
        try:
            system = runner.machine_tags(device)  # versions, CPU, GPU: read once, tagged on every trial
            mlflow.set_tags({**system, names.TAG_DATASET: dataset_name(tcfg.dataset), names.TAG_PROTOCOL: tcfg.protocol,
                             names.TAG_WORKER: worker_id()})
            mlflow.log_text(json.dumps(params, indent=2), "config.json")
            base = tcfg.base_config()
            splits = load_splits(base.dataset, base.data_dir or None, tcfg.trial_seed, base.val_fraction,
                                 base.train_limit)
            ran_here: dict[str, list[int]] = {}
            with ResourceMonitor(device) as monitor:
                for arm, study in studies.items():
                    objective = Objective(arm, tcfg, study.study_name, splits, device, lock, monitor, system)
                    run_trials(study, objective, lock, tcfg.n_trials, tcfg.sampler_seed, deadline)
                    ran_here[arm] = objective.ran
                    mlflow.log_metric(f"tune_trials_run_here_{arm}", len(objective.ran))
            timed_out = deadline is not None and time.monotonic() >= deadline
            if not timed_out:
                wait_for_running(studies, lock, poll_s=1.0)
            best = {arm: log_study(arm, study) for arm, study in studies.items()}
            tracking.log_json(best, "tuning/best_configs.json")
            missing = [arm for arm, b in best.items() if not b]
            if missing:
                raise RuntimeError(f"no trial of {', '.join(missing)} completed; see the failed trial runs' "
                                   f"{names.TAG_ERROR} tag")
            do_retrain, note = claim_retrain(studies, lock, tcfg.retrain, parent.info.run_id)
            mlflow.set_tag(names.TAG_RETRAIN, note)
            retrained: list[TrainedArm] = []
            if do_retrain:
                # Optuna's param names are RunConfig's field names or a user factory's own (tune_space)
                arm_configs = {arm: base.replace(**config_fields(arm, b["params"], base.arm_params))
                               for arm, b in best.items()}
                retrained = runner.train_arms(base, device, arm_configs)
                table = runner.comparison_table(retrained)
                mlflow.log_text(table.to_csv(index=False), "comparison.csv")
                mlflow.log_text(table.to_markdown(index=False, floatfmt=".4f"), "comparison.md")
                runner.log_headline(retrained, f"{dataset_name(tcfg.dataset)}, best configuration of each arm's study")
            mlflow.log_metric("wall_time_s", time.perf_counter() - t_start)
        finally:
            lock.release()  # never left held for the other workers, however this one ends
    return TuneResult(best, ran_here, retrained, note, parent.info.run_id)
