"""The shared tracking server (scripts/tracking_server.sh): what several machines rely on, tested for real.

Workers on other machines see only HTTP: runs and metrics must reach the server's PostgreSQL store and
artifacts must travel through the server (``--artifacts-destination``), since no worker shares its
disk. So the module starts the script on a free loopback port against a fresh PostgreSQL database
(MLflow's alembic tables cannot share a database with Optuna's, both keep a migration table) and runs
the real CLI in subprocesses: the main job, two tune workers sharing one Optuna study, and a report
read back from the server. The database comes from HQCBENCH_TEST_POSTGRES_URL, whose role needs
CREATEDB (.ci/run grants it); without it the server tests skip, unless HQCBENCH_REQUIRE_SERVICES=1
(CI), where they fail. The script's own argument checks need no server and always run.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import sqlalchemy

from hqcbench import names
from tests.test_tuning import load, start_workers, tiny

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tracking_server.sh"
# the main job at its smallest honest size: real training of every arm, seconds each
RUN_FLAGS = ["--epochs", "1", "--train_limit", "200", "--width", "4", "--attacks", "none", "--device", "cpu",
             "--threads", "1"]
SERVER_ENV = ("HQCBENCH_MLFLOW_DB_URL", "HQCBENCH_MLFLOW_ARTIFACTS", "HQCBENCH_MLFLOW_HOST", "HQCBENCH_MLFLOW_PORT",
              "HQCBENCH_MLFLOW_WORKERS", "HQCBENCH_MLFLOW_AUTH", "MLFLOW_FLASK_SERVER_SECRET_KEY")


# ----------------------------------------------------------------------------- the script's checks
def script(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    return subprocess.run(["bash", str(SCRIPT), *args], env={**clean, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=30)


@pytest.fixture()
def fake_mlflow(tmp_path) -> dict[str, str]:
    """An `mlflow` first on PATH that prints what it was exec'ed with: the script's command line, no server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mlflow"
    fake.write_text('#!/bin/sh\n'
                    'echo "exec: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$MLFLOW_SERVER_ENABLE_JOB_EXECUTION $*"\n')
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_script_help_names_every_option():
    done = script("--help")
    assert done.returncode == 0
    for option in ("--db-url", "--artifacts", "--host", "--port", "--workers", "--auth", "HQCBENCH_MLFLOW_DB_URL"):
        assert option in done.stdout, option


