"""hqcbench's circuit written out gate by gate, so that noise can follow every gate.

The noiseless engine (``hqcbench.models.circuit``) never materialises single gates: it fuses a
layer's rotations into Kronecker matrices and loads amplitude-encoded inputs as a ready state. A
noise model needs the opposite: the list of physical gates a device would run, each followed by its
error. This module gives that list once per circuit shape (``logical_ops``) and the angles of its
rotations per image (``parameter_values``); the density-matrix and trajectory engines
(``hqcbench.models.noise``) and the Qiskit circuit a device transpiles (``hqcbench.models.noise_device``)
are all built from the same two, so they cannot drift apart.

Gates are those of docs/quantum_layer.md (wire 0 = most significant bit; TorchQuantum's RX/RY/RZ;
CNOT ring). Amplitude encoding is compiled to the uniformly controlled RY tree of Mottonen et al.
(quant-ph/0407010): level k rotates wire k by 2**k physical RY gates, each followed by a CNOT from the
control wire whose bit changes along the Gray code (2**k CNOTs for k >= 1), so that its gates get noise
like the ansatz's. Its physical angles theta are the tree angles alpha
(``readout.amplitude_tree_angles``) through theta = alpha M / 2**k, M[p, j] = (-1)**popcount(p & gray(j)).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import torch

from hqcbench.models.circuit import angle_params, cnot_ring_pairs, complex_dtype
from hqcbench.models.readout import amplitude_tree_angles


class GateLayer(Protocol):
    """What the gate list reads of a quantum layer (``QuantumLayer`` is one): its shape and weights only."""

    @property
    def n_qubits(self) -> int: ...

    @property
    def encoding(self) -> str: ...

    @property
    def encoding_scale(self) -> float: ...

    @property
    def ansatz(self) -> str: ...

    @property
    def entangle(self) -> bool: ...

    @property
    def weights(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class Op:
    """One gate of the logical circuit: ``name`` in rx | ry | rz | cx; ``param`` the column of its angle
    in ``parameter_values`` (None for the fixed CNOT, whose first wire is the control)."""

    name: str
    wires: tuple[int, ...]
    param: int | None = None


def _gray(i: int) -> int:
    return i ^ (i >> 1)


def encoding_param_count(n_qubits: int, encoding: str) -> int:
    """Angles the encoding takes per image: n RY angles (angle), 2**n - 1 tree angles (amplitude)."""
    return n_qubits if encoding == "angle" else 2 ** n_qubits - 1


def encoding_op_count(n_qubits: int, encoding: str) -> int:
    """How many of ``logical_ops``' first gates are the encoding: n RY (angle); the tree's 2**n - 1 RY and
    2**n - 2 CNOT (amplitude)."""
    return n_qubits if encoding == "angle" else 2 ** (n_qubits + 1) - 3


@lru_cache(maxsize=64)
def logical_ops(n_qubits: int, depth: int, encoding: str, ansatz: str, entangle: bool) -> tuple[Op, ...]:
    """Every gate of the circuit in application order: the encoding, then ``depth`` ansatz layers."""
    ops: list[Op] = []
    if encoding == "angle":
        ops += [Op("ry", (w,), w) for w in range(n_qubits)]
    else:
        index = 0
        for k in range(n_qubits):
            size = 2 ** k
            for j in range(size):
                ops.append(Op("ry", (k,), index + j))
                if k:  # the control whose bit flips between gray(j) and gray(j + 1) (cyclically)
                    bit = (_gray(j) ^ _gray((j + 1) % size)).bit_length() - 1
                    ops.append(Op("cx", (k - 1 - bit, k)))
            index += size
    index = encoding_param_count(n_qubits, encoding)
    for _ in range(depth):
        for w in range(n_qubits):
            if ansatz == "strong":
                ops += [Op("ry", (w,), index), Op("rz", (w,), index + 1)]
                index += 2
            else:
                ops.append(Op("rx", (w,), index))
                index += 1
        if entangle:
            ops += [Op("cx", pair) for pair in cnot_ring_pairs(n_qubits)]
    return tuple(ops)


def layer_ops(layer: GateLayer) -> tuple[Op, ...]:
    return logical_ops(layer.n_qubits, layer.weights.shape[0], layer.encoding, layer.ansatz, layer.entangle)


@lru_cache(maxsize=32)
def _walsh_gray(k: int) -> torch.Tensor:
    """M[p, j] = (-1)**popcount(p & gray(j)): the tree angle of control state p is sum_j M[p, j] theta_j."""
    size = 2 ** k
    return torch.tensor([[(-1.0) ** bin(p & _gray(j)).count("1") for j in range(size)] for p in range(size)],
                        dtype=torch.float64)


def tree_thetas(x: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """(B, 2**n) amplitudes -> (B, 2**n - 1) physical RY angles of the tree, level by level."""
    alpha = amplitude_tree_angles(x, n_qubits)
    out, start = [], 0
    for k in range(n_qubits):
        size = 2 ** k
        walsh = _walsh_gray(k).to(alpha.device, alpha.dtype)
        out.append(alpha[:, start:start + size] @ walsh / size)  # M^T M = 2**k I
        start += size
    return torch.cat(out, dim=1)


def parameter_values(layer: GateLayer, x: torch.Tensor) -> torch.Tensor:
    """(B, P) every rotation angle of ``logical_ops`` per image: the encoding's, then the weights'."""
    if layer.encoding == "angle":
        enc = angle_params(x, layer.encoding_scale)
    else:
        enc = tree_thetas(x, layer.n_qubits)
    weights = layer.weights.to(enc.dtype).reshape(1, -1).expand(x.shape[0], -1)
    return torch.cat([enc, weights], dim=1)


def rotation(name: str, angle: torch.Tensor) -> torch.Tensor:
    """(..., ) angles -> (..., 2, 2) RX / RY / RZ (TorchQuantum's matrices; complex128 for float64 angles)."""
    half = angle.to(torch.float64 if angle.dtype == torch.float64 else torch.float32) / 2
    c, s = torch.cos(half).to(complex_dtype(half.dtype)), torch.sin(half).to(complex_dtype(half.dtype))
    zero = torch.zeros_like(c)
    if name == "ry":
        rows = [[c, -s], [s, c]]
    elif name == "rx":
        rows = [[c, -1j * s], [-1j * s, c]]
    elif name == "rz":
        rows = [[c - 1j * s, zero], [zero, c + 1j * s]]
    else:
        raise ValueError(f"rotation: unknown gate {name!r}")
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


CX = ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0))  # control = first wire (the more significant bit)


def op_matrix(op: Op, params: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gate's matrix: (B, 2, 2) per image for a rotation (angles from ``params`` (B, P)), (4, 4) for CX."""
    if op.param is None:
        return torch.tensor(CX, dtype=dtype, device=params.device)
    return rotation(op.name, params[:, op.param]).to(dtype)
