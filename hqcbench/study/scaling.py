"""``python -m hqcbench study scaling``: barren plateaus and width scaling of the hybrid circuit.

Two halves, runnable apart (``--part``), both writing into ``--out``:

* gradients (``study.gradients``): variance of the local cost's gradient over random
  initialisations of the hybrid's circuit, per (qubits, depth), and its slope in n per depth;
* accuracy (``study.accuracy``): hybrid and control trained with the fair protocol at several
  widths, seeds and datasets.

Each finished cell is merged into its CSV at once, and the figures and README.md are rebuilt from
the CSVs at the end of every part (``study.summary``, ``study.readme``). One MLflow parent run per
invocation, in experiment ``hqcbench-study-scaling`` (unless the caller chose one), holds the
per-cell metrics, the accuracy part's nested runs and the output files as artifacts.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlflow
from tqdm.auto import tqdm

from hqcbench.jobs.run import machine_tags, resolve_device
from hqcbench.study import accuracy, gradients
from hqcbench.study.readme import RECORD, record_part, write_readme
from hqcbench.study.settings import DEFAULTS, EXPERIMENT_SUFFIX, HELP, ScalingSettings
from hqcbench.study.summary import (
    ACCURACY_COLUMNS,
    ACCURACY_CSV,
    ACCURACY_KEYS,
    ACCURACY_PNG,
    GRADIENT_COLUMNS,
    GRADIENT_CSV,
    GRADIENT_KEYS,
    GRADIENT_PNG,
    accuracy_figure,
    gradient_figure,
    merge_rows,
    read_table,
)
from hqcbench.threads import apply_threads
from hqcbench.tracking import runs as tracking
from hqcbench.tracking.experiments import use_experiment


def grad_metric(column: str, depth: int) -> str:
    """Parent run, step = n: e.g. scaling_grad_var_mean_depth_4 (column var_mean or var_first)."""
    return f"scaling_grad_{column}_depth_{depth}"


def slope_metric(column: str, depth: int) -> str:
    """Parent run, final: fitted log10-variance slope per qubit, e.g. scaling_grad_slope_var_mean_depth_4."""
    return f"scaling_grad_slope_{column}_depth_{depth}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional study name and one ``--option`` per setting (defaults in ``study.settings``)."""
    parser.add_argument("name", help="the study to run (allowed: scaling)")
    for key, default in DEFAULTS.items():
        parser.add_argument(f"--{key}", default=default, help=f"{HELP[key]} (default: {default!r})")


def settings_from_args(args: argparse.Namespace) -> ScalingSettings:
    return ScalingSettings.parse(args.name, {key: getattr(args, key) for key in DEFAULTS})


def run_gradients(settings: ScalingSettings, out: Path, progress: bool) -> None:
    """Every (n, depth) cell, cheapest widths first; each merged into the CSV and logged as it ends."""
    cells = [(n, depth) for n in settings.qubits for depth in settings.depths]
    with tqdm(total=len(cells) * settings.inits, desc="gradient variance", unit="init", disable=not progress) as bar:
        done = []
        for n, depth in cells:
            bar.set_postfix(n=n, depth=depth)
            cell = gradients.gradient_cell(n, depth, settings.inits, on_init=lambda: bar.update(1))
            merge_rows(out / GRADIENT_CSV, [cell.row()], GRADIENT_KEYS, GRADIENT_COLUMNS)
            mlflow.log_metrics({grad_metric("var_first", depth): cell.var_first,
                                grad_metric("var_mean", depth): cell.var_mean}, step=n)
            done.append(cell)
    for depth in settings.depths:
        mine = [c for c in done if c.depth == depth]
        for column in ("var_mean", "var_first"):
            fit = gradients.fit_slope([c.n for c in mine], [getattr(c, column) for c in mine])
            if fit.slope == fit.slope:  # not NaN
                mlflow.log_metric(slope_metric(column, depth), fit.slope)


def run_accuracy(settings: ScalingSettings, out: Path, progress: bool) -> None:
    """Hybrid and control at every (dataset, width, seed); each training merged into the CSV as it ends."""
    device = resolve_device("auto")
    plan = list(accuracy.trainings(settings.datasets, settings.train_qubits, settings.seeds))
    total = sum(len(pairs) for _, _, pairs in plan)
    with tqdm(total=total, desc="accuracy vs width", unit="model", disable=not progress) as bar:
        def done(cell: accuracy.AccuracyCell) -> None:
            merge_rows(out / ACCURACY_CSV, [cell.row()], ACCURACY_KEYS, ACCURACY_COLUMNS)
            bar.set_postfix(dataset=cell.dataset, n=cell.n, arm=cell.arm, acc=f"{cell.test_acc:.3f}")
            bar.update(1)

        for dataset, n, pairs in plan:
            accuracy.run_width(dataset, n, pairs, settings.epochs, settings.train_limit, device, progress, done)


def rebuild_outputs(out: Path) -> list[Path]:
    """Figures and README.md from the CSVs ``out`` holds (whichever parts have run)."""
    written = []
    grad = read_table(out / GRADIENT_CSV, GRADIENT_COLUMNS)
    if not grad.empty:
        gradient_figure(grad, out / GRADIENT_PNG)
        written.append(out / GRADIENT_PNG)
    acc = read_table(out / ACCURACY_CSV, ACCURACY_COLUMNS)
    if not acc.empty:
        accuracy_figure(acc, out / ACCURACY_PNG)
        written.append(out / ACCURACY_PNG)
    return written + [write_readme(out)]


def run(settings: ScalingSettings, progress: bool = True) -> Path:
    """Run the parts ``settings`` asks for under one MLflow parent run; returns the README's path."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    apply_threads(0)  # the CPUs this process may use
    use_experiment(EXPERIMENT_SUFFIX)
    steps = {"gradients": run_gradients, "accuracy": run_accuracy}
    with tracking.parent_run(settings.params(), f"scaling-{settings.part}", kind="study"):
        mlflow.set_tags(machine_tags(resolve_device("auto")))
        for part in settings.parts:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[part](settings, out, progress)
            record_part(out, part, settings, time.perf_counter() - wall, time.process_time() - cpu)
        files = rebuild_outputs(out)
        for path in [out / GRADIENT_CSV, out / ACCURACY_CSV, out / RECORD, *files]:
            if path.exists():
                mlflow.log_artifact(str(path))
    return files[-1]
