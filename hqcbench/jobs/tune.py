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

Budget: ``n_trials`` is the study's total. Optuna's ``MaxTrialsCallback`` checks after a trial ends,
so concurrent workers overshoot by up to (workers - 1); we instead count and create the trial while
holding a lock shared by all workers (``StorageLock``), so the study never exceeds ``n_trials``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import mlflow
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hqcbench import names
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.training import seeding
from hqcbench.training.loop import fit
from hqcbench.training.recipes import effective_batch_size, make_recipe
from hqcbench.tracking import runs as tracking
from hqcbench.config import ANSATZES, ARMS, DATASETS, DEVICES, ENCODINGS, ENGINES, MAX_QUBITS, RunConfig, convert
from hqcbench.errors import UserInputError

log = logging.getLogger("hqcbench.tuning")

TUNE_PROTOCOLS = ("fair",)  # paper fixes architecture and learning rates: nothing to tune
RETRAIN_CHOICES = ("auto", "always", "never")
STORAGE_ALLOWED = "sqlite:///PATH (file in an existing folder) or postgresql://USER:PASSWORD@HOST:PORT/DB (reachable)"
PRUNER_STARTUP_TRIALS = 5  # median pruner: never prune before this many trials have finished
PRUNER_WARMUP_EPOCHS = 2  # ... nor before this epoch: a low lr starts slowly but may still win
MAX_RETRY = 2  # a trial whose worker died is retried at most this often (a config that kills workers stops)
LOCK_KEY = 0x6871_6362_7475_6E65 & 0x7FFF_FFFF_FFFF_FFFF  # "hqcbtune": pg advisory lock id


def _param(default: Any, help: str, allowed: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "allowed": allowed})


