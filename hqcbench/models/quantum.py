"""The quantum layer: encoding -> trainable ansatz -> <Z> on every wire.

Two engines compute the same circuit from the same ``weights`` parameter:

* ``torchquantum`` -- TorchQuantum's own batched simulation (``tq.QuantumDevice(bsz=...)``),
  gate by gate. It is the reference.
* ``fused`` (default) -- the same gates, with their matrices taken from TorchQuantum's gate
  definitions (``torchquantum.functional.*_matrix``), applied with as few tensor operations as
  possible: the single-qubit gates of a layer are built for all wires in one call, the CNOT ring of
  a layer is one index permutation of the state, angle encoding is a product state built with
  outer products. TorchQuantum's per-gate module dispatch costs far more than the arithmetic on a
  16-amplitude state, which is why we hand-write this path (no maintained library provides a
  batched, autograd-friendly state-vector layer with this little overhead; PennyLane is slower still).

Wire 0 is the most significant bit of the basis-state index (TorchQuantum's convention).
The CNOT ring is CNOT(0,1), CNOT(1,2), ..., CNOT(n-1,0) for n >= 3; for n = 2 a single CNOT(0,1)
(as PennyLane's BasicEntanglerLayers does); none for n = 1.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

ANGLE_SCALE = math.pi  # angle encoding: RY(pi * tanh(x))


def input_width(n_qubits: int, encoding: str) -> int:
    """Values the circuit takes per sample: n for angle encoding, 2**n for amplitude encoding."""
    return n_qubits if encoding == "angle" else 2 ** n_qubits


def weight_shape(n_qubits: int, depth: int, ansatz: str) -> tuple[int, ...]:
    """strong: RY and RZ per wire and layer; basic: RX per wire and layer."""
    return (depth, n_qubits, 2) if ansatz == "strong" else (depth, n_qubits, 1)


def cnot_ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    if n_qubits == 1:
        return []
    if n_qubits == 2:
        return [(0, 1)]
    return [(i, (i + 1) % n_qubits) for i in range(n_qubits)]


@lru_cache(maxsize=None)
def _ring_permutation(n_qubits: int) -> tuple[int, ...]:
    """Index map P with new_state = state[..., P] after the whole CNOT ring."""
    dim = 2 ** n_qubits
    perm = list(range(dim))
    for control, target in cnot_ring_pairs(n_qubits):
        cbit, tbit = 1 << (n_qubits - 1 - control), 1 << (n_qubits - 1 - target)
        # new[y] = old[f(y)] with f the (involutive) CNOT map; compose with what came before
        perm = [perm[y ^ tbit] if y & cbit else perm[y] for y in range(dim)]
    return tuple(perm)


@lru_cache(maxsize=None)
def _z_signs(n_qubits: int) -> tuple[tuple[float, ...], ...]:
    """(2**n, n) table of <Z_w> eigenvalues: +1 where wire w's bit is 0, -1 where it is 1."""
    return tuple(tuple(1.0 - 2.0 * ((x >> (n_qubits - 1 - w)) & 1) for w in range(n_qubits))
                 for x in range(2 ** n_qubits))


