"""The tune job: bad input, search space, MLflow layout, pruning, budget under concurrency, kill + resume.

Everything trains for real on scikit-learn's digits with tiny budgets (200 images, 1-2 epochs, 2-4
channel backbones, 2-3 qubits). The multi-worker tests start real worker processes released together
by a file barrier after their imports; the PostgreSQL one needs HQCBENCH_TEST_POSTGRES_URL (CI's
.ci/run starts a server and sets HQCBENCH_REQUIRE_SERVICES=1, which turns a skip into a failure).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hqcbench import cli, names
from hqcbench.config import TUNE_DEFAULTS, TUNE_TYPES, TuneConfig
from hqcbench.errors import UserInputError
from hqcbench.jobs import tune as tuning
from hqcbench.jobs import tune_space, tune_storage
from hqcbench.resources import ResourceMonitor

ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

# A worker: import everything, say "ready", wait for "go" (the barrier), then run the tune CLI.
# With --die-on-trial K it SIGKILLs itself after the first epoch of its K-th trial, like a preempted
# machine (no Python cleanup: the trial stays RUNNING in the storage until its heartbeat goes stale).
WORKER = r"""
import os, signal, sys, time
ready, go, die_on = sys.argv[1], sys.argv[2], int(sys.argv[3])
import hqcbench.training.loop as train
from hqcbench import cli
from hqcbench.jobs import run as runner
from hqcbench.jobs import tune as tuning  # noqa: F401  (imports happen before the barrier)
real_fit, calls = train.fit, []
def fit(*args, **kwargs):
    calls.append(1)
    if len(calls) == die_on:
        report = kwargs["on_epoch"]
        def die(epoch, metrics, model):
            report(epoch, metrics, model)
            os.kill(os.getpid(), signal.SIGKILL)
        kwargs["on_epoch"] = die
    return real_fit(*args, **kwargs)
train.fit = fit
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.02)
sys.exit(cli.main(sys.argv[4:]))
"""


def tiny(storage: str, **changes) -> dict[str, str]:
    """The smallest honest study: real training, seconds per trial."""
    values = {"dataset": "digits", "arms": "hybrid", "n_trials": 3, "epochs": 1, "batch_size": 64,
              "width_min": 2, "width_max": 4, "qubits_min": 2, "qubits_max": 3, "depth_min": 1, "depth_max": 2,
              "train_limit": 200, "attacks": "none", "retrain": "never", "storage": storage,
              "study_name": f"t{uuid.uuid4().hex[:8]}", "device": "cpu"}
    values.update(changes)
    return {k: str(v) for k, v in values.items()}


def argv(values: dict[str, str]) -> list[str]:
    return ["tune"] + [item for k, v in values.items() for item in (f"--{k}", v)]


def config(values: dict[str, str]) -> TuneConfig:
    return TuneConfig.from_strings(values).validate()


def load(values: dict[str, str], arm: str = "hybrid") -> optuna.Study:
    cfg = config(values)
    return optuna.load_study(study_name=cfg.study_name_for(arm), storage=tune_storage.check_storage(cfg.storage)
                             .render_as_string(hide_password=False))


def runs(kind: str) -> list:
    client = mlflow.MlflowClient()
    return client.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]], filter_string=f"tags.`{names.TAG_KIND}` = '{kind}'",
                              max_results=1000)


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory) -> str:
    """One MLflow SQLite store for this module: its schema migrations cost ~2-5 s, paid once."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture()
