"""Campaigns end to end on digits: run what is missing, survive SIGTERM, add an attack without retraining."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from hqcbench import names
from hqcbench.jobs.campaign import run_campaign
from hqcbench.jobs.store import absolute_paths, absolute_paths_in_artifacts

pytestmark = pytest.mark.slow

SPEC = """
name = "tiny"
threads = 1

[defaults]
attacks = "fgsm"
attack_samples = "40"
epochs = 4
width = 4

[[blocks]]
name = "fair"
datasets = ["digits"]
protocols = ["fair"]
arms = ["cnn", "control"]
seeds = [0, 1]
"""


def make_spec(folder: Path, text: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.toml"
    path.write_text(text)
    return path


def children(folder: Path) -> pd.DataFrame:
    """The campaign's child runs, one row each: run_id, status, tags.*, metrics.*."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    rows = [{"run_id": r.info.run_id, "status": r.info.status,
             **{f"tags.{k}": v for k, v in r.data.tags.items()},
             **{f"metrics.{k}": v for k, v in r.data.metrics.items()}}
            for r in client.search_runs([exp.experiment_id], max_results=1000)]
    frame = pd.DataFrame(rows)
    return frame[frame[f"tags.{names.TAG_KIND}"] == "child"]


def results(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    done = frame[frame.status == "FINISHED"]
    return {(r[f"tags.{names.TAG_ARM}"], r[f"tags.{names.TAG_SEED}"]): r["metrics.test_acc"]
            for _, r in done.iterrows()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    spec = make_spec(folder)
    todo = run_campaign(str(spec), progress=False)
    assert len(todo.trainings) == 4 and len(todo.evaluations) == 2
    return folder, spec


def test_campaign_trains_each_cell_once_and_then_has_nothing_missing(uninterrupted, capsys):
    folder, spec = uninterrupted
    frame = children(folder)
    assert len(frame) == 4 and set(frame.status) == {"FINISHED"}
    assert frame[f"tags.{names.TAG_FINGERPRINT}"].nunique() == 4
    assert frame["metrics.robust_acc_fgsm_eps_0.1"].notna().all()
    assert (frame["metrics.torch_threads"] == 1).all()
    capsys.readouterr()
    assert run_campaign(str(spec), dry_run=True, progress=False).empty
    assert capsys.readouterr().out.strip().splitlines()[-1] == "nothing missing"


def test_store_is_relative_and_holds_no_absolute_path(uninterrupted):
    folder, _ = uninterrupted
    with sqlite3.connect(folder / "mlflow.db") as db:
        locations = [r[0] for r in db.execute("SELECT artifact_location FROM experiments WHERE name = 'tiny'")]
        uris = [r[0] for r in db.execute("SELECT artifact_uri FROM runs")]
    assert locations == ["artifacts"] and all(u.startswith("artifacts/") for u in uris)
    assert absolute_paths(folder / "mlflow.db") == []
    assert absolute_paths_in_artifacts(folder) == []  # MLflow's MLmodel files included
    assert len(list((folder / "artifacts").rglob("state_dict.pt"))) == 4  # one model per training, in the folder


def test_adding_an_attack_evaluates_again_without_retraining(tmp_path, uninterrupted):
    source, _ = uninterrupted
    folder = tmp_path / "copy"
    import shutil

    shutil.copytree(source, folder)
    spec = make_spec(folder, SPEC.replace('attacks = "fgsm"', 'attacks = "fgsm,pgd"'))
    before = children(folder)
    todo = run_campaign(str(spec), progress=False)
    after = children(folder)
    assert todo.trainings == [] and len(todo.evaluations) == 2
    assert sorted(after.run_id) == sorted(before.run_id)  # no new training run
    assert after["metrics.robust_acc_pgd_eps_0.1"].notna().all()
    assert results(after) == results(before)


def test_adding_noise_to_a_spec_runs_the_noise_evaluation_alone(tmp_path, uninterrupted, capsys):
    """Noise is an evaluation kind of its own: a spec that adds it evaluates noise only; the attacks, whose
    fingerprint has not changed, are not run again (their time is logged once)."""
    source, _ = uninterrupted
    folder = tmp_path / "copy"
    import shutil

    shutil.copytree(source, folder)
    spec = make_spec(folder, SPEC.replace('attacks = "fgsm"', 'attacks = "fgsm"\nnoise = "readout:0.1"'))
    capsys.readouterr()
    todo = run_campaign(str(spec), dry_run=True, progress=False)
    planned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate")]
    assert len(todo.evaluations) == 2 and len(planned) == 2 and all("arms: noise)" in line for line in planned)
    run_campaign(str(spec), progress=False)
    after = children(folder)
    assert after[f"tags.{names.evaluation_tag('noise')}"].notna().all()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    for run_id in after.run_id:
        assert len(client.get_metric_history(run_id, "robustness_time_s")) == 1
    assert run_campaign(str(spec), dry_run=True, progress=False).empty


def _wait_for_epoch(folder: Path, timeout: float = 120.0) -> None:
    """Until some child run is RUNNING with at least one epoch logged."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (folder / "mlflow.db").exists():
            try:
                with sqlite3.connect(folder / "mlflow.db", timeout=1) as db:
                    row = db.execute("SELECT COUNT(*) FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                                     "WHERE r.status = 'RUNNING' AND m.key = 'val_acc'").fetchone()
                if row and row[0] >= 1:
                    return
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    raise AssertionError("no epoch logged in time")


def test_sigterm_then_resume_equals_an_uninterrupted_campaign(tmp_path, uninterrupted):
    folder = tmp_path / "interrupted"
    spec = make_spec(folder)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "hqcbench", "campaign", str(spec), "--progress", "false"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(folder)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped = children(folder)
    assert "RUNNING" not in set(stopped.status)
    killed = stopped[stopped.status == "KILLED"]
    assert len(killed) == 1 and killed[f"tags.{names.TAG_STOPPED}"].notna().all()

    todo = run_campaign(str(spec), progress=False)
    assert killed[f"tags.{names.TAG_FINGERPRINT}"].iloc[0] in {t.fingerprint for t in todo.trainings}
    final = children(folder)
    done = final[final.status == "FINISHED"]
    assert len(done) == 4 and done[f"tags.{names.TAG_FINGERPRINT}"].nunique() == 4  # each cell exactly once
    assert "RUNNING" not in set(final.status)
    assert results(final) == results(children(uninterrupted[0]))


def test_a_training_another_worker_took_after_planning_is_skipped(tmp_path):
    """Workers plan once; before each training the store is read again, so two workers whose plans
    overlap never train the same cell twice (one finished it, or a live one is training it)."""
    from hqcbench.jobs import store as campaign_store
    from hqcbench.jobs.campaign import plan, taken_by_another
    from hqcbench.jobs.campaign_spec import parse_spec
    from hqcbench.tracking.runs import process_tags

    spec = parse_spec(str(make_spec(tmp_path / "shared")))
    store = campaign_store.open_store(spec.store, spec.name)
    with store.inside():
        todo = plan(spec, campaign_store.child_runs(store.experiment_id))
        first, other = todo.trainings[0], todo.trainings[1]
        assert taken_by_another(store.experiment_id, first) is None
        client = mlflow.MlflowClient()
        tags = {names.TAG_KIND: "child", names.TAG_FINGERPRINT: first.fingerprint, **process_tags()}
        run = client.create_run(store.experiment_id, tags=tags)  # a live worker (this process) holds it
        assert taken_by_another(store.experiment_id, first) == "being trained by another live worker"
        assert taken_by_another(store.experiment_id, other) is None
        client.set_tag(run.info.run_id, names.TAG_PID, str(2**22 + 12345))  # its process is gone
        assert taken_by_another(store.experiment_id, first) is None
        client.set_terminated(run.info.run_id, "FINISHED")
        assert taken_by_another(store.experiment_id, first) == "finished by another worker"


def test_a_group_another_worker_evaluated_after_planning_is_not_evaluated_again(tmp_path):
    """A worker left with pending evaluations re-reads the store first: a group whose runs all carry the
    current evaluation tags (another worker evaluated it) is skipped; one missing a tag is not."""
    from hqcbench.jobs import store as campaign_store
    from hqcbench.jobs.campaign import evaluated_elsewhere, plan
    from hqcbench.jobs.campaign_spec import parse_spec
    from hqcbench.jobs.evaluate import evaluation_tags

    spec = parse_spec(str(make_spec(tmp_path / "shared")))
    store = campaign_store.open_store(spec.store, spec.name)
    with store.inside():
        todo = plan(spec, campaign_store.child_runs(store.experiment_id))
        group, members = todo.evaluations[0]
        client = mlflow.MlflowClient()
        run_ids = []
        for t in members:
            run = client.create_run(store.experiment_id, tags={names.TAG_KIND: "child",
                                                                names.TAG_FINGERPRINT: t.fingerprint})
            client.set_terminated(run.info.run_id, "FINISHED")
            run_ids.append(run.info.run_id)
        assert not evaluated_elsewhere(members, campaign_store.child_runs(store.experiment_id))  # trained only
        wanted = evaluation_tags(members[0].cfg)
        for rid in run_ids:
            for tag, value in wanted.items():
                client.set_tag(rid, tag, value)
        assert evaluated_elsewhere(members, campaign_store.child_runs(store.experiment_id))
        client.set_tag(run_ids[-1], next(iter(wanted)), "an older evaluation")
        assert not evaluated_elsewhere(members, campaign_store.child_runs(store.experiment_id))