@dataclass
class TuneConfig:
    """Every knob of the ``tune`` entry point. Field order = CLI / MLproject order."""

    dataset: str = _param("digits", "dataset to tune on", "|".join(DATASETS))
    protocol: str = _param("fair", "training protocol (paper fixes the architecture: nothing to tune)",
                           "|".join(TUNE_PROTOCOLS))
    arms: str = _param("hybrid", "comma-separated arms; one study each, same budget", ",".join(ARMS))
    n_trials: int = _param(20, "trials per arm: the study's total over all workers and restarts", ">= 1")
    timeout: int = _param(0, "this worker starts no new trial after this many seconds (0: no limit)", ">= 0")
    storage: str = _param("sqlite:///optuna.db", "Optuna storage URL shared by all workers", STORAGE_ALLOWED)
    study_name: str = _param("", "study name prefix (empty: hqcbench-<dataset>-<protocol>); study = <prefix>-<arm>",
                             "empty or a name")
    sampler_seed: int = _param(0, "seed of the TPE sampler (each trial gets its own seed derived from it)", ">= 0")
    epochs: int = _param(5, "training epochs per trial (and for the retrain)", ">= 1")
    batch_size: int = _param(32, "mini-batch size", ">= 1")
    width_min: int = _param(4, "smallest backbone width searched (log scale)", "1..256, <= width_max")
    width_max: int = _param(32, "largest backbone width searched", "1..256, >= width_min")
    lr_min: float = _param(1e-4, "smallest learning rate searched (log scale)", "> 0, <= lr_max")
    lr_max: float = _param(1e-2, "largest learning rate searched", "> 0, >= lr_min")
    qubits_min: int = _param(2, "fewest qubits searched (hybrid; control: its middle's width)",
                             f"1..{MAX_QUBITS}, <= qubits_max")
    qubits_max: int = _param(10, "most qubits searched", f"1..{MAX_QUBITS}, >= qubits_min")
    depth_min: int = _param(1, "fewest ansatz layers searched (hybrid)", ">= 1, <= depth_max")
    depth_max: int = _param(6, "most ansatz layers searched (hybrid)", ">= depth_min")
    encodings: str = _param("angle,amplitude", "encodings searched (hybrid)", ",".join(ENCODINGS))
    ansatzes: str = _param("strong,basic", "ansatzes searched (hybrid)", ",".join(ANSATZES))
    seeds: str = _param("0", "seeds of the retrain; trials train with the first", "integers >= 0, e.g. 0,1,2")
    engine: str = _param("fused", "circuit simulator", "|".join(ENGINES))
    data_dir: str = _param("", "folder with already-downloaded dataset files (empty: download to ./data)",
                           "a readable directory")
    val_fraction: float = _param(0.2, "fraction of the training split held out for validation", "0 < v < 1")
    train_limit: int = _param(0, "use only this many training images (0: all)", ">= 0")
    device: str = _param("auto", "where to train", "|".join(DEVICES))
    attacks: str = _param("fgsm,pgd", "attacks run on the retrained models (none: skip)", "fgsm,pgd,square,pgd_paper or none")
    retrain: str = _param("auto", "auto: the worker that sees every study finished retrains, once per study state; "
                          "always; never", "|".join(RETRAIN_CHOICES))
    heartbeat_s: int = _param(10, "trial heartbeat interval; a trial silent for 3x this is failed (its worker died)",
                              ">= 1")

    # ------------------------------------------------------------------ parsing
    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    @property
    def encoding_list(self) -> list[str]:
        return [e.strip() for e in self.encodings.split(",") if e.strip()]

    @property
    def ansatz_list(self) -> list[str]:
        return [a.strip() for a in self.ansatzes.split(",") if a.strip()]

    @property
    def trial_seed(self) -> int:
        return self.base_config().seed_list[0]

    def study_name_for(self, arm: str) -> str:
        prefix = self.study_name.strip() or f"hqcbench-{self.dataset}-{self.protocol}"
        return f"{prefix}-{arm}"

    def base_config(self) -> RunConfig:
        """The main job's config for everything the search does not set (same names, same checks)."""
        shared = {f.name for f in dataclasses.fields(RunConfig)} & {f.name for f in dataclasses.fields(self)}
        return RunConfig(**{name: getattr(self, name) for name in shared})

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TuneConfig":
        """Raise UserInputError naming the first bad parameter; touches no storage."""
        def require(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise UserInputError(name, message, TUNE_META[name]["allowed"])

        require(self.protocol in TUNE_PROTOCOLS, "protocol",
                f"{self.protocol!r} cannot be tuned (the paper protocol fixes architecture and learning rates)")
        self.base_config().validate()  # dataset, arms, epochs, batch_size, seeds, engine, data_dir, device, ...
        require(self.n_trials >= 1, "n_trials", f"got {self.n_trials}")
        require(self.timeout >= 0, "timeout", f"got {self.timeout}")
        require(self.sampler_seed >= 0, "sampler_seed", f"got {self.sampler_seed}")
        require(self.heartbeat_s >= 1, "heartbeat_s", f"got {self.heartbeat_s}")
        require(self.retrain in RETRAIN_CHOICES, "retrain", f"got {self.retrain!r}")
        for low, high, lo_ok, hi_ok in (("width_min", "width_max", 1, 256), ("qubits_min", "qubits_max", 1, MAX_QUBITS),
                                        ("depth_min", "depth_max", 1, None)):
            lo, hi = getattr(self, low), getattr(self, high)
            require(lo >= lo_ok and (hi_ok is None or lo <= hi_ok), low, f"got {lo}")
            require(hi >= lo_ok and (hi_ok is None or hi <= hi_ok), high, f"got {hi}")
            require(lo <= hi, low, f"empty range: {low}={lo} > {high}={hi}")
        require(self.lr_min > 0, "lr_min", f"got {self.lr_min}")
        require(self.lr_max > 0, "lr_max", f"got {self.lr_max}")
        require(self.lr_min <= self.lr_max, "lr_min", f"empty range: lr_min={self.lr_min:g} > lr_max={self.lr_max:g}")
        for name, values, allowed in (("encodings", self.encoding_list, ENCODINGS),
                                      ("ansatzes", self.ansatz_list, ANSATZES)):
            require(bool(values), name, "empty list")
            require(all(v in allowed for v in values), name, f"got {getattr(self, name)!r}")
            require(len(set(values)) == len(values), name, f"repeated value in {getattr(self, name)!r}")
        return self

    def settings_for(self, arm: str) -> dict[str, Any]:
        """What makes two trials of ``arm`` comparable; stored on the study, checked on every load."""
        settings: dict[str, Any] = {"dataset": self.dataset, "protocol": self.protocol, "arms": arm,
                                    "epochs": self.epochs, "batch_size": self.batch_size,
                                    "seeds": self.trial_seed, "val_fraction": self.val_fraction,
                                    "train_limit": self.train_limit, "engine": self.engine,
                                    "width_min": self.width_min, "width_max": self.width_max,
                                    "lr_min": self.lr_min, "lr_max": self.lr_max}
        if arm in ("hybrid", "control"):
            settings.update(qubits_min=self.qubits_min, qubits_max=self.qubits_max)
        if arm == "hybrid":
            settings.update(depth_min=self.depth_min, depth_max=self.depth_max,
                            encodings=self.encoding_list, ansatzes=self.ansatz_list)
        return settings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_strings(cls, values: dict[str, Any]) -> "TuneConfig":
        kwargs = {}
        for f in dataclasses.fields(cls):
            if values.get(f.name) is None:
                continue
            kind = TUNE_TYPES[f.name]
            try:
                kwargs[f.name] = convert(f.name, values[f.name], kind)
            except UserInputError:  # convert() knows RunConfig's allowed values, not ours
                raise UserInputError(f.name, f"expected {kind.__name__}, got {values[f.name]!r}",
                                     TUNE_META[f.name]["allowed"]) from None
        return cls(**kwargs)


TUNE_META: dict[str, dict[str, Any]] = {f.name: dict(f.metadata) for f in dataclasses.fields(TuneConfig)}
TUNE_TYPES: dict[str, type] = {f.name: {"int": int, "float": float, "str": str}[f.type] if isinstance(f.type, str)
                               else f.type for f in dataclasses.fields(TuneConfig)}
TUNE_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TuneConfig)}


