"""RunConfig and TuneConfig: every knob of a main run and of a tune worker, validated once.

The dataclass fields are the single source of truth for the CLI flags (``--name value``), the
MLproject ``main`` and ``tune`` parameters and the parameter tables of README.md and docs/tuning.md;
tests check they agree. TuneConfig takes every field it shares with RunConfig from RunConfig
(``shared()``): the same type, allowed values and checks, with its own default or help where tuning
differs, so no field is specified twice.

Size: both configs live here because TuneConfig is built from RunConfig's field specs (and config
may import only errors and names); split apart, the tune half would import this module's private
field machinery. Each half is about 200 lines.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import psutil

from hqcbench import arms as arm_registry
from hqcbench.errors import UserInputError

T = TypeVar("T")

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar100", "stl10")
USER_DATASET_KINDS = ("folder", "npz")  # dataset=folder:PATH | npz:FILE: a researcher's own images (docs/byo.md)
PAPER_DATASETS = ("mnist", "cifar100", "stl10")
# tuned: the fair recipe with the hyperparameters an equal-budget Optuna study chose for each arm (a
# campaign's tuned block runs the studies and sets them; docs/tuning.md). Display order: paper, fair, tuned.
PROTOCOLS = ("fair", "paper", "tuned")
FAIR_RECIPE_PROTOCOLS = ("fair", "tuned")  # the protocols that train with the fair recipe and architecture
ENCODINGS = ("angle", "amplitude")
ANSATZES = ("strong", "basic")
ENGINES = ("fused", "torchquantum")
DEVICES = ("auto", "cpu", "cuda")
# The attacks parameter's allowed values, in the reports' display order; each is a row of
# evaluation/attack_table.py (what it needs, how it is built, its stages), and a test keeps the two equal.
ATTACKS = ("fgsm", "pgd", "square", "pgd_paper", "autoattack", "bpda", "pgd_convergence")
# noise=...: evaluation under a noise model (parsed by models.noise_spec, which owns the syntax; docs/noise.md)
NOISE_ALLOWED = ("none|depolarizing:P|readout:P|depolarizing:P+readout:P|device:NAME "
                 "(P a probability in [0, 1]; NAME a qiskit-ibm-runtime fake backend, e.g. FakeManilaV2); "
                 "+ideal_loading beside depolarizing:P leaves the encoding's gates error-free (an idealisation)")
NOISE_SWEEP_ALLOWED = "empty or comma-separated depolarizing probabilities in [0, 1], e.g. 0,0.001,0.01"
NOISE_METHODS = ("auto", "density", "trajectories")
DEFAULT_NOISE_TRAJECTORIES = 200
# the attacks that can be crafted against the circuit under noise and classified under the same noise
# (evaluation.noise); auto: fgsm and pgd where `attacks` has them (AutoAttack's budget under noise is far larger)
NOISE_ATTACKS = ("fgsm", "pgd", "autoattack")
AUTO_NOISE_ATTACKS = ("fgsm", "pgd")  # noise_attacks=auto: these, where `attacks` has them
DEFAULT_ENCODING_SCALE = math.pi  # angle encoding RY(pi * tanh x): the circuit as it always was
# A dense state vector needs 2**n complex amplitudes per sample (8 MiB at 20 qubits in complex64); the
# adjoint method keeps its backward pass at a few of them per sample, and the memory check the jobs call
# (models.memory.check_memory) refuses a configuration this machine cannot hold, whatever the limit allows.
MAX_QUBITS = 20
MAX_WIDTH = 256  # backbone width (channels of the first conv layer)
TUNE_PROTOCOLS = ("fair",)  # paper fixes architecture and learning rates: nothing to tune
RETRAIN_CHOICES = ("auto", "always", "never")
STORAGE_ALLOWED = "sqlite:///PATH (file in an existing folder) or postgresql://USER:PASSWORD@HOST:PORT/DB (reachable)"
# Fixed facts of the published procedure (arXiv 2509.13353), read by recipes, runs and the report.
PAPER_BATCH_SIZE = 64
PAPER_EPOCHS = 50
PAPER_VAL_FRACTION = 0.2  # published: random 80/20 split of the (augmented) training set


def _qubits_beyond_simulator(n_qubits: int, batch_size: int) -> str:
    """Why ``n_qubits`` outside 1..MAX_QUBITS is refused, with the memory one state vector would take."""
    if n_qubits < 1:
        return f"{n_qubits} qubits: a circuit needs at least one"
    gib = 2.0 ** 30
    per_sample = 8 * 2.0 ** n_qubits  # complex64 amplitudes of one state vector
    return (f"{n_qubits} qubits need {per_sample / gib:,.2f} GiB per sample for one state vector alone (complex64), "
            f"{per_sample * batch_size / gib:,.0f} GiB for a batch of {batch_size}, before any gradient, against "
            f"{psutil.virtual_memory().available / gib:.1f} GiB available; the simulator stops at {MAX_QUBITS} "
            f"qubits (8 MiB per sample)")


def _param(default: Any, help: str, allowed: str | None = None) -> Any:
    """A dataclass field carrying its CLI/MLproject help text."""
    return field(default=default, metadata={"help": help, "allowed": allowed})


def is_user_dataset(dataset: str) -> bool:
    kind, _, path = dataset.partition(":")
    return kind in USER_DATASET_KINDS and bool(path.strip())


def dataset_name(dataset: str) -> str:
    """What names a dataset in tags, run and experiment names: a built-in name, or the stem of a user
    dataset's folder or file ('folder:/data/flowers/' -> 'flowers'), never its path."""
    if not is_user_dataset(dataset):
        return dataset
    path = dataset.partition(":")[2].strip().rstrip("/\\")
    base = os.path.basename(path)
    return os.path.splitext(base)[0] if dataset.startswith("npz:") else base


