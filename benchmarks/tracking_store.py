"""What a shared tracking server costs the main job: local SQLite store vs HTTP server on PostgreSQL.

Scaling out (docs/scale_out.md) moves every metric, tag and artifact of a job from local files to
HTTP requests against scripts/tracking_server.sh. This times the same small but complete main job
(digits, fair protocol, three arms, one seed, FGSM + PGD, the model logged) once per store, each in a
fresh process so neither inherits the other's imports or caches, and prints one row per store: wall
seconds of the job, runs it created, artifact bytes the store holds afterwards.

Both stores start with their schema in place: the SQLite file is migrated before its job starts,
and the server migrates its fresh PostgreSQL database while starting (timed on its own line), so
neither row pays the one-off migration.

    python benchmarks/tracking_store.py --postgres-url postgresql://hqcbench:hqcbench@127.0.0.1:5432/hqcbench
    python benchmarks/tracking_store.py --epochs 3 --no-lock   # beside other timed jobs (the table says so)

The PostgreSQL role needs CREATEDB: the server gets a fresh database, dropped at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import mlflow
import sqlalchemy

from hqcbench.resources import timing_lock

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tracking_server.sh"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres-url", default=os.environ.get("HQCBENCH_TEST_POSTGRES_URL", ""),
                    help="a PostgreSQL URL whose role may CREATE DATABASE (default: $HQCBENCH_TEST_POSTGRES_URL)")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs per arm")
    ap.add_argument("--attacks", default="fgsm,pgd", help="the main job's attacks (none: skip)")
    ap.add_argument("--server-workers", type=int, default=2, help="the server's --workers")
    ap.add_argument("--no-lock", action="store_true",
                    help="do not wait for the timing lock (other timed jobs may share the cores; the output says so)")
    args = ap.parse_args(argv)
    if not args.postgres_url:
        ap.error("no PostgreSQL: pass --postgres-url or set HQCBENCH_TEST_POSTGRES_URL")
    if args.epochs < 1 or args.server_workers < 1:
        ap.error("--epochs and --server-workers must be >= 1")
    return args


def job_argv(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "hqcbench", "run", "--dataset", "digits", "--protocol", "fair",
            "--arms", "cnn,hybrid,control", "--seeds", "0", "--epochs", str(args.epochs), "--attacks", args.attacks,
            "--device", "cpu", "--threads", "1"]


def engine(url: str, database: str | None = None) -> sqlalchemy.engine.Engine:
    # psycopg2 (shipped), not SQLAlchemy 2.1's default psycopg 3; AUTOCOMMIT for CREATE / DROP DATABASE
    parsed = sqlalchemy.engine.make_url(url).set(drivername="postgresql+psycopg2")
    if database:
        parsed = parsed.set(database=database)
    return sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def fresh_database(url: str):
    name = f"hqcbench_bench_{uuid.uuid4().hex[:12]}"
    admin = engine(url)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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


@contextlib.contextmanager
def tracking_server(db_url: str, artifacts: Path, workers: int, log: Path):
    """scripts/tracking_server.sh in its own process group; yields (uri, seconds until /health)."""
    port = free_port()
    env = {**os.environ, "HQCBENCH_MLFLOW_DB_URL": db_url,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(SCRIPT), "--port", str(port), "--workers", str(workers),
                                 "--artifacts", str(artifacts)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                process_group=0)
    uri = f"http://127.0.0.1:{port}"
    try:
        while not healthy(uri):
            if proc.poll() is not None:
                raise SystemExit(f"tracking server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - start > 600:
                raise SystemExit(f"tracking server not healthy after 600 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri, time.perf_counter() - start
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def time_job(args: argparse.Namespace, uri: str, experiment: str, cwd: Path, log: Path) -> tuple[float, int]:
    """Wall seconds of one main job against ``uri`` and the runs it left in ``experiment``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=experiment, OMP_NUM_THREADS="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(job_argv(args), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"main job against {uri} exited {done.returncode}:\n{log.read_text()[-3000:]}")
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return wall, len(client.search_runs([exp.experiment_id], max_results=1000))


def measure(args: argparse.Namespace, work: Path) -> tuple[list[tuple[str, float, int, int]], float]:
    rows = []
    local = work / "sqlite"
    local.mkdir()
    uri = f"sqlite:///{local / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # the schema migration happens here, untimed
    wall, runs = time_job(args, uri, "bench-sqlite", local, work / "job-sqlite.log")
    rows.append(("sqlite (local file, ./mlruns)", wall, runs, folder_bytes(local / "mlruns")))

    artifacts = work / "mlartifacts"
    with fresh_database(args.postgres_url) as db_url, \
            tracking_server(db_url, artifacts, args.server_workers, work / "server.log") as (server_uri, startup):
        job_dir = work / "server-job"
        job_dir.mkdir()
        wall, runs = time_job(args, server_uri, "bench-server", job_dir, work / "job-server.log")
        rows.append((f"http server ({args.server_workers} workers) -> PostgreSQL, proxied artifacts", wall, runs,
                     folder_bytes(artifacts)))
    return rows, startup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hqcbench-tracking-bench-") as tmp, \
            (contextlib.nullcontext() if args.no_lock else timing_lock()):
        rows, startup = measure(args, Path(tmp))
    load_after = os.getloadavg()
    print(f"main job: digits, fair, cnn+hybrid+control, seed 0, {args.epochs} epochs, attacks {args.attacks}, "
          "1 torch thread, fresh process per store")
    print(f"machine: {platform.node()}, CPUs {cpus}, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after; timing lock {'NOT held (--no-lock)' if args.no_lock else 'held'}")
    print(f"tracking server start with a fresh PostgreSQL schema: {startup:.1f} s (not in the table)\n")
    print("| store | wall s | runs | artifacts bytes |")
    print("|---|---:|---:|---:|")
    for name, wall, runs, size in rows:
        print(f"| {name} | {wall:.1f} | {runs} | {size:,} |")
    base = rows[0][1]
    print(f"\nserver / sqlite wall time: {rows[1][1] / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
