"""Every MLflow tag and metric name hqcbench writes, and the helpers that build the parametrised ones.

These names are a public interface: the report, tuning, the campaign runner and outside checks read
them (docs/metrics.md lists each one). Extend them here; never rename one silently. No other module
spells a ``"hqcbench.*"`` tag as a string literal (a test checks), so a grep for a name lands here.
"""
from __future__ import annotations

PREFIX = "hqcbench."

# ----------------------------------------------------------------------------- run identity
TAG_ARM = "hqcbench.arm"
TAG_PROTOCOL = "hqcbench.protocol"
TAG_DATASET = "hqcbench.dataset"
TAG_SEED = "hqcbench.seed"
TAG_KIND = "hqcbench.kind"  # main | child | tune | trial | report
TAG_ERROR = "hqcbench.error"
TAG_NOTE = "hqcbench.note"
TAG_RECIPE = "hqcbench.recipe"  # the optimiser / schedule / augmentation actually used
TAG_SHORTENED = "hqcbench.shortened"  # set on paper runs with fewer epochs than published

TAG_STOPPED = "hqcbench.stopped"  # why a run ended KILLED (SIGTERM, Ctrl-C, or a dead process found later)

# ----------------------------------------------------------------------------- campaigns
TAG_FINGERPRINT = "hqcbench.fingerprint"  # hash of what changes training (see jobs/fingerprint.py)
TAG_TRAINING_FIELDS = "hqcbench.training_fields"  # the fields behind the fingerprint, as JSON
TAG_TRAINING_VERSION = "hqcbench.training_version"  # jobs/fingerprint.TRAINING_VERSION of the code that trained
TAG_HARDWARE_COST = "hqcbench.hardware_cost"  # set when a model's hardware bill is unknown, and why
TAG_CAMPAIGN = "hqcbench.campaign"  # the campaign spec's name
TAG_BLOCK = "hqcbench.block"  # the spec block that asked for the run
TAG_HOST = "hqcbench.host"  # host name of the process that trains the run
TAG_PID = "hqcbench.pid"  # its process id ...
TAG_PID_START = "hqcbench.pid_start"  # ... and that process's start time (pids are reused)
TAG_HEARTBEAT = "hqcbench.heartbeat"  # unix time of the last finished epoch (liveness across hosts)
EVALUATION_TAG_PREFIX = "hqcbench.evaluation."  # + evaluation kind: fingerprint of the evaluation done

# ----------------------------------------------------------------------------- machine (system tags)
TAG_DEVICE = "hqcbench.device"
TAG_CPU_MODEL = "hqcbench.cpu_model"
TAG_CPU_COUNT = "hqcbench.cpu_count"
TAG_CPU_COUNT_PHYSICAL = "hqcbench.cpu_count_physical"
TAG_PYTHON = "hqcbench.python"
TAG_TORCH_THREADS = "hqcbench.torch_threads"
TAG_GPU_NAME = "hqcbench.gpu_name"
TAG_GPU_DRIVER = "hqcbench.gpu_driver"
TAG_CUDA_RUNTIME = "hqcbench.cuda_runtime"
TAG_NVML = "hqcbench.nvml"
TAG_NVML_PROC = "hqcbench.nvml_proc_mem"
TAG_RSS_METHOD = "hqcbench.rss_peak_method"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag on a nested run: its parent
MLFLOW_SOURCE_NAME = "mlflow.source.name"  # MLflow's own tag: by default the absolute path of the script
SOURCE_COMMAND = "python -m hqcbench"  # what committed stores record there instead
VERSION_TAG_PREFIX = "version."  # + distribution name, e.g. version.torch

ARMS_ENTRY_POINT_GROUP = "hqcbench.arms"  # where a package registers its models as arms (docs/byo.md)

# ----------------------------------------------------------------------------- experiments and inputs
EXPERIMENT_PREFIX = "hqcbench-"  # + dataset: the experiment a job uses when none is given
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's experiment tag: which UI page it opens on
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # ... the training runs, not the GenAI overview
INPUT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}  # split -> mlflow.log_input context

