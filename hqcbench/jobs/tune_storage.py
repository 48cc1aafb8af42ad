"""Where the studies live: the storage URL check, the lock all workers share, trial counts, dead workers.

Budget: ``n_trials`` is the study's total. Optuna's ``MaxTrialsCallback`` checks after a trial ends,
so concurrent workers overshoot by up to (workers - 1); the tune job instead counts and creates the
trial while holding a lock shared by all workers (``StorageLock``), so a study never exceeds
``n_trials``. A worker that dies leaves its trial RUNNING until its heartbeat goes stale; the next
worker to look fails it (``fail_stale``) and, budget permitting, queues its params again
(``BudgetedRetry``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import filelock
import mlflow
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hqcbench import names
from hqcbench.config import STORAGE_ALLOWED, TuneConfig
from hqcbench.errors import UserInputError
from hqcbench.tracking import runs as tracking

log = logging.getLogger(__name__)

MAX_RETRY = 2  # a trial whose worker died is retried at most this often (a config that kills workers stops)
LOCK_KEY = 0x6871_6362_7475_6E65 & 0x7FFF_FFFF_FFFF_FFFF  # "hqcbtune": pg advisory lock id


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
    a session-level advisory lock, which the server drops when a worker's connection dies; SQLite: a
    file lock (``filelock``) beside the database file, which the OS drops when the process dies.
    """

    def __init__(self, url: sqlalchemy.engine.URL):
        self._pg_engine: sqlalchemy.engine.Engine | None = None
        self._conn: sqlalchemy.engine.Connection | None = None
        self._file_lock: filelock.FileLock | None = None
        if url.get_backend_name() == "postgresql":
            self._pg_engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                                       connect_args={"connect_timeout": 10})
        else:
            assert url.database is not None, f"{url!r} names no database file"
            self._file_lock = filelock.FileLock(str(Path(url.database).resolve()) + ".lock")
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        if self._file_lock is not None:
            self._file_lock.acquire()
        else:
            assert self._pg_engine is not None  # set in __init__ whenever there is no file lock
            self._conn = conn = self._pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._file_lock is not None:
            self._file_lock.release()
        else:
            conn = self._conn
            assert conn is not None  # acquire() connected before it set held
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            finally:
                conn.close()
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


_COUNTED_AS = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
               TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def count_trials(study: optuna.Study) -> Counts:
    counts = Counts()
    for trial in study.get_trials(deepcopy=False):
        name = _COUNTED_AS[trial.state]
        setattr(counts, name, getattr(counts, name) + 1)
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


def open_studies(storage: optuna.storages.RDBStorage, tcfg: TuneConfig,
                 pruner: optuna.pruners.BasePruner) -> dict[str, optuna.Study]:
    """Load or create one study per arm (``<study_name>-<arm>``). Call under the lock. Checks every
    existing study first, so a mismatch leaves the storage exactly as it was."""
    existing: dict[str, optuna.Study] = {}
    for arm in tcfg.arm_list:
        name = tcfg.study_name_for(arm)
        try:
            study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except KeyError:
            continue
        stored = study.user_attrs.get(names.STUDY_SETTINGS_ATTR)
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
        study.set_user_attr(names.STUDY_SETTINGS_ATTR, tcfg.settings_for(arm))
        studies[arm] = study
    return studies