def tune_store(tracking_db, tmp_path, monkeypatch) -> str:
    """A fresh experiment (artifacts under tmp_path) in the module's store, for this process and its workers."""
    client = mlflow.MlflowClient(tracking_uri=tracking_db)
    experiment = client.create_experiment(f"tune-{uuid.uuid4().hex}", artifact_location=(tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(tracking_db)
    yield experiment
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("changes, parameter", [
    ({"qubits_min": 5, "qubits_max": 3}, "qubits_min"),
    ({"depth_min": 4, "depth_max": 2}, "depth_min"),
    ({"lr_min": 0.1, "lr_max": 0.01}, "lr_min"),
    ({"width_min": 0}, "width_min"),
    ({"qubits_max": 21}, "qubits_max"),
    ({"encodings": ""}, "encodings"),
    ({"ansatzes": "strong,wavy"}, "ansatzes"),
    ({"n_trials": 0}, "n_trials"),
    ({"n_trials": "many"}, "n_trials"),
    ({"protocol": "paper", "dataset": "mnist"}, "protocol"),
    ({"arms": "hybrid,quantum"}, "arms"),
    ({"storage": "not a url"}, "storage"),
    ({"storage": "sqlite:////no/such/folder/optuna.db"}, "storage"),
    ({"storage": "sqlite:///:memory:"}, "storage"),
    ({"storage": "mysql://u:p@127.0.0.1:1/db"}, "storage"),
    ({"storage": "postgresql://u:p@127.0.0.1:1/db"}, "storage"),  # nothing listens on port 1
])
def test_bad_input_exits_2_naming_the_parameter_and_writes_nothing(tmp_path, monkeypatch, capsys, changes,
                                                                   parameter):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    values = tiny(f"sqlite:///{tmp_path / 'optuna.db'}")
    values.update({k: str(v) for k, v in changes.items()})
    assert cli.main(argv(values)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hqcbench: error: {parameter}:"), err
    assert "allowed:" in err[0]
    assert "u:p@" not in err[0]  # never echo a password
    assert not (tmp_path / "optuna.db").exists()  # nothing written anywhere
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


# ----------------------------------------------------------------------------- search space
@pytest.mark.parametrize("arm, keys", [
    ("cnn", {"width", "lr"}),
    ("control", {"width", "lr", "n_qubits"}),
    ("hybrid", {"width", "lr", "n_qubits", "depth", "encoding", "ansatz"}),
])
def test_search_space_per_arm_stays_inside_the_ranges(arm, keys):
    cfg = TuneConfig(qubits_min=3, qubits_max=5, depth_min=2, depth_max=4, width_min=4, width_max=8,
                     lr_min=1e-3, lr_max=2e-3, encodings="amplitude", ansatzes="basic,strong").validate()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        params = tune_space.suggest(study.ask(), arm, cfg)
        assert set(params) == keys
        cfg.base_config().replace(**params).validate()  # every point is a valid main-run config
        assert 4 <= params["width"] <= 8 and 1e-3 <= params["lr"] <= 2e-3
        if "n_qubits" in params:
            assert 3 <= params["n_qubits"] <= 5
        if arm == "hybrid":
            assert 2 <= params["depth"] <= 4 and params["encoding"] == "amplitude"
            assert params["ansatz"] in ("basic", "strong")
        seen.append(params)
    if arm != "cnn":
        assert {p["n_qubits"] for p in seen} == {3, 4, 5}


def test_mlproject_tune_entry_matches_the_cli_flags():
    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["tune"]
    kinds = {int: "int", float: "float", str: "string"}
    assert list(entry["parameters"]) == list(TUNE_DEFAULTS)
    for name, spec in entry["parameters"].items():
        assert spec["type"] == kinds[TUNE_TYPES[name]], name
        assert str(spec["default"]) == str(TUNE_DEFAULTS[name]), name
        assert f"--{name} {{{name}}}" in entry["command"], name
    assert entry["command"].startswith("python -m hqcbench tune ")
    parser = cli.build_parser()
    tune = parser._subparsers._group_actions[0].choices["tune"]
    flags = [a.option_strings[0][2:] for a in tune._actions if a.option_strings and a.option_strings[0] != "-h"]
    assert flags == list(entry["parameters"])


# ----------------------------------------------------------------------------- one worker, in process
def test_tune_logs_trials_as_children_retrains_the_best_and_resumes(tune_store, tmp_path):
    values = tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn,hybrid", retrain="auto")
    result = tuning.run_tune(config(values))
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[names.TAG_KIND] == "tune"

    trials = runs("trial")
    assert len(trials) == 6
    for arm in ("cnn", "hybrid"):
        study = load(values, arm)
        assert [t.state in FINISHED for t in study.trials] == [True] * 3
        assert result.ran_here[arm] == [0, 1, 2]
        by_number = {int(r.data.tags[names.TAG_TRIAL]): r for r in trials if r.data.tags[names.TAG_ARM] == arm}
        assert sorted(by_number) == [0, 1, 2]
        for trial in study.trials:
            run = by_number[trial.number]
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.data.tags[names.TAG_STUDY] == study.study_name
            assert run.data.tags[names.TAG_TRIAL_STATE] == trial.state.name.lower()
            assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
            for name, value in trial.params.items():  # the trial's config is the run's params
                assert run.data.params[name] == str(value)
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert [m.step for m in history] == sorted(trial.intermediate_values)
            assert [m.value for m in history] == [trial.intermediate_values[m.step] for m in history]
            if trial.state == TrialState.COMPLETE:
                assert run.data.metrics["best_val_acc"] == pytest.approx(trial.value)
                assert "test_acc" not in run.data.metrics  # trials never see the test set
        assert parent.data.metrics[f"tune_best_val_acc_{arm}"] == pytest.approx(study.best_value)
        for name, value in study.best_params.items():
            assert parent.data.params[f"best_{arm}_{name}"] == str(value)
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning/hybrid")}
    assert {"tuning/hybrid/optimization_history.png", "tuning/hybrid/param_importances.png",
            "tuning/hybrid/contour_n_qubits_depth.png", "tuning/hybrid/trials.csv"} <= files
    assert "tuning/cnn/optimization_history.png" in {a.path for a in client.list_artifacts(parent.info.run_id,
                                                                                          "tuning/cnn")}

    # the retrain: one child per (arm, seed), like a main run, with the best trial's params
    children = runs("child")
    assert sorted(r.data.tags[names.TAG_ARM] for r in children) == ["cnn", "hybrid"]
    for child in children:
        arm = child.data.tags[names.TAG_ARM]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert 0.0 <= child.data.metrics["test_acc"] <= 1.0
        for name, value in load(values, arm).best_params.items():
            assert child.data.params[name] == str(value)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"comparison.csv", "config.json"}

    # the same command again: a finished study runs no trial and is not retrained twice
    again = tuning.run_tune(config(values))
    assert again.ran_here == {"cnn": [], "hybrid": []} and not again.retrained
    assert "already retrained" in again.retrain_note
    assert len(runs("trial")) == 6 and len(runs("child")) == 2

    # a larger budget continues the same studies: only the missing trial runs
    more = tuning.run_tune(config({**values, "n_trials": "4", "retrain": "never"}))
    assert more.ran_here == {"cnn": [3], "hybrid": [3]}
    assert len(load(values, "hybrid").trials) == 4

    # other settings on the same study name: one clear error, nothing written
    with pytest.raises(UserInputError) as err:
        tuning.run_tune(config({**values, "epochs": "3", "n_trials": "5"}))
    assert err.value.parameter == "epochs"
    assert len(load(values, "hybrid").trials) == 4 and len(runs("trial")) == 8


def test_pruned_and_failed_trials_are_recorded_with_their_state(tune_store, tmp_path, monkeypatch):
    import hqcbench.models.arms

    real_build, calls = hqcbench.models.arms.build_model, []

    def build_model(*args, **kwargs):  # the first trial's model cannot be built
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated: out of memory")
        return real_build(*args, **kwargs)

    monkeypatch.setattr(hqcbench.models.arms, "build_model", build_model)
    values = tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn", epochs=3)
    # a real Optuna pruner that prunes every trial at its first report (val_acc is never > 1)
    with pytest.raises(RuntimeError, match="no trial of cnn completed"):
        tuning.run_tune(config(values), pruner=optuna.pruners.ThresholdPruner(upper=1.01, lower=1.0))
    study = load(values, "cnn")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.PRUNED, TrialState.PRUNED]
    client = mlflow.MlflowClient()
    by_number = {int(r.data.tags[names.TAG_TRIAL]): r for r in runs("trial")}
    assert by_number[0].info.status == "FAILED"
    assert by_number[0].data.tags[names.TAG_TRIAL_STATE] == "failed"
    assert "simulated: out of memory" in by_number[0].data.tags[names.TAG_ERROR]
    for number in (1, 2):
        run = by_number[number]
        assert run.info.status == "FINISHED" and run.data.tags[names.TAG_TRIAL_STATE] == "pruned"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1]  # stopped at epoch 1
        assert list(study.trials[number].intermediate_values) == [1]