# ----------------------------------------------------------------------------- tuning
TAG_STUDY = "hqcbench.study"  # the Optuna study a trial run belongs to
TAG_TRIAL = "hqcbench.trial"  # the Optuna trial number
TAG_TRIAL_STATE = "hqcbench.trial_state"  # complete | pruned | failed
TAG_WORKER = "hqcbench.worker"  # host:pid of the tune worker
TAG_RETRY_OF_TRIAL = "hqcbench.retry_of_trial"
TAG_PRUNED_AT_EPOCH = "hqcbench.pruned_at_epoch"
TAG_RETRAIN = "hqcbench.retrain"  # why this worker did (or did not) retrain
STUDY_SETTINGS_ATTR = "hqcbench.settings"  # Optuna study user attribute: what makes trials comparable
RETRAIN_CLAIM_ATTR = "hqcbench.retrain:"  # + sorted arm names: Optuna user attribute of the retrain claim

# ----------------------------------------------------------------------------- robustness
TAG_CHECK_PREFIX = "hqcbench.check."  # + check name: pass | fail | skipped: why
TAG_ATTACK_NOTE = "hqcbench.attack_note"
TAG_ATTACK_SETTINGS = "hqcbench.attack_settings"
TAG_GRADIENT_FREE = "hqcbench.gradient_free"  # a model without input gradients: why, and the attacks it got
TAG_MASKING = "possible_gradient_masking"  # also logged as a 0/1 metric of the same name
TAG_MASKING_REASON = "possible_gradient_masking.reason"

# ----------------------------------------------------------------------------- finite shots
TAG_READOUT = "hqcbench.readout"
TAG_TRAIN_READOUT = "hqcbench.train_readout"

# ----------------------------------------------------------------------------- noise (docs/noise.md)
TAG_NOISE = "hqcbench.noise"  # the noise model evaluated (canonical spelling), or "not modelled: why"
TAG_NOISE_METHOD = "hqcbench.noise_method"  # density | trajectories (K) | noiseless: how it was simulated
TAG_NOISE_ROBUST_SKIPPED = "hqcbench.noise_robust_skipped"  # why robust accuracy under noise was not measured
TAG_TRAIN_NOISE = "hqcbench.train_noise"  # noise-aware training: the model and method, or "not modelled: why"
METRIC_TEST_ACC_NOISY = "test_acc_noisy"  # test accuracy under `noise` (test_acc stays noiseless)
NOISE_IDEAL_LOADING = "ideal_loading"  # the noise term that leaves the encoding's gates error-free (an idealisation)
METRIC_NOISE_TIME_S = "noise_time_s"  # wall time of one arm's whole noise evaluation (clean, sweep, attacks)
NOISE_SWEEP_CURVE = "test_acc_vs_depolarizing"  # step = P in parts per million


def noisy_metric(metric: str) -> str:
    """e.g. robust_acc_pgd_eps_0.1_noisy: the same quantity measured with the circuit under ``noise``."""
    return f"{metric}_noisy"


def noise_setting_metric(metric: str, setting: str) -> str:
    """e.g. test_acc_noisy_device_FakeManilaV2: a noisy metric under one named setting (its canonical
    spelling with ':' and '+' as '_'), so that several noise models evaluated on one run stay apart."""
    return f"{metric}_{setting.replace(':', '_').replace('+', '_')}"


def noise_sweep_metric(p: float) -> str:
    """e.g. test_acc_depolarizing_0.01: test accuracy under depolarizing:P."""
    return f"test_acc_depolarizing_{p:g}"


# ----------------------------------------------------------------------------- report
TAG_REPORT_OF = "hqcbench.report_of"

# ----------------------------------------------------------------------------- metrics
PER_EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "eval_time_s",
                     "samples_per_s", "lr", "cpu_util_cores", "rss_peak_mb", "torch_threads")