@pytest.mark.parametrize("args, env, says", [
    ((), {}, "no backend store: set HQCBENCH_MLFLOW_DB_URL"),
    (("--db-url", "sqlite:///mlflow.db"), {}, "must be a postgresql:// URL"),
    (("--host", "0.0.0.0"), {"HQCBENCH_MLFLOW_DB_URL": "postgresql://u:p@db/mlflow"},
     "refusing to listen on 0.0.0.0 without authentication"),
    (("--host", "10.0.0.5", "--auth", "basic"), {"HQCBENCH_MLFLOW_DB_URL": "postgresql://u:p@db/mlflow"},
     "needs MLFLOW_FLASK_SERVER_SECRET_KEY"),
    (("--db-url", "postgresql://u:p@db/mlflow", "--port", "70000"), {}, "--port must be 1..65535"),
    (("--db-url", "postgresql://u:p@db/mlflow", "--auth", "yes"), {}, "--auth must be none, basic or proxy"),
    (("--listen",), {}, "unknown option --listen"),
])
def test_script_refuses_bad_input_with_one_line_and_exit_2(args, env, says):
    done = script(*args, **env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_script_starts_a_proxying_postgresql_server_on_loopback(fake_mlflow, tmp_path):
    done = script("--db-url", "postgresql://u:pw@db:5432/mlflow", "--artifacts", "store", cwd=tmp_path, **fake_mlflow)
    assert done.returncode == 0, done.stderr
    banner, *_, command = done.stdout.splitlines()
    assert "u:***@db:5432/mlflow" in banner and "pw" not in banner  # the password is never printed
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in done.stdout
    assert command == ("exec: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false server --backend-store-uri "
                       "postgresql+psycopg2://u:pw@db:5432/mlflow --serve-artifacts --artifacts-destination "
                       f"{tmp_path / 'store'} --host 127.0.0.1 --port 5000 --workers 4")
    assert (tmp_path / "store").is_dir()


def test_script_listens_beyond_loopback_only_behind_authentication(fake_mlflow, tmp_path):
    basic = script("--host", "0.0.0.0", "--port", "5001", "--auth", "basic", "--",
                   "--allowed-hosts", "mlflow.example.org",
                   cwd=tmp_path, HQCBENCH_MLFLOW_DB_URL="postgresql://u:pw@db/mlflow",
                   MLFLOW_FLASK_SERVER_SECRET_KEY="k", **fake_mlflow)
    assert basic.returncode == 0, basic.stderr
    assert basic.stdout.splitlines()[-1].endswith(
        "--host 0.0.0.0 --port 5001 --workers 4 --app-name basic-auth --allowed-hosts mlflow.example.org")
    # every interface: workers are told this machine's name, never 0.0.0.0
    assert re.search(r"^export MLFLOW_TRACKING_URI=http://(?!0\.0\.0\.0)[\w.-]+:5001$", basic.stdout, re.M)
    proxy = script("--host", "10.1.2.3", "--auth", "proxy", cwd=tmp_path,
                   HQCBENCH_MLFLOW_DB_URL="postgresql://u:pw@db/mlflow", **fake_mlflow)
    assert proxy.returncode == 0, proxy.stderr
    assert "--host 10.1.2.3 " in proxy.stdout and "--app-name" not in proxy.stdout
    assert "the reverse proxy's address" in proxy.stdout


# ----------------------------------------------------------------------------- the server
def postgres_or_skip() -> str:
    """HQCBENCH_TEST_POSTGRES_URL when a server answers there; else skip (fail in CI)."""
    url = os.environ.get("HQCBENCH_TEST_POSTGRES_URL", "")
    reason = "HQCBENCH_TEST_POSTGRES_URL is not set"
    if url:
        try:
            with admin_engine(url).connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return url
        except sqlalchemy.exc.SQLAlchemyError as exc:
            reason = f"cannot connect: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}"
    unavailable(f"no PostgreSQL server: {reason}")


def unavailable(reason: str):
    if os.environ.get("HQCBENCH_REQUIRE_SERVICES") == "1":
        pytest.fail(f"PostgreSQL required in CI but unavailable: {reason}")
    pytest.skip(reason)


def admin_engine(url: str, database: str | None = None) -> sqlalchemy.engine.Engine:
    # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3; hqcbench ships psycopg2.
    # AUTOCOMMIT: CREATE / DROP DATABASE cannot run inside a transaction.
    parsed = sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg2")
    if database:
        parsed = parsed.set(database=database)
    return sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT",
                                    connect_args={"connect_timeout": 10})


