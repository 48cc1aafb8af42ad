"""Where a report's numbers came from: the code commit that wrote it, the commands behind the runs,
the tracking store, the machine and the library versions the runs recorded.

Why a module of its own: a report is only worth reading if it can be rebuilt, so the facts needed to
rebuild it are gathered in one place, from the runs' own tags and params (never from the machine
that happens to write the report, except for its git commit). Every path is printed relative to the
report folder (formatting.relative_paths): a committed report names no machine's absolute path.
"""
from __future__ import annotations

import datetime as dt
import shlex
import subprocess
from pathlib import Path

import mlflow

from hqcbench import names
from hqcbench.config import FIELD_DEFAULTS
from hqcbench.report.document import Inline
from hqcbench.report.formatting import relative_path, relative_paths, store_text
from hqcbench.report.load import RunSet, col

VERSION_COLUMN_PREFIX = f"tags.{names.VERSION_TAG_PREFIX}"
# The machine line: CPU model; cores; device, as each child run tagged them.
MACHINE_TAGS = (names.TAG_CPU_MODEL, names.TAG_CPU_COUNT, names.TAG_DEVICE)


def git_commit() -> str:
    """The commit of the hqcbench checkout that wrote the report (+ '-dirty' when the package's tracked
    files differ from it; other folders do not change what the report computes)."""
    package = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=package,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + ("-dirty" if dirty else "")


def run_commands(runset: RunSet, out_dir: str = ".") -> list[str]:
    """Equivalent commands of the main jobs behind the runs (non-default parameters only; paths relative
    to the report folder ``out_dir``)."""
    parent_ids = set(col(runset.runs, "tags.mlflow.parentRunId").dropna())
    parents = runset.parents[runset.parents.run_id.isin(parent_ids)] if len(runset.parents) else runset.parents
    commands = []
    for _, row in parents.sort_values("start_time").iterrows():
        if row.get(f"tags.{names.TAG_KIND}") == "campaign":  # params: spec (relative), only, threads
            only = row.get("params.only")
            part = f" --only {shlex.quote(only)}" if isinstance(only, str) and only else ""
            commands.append(f"python -m hqcbench campaign {row.get('params.spec')}{part}   # from the repository root; "
                            f"parent run {row.run_id}")
            continue
        args = []
        for name, default in FIELD_DEFAULTS.items():
            value = row.get(f"params.{name}")
            if isinstance(value, str) and value != str(default):
                args.append(f"--{name} {shlex.quote(value)}")
        prefix = f"MLFLOW_EXPERIMENT_NAME={shlex.quote(runset.experiment_name)} "
        via = " (launched via `mlflow run`)" if isinstance(row.get("tags.mlflow.project.entryPoint"), str) else ""
        command = relative_paths(f"{prefix}python -m hqcbench run {' '.join(args)}".rstrip(), out_dir)
        commands.append(f"{command}   # parent run {row.run_id}{via}")
    return commands


def _unique(runset: RunSet, column: str) -> list[str]:
    """Distinct values of a column over child and parent runs."""
    values: set[str] = set()
    for frame in (runset.runs, runset.parents):
        if column in frame.columns:
            values |= {str(v) for v in frame[column].dropna()}
    return sorted(values)


def provenance(runset: RunSet, report_command: str, report_run_id: str | None, rebuild: str = "",
               note: str = "", out_dir: str = ".", related: list[str] | None = None) -> list[Inline]:
    """When, by which command and commit, from which store (and related report folders), machine and
    libraries; paths relative to the report folder ``out_dir``."""
    versions = sorted(c for c in runset.runs.columns if c.startswith(VERSION_COLUMN_PREFIX))
    version_text = ", ".join(f"{c[len(VERSION_COLUMN_PREFIX):]} {'/'.join(_unique(runset, c))}" for c in versions)
    machine = "; ".join(" / ".join(_unique(runset, f"tags.{tag}")) or "?" for tag in MACHINE_TAGS)
    python = "/".join(_unique(runset, f"tags.{names.TAG_PYTHON}")) or "?"
    items: list[Inline] = [
        f"Report written {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`{relative_paths(report_command, out_dir)}` at hqcbench commit {git_commit()}"
        + (f"; logged as MLflow run {report_run_id}" if report_run_id else ""),
        f"Experiment {runset.experiment_name!r} (id {runset.experiment_id}) in "
        f"{store_text(mlflow.get_tracking_uri(), out_dir)}",
        "Runs' source commit(s): " + (", ".join(_unique(runset, "tags.mlflow.source.git.commit")) or "not recorded"),
        f"Machine (from the runs' tags: CPU model; cores; device): {machine}",
        f"Python {python}; libraries: {version_text or 'not recorded'}",
    ]
    if related:
        items.append("The growth proxy also reads the runs.csv of these report folders (relative to this one): "
                     + ", ".join(relative_path(f, out_dir) for f in related))
    if rebuild:
        items.insert(0, f"Rebuild runs and report with: `{relative_paths(rebuild, out_dir)}`")
    if note:
        items.append(relative_paths(note, out_dir))
    return items