METRIC_TORCH_THREADS = "torch_threads"  # per epoch: intra-op threads torch used (timings compare like with like)
METRIC_EPOCHS_RUN = "epochs_run"  # final: epochs actually trained (early stopping may end before `epochs`)
METRIC_STOPPED_EARLY = "stopped_early"  # final: 1 when validation loss plateaued before `epochs`
TEST_CORRECT_ARTIFACT = "test_correct.txt"  # per test image: 1 if the selected checkpoint got it right


def tag(name: str) -> str:
    """``hqcbench.<name>`` for a tag built at run time (e.g. per arm); constants above for fixed ones."""
    return PREFIX + name


def evaluation_tag(kind: str) -> str:
    """e.g. hqcbench.evaluation.robustness -> the fingerprint of the evaluation settings it ran with"""
    return EVALUATION_TAG_PREFIX + kind


def check_tag(check: str) -> str:
    """e.g. hqcbench.check.high_eps"""
    return TAG_CHECK_PREFIX + check


def best_trial_tag(arm: str) -> str:
    return f"{PREFIX}best_trial.{arm}"


def best_run_tag(arm: str) -> str:
    return f"{PREFIX}best_run.{arm}"


def robust_metric(attack: str, eps: float) -> str:
    """e.g. robust_acc_pgd_eps_0.1"""
    return f"robust_acc_{attack}_eps_{eps:g}"


def robust_curve_metric(attack: str) -> str:
    return f"robust_curve_{attack}"


def autoattack_first_metric(member: str, eps: float) -> str:
    """e.g. autoattack_first_square_eps_0.1: share of the attacked images an AutoAttack member broke first."""
    return f"autoattack_first_{member}_eps_{eps:g}"


def attack_time_metric(attack: str) -> str:
    return f"attack_time_s_{attack}"


def eps_step(eps: float) -> int:
    """Step of a robustness-curve point: round(eps * 1000)."""
    return int(round(eps * 1000))


def sweep_metric(shots: int) -> str:
    """e.g. test_acc_shots_1000"""
    return f"test_acc_shots_{int(shots)}"


def default_experiment(dataset: str) -> str:
    """e.g. hqcbench-mnist"""
    return f"{EXPERIMENT_PREFIX}{dataset}"


def input_name(dataset: str, split: str) -> str:
    """The MLflow dataset name of one split, e.g. mnist-train (the UI's Dataset column)."""
    return f"{dataset}-{split}"


def headline_metric(metric: str, arm: str, baseline: str, end: str = "") -> str:
    """Parent-run paired difference, e.g. test_acc_hybrid_minus_cnn (end: "ci_low" | "ci_high")."""
    return f"{metric}_{arm}_minus_{baseline}" + (f"_{end}" if end else "")


def child_run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def child_tags(arm: str, protocol: str, dataset: str, seed: int) -> dict[str, str]:
    return {TAG_ARM: arm, TAG_PROTOCOL: protocol, TAG_DATASET: dataset, TAG_SEED: str(seed), TAG_KIND: "child"}


# ----------------------------------------------------------------------------- worst case
WORST = "worst"  # robust_metric(WORST, eps): accuracy on the images that survive every attack run
TAG_ATTACK_EOT = "hqcbench.attack_eot"  # finite-shot model: readout samples averaged per attack gradient
TAG_BPDA_SURROGATES = "hqcbench.bpda_surrogates"  # which saturating maps BPDA replaced (or none)
ROBUST_CORRECT_ARTIFACT = "robust_correct.csv"  # per attacked image: 1 if still correct after each attack
METRIC_ZERO_GRAD_FRACTION = "check_zero_grad_fraction"  # correctly classified images with a vanishing gradient
CONVERGENCE_STEPS_CURVE = "robust_curve_pgd_steps"  # step = PGD iterations
CONVERGENCE_RESTARTS_CURVE = "robust_curve_pgd_restarts"  # step = random restarts