def z_sign_table(n_qubits: int, device: torch.device | str = "cpu", dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(_z_signs(n_qubits), device=device, dtype=dtype)


def ring_permutation(n_qubits: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor(_ring_permutation(n_qubits), device=device, dtype=torch.long)


def _layer_gates(layer_weights: torch.Tensor, ansatz: str) -> torch.Tensor:
    """(n, 2, 2) complex matrices of one layer's single-qubit gates, from TorchQuantum's definitions."""
    import torchquantum.functional as tqf

    if ansatz == "strong":  # RY then RZ on each wire: matrix RZ @ RY
        ry = tqf.ry_matrix(layer_weights[:, 0:1])
        rz = tqf.rz_matrix(layer_weights[:, 1:2])
        gates = rz.reshape(-1, 2, 2) @ ry.reshape(-1, 2, 2)
    else:
        gates = tqf.rx_matrix(layer_weights[:, 0:1])
    return gates.reshape(-1, 2, 2)  # TorchQuantum squeezes a batch of one away


def encode_state(x: torch.Tensor, n_qubits: int, encoding: str) -> torch.Tensor:
    """(B, 2**n) complex64 state after encoding (per-sample; never mixes samples)."""
    if encoding == "angle":
        half = ANGLE_SCALE * torch.tanh(x) / 2
        cos, sin = torch.cos(half), torch.sin(half)
        state = torch.stack([cos[:, 0], sin[:, 0]], dim=1)
        for w in range(1, n_qubits):
            amp = torch.stack([cos[:, w], sin[:, w]], dim=1)
            state = (state.unsqueeze(2) * amp.unsqueeze(1)).reshape(x.shape[0], -1)
        return state.to(torch.complex64)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
    return (x / norm).to(torch.complex64)


class QuantumLayer(nn.Module):
    """n_qubits-wire circuit: (B, input_width) -> (B, n_qubits) values <Z_w> in [-1, 1]."""

    # Finite-shot readout (hqcbench.shots; None = exact <Z>): ``shots`` applies in eval mode,
    # ``train_shots`` in training mode; ``shot_rng`` is the seeded numpy Generator they sample with.
    shots: int | None = None
    train_shots: int | None = None
    shot_rng = None

    def __init__(self, n_qubits: int, depth: int, encoding: str = "angle", ansatz: str = "strong",
                 engine: str = "fused", seed: int | None = None):
        super().__init__()
        self.n_qubits, self.depth, self.encoding, self.ansatz, self.engine = n_qubits, depth, encoding, ansatz, engine
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.weights = nn.Parameter(torch.rand(weight_shape(n_qubits, depth, ansatz), generator=gen) * 2 * math.pi)
        self.register_buffer("perm", ring_permutation(n_qubits), persistent=False)
        self.register_buffer("zsigns", z_sign_table(n_qubits), persistent=False)

    @property
    def in_features(self) -> int:
        return input_width(self.n_qubits, self.encoding)

    def extra_repr(self) -> str:
        return (f"n_qubits={self.n_qubits}, depth={self.depth}, encoding={self.encoding}, "
                f"ansatz={self.ansatz}, engine={self.engine}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantumLayer expects {self.in_features} inputs per sample, got {x.shape[-1]}")
        shots = self.train_shots if self.training else self.shots
        if shots is not None:  # sampled <Z>, parameter-shift gradients (hqcbench.shots)
            from hqcbench.shots import sampled_forward
            return sampled_forward(self, x, shots)
        if self.engine == "torchquantum":
            return self._forward_torchquantum(x)
        return self.expvals(self.final_state(x))

    # -------------------------------------------------------------- fused engine
    def final_state(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2**n) complex state after encoding and ansatz (fused engine)."""
        n, bsz = self.n_qubits, x.shape[0]
        state = encode_state(x, n, self.encoding)
        for layer in range(self.depth):
            gates = _layer_gates(self.weights[layer], self.ansatz)
            psi = state.reshape(bsz, *([2] * n))
            for w in range(n):
                # contract the gate's column index with wire w's axis, then put the axis back
                psi = torch.movedim(torch.tensordot(psi, gates[w], dims=([w + 1], [1])), -1, w + 1)
            state = psi.reshape(bsz, -1)
            if n > 1:
                state = state[:, self.perm]
        return state

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2**n) measurement probabilities in the computational basis (used by finite-shot readout)."""
        state = self.final_state(x) if self.engine == "fused" else self._tq_state(x)
        return state.real ** 2 + state.imag ** 2

    def expvals(self, state: torch.Tensor) -> torch.Tensor:
        probs = state.real ** 2 + state.imag ** 2
        return probs @ self.zsigns.to(probs.dtype)

    # -------------------------------------------------------------- TorchQuantum engine
    def _tq_device(self, x: torch.Tensor):
        import torchquantum as tq
        import torchquantum.functional as tqf

        n, bsz = self.n_qubits, x.shape[0]
        qdev = tq.QuantumDevice(n_wires=n, bsz=bsz, device=x.device)
        if self.encoding == "angle":
            angles = ANGLE_SCALE * torch.tanh(x)
            for w in range(n):
                tqf.ry(qdev, wires=w, params=angles[:, w])
        else:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
            qdev.set_states((x / norm).to(torch.complex64).reshape(bsz, *([2] * n)))
        for layer in range(self.depth):
            for w in range(n):
                if self.ansatz == "strong":
                    tqf.ry(qdev, wires=w, params=self.weights[layer, w, 0:1])
                    tqf.rz(qdev, wires=w, params=self.weights[layer, w, 1:2])
                else:
                    tqf.rx(qdev, wires=w, params=self.weights[layer, w, 0:1])
            for control, target in cnot_ring_pairs(n):
                tqf.cnot(qdev, wires=[control, target])
        return qdev

    def _tq_state(self, x: torch.Tensor) -> torch.Tensor:
        return self._tq_device(x).get_states_1d()

    def _forward_torchquantum(self, x: torch.Tensor) -> torch.Tensor:
        return _tq_expvals(self._tq_device(x), self.n_qubits)


def _tq_expvals(qdev, n_qubits: int) -> torch.Tensor:
    """<Z> per wire through TorchQuantum's measurement module."""
    import torchquantum as tq

    return tq.MeasureAll(tq.PauliZ)(qdev).reshape(-1, n_qubits)
