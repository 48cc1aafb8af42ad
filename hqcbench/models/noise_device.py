"""``noise=device:NAME``: hqcbench's circuit as a real (retired) IBM device would run it, offline.

Why Qiskit here: the device's basis gates, coupling map and calibrated errors are only available as
the snapshots qiskit-ibm-runtime's fake backends ship (``FakeManilaV2``, ``FakeNairobiV2``, ...; no
account, no network), and Qiskit's transpiler is what maps a circuit onto them. The simulation itself
stays in hqcbench's batched engine (``hqcbench.models.noise``); this module only hands it the gate list:

* the logical circuit (``noise_circuit.logical_ops``, every rotation a free ``Parameter``) is
  transpiled once per circuit shape and device, with a fixed ``seed_transpiler`` (the SWAPs routing
  adds are gates like any other);
* each transpiled rotation's angle is a linear function of the logical angles (checked; the
  transpiler only adds constants and signs), so it is computed for all images at once;
* every gate gets the error ``qiskit_aer.noise.NoiseModel.from_backend`` gives that instruction on
  those qubits (depolarizing composed with thermal relaxation for the gate's duration), as Kraus
  operators; every measured qubit its asymmetric readout error;
* only the qubits the transpiled circuit touches are simulated, and logical qubit i's <Z> is read
  from the physical qubit the final layout puts it on.

Qiskit (~3 s to import) is imported inside the functions that need it, only when a device is asked for.
The calibrations are snapshots of retired devices, not of today's hardware (docs/noise.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from hqcbench.errors import UserInputError
from hqcbench.models.noise_circuit import GateLayer, Op, logical_ops, rotation

SEED_TRANSPILER = 1234  # fixed: the same circuit always lands on the same qubits with the same SWAPs
OPTIMIZATION_LEVEL = 1
ROTATIONS = {"rz": "rz", "rx": "rx", "ry": "ry", "p": "rz"}  # p(t) = rz(t) up to a global phase
IGNORED = ("barrier", "delay")


@lru_cache(maxsize=1)
def available_devices() -> tuple[str, ...]:
    """Names of qiskit-ibm-runtime's offline V2 fake backends (e.g. FakeManilaV2)."""
    from qiskit_ibm_runtime import fake_provider  # heavy: only a device noise model needs it
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return tuple(sorted(name for name, obj in vars(fake_provider).items()
                        if isinstance(obj, type) and issubclass(obj, FakeBackendV2) and obj is not FakeBackendV2))


@lru_cache(maxsize=8)
def load_backend(name: str, parameter: str = "noise") -> Any:
    """The fake backend called ``name``; an unknown name raises UserInputError (naming ``parameter``) listing
    the available ones."""
    names = available_devices()
    if name not in names:
        raise UserInputError(parameter, f"unknown device {name!r}", "device:NAME with NAME one of " + ", ".join(names))
    from qiskit_ibm_runtime import fake_provider  # heavy: see available_devices

    return getattr(fake_provider, name)()


@lru_cache(maxsize=8)
def noise_model(name: str) -> Any:
    """Qiskit Aer's ``NoiseModel.from_backend`` of the device (what the reference simulation uses too)."""
    from qiskit_aer.noise import NoiseModel  # heavy: see available_devices

    return NoiseModel.from_backend(load_backend(name))


def logical_circuit(ops: tuple[Op, ...], n_qubits: int, n_params: int) -> Any:
    """The logical circuit in Qiskit, angles as ``Parameter`` s (wire w = Qiskit qubit w)."""
    from qiskit.circuit import ParameterVector, QuantumCircuit  # heavy: see available_devices

    theta = ParameterVector("theta", n_params)
    qc = QuantumCircuit(n_qubits)
    for op in ops:
        if op.param is None:
            qc.cx(*op.wires)
        else:
            getattr(qc, op.name)(theta[op.param], op.wires[0])
    return qc


def transpile_circuit(ops: tuple[Op, ...], n_qubits: int, n_params: int, device: str) -> Any:
    """The logical circuit transpiled to the device (basis gates, coupling map, fixed seed); too wide: refused."""
    from qiskit import transpile  # heavy: see available_devices

    backend = load_backend(device)
    if n_qubits > backend.num_qubits:
        raise UserInputError("noise", f"the circuit has {n_qubits} qubits, {device} only {backend.num_qubits}",
                             f"a device with at least {n_qubits} qubits")
    return transpile(logical_circuit(ops, n_qubits, n_params), backend=backend, seed_transpiler=SEED_TRANSPILER,
                     optimization_level=OPTIMIZATION_LEVEL)


def big_endian(matrix: np.ndarray) -> np.ndarray:
    """Qiskit's matrix on qubits (q0, q1, ...) (q0 least significant) -> ours (q0 most significant)."""
    k = int(round(np.log2(matrix.shape[0])))
    if k == 1:
        return matrix
    order = list(range(k))[::-1]
    tensor = matrix.reshape([2] * (2 * k)).transpose(order + [k + i for i in order])
    return tensor.reshape(2 ** k, 2 ** k)


def _linear(expr: Any, n_params: int, index: dict[Any, int]) -> tuple[np.ndarray, float]:
    """A transpiled angle as (coefficients over the logical angles, constant); refuses a non-linear one."""
    coeff = np.zeros(n_params)
    params = list(expr.parameters)
    for param in params:
        grad = expr.gradient(param)
        if hasattr(grad, "parameters") and grad.parameters:
            raise ValueError(f"transpiled angle {expr} is not linear in the circuit's angles")
        coeff[index[param]] = float(grad)
    const = expr.bind({p: 0.0 for p in params}) if params else expr
    return coeff, float(const)


