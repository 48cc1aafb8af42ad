"""The scaling study's options: defaults, parsing of ranges and lists, checks, and the command line.

One place for them because three things read them: the CLI (flags and their defaults), the study
(what to run) and the generated README (the exact command, and the cost of the default settings).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hqcbench.config import DATASETS, MAX_QUBITS
from hqcbench.errors import UserInputError

STUDIES = ("scaling",)
PARTS = ("gradients", "accuracy", "all")
EXPERIMENT_SUFFIX = "study-scaling"  # MLflow experiment hqcbench-study-scaling unless one is given

# Defaults, sized so the whole default study is about one hour of CPU time on the 2-core dev machine
# (less wall time with both cores free; docs/scaling.md, "Cost", has the timings): the gradient
# part (15 widths x 8 depths x 200 initialisations) ~25 CPU min, dominated by n = 15-16 (0.74 CPU s per
# initialisation at 16 qubits, depth 8); the accuracy part (2 datasets x 6 widths x 3 seeds x 2 arms
# = 72 trainings) ~40 CPU min at 10 epochs, dominated by the 16-qubit hybrid (one MNIST epoch on 2000
# images ~37 CPU s, its 10000-image test pass ~70 CPU s; a digits epoch ~22 CPU s). 10 epochs and not
# fewer: after 1 epoch the 16-qubit hybrid is still at chance on MNIST (10 %, control 38 %), so a
# shorter budget would measure how fast it starts, not what it learns; 15 (the main job's default)
# would push the study past the hour.
DEFAULTS: dict[str, str] = {
    "qubits": "2..16",
    "depths": "1..8",
    "inits": "200",
    "train_qubits": "2,4,6,8,12,16",
    "seeds": "0,1,2",
    "datasets": "digits,mnist",
    "train_limit": "2000",
    "epochs": "10",
    "data_dir": "",
    "out": "reports/scaling",
    "part": "all",
}
HELP: dict[str, str] = {
    "qubits": "widths of the gradient-variance part: A..B (inclusive range) and/or comma list",
    "depths": "ansatz depths of the gradient-variance part: A..B and/or comma list",
    "inits": "random initialisations per (qubits, depth) cell (>= 2: a variance needs two)",
    "train_qubits": "widths trained in the accuracy part: A..B and/or comma list",
    "seeds": "seeds trained per (dataset, width, arm)",
    "datasets": "datasets of the accuracy part: comma list of " + ",".join(DATASETS),
    "train_limit": "training images per dataset except digits (which always uses its whole training split); 0: all",
    "epochs": "training epochs per model (fair protocol)",
    "data_dir": "dataset folder (else $HQCBENCH_DATA_DIR, else download to ./data); never logged",
    "out": "folder of the CSVs, figures and README.md",
    "part": "gradients, accuracy or all; every part rebuilds the README from the CSVs in --out",
}


def parse_ints(text: str, name: str, minimum: int, maximum: int | None = None) -> tuple[int, ...]:
    """'2..5,8' -> (2, 3, 4, 5, 8): sorted, no repeats; a bad item names ``name`` and the rule."""
    allowed = f"A..B ranges and/or comma-separated integers >= {minimum}" + (f" and <= {maximum}" if maximum else "")
    values: set[int] = set()
    try:
        for item in (part.strip() for part in str(text).split(",")):
            if not item:
                continue
            low, _, high = item.partition("..")
            first, last = int(low), int(high) if high else int(low)
            if last < first:
                raise ValueError
            values.update(range(first, last + 1))
    except ValueError:
        raise UserInputError(name, f"got {text!r}", allowed) from None
    if not values or min(values) < minimum or (maximum is not None and max(values) > maximum):
        raise UserInputError(name, f"got {text!r}", allowed)
    return tuple(sorted(values))


def _int(text: str, name: str, minimum: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise UserInputError(name, f"got {text!r}", f"an integer >= {minimum}")
    return value


def _datasets(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(item.strip() for item in str(text).split(",") if item.strip()))
    if not items or any(item not in DATASETS for item in items):
        raise UserInputError("datasets", f"got {text!r}", "comma-separated " + "|".join(DATASETS))
    return items


@dataclass(frozen=True)
class ScalingSettings:
    """Every option of ``study scaling``, parsed and checked."""

    qubits: tuple[int, ...]
    depths: tuple[int, ...]
    inits: int
    train_qubits: tuple[int, ...]
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    train_limit: int
    epochs: int
    data_dir: str
    out: str
    part: str
    raw: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)  # the options as given

    @property
    def parts(self) -> tuple[str, ...]:
        return ("gradients", "accuracy") if self.part == "all" else (self.part,)

    @classmethod
    def parse(cls, name: str, options: dict[str, Any]) -> "ScalingSettings":
        """Check the study name first (one clear error), then every option; None means the default."""
        if name not in STUDIES:
            raise UserInputError("name", f"unknown study {name!r}", "|".join(STUDIES))
        raw = {key: str(options[key]) if options.get(key) is not None else DEFAULTS[key] for key in DEFAULTS}
        if raw["part"] not in PARTS:
            raise UserInputError("part", f"got {raw['part']!r}", "|".join(PARTS))
        return cls(qubits=parse_ints(raw["qubits"], "qubits", 1, MAX_QUBITS),
                   depths=parse_ints(raw["depths"], "depths", 1),
                   inits=_int(raw["inits"], "inits", 2),
                   train_qubits=parse_ints(raw["train_qubits"], "train_qubits", 1, MAX_QUBITS),
                   seeds=parse_ints(raw["seeds"], "seeds", 0),
                   datasets=_datasets(raw["datasets"]),
                   train_limit=_int(raw["train_limit"], "train_limit", 0),
                   epochs=_int(raw["epochs"], "epochs", 1),
                   data_dir=raw["data_dir"], out=raw["out"], part=raw["part"], raw=raw)

    def command(self, part: str) -> str:
        """The command that reruns ``part`` with these settings (the data folder as a placeholder:
        it is machine-specific)."""
        keys = {"gradients": ("qubits", "depths", "inits"),
                "accuracy": ("train_qubits", "seeds", "datasets", "train_limit", "epochs")}[part]
        words = ["python -m hqcbench study scaling", f"--part {part}"]
        words += [f"--{key} {self.raw[key]}" for key in keys]
        if part == "accuracy" and self.raw["data_dir"]:
            words.append("--data_dir DATA_DIR")
        words.append(f"--out {self.raw['out']}")
        return " ".join(words)

    def params(self) -> dict[str, str]:
        """What the parent MLflow run records (no data folder: machine-specific)."""
        return {key: value for key, value in self.raw.items() if key != "data_dir"}
