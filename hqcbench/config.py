"""RunConfig: every knob of a main run, validated once, flattened to MLflow params.

The dataclass fields are the single source of truth for the CLI flags (``--name value``), the
MLproject ``main`` parameters and the README parameter table; tests check the three agree.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from hqcbench.errors import UserInputError

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar100", "stl10")
PAPER_DATASETS = ("mnist", "cifar100", "stl10")
ARMS = ("cnn", "hybrid", "control")
PROTOCOLS = ("fair", "paper")
ENCODINGS = ("angle", "amplitude")
ANSATZES = ("strong", "basic")
ENGINES = ("fused", "torchquantum")
DEVICES = ("auto", "cpu", "cuda")
ATTACKS = ("fgsm", "pgd", "square", "pgd_paper")
MAX_QUBITS = 12  # a dense state vector needs 2**n complex amplitudes per sample
# Fixed facts of the published procedure (arXiv 2509.13353), read by recipes, runs and the report.
PAPER_BATCH_SIZE = 64
PAPER_EPOCHS = 50
PAPER_VAL_FRACTION = 0.2  # published: random 80/20 split of the (augmented) training set


def _param(default: Any, help: str, allowed: str | None = None) -> Any:
    """A dataclass field carrying its CLI/MLproject help text."""
    return field(default=default, metadata={"help": help, "allowed": allowed})


@dataclass
class RunConfig:
    """Everything a main run needs. Field order = CLI/MLproject/README order."""

    dataset: str = _param("digits", "dataset to train on", "|".join(DATASETS))
    protocol: str = _param("fair", "fair (shared recipe) or paper (published recipe)", "|".join(PROTOCOLS))
    arms: str = _param("cnn,hybrid,control", "comma-separated arms", ",".join(ARMS))
    epochs: int = _param(15, "training epochs per arm", ">= 1")
    batch_size: int = _param(32, "mini-batch size", ">= 1")
    lr: float = _param(3e-3, "learning rate (fair protocol; paper uses the published ones)", "> 0")
    seeds: str = _param("0", "comma-separated seeds; one child run per arm and seed", "integers >= 0, e.g. 0,1,2")
    width: int = _param(16, "backbone width (channels of the first conv layer)", "1..256")
    n_qubits: int = _param(4, "qubits of the circuit (control: width of its middle)", f"1..{MAX_QUBITS}")
    depth: int = _param(2, "ansatz layers", ">= 1")
    encoding: str = _param("angle", "how features enter the circuit", "|".join(ENCODINGS))
    ansatz: str = _param("strong", "trainable circuit layers", "|".join(ANSATZES))
    engine: str = _param("fused", "circuit simulator: fused (fast) or torchquantum (reference)", "|".join(ENGINES))
    data_dir: str = _param("", "folder with already-downloaded dataset files (empty: download to ./data)", "a readable directory")
    val_fraction: float = _param(0.2, "fraction of the training split held out for validation", "0 < v < 1")
    train_limit: int = _param(0, "use only this many training images (0: all)", ">= 0")
    device: str = _param("auto", "where to train", "|".join(DEVICES))
    attacks: str = _param("fgsm,pgd", "adversarial attacks run after training (none: skip)", ",".join(ATTACKS) + " or none")
    eps: str = _param("0.1", "L-inf attack budgets in pixel units", "comma-separated floats in (0, 1]")
    attack_samples: str = _param("1000", "test images attacked (fixed subset, same for all arms and seeds)", "integer >= 1 or all")
    pgd_steps: int = _param(40, "PGD iterations", ">= 1")
    pgd_step_size: float = _param(0.0, "PGD step size in pixel units (0: eps/10)", ">= 0")
    pgd_restarts: int = _param(1, "PGD random restarts", ">= 1")
    shots: str = _param("exact", "circuit readout at evaluation: exact or a number of shots", "exact or integer >= 1")
    train_shots: str = _param("none", "shots during training (none: exact, parameter-shift when set)", "none or integer >= 1")
    shots_sweep: str = _param("", "evaluate the trained hybrid at these shot counts", "empty or comma-separated integers >= 1")
    shot_rate_hz: float = _param(0.0, "hardware shots per second for the cost estimate (0: documented default)", ">= 0")

    # ------------------------------------------------------------------ parsing helpers
    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]

    @property
    def eps_list(self) -> list[float]:
        return [float(e) for e in self.eps.split(",") if e.strip()]

    @property
    def attack_list(self) -> list[str]:
        if self.attacks.strip().lower() in ("", "none"):
            return []
        return [a.strip() for a in self.attacks.split(",") if a.strip()]

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
        return [int(s) for s in self.shots_sweep.split(",") if s.strip()]

    # ------------------------------------------------------------------ validation
    def validate(self) -> "RunConfig":
        """Check every field once; raise UserInputError naming the first bad parameter."""
        def allowed(name: str) -> str:
            return FIELD_META[name]["allowed"]

        def require(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise UserInputError(name, message, allowed(name))

        require(self.dataset in DATASETS, "dataset", f"unknown dataset {self.dataset!r}")
        require(self.protocol in PROTOCOLS, "protocol", f"unknown protocol {self.protocol!r}")
        if self.protocol == "paper" and self.dataset not in PAPER_DATASETS:
            raise UserInputError(
                "protocol", f"the paper protocol exists for {', '.join(PAPER_DATASETS)} only, not {self.dataset!r}",
                "fair, or paper with dataset " + "|".join(PAPER_DATASETS))
        arms = self.arm_list
        require(bool(arms) and all(a in ARMS for a in arms), "arms", f"bad arms {self.arms!r}")
        require(len(set(arms)) == len(arms), "arms", f"repeated arm in {self.arms!r}")
        require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", f"got {self.epochs}")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", f"got {self.batch_size}")
        require(self.lr > 0, "lr", f"got {self.lr}")
        try:
            seeds = self.seed_list
        except ValueError:
            raise UserInputError("seeds", f"not a list of integers: {self.seeds!r}", allowed("seeds")) from None
        require(bool(seeds) and all(s >= 0 for s in seeds), "seeds", f"bad seeds {self.seeds!r}")
        require(len(set(seeds)) == len(seeds), "seeds", f"repeated seed in {self.seeds!r}")
        require(1 <= self.width <= 256, "width", f"got {self.width}")
        require(1 <= self.n_qubits <= MAX_QUBITS, "n_qubits", f"{self.n_qubits} is outside what the simulator supports")
        require(self.depth >= 1, "depth", f"got {self.depth}")
        require(self.encoding in ENCODINGS, "encoding", f"unknown encoding {self.encoding!r}")
        require(self.ansatz in ANSATZES, "ansatz", f"unknown ansatz {self.ansatz!r}")
        require(self.engine in ENGINES, "engine", f"unknown engine {self.engine!r}")
        if self.data_dir:
            require(os.path.isdir(self.data_dir) and os.access(self.data_dir, os.R_OK | os.X_OK),
                    "data_dir", f"{self.data_dir!r} is not a readable directory")
        require(0.0 < self.val_fraction < 1.0, "val_fraction", f"got {self.val_fraction}")
        require(self.train_limit >= 0, "train_limit", f"got {self.train_limit}")
        require(self.device in DEVICES, "device", f"unknown device {self.device!r}")
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
        return self

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> "RunConfig":
        """Build from CLI/MLproject strings, converting to each field's type with a clear error."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in values or values[f.name] is None:
                continue
            raw = values[f.name]
            kwargs[f.name] = convert(f.name, raw, FIELD_TYPES[f.name])
        return cls(**kwargs)


FIELD_META: dict[str, dict[str, Any]] = {f.name: dict(f.metadata) for f in dataclasses.fields(RunConfig)}
FIELD_TYPES: dict[str, type] = {f.name: {"int": int, "float": float, "str": str}[f.type] if isinstance(f.type, str)
                                else f.type for f in dataclasses.fields(RunConfig)}
FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def convert(name: str, raw: Any, kind: type) -> Any:
    """Convert a CLI string to ``kind``, raising UserInputError naming the parameter."""
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
        allowed = FIELD_META.get(name, {}).get("allowed")
        raise UserInputError(name, f"expected {kind.__name__}, got {raw!r}", allowed) from None


def markdown_parameter_table() -> str:
    """The README's parameter table for the ``main`` entry point (a test checks README == this)."""
    rows = ["| parameter | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    kinds = {int: "int", float: "float", str: "string"}
    for name, meta in FIELD_META.items():
        default = FIELD_DEFAULTS[name]
        shown = f"`{default}`" if default != "" else "(empty)"
        allowed = meta["allowed"].replace("|", " \\| ")
        rows.append(f"| `{name}` | {kinds[FIELD_TYPES[name]]} | {shown} | {allowed} | {meta['help']} |")
    return "\n".join(rows)
