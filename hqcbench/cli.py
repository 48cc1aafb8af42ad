"""``python -m hqcbench run | tune | campaign | evaluate | report | study`` -- the MLproject entry points call these.

Flags are ``--name value`` with the MLproject parameter names. Bad input exits with code 2 and one
line naming the parameter and its allowed values. SIGTERM and Ctrl-C stop a job cleanly: its open
runs end KILLED, one line says so, and the exit code is the shell's (143, 130); see
``tracking.stopping``. This module is the top of the package: it imports the jobs and the report, and
nothing imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings

import mlflow

from hqcbench.allocator import keep_freed_memory
from hqcbench.config import FIELD_META, TUNE_META, RunConfig, TuneConfig
from hqcbench.data.datasets import DATA_DIR_ENV
from hqcbench.errors import DataUnavailableError, UserInputError
from hqcbench.jobs import headline
from hqcbench.jobs.campaign import run_campaign, write_campaign_report
from hqcbench.jobs.evaluate import evaluate_experiment
from hqcbench.jobs.run import parent_of, run_main
from hqcbench.jobs.tune import run_tune
from hqcbench.report import build as report_build
from hqcbench.study import scaling as study_scaling
from hqcbench.tracking.runs import mark_failed, mark_killed
from hqcbench.tracking.stopping import Stopped, end_launcher, follow_launcher, mlflow_run_launcher, stop_on_signals

EVALUATE_FIELDS = ("device", "attacks", "eps", "attack_samples", "pgd_steps", "pgd_step_size", "pgd_restarts",
                   "shots_sweep", "shot_rate_hz", "noise", "noise_method", "noise_trajectories", "noise_attacks",
                   "noise_sweep")


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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per reloaded weight file
    for name in ("art", "mlflow", "alembic", "qiskit"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a stop signal that lands inside a database fetch makes SQLAlchemy log "Error closing cursor" with
    # a traceback while the run is being ended KILLED; real database errors still raise
    logging.getLogger("sqlalchemy").setLevel(logging.CRITICAL)


def _run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k in FIELD_META and v is not None}
    cfg = RunConfig.from_strings(values).validate()
    trained = run_main(cfg)
    print(f"hqcbench: trained {len(trained)} (arm, seed) runs on {cfg.dataset_name} ({cfg.protocol} protocol)")
    for item in trained:
        print(f"  {item.arm:8s} seed {item.seed}: test_acc={item.metrics.get('test_acc', float('nan')):.4f} "
              f"run_id={item.run_id}")
    # the job ends with its answer (the parent row's differences) and where to look at it
    for line in headline.headline_lines(headline.differences(trained)):
        print(line)
    if trained:
        experiment_id, parent_id = parent_of(trained)  # the run this job logged into
        command = headline.ui_command(mlflow.get_tracking_uri(), experiment_id, parent_id)
        print(f"  open in the MLflow UI: {command}")
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


def _flag(value: str, name: str) -> bool:
    if value not in ("true", "false"):
        raise UserInputError(name, f"got {value!r}", "true|false")
    return value == "true"


def _data_dir(value: str) -> None:
    """--data_dir for campaign/evaluate: exported as HQCBENCH_DATA_DIR, never logged (machine-specific)."""
    if value:
        if not os.path.isdir(value):
            raise UserInputError("data_dir", f"{value!r} is not a readable directory", "a readable directory")
        os.environ[DATA_DIR_ENV] = os.path.abspath(value)


def _campaign(args: argparse.Namespace) -> int:
    args.spec = args.spec or args.spec_file
    if not args.spec:
        raise UserInputError("spec", "a campaign spec is required",
                             "a campaign TOML file, e.g. reports/mnist/campaign.toml")
    _data_dir(args.data_dir)
    if args.report not in ("true", "false", "only"):
        raise UserInputError("report", f"got {args.report!r}", "true|false|only")
    dry_run, report = _flag(args.dry_run, "dry_run"), args.report
    if report == "only":  # the report from what the store holds now, nothing run
        print(f"hqcbench campaign: report written to {write_campaign_report(args.spec)}")
        return 0
    run_campaign(args.spec, only=args.only, dry_run=dry_run, device_choice=args.device,
                 progress=_flag(args.progress, "progress"))
    if report == "true" and not dry_run:
        print(f"hqcbench campaign: report written to {write_campaign_report(args.spec)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _data_dir(args.data_dir)
    values = {k: v for k, v in vars(args).items() if k in EVALUATE_FIELDS and v is not None}
    settings = RunConfig.from_strings(values).validate()
    done = evaluate_experiment(args.experiment, settings, missing_only=_flag(args.missing_only, "missing_only"),
                               only=args.only)
    print(f"hqcbench evaluate: {done} group(s) of child runs evaluated in experiment {args.experiment!r}")
    return 0


def _study(args: argparse.Namespace) -> int:
    settings = study_scaling.settings_from_args(args)  # the study name and every option, before any work
    _data_dir(settings.data_dir)
    print(f"hqcbench study {args.name}: README written to {study_scaling.run(settings)}")
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
    campaign = sub.add_parser("campaign", help="run what a campaign spec asks for and its store lacks; resumable "
                                               "(the MLproject 'campaign' entry point)")
    campaign.add_argument("spec_file", nargs="?", metavar="SPEC",
                          help="campaign TOML file; its folder holds the store (mlflow.db, artifacts/)")
    campaign.add_argument("--spec", default=None, help="the same, as a flag (MLproject passes it so)")
    campaign.add_argument("--only", default="", help="a part: space-separated key=v1,v2 terms over block, dataset, "
                                                     "protocol, arm, seed (e.g. 'block=paper seed=0,1')")
    campaign.add_argument("--dry_run", "--dry-run", default="false", nargs="?", const="true",
                          help="list what is missing and its estimated time; run nothing (true|false)")
    campaign.add_argument("--data_dir", default="", help="dataset folder (else $HQCBENCH_DATA_DIR; never logged)")
    campaign.add_argument("--device", default="auto", help="auto|cpu|cuda")
    campaign.add_argument("--progress", default="true", help="one progress bar over the campaign (true|false)")
    campaign.add_argument("--report", default="false", help="true: then build the report from the store into the "
                                                            "spec's folder; only: just the report (true|false|only)")
    campaign.set_defaults(handler=_campaign)
    evaluate = sub.add_parser("evaluate", help="add evaluations (attacks, shot sweeps) to finished child runs "
                                               "from their logged weights, without retraining")
    evaluate.add_argument("--experiment", required=True, help="MLflow experiment holding the child runs")
    evaluate.add_argument("--missing_only", default="true",
                          help="true: only runs lacking these settings' evaluation; false: every run (true|false)")
    evaluate.add_argument("--data_dir", default="", help="dataset folder (else $HQCBENCH_DATA_DIR)")
    evaluate.add_argument("--only", default="", help="a part: space-separated key=v1,v2 terms over the runs' "
                                                     "block, dataset, protocol, arm, seed (as campaign --only)")
    for name in EVALUATE_FIELDS:
        meta = FIELD_META[name]
        evaluate.add_argument(f"--{name}", default=None, help=f"{meta['help']} (allowed: {meta['allowed']})")
    evaluate.set_defaults(handler=_evaluate)
    report = sub.add_parser("report", help="MLflow runs of one experiment -> report.md, report.html, plots")
    report_build.add_arguments(report)
    report.set_defaults(handler=report_build.handle)
    study = sub.add_parser("study", help="measurements about the models: 'scaling' = gradient variance (barren "
                                         "plateaus) and trained accuracy against qubits (docs/scaling.md)")
    study_scaling.add_arguments(study)
    study.set_defaults(handler=_study)
    return parser


def _user_models_importable() -> None:
    """User arms (``module:callable``) import from the current directory too, as under ``python -m``, also
    when the ``hqcbench`` command starts the job (its sys.path holds only the script's folder)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # state vectors reuse freed heap memory instead of page-faulting (hqcbench.allocator)
    _user_models_importable()
    _quiet_third_party()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Under `mlflow run`, the project's run; read now: MLflow removes the variable once a job resumes it.
    project_run = os.environ.get("MLFLOW_RUN_ID")
    launcher = mlflow_run_launcher() if project_run else None

    def settle(stop: Stopped) -> None:
        """Still inside the stopping context: a second signal cannot cut this short."""
        if project_run:  # a stop before the job opened it, or one a plain start_run recorded as FAILED
            mark_killed(project_run, stop.reason)
        end_launcher(launcher)  # or `mlflow run` would turn the KILLED run FAILED once this process exits

    try:
        with stop_on_signals(on_stop=settle):
            follow_launcher(launcher)
            return int(args.handler(args) or 0)
    except (UserInputError, DataUnavailableError) as exc:
        message = f"hqcbench: error: {exc}"
        print(message, file=sys.stderr)
        if project_run:  # nothing half-logged looks successful
            mark_failed(project_run, str(exc))
        return 2
    except Stopped as stop:
        print(f"hqcbench: stopped by {stop.label}; open runs marked KILLED", file=sys.stderr)
        return stop.exit_code
