"""Finite-shot readout: what the quantum layer returns when <Z> is estimated from N measurements.

Why this exists: every published hybrid-vs-classical comparison reads exact expectation values
from a simulator. On hardware each <Z_w> is the mean of N measured +-1 outcomes, and every
derivative costs extra circuit executions. This module makes both visible:

* ``sample_expvals`` -- N outcomes per sample drawn from the circuit's probabilities (a seeded
  multinomial), mean of the +-1 Z eigenvalue per wire: an unbiased estimate of <Z_w> whose standard
  deviation is sqrt((1 - <Z_w>^2) / N).
* ``ShotReadout`` -- what ``QuantumLayer.forward`` returns (via ``sampled_forward``) once
  ``configure_readout`` gave the layer ``shots`` (eval mode: validation, test, attacks) or ``train_shots``
  (training mode). The forward value is a sampled estimate
  and the backward pass is the two-term parameter-shift rule on *sampled* estimates, as hardware
  would compute it -- one pair of shifted circuits per circuit weight (shared by the batch, but run
  per sample, because every sample has its own encoding) and per encoding angle of every sample:
    - angle encoding: RY(a_i) with a_i = encoding_scale * tanh(x_i) (pi by default); shift a_i by
      +-pi/2, chain rule through tanh;
    - amplitude encoding: the amplitudes themselves have no shift rule. We differentiate through the
      2**n - 1 RY angles of the real-amplitude state-preparation circuit of Mottonen et al. (2004),
      each a classical function of the amplitudes: shift each physical RY angle by +-pi/2, map back
      to the amplitudes with the chain rule (see docs/hardware_cost.md).
  This is slow by design (1 + 2 * (weights + encoding angles) circuits per sample and step) and meant
  for small studies. The shifted circuits run on the same simulator as the exact forward pass
  (``circuit.evolve``), given one gate set per row.

(The shots sweep -- test accuracy of a trained hybrid at several shot counts -- is
``hqcbench.evaluation.shots_sweep``.)

With both counts None, ``QuantumLayer.forward`` never calls into this module: its exact output is
untouched, bit for bit.

Sampling uses numpy's ``Generator.multinomial`` (PCG64, seeded), which draws exact multinomial
counts by conditional binomials in O(2**n) per sample whatever N is -- 10,000 or 10**6 shots cost
the same -- where ``torch.multinomial`` would materialise N indices per sample. Probabilities are
moved to the CPU for that (a (batch, 2**n) array; negligible next to the simulation).
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from hqcbench.models.circuit import (
    angle_params,
    evolve,
    layer_gates,
    normalise_amplitudes,
    real_dtype,
    ry_product_state,
)

SHIFT = math.pi / 2  # two-term parameter-shift rule for a Pauli rotation exp(-i theta P / 2)
SEED_SALT = 0x5407  # keeps the shot stream independent of other seeded streams of the same run seed
MAX_AMPLITUDES_PER_CHUNK = 2 ** 22  # bounds the memory of the shifted-circuit batch (rows x 2**n)


class CircuitLayer(Protocol):
    """What this module reads of a quantum layer (``QuantumLayer`` is one).

    A protocol rather than the class itself, so that the readout does not import the layer that
    calls it.
    """

    n_qubits: int
    encoding: str
    encoding_scale: float  # angle encoding's RY(encoding_scale * tanh x)
    entangle: bool         # False: no CNOT rings (the product-state ablation)
    ansatz: str
    weights: torch.Tensor
    zsigns: torch.Tensor   # (2**n, n) +-1 table of <Z_w>
    perm: torch.Tensor     # CNOT-ring permutation and its inverse (``circuit.ring_permutation``)
    inv_perm: torch.Tensor
    shot_rng: np.random.Generator | None

    def probabilities(self, x: torch.Tensor) -> torch.Tensor: ...


# ----------------------------------------------------------------------------- sampling
def make_rng(seed: int, *stream: int) -> np.random.Generator:
    """A numpy Generator for one shot stream: (run seed, purpose...) -> independent PCG64 stream."""
    return np.random.default_rng([SEED_SALT, int(seed), *map(int, stream)])


def sample_counts(probs: torch.Tensor, shots: int, rng: np.random.Generator) -> np.ndarray:
    """(R, 2**n) probabilities -> (R, 2**n) int64 outcome counts, each row summing to ``shots``."""
    p = probs.detach().to("cpu", torch.float64).numpy()
    p = np.clip(p, 0.0, None)
    p /= p.sum(axis=1, keepdims=True)  # float32 rounding can leave sum(p) = 1 +- 1e-7; multinomial checks it
    return rng.multinomial(int(shots), p)


def sample_expvals(probs: torch.Tensor, zsigns: torch.Tensor, shots: int, rng: np.random.Generator
                   ) -> torch.Tensor:
    """(R, 2**n) probabilities -> (R, n) sampled <Z_w>: mean of ``shots`` measured +-1 outcomes per wire."""
    counts = torch.from_numpy(sample_counts(probs, shots, rng))
    signs = zsigns.detach().to("cpu", torch.float64)
    est = counts.to(torch.float64) @ signs / float(shots)
    return est.to(device=probs.device, dtype=probs.dtype if probs.is_floating_point() else torch.float32)


def _expvals(probs: torch.Tensor, zsigns: torch.Tensor, shots: int | None, rng: np.random.Generator | None
             ) -> torch.Tensor:
    """Exact <Z> when ``shots`` is None (used by tests of the shift rule), else sampled."""
    if shots is None:
        return probs @ zsigns.to(probs.dtype)
    assert rng is not None
    return sample_expvals(probs, zsigns, shots, rng)


# ----------------------------------------------------------------------------- circuit pieces
def _safe_atan2_hypot(y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(atan2(y, x), hypot(y, x)) with finite gradients where y = x = 0 (both are 0/0 there)."""
    zero = (y == 0) & (x == 0)
    x_safe = torch.where(zero, torch.ones_like(x), x)
    return torch.atan2(y, x_safe), torch.hypot(y, x_safe).masked_fill(zero, 0.0)


