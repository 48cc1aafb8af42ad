"""The main job: train every (arm, seed), test once, attack, log -- one parent run, one child per pair."""
from __future__ import annotations

import time
from typing import Callable, cast

import mlflow
import pandas as pd
import torch

from hqcbench import names
from hqcbench.config import RunConfig, is_user_dataset
from hqcbench.data.datasets import Splits, dataset_spec, to_float
from hqcbench.data.lineage import split_inputs
from hqcbench.errors import UserInputError
from hqcbench.evaluation import hardware_cost
from hqcbench.evaluation.paper_attack import make_epoch_hook
from hqcbench.jobs import headline
from hqcbench.jobs.checkpoints import log_weights
from hqcbench.jobs.evaluate import TrainedArm, evaluate_group, splits_for
from hqcbench.jobs.fingerprint import TRAINING_VERSION
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.models.memory import check_memory, run_device
from hqcbench.models.noise import check_settings as check_noise
from hqcbench.models.noise import training_noise
from hqcbench.models.quantum import configure_readout
from hqcbench.resources import ResourceMonitor, hardware_tags, run_summary
from hqcbench.threads import apply_threads
from hqcbench.tracking import figures as plots
from hqcbench.tracking import runs as tracking
from hqcbench.tracking.experiments import use_experiment
from hqcbench.training import seeding
from hqcbench.training.loop import evaluate, fit
from hqcbench.training.recipes import effective_batch_size, effective_val_fraction, make_recipe, protocol_tags

SUMMARY_ARTIFACT = "summary.md"  # the parent run's headline table


def resolve_device(choice: str) -> torch.device:
    device = run_device(choice)  # the same rule the memory check applies
    if device is None:
        raise UserInputError("device", "cuda was asked for but no CUDA device is available", "auto|cpu|cuda")
    return device


def machine_tags(device: torch.device) -> dict[str, str]:
    """Library versions, CPU, GPU, NVML status and thread count: enough to tell two machines apart."""
    return {**tracking.system_tags(str(device)), **hardware_tags(device)}


