"""``python -m hqcbench run | tune | report`` -- the MLproject entry points call exactly these.

Flags are ``--name value`` with the MLproject parameter names. Bad input exits with code 2 and one
line naming the parameter and its allowed values. This module is the top of the package: it
imports the jobs and the report, and nothing imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings

from hqcbench.config import FIELD_META, TUNE_META, RunConfig, TuneConfig
from hqcbench.errors import DataUnavailableError, UserInputError
from hqcbench.jobs.run import run_main
from hqcbench.jobs.tune import run_tune
from hqcbench.report import build as report_build
from hqcbench.tracking.runs import mark_failed


def add_config_arguments(parser: argparse.ArgumentParser, cls=RunConfig) -> None:
    """One ``--name`` flag per dataclass field, parsed as a string and converted with clear errors."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        help_text = f"{meta.get('help', '')} (default: {f.default!r}; allowed: {meta.get('allowed')})"
        parser.add_argument(f"--{f.name}", default=None, help=help_text)


def _quiet_third_party() -> None:
    """Silence known third-party noise (Qiskit deprecations, MLflow/ART chatter); ours stays visible."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(qiskit|torchquantum|pkg_resources)")
    warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(optuna|mlflow)")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("art", "mlflow", "alembic", "qiskit"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in FIELD_META and v is not None}
    cfg = RunConfig.from_strings(values).validate()
    trained = run_main(cfg)
    print(f"hqcbench: trained {len(trained)} (arm, seed) runs on {cfg.dataset} ({cfg.protocol} protocol)")
    for item in trained:
        print(f"  {item.arm:8s} seed {item.seed}: test_acc={item.metrics.get('test_acc', float('nan')):.4f} "
              f"run_id={item.run_id}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in TUNE_META and v is not None}
    tcfg = TuneConfig.from_strings(values).validate()
    result = run_tune(tcfg)
    print(f"hqcbench tune: {tcfg.dataset}, {tcfg.n_trials} trials per arm (study total); MLflow run "
          f"{result.parent_run_id}")
    for arm, best in result.best.items():
        print(f"  {arm:8s} study {best['study']}: best val_acc={best['best_val_acc']:.4f} (trial {best['trial']}) "
              f"params={best['params']}; ran here: {len(result.ran_here.get(arm, []))}")
    print(f"  retrain: {result.retrain_note}")
    for item in result.retrained:
        print(f"  retrained {item.arm:8s} seed {item.seed}: test_acc={item.metrics.get('test_acc', float('nan')):.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hqcbench",
                                     description="Hybrid quantum-classical vs classical image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and compare the arms (the MLproject 'main' entry point)")
    add_config_arguments(run)
    run.set_defaults(handler=_run)
    tune = sub.add_parser("tune", help="Optuna studies, one per arm, same budget; then retrain the best "
                                       "(the MLproject 'tune' entry point)")
    add_config_arguments(tune, TuneConfig)
    tune.set_defaults(handler=_tune)
    report = sub.add_parser("report", help="MLflow runs of one experiment -> report.md, report.html, plots")
    report_build.add_arguments(report)
    report.set_defaults(handler=report_build.handle)
    return parser


def _fail_active_run(reason: str) -> None:
    """Mark the `mlflow run` parent run FAILED with the reason (nothing half-logged looks successful)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        mark_failed(run_id, reason)


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (UserInputError, DataUnavailableError) as exc:
        message = f"hqcbench: error: {exc}"
        print(message, file=sys.stderr)
        _fail_active_run(str(exc))
        return 2
