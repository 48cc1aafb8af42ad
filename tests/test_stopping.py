"""Stopping a job: SIGTERM and Ctrl-C end every open run KILLED with the reason, once, without a traceback.

The end-to-end tests stop a real ``python -m hqcbench run`` process on digits while its second arm
trains (the first arm's child run has FINISHED by then and must stay so). The unit tests pin down
``open_run``'s endings and nesting, and ``stopping``'s handler rules, in this process.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from hqcbench import names
from hqcbench.tracking import stopping
from hqcbench.tracking.runs import mark_failed, open_run

ROOT = Path(__file__).resolve().parents[1]
# cnn trains first and finishes; control's child is the one the signal catches (~0.1 s per epoch here)
JOB = ["--dataset", "digits", "--epochs", "30", "--attacks", "none", "--seeds", "0", "--arms", "cnn,control",
       "--device", "cpu"]


def _all_runs(client: mlflow.MlflowClient) -> list[mlflow.entities.Run]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def _wait_for_epoch(client: mlflow.MlflowClient, proc: subprocess.Popen, arm: str, timeout_s: float = 120) -> str:
    """The run id of ``arm``'s child once it has logged at least one epoch (polling the store)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the job ended before {arm} trained an epoch: {proc.communicate()}"
        try:
            for run in _all_runs(client):
                if run.data.tags.get(names.TAG_ARM) == arm and client.get_metric_history(run.info.run_id, "train_loss"):
                    return run.info.run_id
        except Exception:  # noqa: BLE001 -- the store is busy with the job's writes: ask again
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{arm} logged no epoch within {timeout_s} s")


def _stop_a_job(sig: int) -> tuple[subprocess.CompletedProcess, mlflow.MlflowClient, str, int]:
    client = mlflow.MlflowClient()
    client.search_experiments()  # create the schema now: two processes migrating one new file would race
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hqcbench", "run", *JOB], env=env, cwd=os.getcwd(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _wait_for_epoch(client, proc, "control")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), client, victim, proc.pid


def _check_stopped(result: subprocess.CompletedProcess, client: mlflow.MlflowClient, victim: str, pid: int,
                   exit_code: int, reason: str, label: str) -> None:
    assert result.returncode == exit_code, result.stderr[-3000:]
    stop_lines = [line for line in result.stderr.splitlines() if line.startswith("hqcbench: stopped")]
    assert stop_lines == [f"hqcbench: stopped by {label}; open runs marked KILLED"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    runs = {run.info.run_id: run for run in _all_runs(client)}
    assert [r.info.status for r in runs.values() if r.info.status == "RUNNING"] == []
    killed = runs[victim]
    assert killed.info.status == "KILLED" and killed.data.tags[names.TAG_STOPPED] == reason
    assert names.TAG_ERROR not in killed.data.tags
    parent = runs[killed.data.tags["mlflow.parentRunId"]]
    assert parent.info.status == "KILLED" and parent.data.tags[names.TAG_STOPPED] == reason
    (finished,) = [r for r in runs.values() if r.data.tags.get(names.TAG_ARM) == "cnn"]
    assert finished.info.status == "FINISHED"
    assert names.TAG_STOPPED not in finished.data.tags and finished.data.metrics["test_acc"] > 0
    for run in (parent, killed, finished):  # which process trained it: host, pid and its start time
        tags = run.data.tags
        assert tags[names.TAG_HOST] == socket.gethostname() and tags[names.TAG_PID] == str(pid)
        assert float(tags[names.TAG_PID_START]) <= killed.info.start_time / 1000


@pytest.mark.slow
def test_sigterm_ends_open_runs_killed(mlflow_store):
    result, client, victim, pid = _stop_a_job(signal.SIGTERM)
    _check_stopped(result, client, victim, pid, 143, "SIGTERM received", "SIGTERM")


@pytest.mark.slow
def test_ctrl_c_ends_open_runs_killed(mlflow_store):
    result, client, victim, pid = _stop_a_job(signal.SIGINT)
    _check_stopped(result, client, victim, pid, 130, "Ctrl-C (SIGINT)", "Ctrl-C (SIGINT)")


@pytest.mark.slow
def test_ctrl_c_to_mlflow_run_ends_the_project_run_killed(mlflow_store):
    """Ctrl-C reaches `mlflow run` and the job (one process group). Left alone, `mlflow run` would
    overwrite the KILLED project run with FAILED once the job exits; the job ends it first."""
    client = mlflow.MlflowClient()
    client.search_experiments()
    params = [arg for flag, value in zip(JOB[::2], JOB[1::2]) for arg in ("-P", f"{flag[2:]}={value}")]
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", *params],
                            env=env, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            process_group=0)  # its own process group, like a job started from a shell
    victim = _wait_for_epoch(client, proc, "control")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("hqcbench: stopped")] == [
        "hqcbench: stopped by Ctrl-C (SIGINT); open runs marked KILLED"], err[-3000:]
    runs = {run.info.run_id: run for run in _all_runs(client)}
    assert [r.info.status for r in runs.values() if r.info.status == "RUNNING"] == []
    project = runs[runs[victim].data.tags["mlflow.parentRunId"]]
    assert "mlflow.project.entryPoint" in project.data.tags  # the run `mlflow run` created
    for run in (runs[victim], project):
        assert run.info.status == "KILLED" and run.data.tags[names.TAG_STOPPED] == "Ctrl-C (SIGINT)"