def train_arm(arm: str, seed: int, splits: Splits, cfg: RunConfig, device: torch.device,
              monitor: ResourceMonitor, epoch_hook=None, progress: bool = True,
              on_epoch: Callable[[int], None] | None = None) -> TrainedArm:
    """Train one arm in the active child run and log every metric of docs/metrics.md.

    Every training run carries ``hqcbench.training_version`` (``fingerprint.TRAINING_VERSION``): the
    main job, campaigns, the tune retrain and the scaling study all train through here.

    The run's splits are logged as its MLflow inputs first (``log_split_inputs``), so the UI's
    Dataset column shows them and the test metrics can name the test split they came from.

    ``epoch_hook(epoch, model)`` adds per-epoch evaluations (the paper attack; default: the one the
    config asks for); ``on_epoch(epoch)`` is told each finished epoch (campaigns: heartbeat, progress).
    """
    # the fingerprint hashes the training code's version but does not show it: the tag does, so runs
    # trained before and after a TRAINING_VERSION change can be told apart in the UI and by a search
    mlflow.set_tag(names.TAG_TRAINING_VERSION, str(TRAINING_VERSION))
    if epoch_hook is None:
        epoch_hook = _epoch_hook(cfg, splits, device)
    test_input = log_split_inputs(splits, cfg, seed)
    seeding.seed_model_init(seed)
    model = build_model(arm, splits.spec, cfg).to(device)
    configure_readout(model, cfg.eval_shots, cfg.train_shot_count, seed)  # None, None: exact <Z>
    counts = count_parameters(model)
    mlflow.log_metrics({key: float(value) for key, value in counts.items()})
    swaps = getattr(model, "swaps", [])
    if swaps:  # a user arm's classical twin: what was swapped, with widths and parameter counts
        mlflow.log_text("\n".join(swap.text() for swap in swaps) + "\n", TWIN_SWAPS_FILE)
    batch_size = effective_batch_size(cfg)
    steps = (len(splits.train) + batch_size - 1) // batch_size
    recipe = make_recipe(cfg.protocol, arm, model, cfg.lr, cfg.epochs, steps, cfg.dataset, splits.spec.mean)
    mlflow.set_tag(names.TAG_RECIPE, recipe.description)

    def log_epoch(epoch: int, metrics: dict[str, float], model_now) -> None:
        mlflow.log_metrics(metrics, step=epoch)
        epoch_hook(epoch, model_now).log()
        if on_epoch is not None:
            on_epoch(epoch)

    noisy, noise_tag = training_noise(model, cfg, seed)  # train_noise: training and validation under noise
    if noise_tag:
        mlflow.set_tag(names.TAG_TRAIN_NOISE, noise_tag)
    with noisy:
        result = fit(model, splits.train, splits.val, recipe, cfg.epochs, batch_size, device, seed, monitor,
                     on_epoch=log_epoch, progress=progress, desc=f"{arm} seed {seed}", patience=cfg.patience)
    with monitor.window("eval") as test_res:
        test = evaluate(model, splits.test, batch_size, device)
    history = result.history
    model_id = log_weights(model, cfg, arm, seed, to_float(splits.test.images[:2]).numpy())
    tested = {"test_acc": test.acc, "test_loss": test.loss}
    final = {"best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
             "test_eval_time_s": test_res["wall_s"],
             names.METRIC_EPOCHS_RUN: result.epochs_run, names.METRIC_STOPPED_EARLY: float(result.stopped_early),
             **run_summary(history)}  # epoch_time_s_median, cpu_util_cores_mean, rss_peak_mb_max, cuda_*/nvml_* peaks
    mlflow.log_metrics(final)
    # the test metrics once, linked to the logged model and the test split (the model page shows them)
    mlflow.log_metrics(tested, model_id=model_id, dataset=test_input)
    final.update(tested)
    mlflow.set_tags(monitor.tags())  # why NVML metrics are absent, how the RSS peak was taken
    mlflow.log_text("\n".join(str(int(c)) for c in test.correct.tolist()), names.TEST_CORRECT_ARTIFACT)
    fig = plots.learning_curves(history, f"{cfg.dataset_name} / {arm} / seed {seed} ({cfg.protocol})")
    plots.log_png(fig, "learning_curves.png")
    plots.close(fig)
    fig = plots.confusion_matrix(splits.test.labels.numpy(), test.predictions.numpy(), splits.spec.classes,
                                 f"{arm} seed {seed}: test acc {test.acc:.3f}")
    plots.log_png(fig, "confusion_matrix.png")
    plots.close(fig)
    metrics = {**counts, **final}
    active = mlflow.active_run()
    assert active is not None  # the arm's run, opened by the caller
    return TrainedArm(arm, seed, active.info.run_id, model, metrics)


def log_split_inputs(splits: Splits, cfg: RunConfig, seed: int):
    """``mlflow.log_input`` for the train / validation / test splits of the active run; returns the
    test split's MLflow dataset (test metrics are logged against it)."""
    inputs = split_inputs(splits, seed, effective_val_fraction(cfg), cfg.train_limit)
    for item in inputs:
        mlflow.log_input(item.dataset, context=item.context, tags=item.tags)
    return next(item.dataset for item in inputs if item.split == "test")


def comparison_table(trained: list[TrainedArm]) -> pd.DataFrame:
    """One row per arm: mean (and std over seeds) of the headline metrics."""
    frame = pd.DataFrame([{"arm": t.arm, "seed": t.seed, **t.metrics} for t in trained])
    if frame.empty:
        return frame
    keys = [c for c in frame.columns if c not in ("arm", "seed")]
    by_arm = frame.groupby("arm", sort=False)
    summary = by_arm[keys].agg(["mean", "std"])
    # agg with a list of functions gives (column, function) pairs; pandas-stubs types columns as Index[str]
    summary.columns = [f"{k}_{stat}" for k, stat in cast(pd.MultiIndex, summary.columns)]
    summary.insert(0, "seeds", by_arm["seed"].count())
    return summary.reset_index()


def log_headline(trained: list[TrainedArm], title: str) -> None:
    """The paired differences on the active (parent) run: metrics and ``summary.md``."""
    diffs = headline.differences(trained)
    if diffs:
        mlflow.log_metrics(headline.headline_metrics(diffs))
    mlflow.log_text(headline.summary_markdown(diffs, trained, title), SUMMARY_ARTIFACT)