# ============================================================================ search space
def suggest(trial: optuna.Trial, arm: str, tcfg: TuneConfig) -> dict[str, Any]:
    """The search space of ``arm``: RunConfig field -> value.

    Every arm tunes what it shares (backbone width, learning rate), so the classical baseline is
    tuned as hard as the hybrid; hybrid adds its circuit, control the width of its middle.
    """
    params: dict[str, Any] = {"width": trial.suggest_int("width", tcfg.width_min, tcfg.width_max, log=True),
                              "lr": trial.suggest_float("lr", tcfg.lr_min, tcfg.lr_max, log=True)}
    if arm in ("hybrid", "control"):
        params["n_qubits"] = trial.suggest_int("n_qubits", tcfg.qubits_min, tcfg.qubits_max)
    if arm == "hybrid":
        params["depth"] = trial.suggest_int("depth", tcfg.depth_min, tcfg.depth_max)
        params["encoding"] = trial.suggest_categorical("encoding", tcfg.encoding_list)
        params["ansatz"] = trial.suggest_categorical("ansatz", tcfg.ansatz_list)
    return params


def make_sampler(sampler_seed: int, trial_index: int) -> optuna.samplers.BaseSampler:
    """TPE seeded per trial: a single worker is reproducible, and concurrent workers started with
    the same command never draw the same random start-up configurations (one seed per worker would)."""
    return optuna.samplers.TPESampler(seed=seeding.sampler_seed(sampler_seed, trial_index), constant_liar=True)


def make_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)


