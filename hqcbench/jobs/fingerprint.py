"""Fingerprints: what identifies a trained model, and what identifies an evaluation of it.

A campaign runs only what its store lacks, so it must tell "this training already exists" from "this
is a different training". Two runs with the same fingerprint trained the same model (same data,
split, recipe, architecture, seed, selection); anything else may differ (attacks, shot sweeps, the
thread count, the host). Rules that keep finished work valid as the code grows:

* Only fields that change training count. Evaluation fields (attacks, eps, ...) have their own
  fingerprint per evaluation kind, so adding an attack never invalidates a training.
* A field counts only when it differs from its *baseline* below, a value frozen when the field
  joined the table. A field added later with its default as baseline leaves every earlier
  fingerprint unchanged; a later change of a default does not alias two trainings either.
* Values the protocol or arm ignores are dropped: the paper protocol fixes batch size, split and
  architecture, a cnn has no circuit, so e.g. ``lr`` cannot make two paper trainings differ.
* ``TRAINING_VERSION`` changes when the code changes what a configuration trains (a bug fix in a
  recipe, a new initialisation): every stored training is then missing and retrained.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from hqcbench import arms as arm_registry
from hqcbench.config import RunConfig, is_user_dataset
from hqcbench.data.datasets import dataset_spec

TRAINING_VERSION = 1
EVALUATION_VERSION = 1

ALWAYS = ("dataset", "protocol", "arm", "seed")
# field -> baseline: counts in the fingerprint only when the run's value differs from it.
TRAINING_BASELINE: dict[str, Any] = {
    "epochs": 15, "batch_size": 32, "lr": 3e-3, "width": 16, "n_qubits": 4, "depth": 2, "encoding": "angle",
    "ansatz": "strong", "engine": "fused", "val_fraction": 0.2, "train_limit": 0, "shots": "exact",
    "train_shots": "none", "patience": 0,
    "encoding_scale": 3.141592653589793,  # math.pi: the angle encoding's scale before the field existed
    "train_noise": "none",  # noise-aware training; with it, how the noise is simulated counts too
}
PAPER_FIXED = ("batch_size", "val_fraction", "lr", "width", "n_qubits", "depth", "encoding", "ansatz",
               "encoding_scale")

# evaluation kind -> its fields
EVALUATION_FIELDS: dict[str, tuple[str, ...]] = {
    "robustness": ("attacks", "eps", "attack_samples", "pgd_steps", "pgd_step_size", "pgd_restarts"),
    "readout": ("shots", "shots_sweep", "shot_rate_hz"),
    "noise": ("noise", "noise_method", "noise_trajectories", "noise_sweep",  # + the attacks run under noise
              "attacks", "eps", "attack_samples", "pgd_steps", "pgd_step_size", "pgd_restarts", "noise_attacks"),
}
# field -> baseline, for evaluation fields added after their kind: hashed only when they differ from it,
# so the evaluations stored before the field existed stay current (the training fingerprint's rule)
EVALUATION_BASELINE: dict[str, Any] = {"noise_attacks": "auto"}
# kind -> its fields' values when the kind is not asked for: a run whose config has them all is not
# evaluated for that kind and carries no tag of it (runs from before the kind existed stay complete)
OPTIONAL_EVALUATIONS: dict[str, dict[str, Any]] = {"noise": {"noise": "none", "noise_sweep": ""}}


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _normalise(value: Any) -> Any:
    """Floats in one spelling (3e-3 == 0.003), strings trimmed: equal values hash equally."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, str):
        return value.strip()
    return value


def dataset_identity(cfg: RunConfig) -> str:
    """A built-in dataset's name; a user dataset's stem and content digest, never its path (a moved folder
    is the same dataset, an edited one another)."""
    if not is_user_dataset(cfg.dataset):
        return cfg.dataset
    spec = dataset_spec(cfg.dataset, cfg.image_size)
    return f"{spec.name}@{spec.digest}"


def training_fields(cfg: RunConfig, arm: str, seed: int) -> dict[str, Any]:
    """The fields that identify the training of ``arm`` with ``seed`` under ``cfg`` (see module doc)."""
    values = {**{name: getattr(cfg, name) for name in TRAINING_BASELINE}, "dataset": dataset_identity(cfg),
              "protocol": cfg.protocol, "arm": arm, "seed": int(seed)}
    dropped: set[str] = set()
    if cfg.protocol == "paper":
        dropped |= set(PAPER_FIXED)
    dropped |= set(arm_registry.get(arm).unused_fields)  # e.g. a cnn has no circuit and no middle
    if not arm_registry.get(arm).has_circuit:
        dropped.add("train_noise")  # noise acts on a circuit: the cnn and the control train the same without
    out = {name: _normalise(values[name]) for name in ALWAYS}
    for name, baseline in TRAINING_BASELINE.items():
        if name in dropped:
            continue
        value = _normalise(values[name])
        if value != _normalise(baseline):
            out[name] = value
    if "train_noise" in out:  # the density matrix and K trajectories train differently
        out["train_noise_method"] = [_normalise(cfg.noise_method), int(cfg.noise_trajectories)]
    spec = arm_registry.get(arm)
    if spec.is_user:  # the model is the user's code: its source and its factory's arguments identify it
        out["arm_source"] = spec.source_digest
        out["arm_params"] = {k: _normalise(v) for k, v in sorted(cfg.hparams_for(arm).items())}
    return out


def training_fingerprint(cfg: RunConfig, arm: str, seed: int) -> tuple[str, dict[str, Any]]:
    """(16 hex digits, the fields hashed) for one (arm, seed) training."""
    fields = training_fields(cfg, arm, seed)
    return _digest({"training_version": TRAINING_VERSION, **fields}), fields


def evaluation_kinds(cfg: RunConfig) -> list[str]:
    """The evaluation kinds ``cfg`` asks for: every kind, less the optional ones it leaves at their off values."""
    return [kind for kind in EVALUATION_FIELDS
            if kind not in OPTIONAL_EVALUATIONS or any(_normalise(getattr(cfg, name)) != _normalise(off)
                                                       for name, off in OPTIONAL_EVALUATIONS[kind].items())]


def evaluation_fingerprint(kind: str, cfg: RunConfig) -> str:
    """16 hex digits over the fields of one evaluation kind (``EVALUATION_FIELDS``)."""
    fields = {name: _normalise(getattr(cfg, name)) for name in EVALUATION_FIELDS[kind]
              if name not in EVALUATION_BASELINE or _normalise(getattr(cfg, name)) != EVALUATION_BASELINE[name]}
    return _digest({"evaluation_version": EVALUATION_VERSION, "kind": kind, **fields})
