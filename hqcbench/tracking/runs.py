"""Parent and child runs: opening them, tagging the machine and the process, ending them with the reason.

Every run a job opens goes through ``open_run``, which ends it itself: FINISHED, KILLED (stopped by
SIGTERM or Ctrl-C, see ``tracking.stopping``) or FAILED, each with the reason in a tag. A plain
``with mlflow.start_run()`` cannot: it records a stop as FAILED, and a SIGTERM without a handler
leaves the run RUNNING forever. The names themselves live in ``hqcbench.names``."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import socket
import time
from importlib import metadata
from typing import Any, Iterator

import mlflow
import psutil

from hqcbench import names
from hqcbench.hardware import cpu_model
from hqcbench.tracking import stopping

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    versions = {}
    for dist in ("torch", "torchvision", "torchquantum", "mlflow", "adversarial-robustness-toolbox", "optuna", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def system_tags(device: str) -> dict[str, str]:
    """Versions, device and CPU model (jobs add the GPU and thread tags of ``evaluation.resources``)."""
    tags = {names.VERSION_TAG_PREFIX + k: v for k, v in library_versions().items()}
    tags.update({names.TAG_DEVICE: device, names.TAG_CPU_MODEL: cpu_model(),
                 names.TAG_CPU_COUNT: str(os.cpu_count()), names.TAG_PYTHON: platform.python_version()})
    return tags


@functools.lru_cache(maxsize=4)
def _process_tags(pid: int) -> dict[str, str]:
    return {names.TAG_HOST: socket.gethostname(), names.TAG_PID: str(pid),
            names.TAG_PID_START: str(psutil.Process(pid).create_time())}


def process_tags() -> dict[str, str]:
    """Host, pid and the process's start time: enough for a later process to tell a run whose process
    died (no such pid on that host, or a pid reused by a process started later) from a live one."""
    return _process_tags(os.getpid())


def _outcome(exc: BaseException | None) -> tuple[str, dict[str, str]]:
    """The status a run ends with after its body ended with ``exc``, and the tag saying why."""
    if exc is None:
        return "FINISHED", {}
    stop = stopping.as_stopped(exc)
    if stop is not None:
        return "KILLED", {names.TAG_STOPPED: stop.reason}
    return "FAILED", {names.TAG_ERROR: f"{type(exc).__name__}: {exc}"[:5000]}


def _status(run_id: str) -> str | None:
    with contextlib.suppress(Exception):
        return mlflow.MlflowClient().get_run(run_id).info.status
    return None


def _end_retrying(run_id: str, status: str, tags: dict[str, str], attempts: int = 3) -> None:
    """``_end`` on the way out of an exception: a store busy for a moment (SQLite "database is locked"
    while another thread writes) must not leave the run RUNNING, so retry; a last failure is logged,
    never raised (the original exception wins). A run left RUNNING anyway is reaped by the next campaign."""
    for attempt in range(1, attempts + 1):
        try:
            _end(run_id, status, tags)
            return
        except Exception as err:  # noqa: BLE001 -- whatever the store says, the original exception goes on
            if attempt == attempts:
                log.warning("could not end run %s as %s: %s: %s", run_id, status, type(err).__name__, err)
            else:
                time.sleep(0.5 * attempt)


def _end(run_id: str, status: str, tags: dict[str, str]) -> None:
    """Tag and end ``run_id``; through the fluent API when it is the active run (so MLflow's stack and
    system-metrics thread are closed too), else by id, and then only while it is still RUNNING."""
    client = mlflow.MlflowClient()
    active = mlflow.active_run()
    is_active = active is not None and active.info.run_id == run_id
    if not is_active and _status(run_id) != "RUNNING":
        return  # the body ended it already: its own ending stands
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if is_active:
        mlflow.end_run(status)
    else:  # a run opened above it and never ended is still MLflow's active run
        client.set_terminated(run_id, status)


@contextlib.contextmanager
def open_run(**start_run_kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run(**start_run_kwargs)`` that ends the run itself, then re-raises.

    FINISHED on success; KILLED with ``hqcbench.stopped`` on ``Stopped`` / KeyboardInterrupt; FAILED
    with ``hqcbench.error`` ("Type: message") on any other exception. Nested runs end innermost first,
    each by its own ``with``. A run resumed while already FINISHED (a child reopened to log its
    evaluation) is never changed: it ends FINISHED again, without new tags, whatever happens inside.
    New and resumed unfinished runs get the process tags (``process_tags``). Creating and ending a run
    are ``stopping.critical``: a stop signal waits until they are done.
    """
    kwargs = dict(start_run_kwargs)
    resume_id = kwargs.get("run_id") or os.environ.get("MLFLOW_RUN_ID")  # start_run's own order
    keep_finished = _status(resume_id) == "FINISHED" if resume_id else False
    if not keep_finished:
        kwargs["tags"] = {**process_tags(), **(kwargs.get("tags") or {})}
    run: mlflow.ActiveRun | None = None
    try:
        with stopping.critical():
            run = mlflow.start_run(**kwargs)
        yield run
    except BaseException as exc:
        if run is not None:
            status, tags = ("FINISHED", {}) if keep_finished else _outcome(exc)
            with stopping.critical():
                _end_retrying(run.info.run_id, status, tags)
        raise
    with stopping.critical():
        _end(run.info.run_id, "FINISHED", {})


@contextlib.contextmanager
def parent_run(params: dict[str, Any], run_name: str, kind: str = "main", log_system_metrics: bool = True,
               tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """The parent run: the `mlflow run` run when MLFLOW_RUN_ID is set (its params already logged by
    MLflow -- never re-logged), else a new run whose params we log ourselves. Opened by ``open_run``,
    so a stop ends it (and the `mlflow run` run) KILLED, a failure FAILED with the reason. ``tags`` are
    set as it opens, beside ``hqcbench.kind``."""
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))
    with open_run(run_name=None if resumed else run_name, log_system_metrics=log_system_metrics,
                  tags={**(tags or {}), names.TAG_KIND: kind}) as run:
        if not resumed:
            mlflow.log_params({k: str(v) for k, v in params.items()})
        yield run


def _end_unless_ended(run_id: str, status: str, tag: str, reason: str) -> None:
    """Tag ``run_id`` with the reason and end it ``status`` -- unless it has ended already: the first
    ending knows best (a run stopped KILLED stays KILLED, a FINISHED one is never changed)."""
    if _status(run_id) not in ("RUNNING", None):
        return
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, tag, reason[:5000])
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status)


def mark_failed(run_id: str, reason: str) -> None:
    """Tag a run with the reason and end it FAILED, so a half-logged run never looks successful.
    A run that has ended already keeps its status."""
    _end_unless_ended(run_id, "FAILED", names.TAG_ERROR, reason)


def mark_killed(run_id: str, reason: str) -> None:
    """End a run KILLED with ``hqcbench.stopped`` = ``reason``: for the `mlflow run` run when a stop
    arrives before (or after) a job opened it. A run that has ended already keeps its status -- except
    one that a plain ``with mlflow.start_run()`` ended FAILED on the stop itself (FAILED without
    ``hqcbench.error``): that FAILED is the stop."""
    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        run = client.get_run(run_id)
        failed_by_stop = run.info.status == "FAILED" and names.TAG_ERROR not in run.data.tags
        if run.info.status == "RUNNING" or failed_by_stop:
            client.set_tag(run_id, names.TAG_STOPPED, reason)
            client.set_terminated(run_id, "KILLED")


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), artifact_file)