# ============================================================================ storage
def check_storage(url: str) -> sqlalchemy.engine.URL:
    """Parse and reach the storage without writing anything; UserInputError('storage', ...) otherwise."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        raise UserInputError("storage", f"not a database URL: {url!r}", STORAGE_ALLOWED) from None
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise UserInputError("storage", f"{shown}: an in-memory database vanishes with the process; name a file",
                                 STORAGE_ALLOWED)
        folder = Path(db).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UserInputError("storage", f"{shown}: folder {str(folder)!r} does not exist or is not writable",
                                 STORAGE_ALLOWED)
        if Path(db).exists() and not os.access(db, os.R_OK | os.W_OK):
            raise UserInputError("storage", f"{shown}: file is not readable and writable", STORAGE_ALLOWED)
        return parsed
    if backend != "postgresql":
        raise UserInputError("storage", f"unsupported database {backend!r} in {shown}", STORAGE_ALLOWED)
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3; we ship psycopg2-binary
        parsed = parsed.set(drivername="postgresql+psycopg2")
    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": 10})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UserInputError("storage", f"cannot connect to {shown}: {reason}", STORAGE_ALLOWED) from None
    return parsed


class StorageLock:
    """A mutex shared by every worker of one storage: serialises "count the budget, then create the trial".

    Hand-written because Optuna offers no budget-aware ``ask`` (see the module docstring). PostgreSQL:
    a session advisory lock, which the server drops when a worker's connection dies; SQLite: a file
    lock (``filelock``) beside the database file, which the OS drops when the process dies.
    """

    def __init__(self, url: sqlalchemy.engine.URL):
        self._pg_engine = None
        self._conn = None
        self._file_lock = None
        if url.get_backend_name() == "postgresql":
            self._pg_engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                                       connect_args={"connect_timeout": 10})
        else:
            import filelock

            self._file_lock = filelock.FileLock(str(Path(url.database).resolve()) + ".lock")
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        if self._file_lock is not None:
            self._file_lock.acquire()
        else:
            self._conn = self._pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._file_lock is not None:
            self._file_lock.release()
        else:
            try:
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            finally:
                self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def total(self) -> int:
        return self.finished + self.running + self.waiting


def count_trials(study: optuna.Study) -> Counts:
    counts = Counts()
    state_names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    for trial in study.get_trials(deepcopy=False):
        setattr(counts, state_names[trial.state], getattr(counts, state_names[trial.state]) + 1)
    return counts


class BudgetedRetry:
    """Heartbeat-stale trial callback: mark the dead worker's MLflow trial run FAILED, then let
    Optuna's ``RetryHeartbeatStaleTrialCallback`` queue the same params again -- only while the budget
    has room (the failed trial itself counts), so no retry is left WAITING in a full study."""

    def __init__(self, n_trials: int):
        self.n_trials = n_trials
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            with contextlib.suppress(Exception):
                mlflow.MlflowClient().set_tag(run_id, names.TAG_TRIAL_STATE, "failed")
            tracking.mark_failed(run_id, "worker stopped sending heartbeats (killed or lost); failed by "
                                         f"{worker_id()}")
        counts = count_trials(study)
        if counts.finished + counts.running < self.n_trials:
            self.retry(study, trial)
            log.info("trial %d of %s: worker died; its params are queued again", trial.number, study.study_name)
        else:
            log.info("trial %d of %s: worker died; budget full, not retried", trial.number, study.study_name)


def open_storage(url: sqlalchemy.engine.URL, tcfg: TuneConfig) -> optuna.storages.RDBStorage:
    if url.get_backend_name() == "sqlite":
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}  # busy wait, not "database is locked"
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url.render_as_string(hide_password=False), engine_kwargs=engine_kwargs,
                                          heartbeat_interval=tcfg.heartbeat_s, grace_period=3 * tcfg.heartbeat_s,
                                          heartbeat_stale_trial_callback=BudgetedRetry(tcfg.n_trials))


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


SETTINGS_ATTR = "hqcbench.settings"


def open_studies(storage: optuna.storages.RDBStorage, tcfg: TuneConfig,
                 pruner: optuna.pruners.BasePruner) -> dict[str, optuna.Study]:
    """Load or create one study per arm. Call under the lock. Checks every existing study first, so a
    mismatch leaves the storage exactly as it was."""
    existing: dict[str, optuna.Study] = {}
    for arm in tcfg.arm_list:
        name = tcfg.study_name_for(arm)
        try:
            study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except KeyError:
            continue
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE or stored is None:
            raise UserInputError("study_name", f"study {name!r} exists and was not created by hqcbench tune "
                                 f"with these settings", "a new name")
        wanted = json.loads(json.dumps(tcfg.settings_for(arm)))
        for key, value in wanted.items():
            if stored.get(key) != value:
                raise UserInputError(key, f"study {name!r} was created with {key}={stored.get(key)!r}, this command "
                                     f"says {value!r}: its trials would not be comparable",
                                     f"{stored.get(key)!r}, or another study_name")
        existing[arm] = study
    studies = {}
    for arm in tcfg.arm_list:
        if arm in existing:
            studies[arm] = existing[arm]
            continue
        study = optuna.create_study(study_name=tcfg.study_name_for(arm), storage=storage, direction="maximize",
                                    pruner=pruner, load_if_exists=False)
        study.set_user_attr(SETTINGS_ATTR, tcfg.settings_for(arm))
        studies[arm] = study
    return studies


# ============================================================================ one trial
class Objective:
    """Train one trial of ``arm`` as a nested MLflow run; return its best validation accuracy."""

    def __init__(self, arm: str, tcfg: TuneConfig, study_name: str, splits, device, lock: StorageLock):
        from hqcbench.resources import ResourceMonitor

        self.arm, self.tcfg, self.study_name = arm, tcfg, study_name
        self.splits, self.device, self.lock = splits, device, lock
        self.base = tcfg.base_config().replace(arms=arm)
        self.monitor = ResourceMonitor()
        self.ran: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.lock.release()  # the trial exists: other workers may count and create theirs now
        self.ran.append(trial.number)
        cfg = self.base.replace(**suggest(trial, self.arm, self.tcfg))
        seed = self.tcfg.trial_seed
        tags = {**names.child_tags(self.arm, cfg.protocol, cfg.dataset, seed), names.TAG_KIND: "trial",
                names.TAG_STUDY: self.study_name, names.TAG_TRIAL: str(trial.number),
                "hqcbench.worker": worker_id(), **tracking.system_tags(str(self.device))}
        retried = _retried_trial_number(trial)
        if retried is not None:
            tags["hqcbench.retry_of_trial"] = str(retried)
        pruned: optuna.TrialPruned | None = None
        with mlflow.start_run(run_name=f"{self.arm}-trial{trial.number}", nested=True, tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            trial.set_user_attr("worker", worker_id())
            mlflow.log_params({k: str(v) for k, v in cfg.to_dict().items()})
            try:
                value = self._train(trial, cfg, seed)
            except optuna.TrialPruned as exc:
                pruned = exc
            except Exception as exc:
                mlflow.set_tags({names.TAG_TRIAL_STATE: "failed",
                                 names.TAG_ERROR: f"{type(exc).__name__}: {exc}"[:5000]})
                raise  # MLflow ends the run FAILED, Optuna records FAIL
            mlflow.set_tag(names.TAG_TRIAL_STATE, "pruned" if pruned else "complete")
        if pruned is not None:
            raise pruned
        return value

    def _train(self, trial: optuna.Trial, cfg: RunConfig, seed: int) -> float:
        seeding.seed_model_init(seed)
        model = build_model(self.arm, self.splits.spec, cfg).to(self.device)
        mlflow.log_metrics(count_parameters(model))
        batch_size = effective_batch_size(cfg)
        steps = (len(self.splits.train) + batch_size - 1) // batch_size
        recipe = make_recipe(cfg.protocol, self.arm, model, cfg.lr, cfg.epochs, steps, cfg.dataset,
                             self.splits.spec.mean)
        mlflow.set_tag("hqcbench.recipe", recipe.description)

        def on_epoch(epoch: int, metrics: dict[str, float], _model) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                mlflow.set_tag("hqcbench.pruned_at_epoch", str(epoch))
                raise optuna.TrialPruned(f"val_acc {metrics['val_acc']:.4f} at epoch {epoch} is below the median")

        result = fit(model, self.splits.train, self.splits.val, recipe, cfg.epochs, batch_size, self.device, seed,
                     self.monitor, on_epoch=on_epoch, progress=False, desc=f"{self.arm} trial {trial.number}")
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
    key = "hqcbench.retrain:" + ",".join(sorted(studies))
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
    mlflow.log_metric(f"tune_best_val_acc_{arm}", best.value)
    mlflow.log_params({f"best_{arm}_{k}": v for k, v in best.params.items()})
    mlflow.set_tags({f"hqcbench.best_trial.{arm}": str(best.number),
                     f"hqcbench.best_run.{arm}": str(best.user_attrs.get("mlflow_run_id", ""))})
    _log_plots(arm, study)
    return {"study": study.study_name, "trial": best.number, "best_val_acc": best.value, "params": best.params,
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}


def _log_plots(arm: str, study: optuna.Study) -> None:
    from optuna.visualization import matplotlib as ovm

    from hqcbench.tracking.figures import close

    plots: list[tuple[str, Callable[[], Any]]] = [
        ("optimization_history.png", lambda: ovm.plot_optimization_history(study)),
        ("param_importances.png", lambda: ovm.plot_param_importances(study))]
    if arm == "hybrid":
        plots.append(("contour_n_qubits_depth.png", lambda: ovm.plot_contour(study, params=["n_qubits", "depth"])))
    skipped = []
    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = make()
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            mlflow.log_figure(first.figure, f"tuning/{arm}/{name}")
            close(first.figure)
        except Exception as exc:  # e.g. importances need two complete trials with differing params
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
    if skipped:
        mlflow.log_text("\n".join(skipped) + "\n", f"tuning/{arm}/plots_skipped.txt")


# ============================================================================ the job
@dataclass
class TuneResult:
    best: dict[str, dict[str, Any]]  # arm -> best trial summary
    ran_here: dict[str, list[int]]  # arm -> trial numbers this worker ran
    retrained: list  # runner.TrainedArm, empty when another worker retrains
    retrain_note: str
    parent_run_id: str


def run_tune(tcfg: TuneConfig, pruner: optuna.pruners.BasePruner | None = None) -> TuneResult:
    """The ``tune`` entry point (one worker). ``pruner`` is for tests; default: median pruner."""
    from hqcbench.jobs import run as runner
    from hqcbench.data.datasets import load_splits

    tcfg.validate()
    url = check_storage(tcfg.storage)
    device = runner.resolve_device(tcfg.device)
    t_start = time.perf_counter()
    lock = StorageLock(url)
    with lock():
        storage = open_storage(url, tcfg)
        studies = open_studies(storage, tcfg, pruner or make_pruner())
    deadline = time.monotonic() + tcfg.timeout if tcfg.timeout else None
    params = tcfg.to_dict()
    with tracking.parent_run(params, f"tune-{tcfg.dataset}-{'-'.join(tcfg.arm_list)}", kind="tune") as parent:
        try:
            mlflow.set_tags({**tracking.system_tags(str(device)), names.TAG_DATASET: tcfg.dataset,
                             names.TAG_PROTOCOL: tcfg.protocol, "hqcbench.worker": worker_id()})
            mlflow.log_text(json.dumps(params, indent=2), "config.json")
            base = tcfg.base_config()
            splits = load_splits(base.dataset, base.data_dir or None, tcfg.trial_seed, base.val_fraction,
                                 base.train_limit)
            ran_here: dict[str, list[int]] = {}
            for arm, study in studies.items():
                objective = Objective(arm, tcfg, study.study_name, splits, device, lock)
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
            mlflow.set_tag("hqcbench.retrain", note)
            retrained = []
            if do_retrain:
                # Optuna's param names are RunConfig's field names (see suggest)
                arm_configs = {arm: base.replace(**b["params"]) for arm, b in best.items()}
                retrained = runner.train_arms(base, device, arm_configs)
                table = runner.comparison_table(retrained)
                mlflow.log_text(table.to_csv(index=False), "comparison.csv")
                mlflow.log_text(table.to_markdown(index=False, floatfmt=".4f"), "comparison.md")
            mlflow.log_metric("wall_time_s", time.perf_counter() - t_start)
        except BaseException as exc:
            lock.release()
            tracking.mark_failed(parent.info.run_id, f"{type(exc).__name__}: {exc}")
            raise
    return TuneResult(best, ran_here, retrained, note, parent.info.run_id)
