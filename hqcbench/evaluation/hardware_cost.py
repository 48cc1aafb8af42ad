"""What the same training and evaluation would cost on quantum hardware: executions, shots, time.

Why: a simulator returns exact <Z> and exact gradients for free; hardware estimates every <Z>
from shots and every derivative from extra circuit executions (two per parameter, parameter-shift
rule). This module turns a run's configuration and split sizes into that bill, part by part, so
every hybrid run carries it beside its accuracy. The formula (docs/hardware_cost.md):

  per sample, one forward evaluation = 1 execution;
  per sample, one gradient = 1 + 2 * (W + A) executions for training (W circuit weights, A
      encoding angles with a shift rule), 1 + 2 * A for an attack (only input derivatives needed);
  A = n (angle encoding: one RY per wire) or 2**n - 1 (amplitude encoding: the RY angles of the
      real-amplitude state preparation of Mottonen et al. 2004, 2**n - 1 RY + 2**n - 2 CNOT gates);
  train = n_train * epochs * (1 + 2 (W + A));  val = n_val * epochs;  test = n_test;
  sweep = n_test * repeats * (number of shot counts);
  attacks = F + 2 * A * G, *counted* while they run (``count_queries``): F samples passed forward
      through the circuit, G of them with their input gradient taken. Counted, not predicted,
      because the attack schedule depends on the data (the robustness curve attacks only images
      not yet broken; Square stops on fooled images; ART adds its own predictions);
  shots = executions * shots per execution;  time = shots / shot rate.

All of it is a lower bound: it ignores circuit compilation, parameter binding, job queueing and
error mitigation, each of which adds time (and often shots) per distinct circuit -- and here every
sample is a distinct circuit.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from hqcbench import names
from hqcbench.models.circuit import cnot_ring_pairs, weight_shape
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.twin import quantum_submodules
from hqcbench.tracking.findings import Findings

# Default shot rate: Google's Sycamore sampled a 53-qubit circuit one million times in about
# 200 s, i.e. ~5,000 shots/s including readout and reset (Arute et al., "Quantum supremacy using a
# programmable superconducting processor", Nature 574, 505-510 (2019), abstract). IBM backends'
# default repetition delay of 250 us (Qiskit `backend.default_rep_delay`) bounds them at ~4,000
# shots/s: the same order.
DEFAULT_SHOT_RATE_HZ = 5000.0
# Shots per execution where this run read <Z> exactly (no `shots` / `train_shots` given): 1024 is
# Qiskit Aer's default (`AerSimulator` option shots=1024); standard error of <Z> ~ 1/sqrt(1024) ~ 0.03.
REFERENCE_SHOTS = 1024
PARTS = ("train", "val", "test", "sweep", "attack")


@dataclass(frozen=True)
class CircuitShape:
    """The circuit as hardware sees it: what has a shift rule and how many gates it takes."""

    n_qubits: int
    depth: int
    encoding: str
    ansatz: str

    @classmethod
    def of(cls, layer: QuantumLayer) -> "CircuitShape":
        return cls(layer.n_qubits, layer.depth, layer.encoding, layer.ansatz)

    @property
    def weights(self) -> int:
        """W: trainable rotation angles (each one Pauli rotation: two-term shift rule)."""
        d, n, k = weight_shape(self.n_qubits, self.depth, self.ansatz)
        return d * n * k

    @property
    def encoding_angles(self) -> int:
        """A: input-dependent rotation angles, each differentiated by its own shifted pair."""
        return self.n_qubits if self.encoding == "angle" else 2 ** self.n_qubits - 1

    @property
    def stateprep_gates(self) -> int:
        """angle: n RY; amplitude: 2**n - 1 RY + 2**n - 2 CNOT (Mottonen et al., real amplitudes)."""
        if self.encoding == "angle":
            return self.n_qubits
        return (2 ** self.n_qubits - 1) + (2 ** self.n_qubits - 2)

    @property
    def ansatz_gates(self) -> int:
        rotations = self.n_qubits * (2 if self.ansatz == "strong" else 1)
        return self.depth * (rotations + len(cnot_ring_pairs(self.n_qubits)))

    @property
    def gates(self) -> int:
        return self.stateprep_gates + self.ansatz_gates

    @property
    def executions_per_train_sample(self) -> int:
        """1 forward + 2 per derivative, for every weight and every encoding angle."""
        return 1 + 2 * (self.weights + self.encoding_angles)

    @property
    def executions_per_input_gradient(self) -> int:
        """An attack needs d(loss)/d(input) only: 1 forward + 2 per encoding angle."""
        return 1 + 2 * self.encoding_angles


@dataclass(frozen=True)
class Workload:
    """How many samples went through which kind of circuit query (from the config and the splits)."""

    n_train: int
    n_val: int
    n_test: int
    epochs: int
    sweep_points: int = 0  # shot counts in the sweep
    sweep_shots_sum: int = 0  # sum of those shot counts
    sweep_repeats: int = 0
    attack_forwards: int = 0  # F: samples the attacks passed forward through the circuit (counted)
    attack_gradients: int = 0  # G: of those, samples whose input gradient was taken (counted)


@dataclass
class HardwareCost:
    shape: CircuitShape
    shot_rate_hz: float
    shots_per_execution_train: int
    shots_per_execution_eval: int
    executions: dict[str, int] = field(default_factory=dict)
    shots: dict[str, int] = field(default_factory=dict)

    @property
    def total_executions(self) -> int:
        return sum(self.executions.values())

    @property
    def total_shots(self) -> int:
        return sum(self.shots.values())

    def time_s(self, part: str | None = None) -> float:
        shots = self.total_shots if part is None else self.shots[part]
        return shots / self.shot_rate_hz

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "hw_circuit_executions": self.total_executions, "hw_shots_total": self.total_shots,
            "hw_time_est_s": self.time_s(), "hw_shot_rate_hz": self.shot_rate_hz,
            "hw_executions_per_train_sample": self.shape.executions_per_train_sample,
            "hw_circuit_gates": self.shape.gates, "hw_stateprep_gates": self.shape.stateprep_gates,
            "hw_shots_per_execution_train": self.shots_per_execution_train,
            "hw_shots_per_execution_eval": self.shots_per_execution_eval}
        for part in PARTS:
            out[f"hw_circuit_executions_{part}"] = self.executions.get(part, 0)
            out[f"hw_shots_{part}"] = self.shots.get(part, 0)
            out[f"hw_time_est_s_{part}"] = self.shots.get(part, 0) / self.shot_rate_hz
        return {k: float(v) for k, v in out.items()}

    def summary(self) -> list[str]:
        days = self.time_s() / 86400
        return [f"hardware estimate: {self.total_executions:,} circuit executions, {self.total_shots:,} shots, "
                f"{self.time_s():,.0f} s ({days:,.1f} days) at {self.shot_rate_hz:g} shots/s "
                f"(training: {self.executions.get('train', 0):,} executions, {self.time_s('train'):,.0f} s); "
                f"lower bound: no compilation, queueing or mitigation"]

    def to_json(self) -> str:
        return json.dumps({"shape": asdict(self.shape), "derived": {
            "weights": self.shape.weights, "encoding_angles": self.shape.encoding_angles,
            "stateprep_gates": self.shape.stateprep_gates, "ansatz_gates": self.shape.ansatz_gates,
            "executions_per_train_sample": self.shape.executions_per_train_sample,
            "executions_per_input_gradient": self.shape.executions_per_input_gradient},
            "shot_rate_hz": self.shot_rate_hz, "shots_per_execution_train": self.shots_per_execution_train,
            "shots_per_execution_eval": self.shots_per_execution_eval, "executions": self.executions,
            "shots": self.shots, "time_est_s": {p: self.shots[p] / self.shot_rate_hz for p in self.shots},
            "total": {"executions": self.total_executions, "shots": self.total_shots, "time_est_s": self.time_s()}},
            indent=2)


def estimate(shape: CircuitShape, work: Workload, shots_train: int, shots_eval: int,
             shot_rate_hz: float) -> HardwareCost:
    """The formula of the module docstring, part by part."""
    if shot_rate_hz <= 0:
        raise ValueError(f"shot_rate_hz must be > 0, got {shot_rate_hz}")
    execs = {
        "train": work.n_train * work.epochs * shape.executions_per_train_sample,
        "val": work.n_val * work.epochs,
        "test": work.n_test,
        "sweep": work.n_test * work.sweep_repeats * work.sweep_points,
        # each gradient query's forward is already among the F forwards: add its 2A shifted circuits
        "attack": work.attack_forwards + work.attack_gradients * (shape.executions_per_input_gradient - 1),
    }
    shots = {
        "train": execs["train"] * shots_train,
        "val": execs["val"] * shots_eval,
        "test": execs["test"] * shots_eval,
        "sweep": work.n_test * work.sweep_repeats * work.sweep_shots_sum,
        "attack": execs["attack"] * shots_eval,
    }
    return HardwareCost(shape, shot_rate_hz, shots_train, shots_eval, execs, shots)


# ----------------------------------------------------------------------------- counting attack queries
QUERY_ATTR = "hw_attack_queries"  # on each QuantumLayer: {"forward": F, "gradient": G}, accumulated


def attack_queries(layer: QuantumLayer) -> dict[str, int]:
    return dict(getattr(layer, QUERY_ATTR, None) or {"forward": 0, "gradient": 0})


@contextlib.contextmanager
def count_queries(models: Iterable[nn.Module]) -> Iterator[None]:
    """Count, on every quantum layer of ``models``, the samples passed forward and those whose input
    gradient is taken while the block runs (added to the layer's ``hw_attack_queries``)."""
    handles = []

    def on_forward(layer: QuantumLayer, args: tuple, output: torch.Tensor) -> None:
        counts = getattr(layer, QUERY_ATTR, None)
        if counts is None:
            counts = {"forward": 0, "gradient": 0}
            setattr(layer, QUERY_ATTR, counts)
        x = args[0]
        counts["forward"] += int(x.shape[0])
        if torch.is_grad_enabled() and x.requires_grad:
            def on_grad(grad: torch.Tensor) -> None:
                counts["gradient"] += int(grad.shape[0])
            x.register_hook(on_grad)

    for model in models:
        for layer in (m for m in model.modules() if isinstance(m, QuantumLayer)):
            handles.append(layer.register_forward_hook(on_forward))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def counting_epoch_hook(inner: Callable[[int, nn.Module], object]) -> Callable[[int, nn.Module], object]:
    """Wrap a per-epoch hook (the paper attack every 5 epochs) so its circuit queries are counted."""
    def hook(epoch: int, model: nn.Module):
        with count_queries([model]):
            return inner(epoch, model)
    return hook


# ----------------------------------------------------------------------------- the run's bill
def workload_from(cfg, n_train: int, n_val: int, n_test: int, sweep_repeats: int,
                  queries: dict[str, int] | None = None) -> Workload:
    sweep = cfg.shots_sweep_list
    queries = queries or {"forward": 0, "gradient": 0}
    return Workload(n_train, n_val, n_test, cfg.epochs, len(sweep), sum(sweep), sweep_repeats if sweep else 0,
                    queries["forward"], queries["gradient"])


def cost_for(layer: QuantumLayer, cfg, n_train: int, n_val: int, n_test: int) -> HardwareCost:
    """The hardware bill of one hybrid run configured by ``cfg`` on splits of these sizes; the attack
    part comes from the queries counted on ``layer`` (zero when no attack ran)."""
    from hqcbench.evaluation.shots_sweep import SWEEP_REPEATS

    work = workload_from(cfg, n_train, n_val, n_test, SWEEP_REPEATS, attack_queries(layer))
    shots_train = cfg.train_shot_count or REFERENCE_SHOTS
    shots_eval = cfg.eval_shots or REFERENCE_SHOTS
    return estimate(CircuitShape.of(layer), work, shots_train, shots_eval, cfg.shot_rate_hz or DEFAULT_SHOT_RATE_HZ)


def unknown_reason(model: nn.Module) -> str:
    """Why the bill of ``model`` cannot be computed ('' when it can): hqcbench knows the gate counts and the
    executions of exactly one of its own QuantumLayers per model; a TorchQuantum or PennyLane circuit, a
    user's marked module, or several layers (whose executions per sample the model decides) it does not."""
    circuits = quantum_submodules(model)
    foreign = [f"{path} ({type(m).__name__})" for path, m in circuits if not isinstance(m, QuantumLayer)]
    if foreign:
        return "unknown: circuits hqcbench cannot count the gates of: " + ", ".join(foreign)
    if len(circuits) > 1:
        return f"unknown: {len(circuits)} quantum layers, whose executions per sample the model decides"
    return ""


def run_all(trained, splits, cfg, device=None) -> dict[str, Findings]:
    """Findings (``hw_*`` metrics, ``hardware_cost.json``) for every arm with a quantum layer; for a model
    whose circuits hqcbench cannot bill, the tag ``hqcbench.hardware_cost`` says so, and no number is made up."""
    out: dict[str, Findings] = {}
    for item in trained:
        why = unknown_reason(item.model)
        if why:
            findings = Findings()
            findings.tags[names.TAG_HARDWARE_COST] = why
            out[item.arm] = findings
            continue
        layers = [m for m in item.model.modules() if isinstance(m, QuantumLayer)]
        if not layers:
            continue
        cost = cost_for(layers[0], cfg, len(splits.train), len(splits.val), len(splits.test))
        findings = Findings()
        findings.metrics.update(cost.metrics())
        findings.texts["hardware_cost.json"] = cost.to_json()
        findings.summary.extend(cost.summary())
        out[item.arm] = findings
    return out