def amplitude_tree_angles(x: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """Amplitude encoding: the RY tree angles alpha (B, 2**n - 1), level by level (level k has 2**k).

    Level k rotates wire k, uniformly controlled by wires 0..k-1 (wire 0 = most significant bit):
    state[b] = prod_k (cos(alpha_k[p]/2) if bit_k(b) = 0 else sin(alpha_k[p]/2)), p = the first k
    bits of b. Leaves take atan2 of the signed amplitude pair, so real amplitudes of any sign are
    reached with RY (and CNOT) gates only (Mottonen et al., quant-ph/0407010).
    """
    r = normalise_amplitudes(x)  # the state the layer's amplitude encoding prepares
    levels: list[torch.Tensor] = []
    for _ in range(n_qubits):
        phi, r = _safe_atan2_hypot(r[:, 1::2], r[:, 0::2])
        levels.append(2 * phi)
    return torch.cat(levels[::-1], dim=1)


def gray_walsh_matrix(k: int) -> torch.Tensor:
    """M (2**k, 2**k) with M[i, j] = (-1)**popcount(j & gray(i)): alpha_k = M theta'_k (Mottonen et al., eq. 3).

    theta'_k are the angles of the 2**k physical RY gates that implement the uniformly controlled
    rotation with k controls (interleaved with 2**k CNOTs for k >= 1). Shifting theta'_j by s shifts
    every alpha_i by s * M[i, j]; M M^T = 2**k I.
    """
    size = 2 ** k
    gray = [i ^ (i >> 1) for i in range(size)]
    return torch.tensor([[(-1.0) ** bin(j & gray[i]).count("1") for j in range(size)] for i in range(size)])


def tree_state(alpha: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """(R, 2**n - 1) tree angles -> (R, 2**n) real state prepared by the uniformly controlled RY tree."""
    state = torch.ones(alpha.shape[0], 1, dtype=alpha.dtype, device=alpha.device)
    start = 0
    for k in range(n_qubits):
        half = alpha[:, start:start + 2 ** k] / 2
        amp = torch.stack([torch.cos(half), torch.sin(half)], dim=2)  # (R, 2**k, 2)
        state = (state.unsqueeze(2) * amp).reshape(alpha.shape[0], -1)
        start += 2 ** k
    return state


def encoding_params(layer: CircuitLayer, x: torch.Tensor) -> torch.Tensor:
    """The input-dependent gate angles of the circuit: (B, n) for angle, (B, 2**n - 1) tree angles for amplitude."""
    if layer.encoding == "angle":
        return angle_params(x, layer.encoding_scale)
    return amplitude_tree_angles(x, layer.n_qubits)


def initial_state(layer: CircuitLayer, params: torch.Tensor) -> torch.Tensor:
    """(R, 2**n) real encoded state from per-row encoding parameters (``encoding_params``)."""
    if layer.encoding == "angle":
        return ry_product_state(params / 2)
    return tree_state(params, layer.n_qubits)


def shift_directions(layer: CircuitLayer) -> torch.Tensor:
    """D (m, m): row j = change of the encoding parameters when physical RY angle j is shifted by 1.

    Angle encoding: identity (each RY(a_i) is one physical gate). Amplitude encoding: block diagonal
    with blocks M_k^T (``gray_walsh_matrix``), one per tree level.
    """
    if layer.encoding == "angle":
        return torch.eye(layer.n_qubits)
    return torch.block_diag(*[gray_walsh_matrix(k).T for k in range(layer.n_qubits)])


def circuit_probabilities(layer: CircuitLayer, enc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Probabilities (R, 2**n) of circuits given per-row encoding parameters and per-row weights (R, depth, n, k).

    The exact forward pass's simulator (``circuit.evolve``) with one gate set per row, so the
    shifted circuits cannot drift from the circuit they differentiate (tests check it against
    ``QuantumLayer.probabilities``). Precision follows the encoding parameters, as in the layer.
    """
    gates = layer_gates(weights.to(real_dtype(enc.dtype)), layer.ansatz)  # (R, depth, n, 2, 2)
    state = evolve(initial_state(layer, enc), gates, layer.perm.to(enc.device), layer.inv_perm.to(enc.device),
                   entangle=layer.entangle)
    return state.real ** 2 + state.imag ** 2


# ----------------------------------------------------------------------------- parameter shift
def parameter_shift(layer: CircuitLayer, x: torch.Tensor, grad_out: torch.Tensor, shots: int | None,
                    rng: np.random.Generator | None, need_x: bool = True, need_w: bool = True,
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Vector-Jacobian products (dL/dx, dL/dweights) from the two-term shift rule.

    Each derivative dE/dtheta = (E(theta + pi/2) - E(theta - pi/2)) / 2 with E estimated from
    ``shots`` samples (exact when ``shots`` is None). Weights: one shifted pair per weight, evaluated
    on every sample. Inputs: one pair per physical encoding angle per sample, mapped back to x by
    the chain rule (classical, exact).
    """
    bsz = x.shape[0]
    weights = layer.weights.detach()
    zsigns = layer.zsigns
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(need_x)
        enc = encoding_params(layer, x_req)
    enc_d = enc.detach()
    n_w = weights.numel() if need_w else 0
    directions = shift_directions(layer).to(enc_d.device, enc_d.dtype)
    n_e = directions.shape[0] if need_x else 0
    if n_w + n_e == 0:
        return None, None
    w_base = weights.unsqueeze(0).expand(bsz, *weights.shape)

    def block(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of shifted circuit i // 2 (sign + for even i, - for odd), one per sample."""
        param, sign = divmod(i, 2)
        step = SHIFT if sign == 0 else -SHIFT
        if param < n_w:
            delta = torch.zeros(n_w, dtype=weights.dtype, device=weights.device)
            delta[param] = step
            return enc_d, (weights + delta.view_as(weights)).unsqueeze(0).expand(bsz, *weights.shape)
        return enc_d + step * directions[param - n_w], w_base

    # built chunk by chunk: for amplitude encoding the rows grow as 2**n x 2**n per sample
    blocks_per_chunk = max(1, MAX_AMPLITUDES_PER_CHUNK // (2 ** layer.n_qubits * bsz))
    n_blocks = 2 * (n_w + n_e)
    expvals = []
    for first in range(0, n_blocks, blocks_per_chunk):
        encs, ws = zip(*(block(i) for i in range(first, min(n_blocks, first + blocks_per_chunk))))
        probs = circuit_probabilities(layer, torch.cat(encs), torch.cat(ws))
        expvals.append(_expvals(probs, zsigns.to(probs.device), shots, rng))
    est = torch.cat(expvals).to(grad_out.dtype).view(-1, 2, bsz, layer.n_qubits)  # (params, +-, B, n)
    deriv = (est[:, 0] - est[:, 1]) / 2  # (params, B, n): dE_w / dparam per sample
    weighted = (deriv * grad_out.unsqueeze(0)).sum(dim=2)  # (params, B)
    grad_w = grad_x = None
    if need_w:
        grad_w = weighted[:n_w].sum(dim=1).view_as(weights).to(weights.dtype)
    if need_x:
        grad_phys = weighted[n_w:].T  # (B, m): dL / d(physical encoding angle)
        grad_enc = torch.linalg.solve(directions, grad_phys.T.to(directions.dtype)).T  # D^{-1} maps back
        (grad_x,) = torch.autograd.grad(enc, x_req, grad_enc.to(enc.dtype))
    return grad_x, grad_w


class ShotReadout(torch.autograd.Function):
    """forward: sampled <Z> per wire; backward: parameter shift on sampled estimates (see module doc)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weights: torch.Tensor, layer: CircuitLayer, shots: int) -> torch.Tensor:
        with torch.no_grad():
            probs = layer.probabilities(x)
        ctx.layer, ctx.shots = layer, shots
        ctx.save_for_backward(x)
        return sample_expvals(probs, layer.zsigns, shots, layer_rng(layer)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w = parameter_shift(ctx.layer, x, grad_out, ctx.shots, layer_rng(ctx.layer), need_x, need_w)
        return grad_x, grad_w, None, None


def layer_rng(layer: CircuitLayer) -> np.random.Generator:
    """The layer's shot stream (created seeded with 0 if ``configure_readout`` was never called)."""
    rng = getattr(layer, "shot_rng", None)
    if rng is None:
        rng = make_rng(0)
        layer.shot_rng = rng
    return rng


def sampled_forward(layer: CircuitLayer, x: torch.Tensor, shots: int) -> torch.Tensor:
    """What ``QuantumLayer.forward`` returns when shots are set: sampled <Z>, parameter-shift gradients."""
    return ShotReadout.apply(x, layer.weights, layer, int(shots))