def test_trials_measure_on_the_job_device_and_the_monitor_is_closed(tune_store, tmp_path, monkeypatch):
    opened = []

    class Recording(ResourceMonitor):
        def __init__(self, device=None, *args, **kwargs):  # None: built without the job's device
            super().__init__(device, *args, **kwargs)
            self.device, self.closed = device, False
            opened.append(self)

        def close(self) -> None:
            self.closed = True
            super().close()

    monkeypatch.setattr(tuning, "ResourceMonitor", Recording)
    tuning.run_tune(config(tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn", n_trials=1)))
    assert [(str(m.device), m.closed) for m in opened] == [("cpu", True)]  # one per job, on --device
    (trial,) = runs("trial")
    assert names.TAG_NVML in trial.data.tags and names.TAG_CPU_COUNT_PHYSICAL in trial.data.tags  # machine tags


def test_trials_and_the_retrain_carry_the_training_version(tune_store, tmp_path):
    from hqcbench.jobs.fingerprint import TRAINING_VERSION

    tuning.run_tune(config(tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn", n_trials=1, retrain="auto")))
    trained = runs("trial") + runs("child")
    assert [r.data.tags[names.TAG_KIND] for r in trained] == ["trial", "child"]
    assert {r.data.tags[names.TAG_TRAINING_VERSION] for r in trained} == {str(TRAINING_VERSION)}


def test_retrain_is_claimed_once_per_study_state(tmp_path):
    cfg = config(tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn,control"))
    url = tune_storage.check_storage(cfg.storage)
    lock = tune_storage.StorageLock(url)
    with lock():
        studies = tune_storage.open_studies(tune_storage.open_storage(url, cfg), cfg, tune_space.make_pruner())

    def add(arm: str, state=TrialState.COMPLETE) -> None:
        dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
        studies[arm].add_trial(optuna.trial.create_trial(state=state, params={"lr": 1e-3}, distributions=dist,
                                                         value=0.5 if state == TrialState.COMPLETE else None))

    add("cnn"), add("control")
    assert tuning.claim_retrain(studies, lock, "never", "run-a")[0] is False
    assert tuning.claim_retrain(studies, lock, "auto", "run-a") == (True, "claimed")
    done, note = tuning.claim_retrain(studies, lock, "auto", "run-b")
    assert not done and "run-a" in note
    assert tuning.claim_retrain(studies, lock, "always", "run-c")[0] is True
    add("control")  # the study moved on: the next worker that sees it finished retrains again
    assert tuning.claim_retrain(studies, lock, "auto", "run-d")[0] is True
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); fine here
        warnings.simplefilter("ignore", UserWarning)
        studies["cnn"].ask()  # a trial still running somewhere: nobody claims
    done, note = tuning.claim_retrain(studies, lock, "auto", "run-e")
    assert not done and "running" in note
    assert not lock.held


def test_budget_counts_every_finished_state_and_the_deadline_stops_new_trials(tmp_path):
    cfg = config(tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn"))
    url = tune_storage.check_storage(cfg.storage)
    lock = tune_storage.StorageLock(url)
    with lock():
        study = tune_storage.open_studies(tune_storage.open_storage(url, cfg), cfg, tune_space.make_pruner())["cnn"]
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for state, value in ((TrialState.COMPLETE, 0.5), (TrialState.PRUNED, None), (TrialState.FAIL, None)):
        study.add_trial(optuna.trial.create_trial(state=state, params={"lr": 1e-3}, distributions=dist, value=value))

    def objective(trial: optuna.Trial) -> float:
        assert lock.held  # the count and the new trial happened under the lock
        lock.release()
        return trial.suggest_float("lr", 1e-4, 1e-2, log=True)

    assert tuning.run_trials(study, objective, lock, 5, 0, deadline=None) == 2  # 3 finished already count
    assert tuning.run_trials(study, objective, lock, 5, 0, deadline=None) == 0
    assert len(study.trials) == 5 and not lock.held
    assert tuning.run_trials(study, objective, lock, 9, 0, deadline=time.monotonic() - 1) == 0  # past deadline
    assert len(study.trials) == 5


# ----------------------------------------------------------------------------- several workers
def start_workers(tmp_path: Path, values: dict[str, str], n: int, die_on: int = 0) -> list[subprocess.Popen]:
    """n worker processes, released together once all have imported everything."""
    go = tmp_path / f"go-{uuid.uuid4().hex}"
    procs, ready = [], []
    for i in range(n):
        flag = tmp_path / f"ready-{i}-{uuid.uuid4().hex}"
        ready.append(flag)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(flag), str(go), str(die_on), *argv(values)],
                                      cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 120
    while not all(f.exists() for f in ready):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.05)
    go.touch()
    return procs


def check_two_workers_share_one_budget(tmp_path: Path, storage: str, retrain: str) -> None:
    values = tiny(storage, n_trials=6, retrain=retrain, heartbeat_s=10)
    procs = start_workers(tmp_path, values, 2)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-4000:] for o in outputs)

    trials = load(values).trials
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))  # none lost or duplicated
    assert all(t.state in FINISHED for t in trials)  # none left running or waiting
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # workers never drew the same point
    trial_runs = runs("trial")
    assert sorted(int(r.data.tags[names.TAG_TRIAL]) for r in trial_runs) == list(range(6))
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    assert len(runs("tune")) == 2
    if retrain == "auto":
        assert len(runs("child")) == 1  # exactly one worker retrained (1 arm x 1 seed)