def run_main(cfg: RunConfig, progress: bool = True) -> list[TrainedArm]:
    """Validate, then train every arm for every seed under one parent run (``progress``: tqdm bars)."""
    cfg.validate()
    check_memory(cfg)  # before any run opens: a circuit that cannot fit is one line, not a crash mid-training
    note = check_noise(cfg)  # a bad noise model or device is one line too; noise without a circuit: a note
    if note:
        print(f"hqcbench run: {note}")
    # 0: the CPUs available to this process (affinity, cgroup quota), fewer while others load them
    apply_threads(cfg.threads)
    device = resolve_device(cfg.device)
    t_start = time.perf_counter()
    params = cfg.to_dict()
    if is_user_dataset(cfg.dataset):  # read and checked now: a bad folder is one line before any run opens
        dataset_spec(cfg.dataset, cfg.image_size)
    run_name = f"{cfg.dataset_name}-{cfg.protocol}"
    use_experiment(cfg.dataset_name)  # hqcbench-{dataset} unless one was given
    trained: list[TrainedArm] = []
    # parent_run ends the parent itself: FAILED with hqcbench.error on an exception, KILLED on a stop
    with tracking.parent_run(params, run_name):
        mlflow.set_tags({**machine_tags(device), names.TAG_DATASET: cfg.dataset_name,
                         names.TAG_PROTOCOL: cfg.protocol, **protocol_tags(cfg)})
        mlflow.log_text(cfg.to_json(), "config.json")
        trained = train_arms(cfg, device, progress=progress)
        table = comparison_table(trained)
        mlflow.log_text(table.to_csv(index=False), "comparison.csv")
        mlflow.log_text(table.to_markdown(index=False, floatfmt=".4f"), "comparison.md")
        log_headline(trained, f"{cfg.dataset_name}, {cfg.protocol} protocol")
        mlflow.log_metric("wall_time_s", time.perf_counter() - t_start)
    return trained


def train_arms(cfg: RunConfig, device: torch.device,
               arm_configs: dict[str, RunConfig] | None = None, progress: bool = True) -> list[TrainedArm]:
    """Train every (arm, seed) of ``cfg`` as nested child runs of the active MLflow run.

    ``arm_configs`` gives an arm its own config (the tune job retrains each arm's best trial this
    way, so the retrain is logged exactly like a main run); arms without one use ``cfg``. Seeds, data
    and the post-training steps always come from ``cfg``.
    """
    trained: list[TrainedArm] = []
    cache: dict = {}
    system = machine_tags(device)  # versions, CPU, GPU: read once, tagged on every child
    with ResourceMonitor(device, paper_metrics=(cfg.protocol == "paper")) as monitor:
        for seed in cfg.seed_list:
            splits = splits_for(cfg, seed, cache)
            if splits.note:
                mlflow.set_tag(names.TAG_NOTE, splits.note)
            seed_arms = []
            for arm in cfg.arm_list:
                arm_cfg = (arm_configs or {}).get(arm, cfg)
                with tracking.open_run(run_name=names.child_run_name(arm, seed), nested=True,
                                       tags={**names.child_tags(arm, cfg.protocol, cfg.dataset_name, seed),
                                             **protocol_tags(cfg), **system}):
                    mlflow.log_params({k: str(v) for k, v in arm_cfg.to_dict().items()})
                    mlflow.log_params({"n_train": len(splits.train), "n_val": len(splits.val),
                                       "n_test": len(splits.test)})
                    seed_arms.append(train_arm(arm, seed, splits, arm_cfg, device, monitor,
                                               progress=progress))
            evaluate_group(seed_arms, splits, cfg, device, progress=progress)
            trained.extend(seed_arms)
    return trained


TWIN_SWAPS_FILE = "twin_swaps.txt"


def parent_of(trained: list[TrainedArm]) -> tuple[str, str]:
    """(experiment id, parent run id) of the runs a job trained, read from its first child; ('', '') for none."""
    if not trained:
        return "", ""
    child = mlflow.MlflowClient().get_run(trained[0].run_id)
    return child.info.experiment_id, child.data.tags.get(names.MLFLOW_PARENT_RUN_ID, "")


def _epoch_hook(cfg: RunConfig, splits: Splits, device: torch.device):
    """Per-epoch extras (the paper attack every 5 epochs under the paper protocol)."""
    # the circuit queries of these attacks are counted for the hardware cost estimate
    return hardware_cost.counting_epoch_hook(make_epoch_hook(cfg, splits, device))
