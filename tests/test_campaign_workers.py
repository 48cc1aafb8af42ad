"""Several campaign workers on one store, as the docs suggest (one per core): real processes, started
together on a new store, must all open it, and must train each cell exactly once.

The processes run the real store opening and the real claim (``campaign.claimed_run``); only the
training inside a claimed run is a short sleep, so the race is what is measured, not the training.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from pathlib import Path

import mlflow
import pytest

from hqcbench import names

pytestmark = pytest.mark.slow

WORKERS = 2
SPEC = """
name = "race"
threads = 1

[defaults]
epochs = 1

[[blocks]]
name = "fair"
datasets = ["digits"]
protocols = ["fair"]
arms = ["cnn", "control"]
seeds = [0, 1, 2]
"""


def _worker(folder: str, index: int, barrier, training_s: float) -> None:
    """One worker: open the (new) store when all are ready, plan, wait for the others to have planned
    the same cells, then claim and "train" each; writes what it trained to ``worker<index>.json``."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(key, None)
    out = Path(folder) / f"worker{index}.json"
    try:
        from hqcbench.jobs import store as campaign_store
        from hqcbench.jobs.campaign import claimed_run, plan
        from hqcbench.jobs.campaign_spec import parse_spec

        spec = parse_spec(Path(folder) / "campaign.toml")
        barrier.wait(timeout=120)  # every process imported: open the new store at the same moment
        store = campaign_store.open_store(spec.store, spec.name)
        trained = []
        with store.inside():
            todo = plan(spec, campaign_store.child_runs(store.experiment_id))
            barrier.wait(timeout=120)  # every worker planned every cell: they all race for each one
            for t in todo.trainings:
                tags = {names.TAG_KIND: "child", names.TAG_FINGERPRINT: t.fingerprint}
                with claimed_run(store, t, tags) as taken:
                    if taken:
                        continue
                    time.sleep(training_s)
                    mlflow.log_metric("test_acc", 0.5)
                    trained.append(t.fingerprint)
        out.write_text(json.dumps({"planned": len(todo.trainings), "trained": trained}))
    except BaseException:
        out.write_text(json.dumps({"error": traceback.format_exc()}))
        raise


def _race(folder: Path, training_s: float = 0.05) -> list[dict]:
    """Start ``WORKERS`` spawned processes on the store in ``folder``; their reports."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(str(folder), i, barrier, training_s)) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
    reports = [json.loads((folder / f"worker{i}.json").read_text()) if (folder / f"worker{i}.json").exists()
               else {"error": "no report"} for i in range(WORKERS)]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    errors = [r["error"] for r in reports if "error" in r]
    assert not errors, errors[0][-3000:]
    assert [p.exitcode for p in procs] == [0] * WORKERS
    return reports


@pytest.fixture(scope="module")
def raced(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("race")
    (folder / "campaign.toml").write_text(SPEC)
    return folder, _race(folder)


def test_workers_started_together_on_a_new_store_all_open_it(raced):
    """MLflow's schema migration of a new database runs once, under the store's lock; the others wait
    and open the migrated store (without the lock: "duplicate column name: step")."""
    folder, reports = raced
    assert all(r["planned"] == 6 for r in reports)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name == "race"]
    assert len(experiments) == 1  # one experiment, not one per worker
    run = client.create_run(experiments[0].experiment_id)  # the store is usable afterwards
    client.set_terminated(run.info.run_id, "FINISHED")


def test_workers_racing_for_the_same_cells_train_each_exactly_once(raced):
    folder, reports = raced
    trained = [fp for r in reports for fp in r["trained"]]
    assert len(trained) == 6 and len(set(trained)) == 6
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id], f"tags.{names.TAG_KIND} = 'child'", max_results=100)
    assert sorted(r.data.tags[names.TAG_FINGERPRINT] for r in runs) == sorted(trained)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags[names.TAG_PID] for r in runs)  # the claim carries its process, for reaping


def test_the_store_lock_stays_out_of_git():
    """The lock file sits beside a committed store; it must not show up as something to commit."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "reports/mnist/mlflow.db.lock"], cwd=root)
    assert result.returncode == 0