@dataclass
class DeviceProgram:
    """The transpiled circuit as hqcbench's engine runs it: gates over the active qubits (compact indices)."""

    device: str
    active: tuple[int, ...]  # physical qubits the circuit touches, in order; compact index = position here
    logical_wires: tuple[int, ...]  # compact index of each logical qubit's final physical qubit
    gates_1q: int
    gates_2q: int
    entries: list[tuple[str, tuple[int, ...], Any, Any]] = field(default_factory=list)  # (kind, wires, data, kraus)
    flips: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))  # P(1|0), P(0|1) per logical qubit

    @property
    def n_active(self) -> int:
        return len(self.active)

    def readout_flips(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.flips[0]), torch.from_numpy(self.flips[1])

    def gates(self, params: torch.Tensor, dtype: torch.dtype
              ) -> list[tuple[tuple[int, ...], torch.Tensor, torch.Tensor | None]]:
        """(wires, matrix per image or shared, Kraus operators or None) of every gate, for angles ``params`` (B, P)."""
        out = []
        for kind, wires, data, kraus in self.entries:
            if kind == "fixed":
                matrix = torch.as_tensor(data, dtype=dtype, device=params.device)
            else:  # (rotation name, coefficients, constant)
                name, coeff, const = data
                angle = params @ torch.as_tensor(coeff, dtype=params.dtype, device=params.device) + const
                matrix = rotation(name, angle).to(dtype)
            k = None if kraus is None else torch.as_tensor(kraus, dtype=dtype, device=params.device)
            out.append((wires, matrix, k))
        return out

    def metrics(self) -> dict[str, float]:
        """noise_qubits (active qubits), noise_gates_1q, noise_gates_2q of the transpiled circuit."""
        return {"noise_qubits": float(self.n_active), "noise_gates_1q": float(self.gates_1q),
                "noise_gates_2q": float(self.gates_2q)}


def _error_for(model: Any, name: str, qubits: tuple[int, ...]) -> Any:
    """The QuantumError the noise model attaches to ``name`` on ``qubits`` (local first, then all-qubit), or None.

    Reads the model's tables directly: Aer 0.14 offers no public lookup, and this is what its simulator
    applies after the instruction.
    """
    local = getattr(model, "_local_quantum_errors", {}).get(name, {})
    if qubits in local:
        return local[qubits]
    return getattr(model, "_default_quantum_errors", {}).get(name)


def _readout_for(model: Any, qubit: int) -> np.ndarray | None:
    local = getattr(model, "_local_readout_errors", {})
    error = local.get((qubit,), getattr(model, "_default_readout_error", None))
    return None if error is None else np.asarray(error.probabilities, dtype=float)


def _kraus(error: Any) -> np.ndarray:
    from qiskit.quantum_info import Kraus  # heavy: see available_devices

    return np.stack([big_endian(np.asarray(k)) for k in Kraus(error.to_quantumchannel()).data])


@lru_cache(maxsize=32)
def _program(n_qubits: int, depth: int, encoding: str, ansatz: str, entangle: bool, device: str) -> DeviceProgram:
    from qiskit.quantum_info import Operator  # heavy: see available_devices

    ops = logical_ops(n_qubits, depth, encoding, ansatz, entangle)
    n_params = 1 + max((op.param for op in ops if op.param is not None), default=-1)
    tqc = transpile_circuit(ops, n_qubits, n_params, device)
    model = noise_model(device)
    layout = list(tqc.layout.final_index_layout()) if tqc.layout is not None else list(range(n_qubits))
    instructions = [(inst.operation, tuple(tqc.find_bit(q).index for q in inst.qubits)) for inst in tqc.data
                    if inst.operation.name not in IGNORED]
    active = tuple(sorted({q for _, qubits in instructions for q in qubits} | set(layout)))
    compact = {q: i for i, q in enumerate(active)}
    index = {param: param.index for param in tqc.parameters}  # ParameterVector elements know their position
    program = DeviceProgram(device, active, tuple(compact[q] for q in layout),
                            sum(len(q) == 1 for _, q in instructions), sum(len(q) == 2 for _, q in instructions))
    for operation, qubits in instructions:
        if len(qubits) > 2:
            raise ValueError(f"{device}: unexpected {len(qubits)}-qubit instruction {operation.name}")
        error = _error_for(model, operation.name, qubits)
        kraus = None if error is None else _kraus(error)
        wires = tuple(compact[q] for q in qubits)
        symbolic = [p for p in operation.params if hasattr(p, "parameters") and p.parameters]
        if symbolic:
            if operation.name not in ROTATIONS:
                raise ValueError(f"{device}: parametrised {operation.name} is not a rotation the engine knows")
            coeff, const = _linear(operation.params[0], n_params, index)
            program.entries.append(("rotation", wires, (ROTATIONS[operation.name], coeff, const), kraus))
        else:
            program.entries.append(("fixed", wires, big_endian(Operator(operation).data), kraus))
    p10, p01 = np.zeros(n_qubits), np.zeros(n_qubits)
    for i, phys in enumerate(layout):
        probs = _readout_for(model, phys)
        if probs is not None:  # rows: prepared 0, 1; columns: measured 0, 1
            p10[i], p01[i] = probs[0][1], probs[1][0]
    program.flips = (p10, p01)
    return program


def device_program(layer: GateLayer, device: str) -> DeviceProgram:
    """The layer's circuit on ``device`` (cached per circuit shape and device; the weights stay free angles)."""
    return _program(layer.n_qubits, layer.weights.shape[0], layer.encoding, layer.ansatz, bool(layer.entangle),
                    device)
