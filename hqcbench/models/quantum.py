"""The quantum layer: encoding -> trainable ansatz -> <Z> on every wire.

Two engines compute the same circuit from the same ``weights`` parameter:

* ``torchquantum`` -- TorchQuantum's own batched simulation (``tq.QuantumDevice(bsz=...)``),
  gate by gate. It is the reference.
* ``fused`` (default) -- the same circuit with as few tensor operations as possible, on the
  circuit math of ``hqcbench.models.circuit``. The trainable part is the same for every sample,
  so its gates are built once per forward pass for all layers and wires at once, and then applied
  in one of two ways, chosen by an estimated cost (``circuit.choose_method``):

  - ``unitary``: the whole ansatz becomes one 2**n x 2**n matrix (Kronecker products of each layer's
    single-qubit gates, the CNOT ring as a row permutation, a product over layers), applied to the
    batch as one real matrix product (the encoded state is real). Best while 2**n is small.
  - ``gates``: ``circuit.evolve``, the simulator the parameter-shift readout uses too: each layer's
    wires are split into a few groups; each group's gates become one small Kronecker matrix applied
    to the state with one batched matmul, then the CNOT ring is one gather. Best once 2**n grows
    past the batch size, where building the full unitary costs more than the batch does.

  In both, the last CNOT ring before the readout is folded into the <Z> sign table (permuting the
  amplitudes does not change which basis states they are, only which sign they get), and PauliZ
  readout is one matrix product with that +-1 table.

  Differentiation (``diff_method``): autograd through either method (``backprop``) keeps every
  intermediate state for the backward pass, depth x groups state vectors. ``adjoint``
  (``hqcbench.models.adjoint``) runs the ``gates`` evolution keeping only the final state and
  undoes the circuit in the backward pass, so backward memory stays at a few state vectors at any
  depth; ``auto`` picks it where backpropagation would keep more than
  ``adjoint.ADJOINT_MIN_SAVED_BYTES``. Passes autograd does not record (evaluation) run the plain
  forward either way. Batches whose states would exceed ``memory.CHUNK_AMPLITUDES`` amplitudes
  are simulated in row chunks; ``memory.estimate_peak_bytes`` is what a run checks before training.

Why hand-written: TorchQuantum dispatches a module per gate, which costs far more than the
arithmetic on a 16-amplitude state; PennyLane's TorchLayer is slower still; no maintained library
offers a batched, autograd-friendly state-vector layer with this little overhead. Conventions
(wire order, CNOT ring, gate formulas, precision): ``hqcbench.models.circuit`` and
docs/quantum_layer.md.

With ``shots`` / ``train_shots`` set, ``forward`` hands over to ``hqcbench.models.readout``
(sampled <Z>, parameter-shift gradients).

Ablations (docs/quantum_layer.md, "Ablation arms"): ``entangle=False`` removes every CNOT ring, in
both engines and the readout, so the circuit is a product of single-qubit circuits;
``encoding_scale`` sets the angle encoding's RY(scale * tanh x). Defaults give the circuit above,
bit for bit.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from hqcbench.config import ANSATZES, DEFAULT_ENCODING_SCALE, ENCODINGS, ENGINES
from hqcbench.models import readout
from hqcbench.models.adjoint import DIFF_METHODS, adjoint_expvals, choose_diff_method
from hqcbench.models.circuit import (
    angle_params,
    ansatz_unitary_t,
    best_groups,
    choose_method,
    cnot_ring_pairs,
    encode_real,
    evolve,
    group_matrices,
    input_width,
    layer_gates,
    normalise_amplitudes,
    real_dtype,
    ring_permutation,
    weight_shape,
    wire_groups,
    z_sign_table,
)
from hqcbench.models.memory import chunk_rows, estimate_peak_bytes

METHODS = ("auto", "unitary", "gates")  # fused engine only; internal (tests and benchmarks force one)


class QuantumLayer(nn.Module):
    """n_qubits-wire circuit: (B, input_width) -> (B, n_qubits) values <Z_w> in [-1, 1].

    ``method`` (fused engine only): ``auto`` picks ``unitary`` or ``gates`` per forward pass by
    estimated cost; the other two force one (tests and benchmarks use them). ``diff_method`` (fused
    engine, exact readout): ``backprop`` differentiates the chosen method with autograd, which keeps
    every intermediate state; ``adjoint`` runs the ``gates`` evolution once and undoes it in the
    backward pass (``hqcbench.models.adjoint``), a few state vectors whatever the depth; ``auto``
    picks by ``adjoint.choose_diff_method``. Outputs are the same either way. ``entangle=False``
    leaves out every CNOT ring (the ``hybrid_noent`` arm); ``encoding_scale`` is the angle
    encoding's scale (amplitude encoding has no angle, so only the default is accepted there).
    """

    # Finite-shot readout (hqcbench.models.readout; None = exact <Z>): ``shots`` applies in eval mode,
    # ``train_shots`` in training mode; ``shot_rng`` is the seeded numpy Generator they sample with.
    shots: int | None = None
    train_shots: int | None = None
    shot_rng: np.random.Generator | None = None
    diff_method: str = "auto"  # every instance sets its own in __init__
    # the trainable nn.Parameter set in __init__, typed as the Tensor readout.CircuitLayer reads
    weights: torch.Tensor
    # buffers registered in __init__ (non-persistent): the CNOT-ring permutation and its inverse, the
    # +-1 <Z> sign table, and its (re, im)-interleaved versions without and with the last ring folded in
    perm: torch.Tensor
    inv_perm: torch.Tensor
    zsigns: torch.Tensor
    zsigns2: torch.Tensor
    zsigns2_folded: torch.Tensor

    def __init__(self, n_qubits: int, depth: int, encoding: str = "angle", ansatz: str = "strong",
                 engine: str = "fused", seed: int | None = None, method: str = "auto", entangle: bool = True,
                 encoding_scale: float = DEFAULT_ENCODING_SCALE, diff_method: str = "auto"):
        super().__init__()
        for name, value, allowed in (("encoding", encoding, ENCODINGS), ("ansatz", ansatz, ANSATZES),
                                     ("engine", engine, ENGINES), ("method", method, METHODS),
                                     ("diff_method", diff_method, DIFF_METHODS)):
            if value not in allowed:
                raise ValueError(f"QuantumLayer: unknown {name} {value!r} (allowed: {', '.join(allowed)})")
        if method == "unitary" and diff_method == "adjoint":
            raise ValueError("QuantumLayer: diff_method='adjoint' runs the 'gates' method (it undoes the circuit "
                             "one wire group at a time), so it cannot be combined with method='unitary'")
        if n_qubits < 1 or depth < 1:
            raise ValueError(f"QuantumLayer: need n_qubits >= 1 and depth >= 1, got {n_qubits}, {depth}")
        if not math.isfinite(encoding_scale) or encoding_scale <= 0:
            raise ValueError(f"QuantumLayer: encoding_scale must be a finite number > 0, got {encoding_scale}")
        if encoding == "amplitude" and encoding_scale != DEFAULT_ENCODING_SCALE:
            raise ValueError("QuantumLayer: encoding_scale applies to angle encoding only (amplitude encoding has "
                             "no angle)")
        self.n_qubits, self.depth, self.encoding, self.ansatz, self.engine = n_qubits, depth, encoding, ansatz, engine
        self.method, self.entangle, self.encoding_scale = method, bool(entangle), float(encoding_scale)
        self.diff_method = diff_method
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.weights = nn.Parameter(torch.rand(weight_shape(n_qubits, depth, ansatz), generator=gen) * 2 * math.pi)
        perm = ring_permutation(n_qubits)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inv_perm", torch.argsort(perm), persistent=False)
        self.register_buffer("zsigns", z_sign_table(n_qubits), persistent=False)
        # readout tables for (re, im)-interleaved amplitudes; "folded": the last CNOT ring folded in,
        # since <Z> of state[perm] = probs @ zsigns[inv_perm]. Without rings there is nothing to fold.
        folded = self.zsigns[self.inv_perm] if self.entangle else self.zsigns
        self.register_buffer("zsigns2", self.zsigns.repeat_interleave(2, dim=0), persistent=False)
        self.register_buffer("zsigns2_folded", folded.repeat_interleave(2, dim=0), persistent=False)

    @property
    def in_features(self) -> int:
        return input_width(self.n_qubits, self.encoding)

    def extra_repr(self) -> str:
        text = (f"n_qubits={self.n_qubits}, depth={self.depth}, encoding={self.encoding}, "
                f"ansatz={self.ansatz}, engine={self.engine}")
        if self.encoding_scale != DEFAULT_ENCODING_SCALE:  # only the ablations add words: default text unchanged
            text += f", encoding_scale={self.encoding_scale:g}"
        if self.diff_method != "auto":
            text += f", diff_method={self.diff_method}"
        return text if self.entangle else text + ", entangle=False"

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantumLayer expects (batch, {self.in_features}) inputs, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        shots = self.train_shots if self.training else self.shots
        if shots is not None:  # sampled <Z>, parameter-shift gradients (hqcbench.models.readout)
            return readout.sampled_forward(self, x, shots)
        if self.engine == "torchquantum":
            return self._forward_torchquantum(x)
        return self._in_chunks(self._forward_fused, x)

    def method_for(self, batch: int) -> str:
        """The fused method a forward pass on ``batch`` samples uses (without the adjoint method)."""
        return self.method if self.method != "auto" else choose_method(self.n_qubits, self.depth, batch)

    def diff_method_for(self, batch: int, dtype: torch.dtype = torch.float32) -> str:
        """``backprop`` or ``adjoint``: how a recorded pass on ``batch`` samples (one chunk) is differentiated."""
        if self.diff_method != "auto":
            return self.diff_method
        if self.method == "unitary":
            return "backprop"
        return choose_diff_method(self.n_qubits, self.depth, batch, 16 if dtype == torch.float64 else 8)

    def peak_bytes(self, batch: int, backward: bool = True) -> int:
        """Estimated peak bytes of one pass over ``batch`` samples (``memory.estimate_peak_bytes``)."""
        return estimate_peak_bytes(self.n_qubits, self.depth, batch, self.diff_method, self.weights.dtype,
                                   self.encoding, self.ansatz, backward, self.engine)

    def _in_chunks(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """fn over row chunks of x, concatenated: bounds the working memory of large states (samples
        never mix, so each sample's output is the same in any chunk)."""
        rows = chunk_rows(self.n_qubits)
        if x.shape[0] <= rows:
            return fn(x)
        return torch.cat([fn(part) for part in x.split(rows)])

    # -------------------------------------------------------------- fused engine
    def _gates(self, dtype: torch.dtype) -> torch.Tensor:
        return layer_gates(self.weights.to(real_dtype(dtype)), self.ansatz)

    def _fused_state(self, x: torch.Tensor) -> torch.Tensor:
        psi0 = encode_real(x, self.n_qubits, self.encoding, self.encoding_scale)
        gates = self._gates(x.dtype)
        if self.method_for(x.shape[0]) == "unitary":
            return psi0.to(gates.dtype) @ ansatz_unitary_t(gates, self.entangle)
        return evolve(psi0, gates, self.perm, self.inv_perm, permute_last=True, entangle=self.entangle)

    def _needs_adjoint(self, x: torch.Tensor) -> bool:
        """Only a pass that autograd records needs a differentiation method; without one (no_grad,
        nothing requiring grad) the plain ``gates``/``unitary`` forward runs and saves nothing."""
        recorded = torch.is_grad_enabled() and (x.requires_grad or self.weights.requires_grad)
        return recorded and self.diff_method_for(x.shape[0], x.dtype) == "adjoint"

    def _forward_adjoint(self, x: torch.Tensor) -> torch.Tensor:
        n, rows = self.n_qubits, x.shape[0]
        if self.encoding == "angle":  # half-angles, as encode_real computes them
            enc = (self.encoding_scale / 2) * torch.tanh(x)
        else:
            enc = normalise_amplitudes(x)
        groups = wire_groups(n, best_groups(n, self.depth, rows))
        mats = group_matrices(self._gates(x.dtype), groups)
        return adjoint_expvals(enc, mats, groups, self.zsigns2_folded, self.perm, self.inv_perm, n,
                               self.encoding, self.entangle)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if self._needs_adjoint(x):
            return self._forward_adjoint(x)
        n = self.n_qubits
        psi0 = encode_real(x, n, self.encoding, self.encoding_scale)
        gates = self._gates(x.dtype)
        if self.method_for(x.shape[0]) == "unitary":
            # psi0 is real: out[b, o] = sum_i psi0[b, i] U^T[i, o] as one real product, (re, im) columns
            w = torch.view_as_real(ansatz_unitary_t(gates, self.entangle)).reshape(2 ** n, 2 ** (n + 1))
            out = psi0 @ w
            return out.square() @ self.zsigns2.to(out.dtype)
        # the gates method: the shared simulator; last ring left out, folded into the sign table
        state = evolve(psi0, gates, self.perm, self.inv_perm, permute_last=False, entangle=self.entangle)
        ri = torch.view_as_real(state).reshape(state.shape[0], -1)
        return ri.square() @ self.zsigns2_folded.to(ri.dtype)

    def final_state(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2**n) complex state after encoding and ansatz (either engine)."""
        self._check(x)
        if self.engine == "torchquantum":
            return self._tq_state(x)
        return self._in_chunks(self._fused_state, x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2**n) measurement probabilities in the computational basis (used by finite-shot readout)."""
        state = self.final_state(x)
        return state.real ** 2 + state.imag ** 2

    def expvals(self, state: torch.Tensor) -> torch.Tensor:
        """(B, n) <Z_w> of final states (B, 2**n)."""
        probs = state.real ** 2 + state.imag ** 2
        return probs @ self.zsigns.to(probs.dtype)

    # -------------------------------------------------------------- TorchQuantum engine
    def _tq_device(self, x: torch.Tensor):
        # imported here, not at module top: TorchQuantum takes ~2.4 s to import and only this
        # reference engine needs it
        import torchquantum as tq
        import torchquantum.functional as tqf

        n, bsz = self.n_qubits, x.shape[0]
        qdev = tq.QuantumDevice(n_wires=n, bsz=bsz, device=x.device)
        if self.encoding == "angle":
            angles = angle_params(x, self.encoding_scale)
            for w in range(n):
                tqf.ry(qdev, wires=w, params=angles[:, w])
        else:
            qdev.set_states(normalise_amplitudes(x).to(torch.complex64).reshape(bsz, *([2] * n)))
        for layer in range(self.depth):
            for w in range(n):
                if self.ansatz == "strong":
                    tqf.ry(qdev, wires=w, params=self.weights[layer, w, 0:1])
                    tqf.rz(qdev, wires=w, params=self.weights[layer, w, 1:2])
                else:
                    tqf.rx(qdev, wires=w, params=self.weights[layer, w, 0:1])
            for control, target in (cnot_ring_pairs(n) if self.entangle else []):
                tqf.cnot(qdev, wires=[control, target])
        return qdev

    def _tq_state(self, x: torch.Tensor) -> torch.Tensor:
        return self._tq_device(x).get_states_1d()

    def _forward_torchquantum(self, x: torch.Tensor) -> torch.Tensor:
        return _tq_expvals(self._tq_device(x), self.n_qubits)


def configure_readout(model: nn.Module, eval_shots: int | None, train_shots: int | None, seed: int) -> None:
    """Set the readout of every quantum layer of ``model`` (None = exact) and seed its shot stream.

    ``eval_shots`` applies in eval mode (validation, test, attacks), ``train_shots`` in training mode.
    """
    for i, layer in enumerate(m for m in model.modules() if isinstance(m, QuantumLayer)):
        layer.shots = eval_shots
        layer.train_shots = train_shots
        layer.shot_rng = readout.make_rng(seed, i) if (eval_shots or train_shots) else None


def _tq_expvals(qdev, n_qubits: int) -> torch.Tensor:
    """<Z> per wire through TorchQuantum's measurement module."""
    import torchquantum as tq  # heavy (~2.4 s): only the reference engine pays for it

    return tq.MeasureAll(tq.PauliZ)(qdev).reshape(-1, n_qubits)