def test_two_workers_share_one_sqlite_study(tune_store, tmp_path):
    check_two_workers_share_one_budget(tmp_path, f"sqlite:///{tmp_path / 'optuna.db'}", retrain="auto")


@pytest.mark.postgres
def test_two_workers_share_one_postgresql_study(tune_store, tmp_path):
    url = os.environ.get("HQCBENCH_TEST_POSTGRES_URL", "")
    required = os.environ.get("HQCBENCH_REQUIRE_SERVICES") == "1"
    try:
        if not url:
            raise UserInputError("storage", "HQCBENCH_TEST_POSTGRES_URL is not set")
        tune_storage.check_storage(url)
    except UserInputError as exc:
        if required:
            pytest.fail(f"PostgreSQL required in CI but unavailable: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    check_two_workers_share_one_budget(tmp_path, url, retrain="never")  # the retrain claim: sqlite test


def test_killed_worker_trial_is_failed_then_retried_on_resume(tune_store, tmp_path):
    values = tiny(f"sqlite:///{tmp_path / 'optuna.db'}", arms="cnn", heartbeat_s=1)
    (proc,) = start_workers(tmp_path, values, 1, die_on=2)  # dies in its second trial
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == -9, out[-4000:]
    study = load(values, "cnn")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]

    time.sleep(3 * 1 + 1.5)  # grace period (3 heartbeats) and a margin
    result = tuning.run_tune(config(values))  # the same command again
    trials = load(values, "cnn").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert result.ran_here["cnn"] == [2]  # only what was missing
    retry = trials[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 1
    assert retry.params == trials[1].params
    killed_run = mlflow.MlflowClient().get_run(trials[1].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags[names.TAG_TRIAL_STATE] == "failed"
    retry_run = mlflow.MlflowClient().get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["hqcbench.retry_of_trial"] == "1"