def _items(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']"""
    return [item.strip() for item in text.split(",") if item.strip()]


def arm_params_entries(arm: str) -> tuple[str, ...]:
    """The ``arm_params`` entries ``arm`` receives, later ones overriding earlier: its own, and for a twin
    or frozen variant (the same model transformed) its base model's first."""
    spec = arm_registry.get(arm)
    return (spec.factory, arm) if spec.transform else (arm,)


def arm_params_for(text: str, arm: str) -> str:
    """``arm_params`` cut down to what ``arm`` receives (``arm_params_entries``): one cell of a campaign
    trains one arm, and its fingerprint must not change when another arm's hyperparameters do."""
    keep = arm_params_entries(arm)
    table = {name: values for name, values in _arm_params(text).items() if name in keep}
    return json.dumps(table, sort_keys=True) if table else ""


def _arm_params(text: str) -> dict[str, dict[str, Any]]:
    """``arm_params`` parsed: arm name (as given, or as registered) -> {hyperparameter: value}."""
    if not text.strip():
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError("expected a JSON object of objects")
    out = {}
    for name, values in table.items():
        try:
            out[arm_registry.canonical(name)] = values
        except arm_registry.ArmError:
            out[name] = values
    return out


@dataclass
class RunConfig:
    """Everything a main run needs. Field order = CLI/MLproject/README order."""

    dataset: str = _param("digits", "dataset to train on: a built-in one, or your images as folder:PATH "
                          "(PATH/train/<class>/, PATH/test/<class>/) or npz:FILE (x_train, y_train, x_test, y_test)",
                          "|".join(DATASETS) + "|folder:PATH|npz:FILE")
    image_size: int = _param(0, "folder datasets: resize every image to image_size x image_size (0: keep their one "
                             "square size)", ">= 0")
    protocol: str = _param("fair", "fair (shared recipe), paper (published recipe) or tuned (fair recipe, "
                           "hyperparameters from an equal-budget study)", "|".join(PROTOCOLS))
    arms: str = _param("cnn,hybrid,control", "comma-separated arms: built-in ones, or a user model as "
                       "[twin:|frozen:]module:callable (docs/byo.md)",
                       ",".join(arm_registry.names()) + ", [twin:|frozen:]module:callable")
    arm_params: str = _param("", "hyperparameters of user arms' factories, as JSON: {\"module:fn\": {\"layers\": 2}}",
                             "a JSON object: arm name -> {hyperparameter its factory names: value}")
    epochs: int = _param(15, "training epochs per arm", ">= 1")
    patience: int = _param(0, "stop once validation loss has not improved for this many epochs (0: run every epoch)",
                           ">= 0")
    batch_size: int = _param(32, "mini-batch size", ">= 1")
    lr: float = _param(3e-3, "learning rate (fair protocol; paper uses the published ones)", "> 0")
    seeds: str = _param("0", "comma-separated seeds; one child run per arm and seed", "integers >= 0, e.g. 0,1,2")
    width: int = _param(16, "backbone width (channels of the first conv layer)", f"1..{MAX_WIDTH}")
    n_qubits: int = _param(4, "qubits of the circuit (control: width of its middle)", f"1..{MAX_QUBITS}")
    depth: int = _param(2, "ansatz layers", ">= 1")
    encoding: str = _param("angle", "how features enter the circuit", "|".join(ENCODINGS))
    encoding_scale: float = _param(DEFAULT_ENCODING_SCALE, "angle encoding's RY(encoding_scale * tanh x); "
                                   "default pi (an ablation knob)", "finite > 0; angle encoding only")
    ansatz: str = _param("strong", "trainable circuit layers", "|".join(ANSATZES))
    engine: str = _param("fused", "circuit simulator: fused (fast) or torchquantum (reference)", "|".join(ENGINES))
    data_dir: str = _param("", "folder with already-downloaded dataset files (empty: $HQCBENCH_DATA_DIR, else "
                           "download to ./data)", "a readable directory")
    val_fraction: float = _param(0.2, "fraction of the training split held out for validation", "0 < v < 1")
    train_limit: int = _param(0, "use only this many training images (0: all)", ">= 0")
    device: str = _param("auto", "where to train", "|".join(DEVICES))
    threads: int = _param(0, "torch intra-op threads (0: the CPUs available to the process: affinity mask, cgroup "
                          "quota); logged per epoch", ">= 0")
    attacks: str = _param("fgsm,pgd", "adversarial attacks run after training (none: skip)",
                          ",".join(ATTACKS) + " or none")
    eps: str = _param("0.1", "L-inf attack budgets in pixel units", "comma-separated floats in (0, 1]")
    attack_samples: str = _param("1000", "test images attacked (fixed subset, same for all arms and seeds)",
                                 "integer >= 1 or all")
    pgd_steps: int = _param(40, "PGD iterations", ">= 1")
    pgd_step_size: float = _param(0.0, "PGD step size in pixel units (0: eps/10)", ">= 0")
    pgd_restarts: int = _param(1, "PGD random restarts", ">= 1")
    shots: str = _param("exact", "circuit readout at evaluation: exact or a number of shots", "exact or integer >= 1")
    train_shots: str = _param("none", "shots during training (none: exact, parameter-shift when set)",
                              "none or integer >= 1")
    shots_sweep: str = _param("", "evaluate the trained hybrid at these shot counts",
                              "empty or comma-separated integers >= 1")
    shot_rate_hz: float = _param(0.0, "hardware shots per second for the cost estimate (0: documented default)", ">= 0")
    noise: str = _param("none", "also evaluate circuit arms under this noise model (test_acc_noisy; training and "
                        "selection stay noiseless)", NOISE_ALLOWED)
    noise_method: str = _param("auto", "how noise is simulated: the exact density matrix, Monte-Carlo trajectories, "
                               "or auto (the density matrix where it fits)", "|".join(NOISE_METHODS))
    noise_trajectories: int = _param(DEFAULT_NOISE_TRAJECTORIES, "trajectories per image when noise is simulated by "
                                     "trajectories", ">= 1")
    noise_attacks: str = _param("auto", "the attacks crafted against circuit arms under `noise` and classified under "
                                "it (auto: the fgsm and pgd of attacks)",
                                "auto, none or comma-separated " + ",".join(NOISE_ATTACKS))
    noise_sweep: str = _param("", "evaluate circuit arms under depolarizing:P at each of these P "
                              "(test_acc_depolarizing_<P>)", NOISE_SWEEP_ALLOWED)
    train_noise: str = _param("none", "train circuit arms under this noise model (noise-aware training: training "
                              "and validation passes; test_acc stays noiseless)", NOISE_ALLOWED)

    # ------------------------------------------------------------------ parsing helpers
    @property
    def dataset_name(self) -> str:
        return dataset_name(self.dataset)

    @property
    def noise_attack_list(self) -> list[str]:
        """The attacks run under ``noise``: ``auto`` is the fgsm and pgd of ``attacks``; ValueError on an
        unknown one."""
        text = self.noise_attacks.strip()
        if text == "auto":
            return [a for a in self.attack_list if a in AUTO_NOISE_ATTACKS]
        if text in ("", "none"):
            return []
        chosen = _items(text)
        unknown = [a for a in chosen if a not in NOISE_ATTACKS]
        if unknown:
            raise ValueError(f"cannot run {', '.join(map(repr, unknown))} under noise")
        return chosen

    @property
    def arm_list(self) -> list[str]:
        """The arms as registered: ``twin:hybrid`` is ``control``, ``frozen:hybrid`` is ``hybrid_frozen``
        (their runs, tags and fingerprints are those arms'); a user arm keeps its own name."""
        out = []
        for name in _items(self.arms):
            try:
                out.append(arm_registry.canonical(name))
            except arm_registry.ArmError:
                out.append(name)  # validate() says why, as one line
        return out

    def hparams_for(self, arm: str) -> dict[str, Any]:
        """What a user arm's factory receives: its entry of ``arm_params``, then the RunConfig fields its
        signature names (so a factory declaring ``n_qubits`` is tuned like the hybrid); nothing else."""
        spec = arm_registry.get(arm)
        table = _arm_params(self.arm_params)
        given: dict[str, Any] = {}
        for entry in arm_params_entries(arm):
            given.update(table.get(entry, {}))
        for name in spec.hparams:
            if name not in given and name in RunConfig.__dataclass_fields__:
                given[name] = getattr(self, name)
        return given

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in _items(self.seeds)]

    @property
    def eps_list(self) -> list[float]:
        return [float(e) for e in _items(self.eps)]

    @property
    def attack_list(self) -> list[str]:
        if self.attacks.strip().lower() in ("", "none"):
            return []
        return _items(self.attacks)

    @property
    def attack_sample_count(self) -> int | None:
        """None means the whole test split."""
        return None if self.attack_samples.strip().lower() == "all" else int(self.attack_samples)

    @property
    def eval_shots(self) -> int | None:
        return None if self.shots.strip().lower() == "exact" else int(self.shots)

    @property
    def train_shot_count(self) -> int | None:
        return None if self.train_shots.strip().lower() in ("none", "") else int(self.train_shots)

    @property
    def shots_sweep_list(self) -> list[int]:
        return [int(s) for s in _items(self.shots_sweep)]

    # ------------------------------------------------------------------ validation
    def validate(self) -> "RunConfig":
        """Check every field once; raise UserInputError naming the first bad parameter."""
        def allowed(name: str) -> str:
            return FIELD_META[name]["allowed"]

        def require(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise UserInputError(name, message, allowed(name))

        require(self.dataset in DATASETS or is_user_dataset(self.dataset), "dataset",
                f"unknown dataset {self.dataset!r}")
        require(isinstance(self.image_size, int) and self.image_size >= 0, "image_size", f"got {self.image_size}")
        require(self.protocol in PROTOCOLS, "protocol", f"unknown protocol {self.protocol!r}")
        if self.protocol == "paper" and self.dataset not in PAPER_DATASETS:
            raise UserInputError(
                "protocol", f"the paper protocol exists for {', '.join(PAPER_DATASETS)} only, not {self.dataset!r}",
                "fair, or paper with dataset " + "|".join(PAPER_DATASETS))
        require(bool(_items(self.arms)), "arms", f"bad arms {self.arms!r}")
        for name in _items(self.arms):
            try:
                spec = arm_registry.resolve(name)
            except arm_registry.ArmError as exc:
                raise UserInputError("arms", str(exc), allowed("arms")) from None
            if spec.is_user and self.protocol == "paper":
                raise UserInputError("arms", f"arm {name!r}: the paper protocol rebuilds the published models only",
                                     "a user arm under the fair or tuned protocol")
        arms = self.arm_list
        require(len(set(arms)) == len(arms), "arms", f"repeated arm in {self.arms!r}")
        try:
            table = _arm_params(self.arm_params)
        except ValueError as exc:
            raise UserInputError("arm_params", str(exc), allowed("arm_params")) from None
        bases = {arm_registry.get(a).factory: a for a in arms if arm_registry.get(a).transform}
        for name, hparams in table.items():
            if name not in arms and name not in bases:
                raise UserInputError("arm_params", f"arm {name!r} is not among the arms {self.arms!r}",
                                     allowed("arm_params"))
            takes = arm_registry.get(bases.get(name, name)).hparams
            unknown = sorted(set(hparams) - set(takes))
            if unknown:
                raise UserInputError("arm_params", f"arm {name!r}: its factory names no {', '.join(unknown)} "
                                     f"(it takes: {', '.join(takes) or 'nothing'})", allowed("arm_params"))
        require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", f"got {self.epochs}")
        require(isinstance(self.patience, int) and self.patience >= 0, "patience", f"got {self.patience}")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", f"got {self.batch_size}")
        require(self.lr > 0, "lr", f"got {self.lr}")
        try:
            seeds = self.seed_list
        except ValueError:
            raise UserInputError("seeds", f"not a list of integers: {self.seeds!r}", allowed("seeds")) from None
        require(bool(seeds) and all(s >= 0 for s in seeds), "seeds", f"bad seeds {self.seeds!r}")
        require(len(set(seeds)) == len(seeds), "seeds", f"repeated seed in {self.seeds!r}")
        require(1 <= self.width <= MAX_WIDTH, "width", f"got {self.width}")
        require(1 <= self.n_qubits <= MAX_QUBITS, "n_qubits", _qubits_beyond_simulator(self.n_qubits, self.batch_size))
        require(self.depth >= 1, "depth", f"got {self.depth}")
        require(self.encoding in ENCODINGS, "encoding", f"unknown encoding {self.encoding!r}")
        require(math.isfinite(self.encoding_scale) and self.encoding_scale > 0, "encoding_scale",
                f"got {self.encoding_scale}")
        if self.encoding_scale != DEFAULT_ENCODING_SCALE and (self.encoding == "amplitude" or self.protocol == "paper"):
            used = ("the paper architecture uses amplitude encoding" if self.protocol == "paper"
                    else "encoding=amplitude")
            require(False, "encoding_scale", f"{self.encoding_scale:g} has no angle to scale: {used}")
        require(self.ansatz in ANSATZES, "ansatz", f"unknown ansatz {self.ansatz!r}")
        require(self.engine in ENGINES, "engine", f"unknown engine {self.engine!r}")
        if self.data_dir:
            require(os.path.isdir(self.data_dir) and os.access(self.data_dir, os.R_OK | os.X_OK),
                    "data_dir", f"{self.data_dir!r} is not a readable directory")
        require(0.0 < self.val_fraction < 1.0, "val_fraction", f"got {self.val_fraction}")
        require(self.train_limit >= 0, "train_limit", f"got {self.train_limit}")
        require(self.device in DEVICES, "device", f"unknown device {self.device!r}")
        require(isinstance(self.threads, int) and self.threads >= 0, "threads", f"got {self.threads}")
        require(all(a in ATTACKS for a in self.attack_list), "attacks", f"bad attacks {self.attacks!r}")
        try:
            eps = self.eps_list
        except ValueError:
            raise UserInputError("eps", f"not a list of numbers: {self.eps!r}", allowed("eps")) from None
        require(bool(eps) and all(0 < e <= 1 for e in eps), "eps", f"bad eps {self.eps!r}")
        try:
            n_attack = self.attack_sample_count
        except ValueError:
            raise UserInputError("attack_samples", f"got {self.attack_samples!r}", allowed("attack_samples")) from None
        require(n_attack is None or n_attack >= 1, "attack_samples", f"got {self.attack_samples!r}")
        require(self.pgd_steps >= 1, "pgd_steps", f"got {self.pgd_steps}")
        require(self.pgd_step_size >= 0, "pgd_step_size", f"got {self.pgd_step_size}")
        require(self.pgd_restarts >= 1, "pgd_restarts", f"got {self.pgd_restarts}")
        for name, parse in (("shots", lambda: self.eval_shots), ("train_shots", lambda: self.train_shot_count),
                            ("shots_sweep", lambda: self.shots_sweep_list)):
            try:
                value = parse()
            except ValueError:
                raise UserInputError(name, f"got {getattr(self, name)!r}", allowed(name)) from None
            values = value if isinstance(value, list) else [value]
            require(all(v is None or v >= 1 for v in values), name, f"got {getattr(self, name)!r}")
        require(self.shot_rate_hz >= 0, "shot_rate_hz", f"got {self.shot_rate_hz}")
        require(self.noise_method in NOISE_METHODS, "noise_method", f"unknown method {self.noise_method!r}")
        require(isinstance(self.noise_trajectories, int) and self.noise_trajectories >= 1, "noise_trajectories",
                f"got {self.noise_trajectories}")
        try:
            self.noise_attack_list
        except ValueError as exc:
            raise UserInputError("noise_attacks", str(exc), allowed("noise_attacks")) from None
        # the noise and noise_sweep syntax: models.noise.check_settings, called by the jobs before any work
        return self  # whether it fits in memory: models.memory.check_memory, called by the jobs that build models

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_strings(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from CLI/MLproject strings, converting to each field's type with a clear error."""
        return cls(**_converted(values, FIELD_TYPES, FIELD_META))


# ============================================================================ field tables
def field_meta(cls: type) -> dict[str, dict[str, Any]]:
    """name -> {'help': ..., 'allowed': ...} in field (= CLI / MLproject) order."""
    return {f.name: dict(f.metadata) for f in dataclasses.fields(cls)}


def field_types(cls: type) -> dict[str, type]:
    """name -> int | float | str (the annotations are strings under ``from __future__ import annotations``)."""
    return {f.name: {"int": int, "float": float, "str": str}[f.type] if isinstance(f.type, str) else f.type
            for f in dataclasses.fields(cls)}


def field_defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


FIELD_META = field_meta(RunConfig)
FIELD_TYPES = field_types(RunConfig)
FIELD_DEFAULTS = field_defaults(RunConfig)


def convert(name: str, raw: Any, kind: type, allowed: str | None) -> Any:
    """Convert a CLI string to ``kind``, raising UserInputError naming the parameter and ``allowed``."""
    if isinstance(raw, kind):
        return raw
    try:
        if kind is int:
            as_float = float(raw)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if kind is float:
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise UserInputError(name, f"expected {kind.__name__}, got {raw!r}", allowed) from None


def _converted(values: dict[str, Any], types: dict[str, type], meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The given (non-None) values of known fields, each converted to its field's type."""
    return {name: convert(name, values[name], kind, meta[name]["allowed"])
            for name, kind in types.items() if values.get(name) is not None}


def markdown_parameter_table(cls: type = RunConfig) -> str:
    """The parameter table of an entry point: README's for ``main`` (RunConfig), docs/tuning.md's for
    ``tune`` (TuneConfig); tests check each document == this."""
    rows = ["| parameter | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    kinds = {int: "int", float: "float", str: "string"}
    types, defaults = field_types(cls), field_defaults(cls)
    for name, meta in field_meta(cls).items():
        default = defaults[name]
        shown = f"`{default}`" if default != "" else "(empty)"
        allowed = meta["allowed"].replace("|", " \\| ")
        rows.append(f"| `{name}` | {kinds[types[name]]} | {shown} | {allowed} | {meta['help']} |")
    return "\n".join(rows)


# ============================================================================ fields shared with RunConfig
class _Shared:
    """Placeholder left by ``shared()`` in a class body until ``derived_from`` replaces it."""

    def __init__(self, overrides: dict[str, Any]):
        self.overrides = overrides


def shared(*, default: Any = dataclasses.MISSING, help: str | None = None, allowed: str | None = None) -> Any:
    """In a ``@derived_from(RunConfig)`` class: RunConfig's field of the same name (type, default, help,
    allowed values; its checks run through ``RunConfig.validate``). ``default`` and ``help`` may differ
    where the other job uses the field differently; ``allowed`` only to narrow it (the other job's
    ``validate`` then checks the narrower choice itself)."""
    overrides = {key: value for key, value in (("help", help), ("allowed", allowed)) if value is not None}
    if default is not dataclasses.MISSING:
        overrides["default"] = default
    return _Shared(overrides)


def derived_from(source: type) -> Callable[[type[T]], type[T]]:
    """Class decorator, applied before ``@dataclass``: turn each ``name = shared(...)`` into a field with
    ``source``'s annotation, default and metadata for ``name`` (plus the overrides), in class-body order."""
    specs = {f.name: f for f in dataclasses.fields(source)}

    def apply(cls: type[T]) -> type[T]:
        own = dict(cls.__dict__.get("__annotations__", {}))
        annotations: dict[str, Any] = {}
        for name, value in list(vars(cls).items()):
            if isinstance(value, _Shared):
                if name not in specs:
                    raise TypeError(f"{cls.__name__}.{name}: {source.__name__} has no field {name!r}")
                spec, overrides = specs[name], dict(value.overrides)
                default = overrides.pop("default", spec.default)
                setattr(cls, name, field(default=default, metadata={**spec.metadata, **overrides}))
                annotations[name] = spec.type
            elif name in own:
                annotations[name] = own.pop(name)
        if own:
            raise TypeError(f"{cls.__name__}: fields without a default cannot be ordered: {sorted(own)}")
        cls.__annotations__ = annotations
        return cls

    return apply


def _bound(field_name: str, relation: str) -> str:
    """Allowed values of a search-range bound: those of the RunConfig field it bounds, plus ``relation``."""
    return f"{FIELD_META[field_name]['allowed']}, {relation}"


# ============================================================================ the tune job
@dataclass
@derived_from(RunConfig)
class TuneConfig:
    """Every knob of the ``tune`` entry point. Field order = CLI / MLproject / docs/tuning.md order.

    ``shared()`` fields are RunConfig's (see ``derived_from``); the others belong to tuning.
    """

    dataset = shared()
    protocol = shared(help="training protocol (paper fixes the architecture: nothing to tune)",
                      allowed="|".join(TUNE_PROTOCOLS))
    arms = shared(default="hybrid", help="comma-separated arms; one study each, same budget")
    n_trials: int = _param(20, "trials per arm: the study's total over all workers and restarts", ">= 1")
    timeout: int = _param(0, "this worker starts no new trial after this many seconds (0: no limit)", ">= 0")
    storage: str = _param("sqlite:///optuna.db", "Optuna storage URL shared by all workers", STORAGE_ALLOWED)
    study_name: str = _param("", "study name prefix (empty: hqcbench-<dataset>-<protocol>); study = <prefix>-<arm>",
                             "empty or a name")
    sampler_seed: int = _param(0, "seed of the TPE sampler (each trial gets its own seed derived from it)", ">= 0")
    epochs = shared(default=5, help="training epochs per trial (and for the retrain)")
    batch_size = shared()
    width_min: int = _param(4, "smallest backbone width searched (log scale)", _bound("width", "<= width_max"))
    width_max: int = _param(32, "largest backbone width searched", _bound("width", ">= width_min"))
    lr_min: float = _param(1e-4, "smallest learning rate searched (log scale)", _bound("lr", "<= lr_max"))
    lr_max: float = _param(1e-2, "largest learning rate searched", _bound("lr", ">= lr_min"))
    qubits_min: int = _param(2, "fewest qubits searched (hybrid; control: its middle's width)",
                             _bound("n_qubits", "<= qubits_max"))
    qubits_max: int = _param(10, "most qubits searched", _bound("n_qubits", ">= qubits_min"))
    depth_min: int = _param(1, "fewest ansatz layers searched (hybrid)", _bound("depth", "<= depth_max"))
    depth_max: int = _param(6, "most ansatz layers searched (hybrid)", ">= depth_min")
    encodings: str = _param("angle,amplitude", "encodings searched (hybrid)", ",".join(ENCODINGS))
    ansatzes: str = _param("strong,basic", "ansatzes searched (hybrid)", ",".join(ANSATZES))
    seeds = shared(help="seeds of the retrain; trials train with the first")
    engine = shared()
    data_dir = shared()
    val_fraction = shared()
    train_limit = shared()
    device = shared()
    attacks = shared(help="attacks run on the retrained models (none: skip)")
    retrain: str = _param("auto", "auto: the worker that sees every study finished retrains, once per study state; "
                          "always; never", "|".join(RETRAIN_CHOICES))
    heartbeat_s: int = _param(10, "trial heartbeat interval; a trial silent for 3x this is failed (its worker died)",
                              ">= 1")

    # ------------------------------------------------------------------ parsing
    @property
    def arm_list(self) -> list[str]:
        return self.base_config().arm_list

    @property
    def encoding_list(self) -> list[str]:
        return _items(self.encodings)

    @property
    def ansatz_list(self) -> list[str]:
        return _items(self.ansatzes)

    @property
    def trial_seed(self) -> int:
        return self.base_config().seed_list[0]

    def study_name_for(self, arm: str) -> str:
        prefix = self.study_name.strip() or f"hqcbench-{self.dataset}-{self.protocol}"
        return f"{prefix}-{arm}"

    def base_config(self) -> RunConfig:
        """The main job's config for everything the search does not set (the shared fields)."""
        return RunConfig(**{name: getattr(self, name) for name in TUNE_SHARED})

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TuneConfig":
        """Raise UserInputError naming the first bad parameter; touches no storage."""
        def require(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise UserInputError(name, message, TUNE_META[name]["allowed"])

        require(self.protocol in TUNE_PROTOCOLS, "protocol",
                f"{self.protocol!r} cannot be tuned (the paper protocol fixes architecture and learning rates)")
        self.base_config().validate()  # every shared field, with RunConfig's checks
        require(self.n_trials >= 1, "n_trials", f"got {self.n_trials}")
        require(self.timeout >= 0, "timeout", f"got {self.timeout}")
        require(self.sampler_seed >= 0, "sampler_seed", f"got {self.sampler_seed}")
        require(self.heartbeat_s >= 1, "heartbeat_s", f"got {self.heartbeat_s}")
        require(self.retrain in RETRAIN_CHOICES, "retrain", f"got {self.retrain!r}")
        for low, high, lo_ok, hi_ok in (("width_min", "width_max", 1, MAX_WIDTH),
                                        ("qubits_min", "qubits_max", 1, MAX_QUBITS),
                                        ("depth_min", "depth_max", 1, None)):
            lo, hi = getattr(self, low), getattr(self, high)
            require(lo >= lo_ok and (hi_ok is None or lo <= hi_ok), low, f"got {lo}")
            require(hi >= lo_ok and (hi_ok is None or hi <= hi_ok), high, f"got {hi}")
            require(lo <= hi, low, f"empty range: {low}={lo} > {high}={hi}")
        require(self.lr_min > 0, "lr_min", f"got {self.lr_min}")
        require(self.lr_max > 0, "lr_max", f"got {self.lr_max}")
        require(self.lr_min <= self.lr_max, "lr_min", f"empty range: lr_min={self.lr_min:g} > lr_max={self.lr_max:g}")
        for name, values, allowed in (("encodings", self.encoding_list, ENCODINGS),
                                      ("ansatzes", self.ansatz_list, ANSATZES)):
            require(bool(values), name, "empty list")
            require(all(v in allowed for v in values), name, f"got {getattr(self, name)!r}")
            require(len(set(values)) == len(values), name, f"repeated value in {getattr(self, name)!r}")
        return self  # whether its largest circuit fits in memory: models.memory.check_tune_memory

    def largest_circuit(self) -> "RunConfig | None":
        """The largest circuit the search may draw (tune_space.suggest), as a config; None without a circuit arm."""
        circuit_arm = next((a for a in self.arm_list if arm_registry.get(a).has_circuit), None)
        if circuit_arm is None:
            return None
        return self.base_config().replace(arms=circuit_arm, n_qubits=self.qubits_max, depth=self.depth_max,
                                          encoding="amplitude" if "amplitude" in self.encoding_list else "angle")

    def settings_for(self, arm: str) -> dict[str, Any]:
        """What makes two trials of ``arm`` comparable; stored on the study, checked on every load."""
        settings: dict[str, Any] = {"dataset": self.dataset, "protocol": self.protocol, "arms": arm,
                                    "epochs": self.epochs, "batch_size": self.batch_size,
                                    "seeds": self.trial_seed, "val_fraction": self.val_fraction,
                                    "train_limit": self.train_limit, "engine": self.engine,
                                    "width_min": self.width_min, "width_max": self.width_max,
                                    "lr_min": self.lr_min, "lr_max": self.lr_max}
        search = arm_registry.get(arm).search  # the ranges of what the arm searches (tune_space.suggest)
        if "n_qubits" in search:
            settings.update(qubits_min=self.qubits_min, qubits_max=self.qubits_max)
        if "depth" in search:
            settings.update(depth_min=self.depth_min, depth_max=self.depth_max)
        if "encoding" in search:
            settings.update(encodings=self.encoding_list)
        if "ansatz" in search:
            settings.update(ansatzes=self.ansatz_list)
        return settings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_strings(cls, values: dict[str, Any]) -> "TuneConfig":
        """Build from CLI/MLproject strings; a bad value names the parameter and the tune job's allowed values."""
        return cls(**_converted(values, TUNE_TYPES, TUNE_META))


TUNE_META = field_meta(TuneConfig)
TUNE_TYPES = field_types(TuneConfig)
TUNE_DEFAULTS = field_defaults(TuneConfig)
TUNE_SHARED = tuple(name for name in TUNE_META if name in FIELD_META)  # the fields taken from RunConfig