# ------------------------------------------------------------------------------------- open_run itself
def _run(run_id: str) -> mlflow.entities.Run:
    return mlflow.MlflowClient().get_run(run_id)


def test_open_run_nesting_and_endings(mlflow_store):
    with open_run(run_name="outer") as outer:
        with pytest.raises(ValueError):
            with open_run(run_name="inner", nested=True) as inner:
                raise ValueError("boom")
        assert mlflow.active_run().info.run_id == outer.info.run_id  # the inner one is off the stack
    inner_run, outer_run = _run(inner.info.run_id), _run(outer.info.run_id)
    assert inner_run.info.status == "FAILED" and inner_run.data.tags[names.TAG_ERROR] == "ValueError: boom"
    assert inner_run.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert outer_run.info.status == "FINISHED" and names.TAG_ERROR not in outer_run.data.tags  # it handled it
    assert outer_run.data.tags[names.TAG_PID] == str(os.getpid())

    with pytest.raises(RuntimeError):  # not handled: both fail, innermost first, each with the reason
        with open_run(run_name="outer2") as outer2:
            with open_run(run_name="inner2", nested=True) as inner2:
                raise RuntimeError("disk full")
    for run in (inner2, outer2):
        got = _run(run.info.run_id)
        assert got.info.status == "FAILED" and got.data.tags[names.TAG_ERROR] == "RuntimeError: disk full"
    assert mlflow.active_run() is None

    with pytest.raises(stopping.Stopped):  # a stop: both KILLED with the reason, no error tag
        with open_run(run_name="outer3") as outer3:
            with open_run(run_name="inner3", nested=True) as inner3:
                raise stopping.Stopped(signal.SIGTERM)
    for run in (inner3, outer3):
        got = _run(run.info.run_id)
        assert got.info.status == "KILLED" and got.data.tags[names.TAG_STOPPED] == "SIGTERM received"
        assert names.TAG_ERROR not in got.data.tags

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C outside the stopping context: KILLED too
        with open_run(run_name="ctrl-c") as ctrl_c:
            raise KeyboardInterrupt
    assert _run(ctrl_c.info.run_id).info.status == "KILLED"
    assert _run(ctrl_c.info.run_id).data.tags[names.TAG_STOPPED] == "Ctrl-C (SIGINT)"


def test_a_finished_run_is_never_changed(mlflow_store):
    with open_run(run_name="done") as done:
        pass
    before = _run(done.info.run_id)
    with pytest.raises(stopping.Stopped):  # reopened to log more (like a child's evaluation), then stopped
        with open_run(run_id=done.info.run_id, nested=True):
            mlflow.log_metric("late", 1.0)
            raise stopping.Stopped(signal.SIGTERM)
    after = _run(done.info.run_id)
    assert after.info.status == "FINISHED" and after.data.tags == before.data.tags
    mark_failed(done.info.run_id, "a later process thought it dead")  # ended runs keep their status
    assert _run(done.info.run_id).info.status == "FINISHED"
    assert names.TAG_ERROR not in _run(done.info.run_id).data.tags


# ------------------------------------------------------------------------------------- the signal rules
def test_signals_raise_once_defer_in_critical_and_restore():
    before = {sig: signal.getsignal(sig) for sig in stopping.HANDLED}
    reached = []
    with pytest.raises(stopping.Stopped) as caught:
        with stopping.stop_on_signals():
            with stopping.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # delivered here, held until the block ends
                reached.append("end of critical block")
            reached.append("after")  # never: the held stop is raised at the block's end
    assert reached == ["end of critical block"]
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_code == 143
    assert {sig: signal.getsignal(sig) for sig in stopping.HANDLED} == before

    with pytest.raises(stopping.Stopped) as caught:
        with stopping.stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            finally:  # cleanup after the first stop: a second signal is ignored, not raised into it
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                reached.append("cleanup done")
    assert caught.value.signum == signal.SIGINT and caught.value.exit_code == 130
    assert reached[-1] == "cleanup done"

    with pytest.raises(stopping.Stopped) as caught:  # a KeyboardInterrupt raised anyway is the SIGINT case
        with stopping.stop_on_signals():
            raise KeyboardInterrupt
    assert caught.value.signum == signal.SIGINT