@pytest.fixture(scope="module")
def backend_db() -> str:
    """A fresh database for MLflow's tables, dropped afterwards (with any connection still open)."""
    url = postgres_or_skip()
    name = f"hqcbench_mlflow_test_{uuid.uuid4().hex[:12]}"
    engine = admin_engine(url)
    refused = ""
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.ProgrammingError as exc:
        refused = str(exc.orig).strip().splitlines()[0]
    if refused:  # outside the except: the skip or failure is one line, not a chained traceback
        unavailable(f"cannot create a database ({refused}); grant it with "
                    f"ALTER ROLE {sqlalchemy.engine.make_url(url).username} CREATEDB (.ci/run does)")
    try:
        yield sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Server:
    uri: str
    artifacts: Path  # the server's --artifacts-destination


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(backend_db, tmp_path_factory) -> Server:
    """scripts/tracking_server.sh on a free port, in its own process group (stopped as a whole)."""
    folder = tmp_path_factory.mktemp("tracking-server")
    port = free_port()
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's mlflow
    env["HQCBENCH_MLFLOW_DB_URL"] = backend_db
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(SCRIPT), "--port", str(port), "--workers", "2",
                                 "--artifacts", str(folder / "mlartifacts")],
                                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # fresh schema migrations: 18-45 s measured on the busy 2-core machine
        while not healthy(uri):
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no /health after 240 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        assert f"export MLFLOW_TRACKING_URI={uri}\n" in log.read_text()  # what the script tells workers
        yield Server(uri, folder / "mlartifacts")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def job_env(server: Server, experiment: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    # the experiment is named explicitly: a job's default experiment name is not part of this contract
    env.update(MLFLOW_TRACKING_URI=server.uri, MLFLOW_EXPERIMENT_NAME=experiment, OMP_NUM_THREADS="1")
    return env


def cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "hqcbench", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def kind(run) -> str | None:
    return run.data.tags.get(names.TAG_KIND)


def stored(server: Server, artifact_uri: str, path: str) -> Path:
    """Where the server keeps an artifact: mlflow-artifacts:/<exp>/<run>/artifacts/... under its destination."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri  # proxied, not a client-side path
    return server.artifacts / artifact_uri.removeprefix("mlflow-artifacts:/") / path


@dataclass
class MainJob:
    experiment: str
    experiment_id: str
    parent: object
    children: list


@pytest.fixture(scope="module")
def main_job(server, tmp_path_factory) -> MainJob:
    """`python -m hqcbench run` once against the server, in a folder that must stay empty of runs."""
    cwd = tmp_path_factory.mktemp("main-job")
    experiment = f"server-main-{uuid.uuid4().hex[:8]}"
    cli(["run", *RUN_FLAGS], job_env(server, experiment), cwd)
    assert sorted(p.name for p in cwd.iterdir()) == [], "the job wrote a local store instead of using the server"
    client = mlflow.MlflowClient(server.uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if kind(r) == "main"]
    return MainJob(experiment, exp.experiment_id, parent, [r for r in runs if kind(r) == "child"])


@pytest.mark.postgres
@pytest.mark.slow
def test_main_job_logs_runs_and_artifacts_through_the_server(server, main_job, tmp_path):
    client = mlflow.MlflowClient(server.uri)
    assert client.get_experiment(main_job.experiment_id).artifact_location.startswith("mlflow-artifacts:/")
    assert main_job.parent.info.status == "FINISHED"
    assert sorted(r.data.tags[names.TAG_ARM] for r in main_job.children) == ["cnn", "control", "hybrid"]
    for child in main_job.children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == main_job.parent.info.run_id
        assert "test_acc" in child.data.metrics
    assert len(client.get_metric_history(main_job.children[0].info.run_id, "val_acc")) == 1  # per-epoch metrics

    child = main_job.children[0]
    got = Path(mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path="learning_curves.png",
                                                   dst_path=str(tmp_path), tracking_uri=server.uri))
    on_server = stored(server, child.info.artifact_uri, "learning_curves.png")
    assert got.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and got.read_bytes() == on_server.read_bytes()

    (model,) = client.search_logged_models([main_job.experiment_id],
                                           filter_string=f"source_run_id = '{child.info.run_id}'")
    weights = stored(server, model.artifact_location, "artifacts/state_dict.pt")  # the model, uploaded too
    assert weights.stat().st_size > 0
    assert stored(server, main_job.parent.info.artifact_uri, "comparison.csv").is_file()


@pytest.mark.postgres
@pytest.mark.slow
def test_two_tune_workers_share_one_study_and_one_server(server, tmp_path, monkeypatch):
    experiment = f"server-tune-{uuid.uuid4().hex[:8]}"
    client = mlflow.MlflowClient(server.uri)
    experiment_id = client.create_experiment(experiment)  # created once here, not raced by the two workers
    values = tiny(os.environ["HQCBENCH_TEST_POSTGRES_URL"], n_trials=4, heartbeat_s=10)  # Optuna: its own DB
    for key, value in job_env(server, experiment).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    procs = start_workers(tmp_path, values, 2)  # released together once both have imported everything
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-4000:] for o in outputs)

    trials = load(values).trials
    assert len(trials) == 4 and len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took part
    runs = client.search_runs([experiment_id], max_results=100)
    parents = [r for r in runs if kind(r) == "tune"]
    trial_runs = [r for r in runs if kind(r) == "trial"]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents + trial_runs)
    assert sorted(int(r.data.tags[names.TAG_TRIAL]) for r in trial_runs) == [0, 1, 2, 3]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {r.info.run_id for r in parents}
    assert {r.data.tags[names.TAG_WORKER] for r in trial_runs} == {r.data.tags[names.TAG_WORKER] for r in parents}
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in trial_runs}
    for parent in parents:
        assert stored(server, parent.info.artifact_uri, "tuning/hybrid/trials.csv").is_file()


@pytest.mark.postgres
@pytest.mark.slow
def test_report_is_built_from_the_server(server, main_job, tmp_path):
    out = tmp_path / "report"
    cli(["report", "--experiment", main_job.experiment, "--out", str(out), "--ui_url", server.uri],
        job_env(server, main_job.experiment), tmp_path)
    text = (out / "report.md").read_text()
    assert text.startswith(f"# hqcbench report: {main_job.experiment}")
    # this server listens on a loopback address, every reader's own machine: never linked nor printed; the
    # sources list each run's id and say to open the server's UI (a reachable --ui_url is linked: test_report)
    assert "127.0.0.1" not in text + (out / "report.html").read_text()
    assert "open the UI of the tracking server the runs were logged to" in text
    for child in main_job.children:
        assert child.info.run_id in text
    client = mlflow.MlflowClient(server.uri)
    (report_run,) = [r for r in client.search_runs([main_job.experiment_id]) if kind(r) == "report"]
    assert report_run.info.status == "FINISHED"
    assert stored(server, report_run.info.artifact_uri, "report.md").read_text() == text
