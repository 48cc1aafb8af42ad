"""Gradient variance of the hybrid's circuit at random initialisation (barren plateaus).

McClean et al. (2018) showed that for random parametrised circuits deep enough to form a unitary
2-design, the variance of any partial derivative of a cost falls exponentially with the number of
qubits: ``Var[dL/dtheta] ~ 2**-n``, so gradient descent starts on a plateau that no shot budget can
resolve. Cerezo et al. (2021) showed that this depends on the cost: a *global* observable (one
acting on every qubit) plateaus even at shallow depth, while a *local* one (a few qubits) keeps a
polynomially small variance at depth O(log n). The hybrid's readout is local -- <Z> per wire -- so
the question here is whether its circuit, as the ``hybrid`` arm builds and initialises it, keeps
trainable gradients as it widens.

What is measured, per (n qubits, depth):

* the circuit is ``models.blocks.arm_circuit("hybrid", ...)`` with the fair protocol's defaults
  (``RunConfig``: angle encoding, ``strong`` ansatz, ``fused`` engine), built after
  ``torch.manual_seed(init)`` exactly as a training run seeds it, so each initialisation draws the
  weights the way the layer does (uniform in [0, 2 pi));
* the input is one fixed batch of ``BATCH`` feature vectors, uniform in [-1, 1] (the scale a fresh
  Linear reducer emits), which the layer itself encodes as RY(pi * tanh x);
* the cost is ``mean over the batch of <Z_0>``: the local cost of Cerezo et al. (one qubit), i.e. the
  most favourable readout the hybrid has; its gradient with respect to every circuit weight comes from
  the layer's own differentiation (backpropagation or the adjoint method, as the layer chooses);
* ``var_first`` is the variance over initialisations of the derivative for the first weight (layer 0,
  wire 0, RY), McClean's quantity; ``var_mean`` the mean over weights of the per-weight variance.

Initialisations are looped, not batched: the layer holds one weight set, and a batch of weight sets
would simulate the same number of amplitudes (the cost is the 2**n-amplitude states, not the calls).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from hqcbench.config import RunConfig
from hqcbench.models.blocks import arm_circuit
from hqcbench.models.quantum import QuantumLayer

BATCH = 16  # inputs per cost evaluation
INPUT_SEED = 0  # the fixed input batch (one per width n)
# Variances at or below this are numerically zero for float32 gradients (their rounding noise is
# ~1e-8, so its variance ~1e-16): e.g. the first weight at depth 1, n >= 3, where the CNOT ring maps
# <Z_0> onto Z_1 ... Z_{n-1}, which that weight does not touch. The slope fit leaves them out.
ZERO_VARIANCE = 1e-12
TWO_DESIGN_SLOPE = math.log10(0.5)  # log10 Var per qubit of a 2-design: 2**-n -> -0.301


@dataclass(frozen=True)
class GradientCell:
    """One (n, depth) cell: the variances and what they cost."""

    n: int
    depth: int
    var_first: float
    var_mean: float
    inits: int
    seconds: float
    cpu_seconds: float

    def row(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SlopeFit:
    """log10(variance) = intercept + slope * n, over the widths whose variance is not zero."""

    intercept: float
    slope: float
    widths: tuple[int, ...]

    @property
    def factor_per_qubit(self) -> float:
        """How many times smaller the variance gets per added qubit (2 for a 2-design)."""
        return 10.0 ** (-self.slope)


def hybrid_circuit(n: int, depth: int, init: int) -> QuantumLayer:
    """The hybrid arm's circuit, initialised as a training run with seed ``init`` would initialise it.

    ``fork_rng`` keeps the caller's global torch stream untouched."""
    cfg = RunConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init)
        return arm_circuit("hybrid", n, depth, cfg.encoding, cfg.ansatz, cfg.engine, cfg.encoding_scale)


def input_batch(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed (BATCH, n) features, uniform in [-1, 1]; the layer encodes them itself."""
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return (torch.rand(BATCH, n, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)


def local_cost(layer: QuantumLayer, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of <Z> on wire 0: a one-qubit (local) cost in Cerezo et al.'s sense."""
    return layer(x)[:, 0].mean()


def init_gradients(n: int, depth: int, inits: int, dtype: torch.dtype = torch.float32,
                   on_init: Callable[[], object] | None = None) -> np.ndarray:
    """(inits, weights) float64 array: dL/dtheta for initialisations 0 .. inits-1, weights flattened
    in the layer's (layer, wire, gate) order. ``dtype``: float32 as the hybrid trains, float64 for checks."""
    x = input_batch(n, dtype)
    rows = []
    for init in range(inits):
        layer = hybrid_circuit(n, depth, init).to(dtype)
        (grad,) = torch.autograd.grad(local_cost(layer, x), layer.weights)
        rows.append(grad.detach().to(torch.float64).reshape(-1).numpy())
        if on_init is not None:
            on_init()
    return np.stack(rows)


def variances(grads: np.ndarray) -> tuple[float, float]:
    """(var_first, var_mean): unbiased variance over initialisations (rows) of the first weight's
    derivative, and the mean over weights of each weight's variance."""
    per_weight = grads.var(axis=0, ddof=1)
    return float(per_weight[0]), float(per_weight.mean())


def gradient_cell(n: int, depth: int, inits: int, on_init: Callable[[], object] | None = None) -> GradientCell:
    """Measure one cell (wall and process CPU seconds: the machine may be shared)."""
    wall, cpu = time.perf_counter(), time.process_time()
    grads = init_gradients(n, depth, inits, on_init=on_init)
    var_first, var_mean = variances(grads)
    return GradientCell(n, depth, var_first, var_mean, inits, time.perf_counter() - wall, time.process_time() - cpu)


def fit_slope(widths: Iterable[int], values: Iterable[float]) -> SlopeFit:
    """Least-squares line through (n, log10 variance), numerically zero variances left out.

    NaN slope when fewer than two distinct widths remain (nothing to fit)."""
    pairs = [(int(n), float(v)) for n, v in zip(widths, values) if np.isfinite(v) and v > ZERO_VARIANCE]
    used = tuple(sorted({n for n, _ in pairs}))
    if len(used) < 2:
        return SlopeFit(math.nan, math.nan, used)
    ns = np.array([n for n, _ in pairs], dtype=float)
    logs = np.log10([v for _, v in pairs])
    slope, intercept = np.polyfit(ns, logs, 1)
    return SlopeFit(float(intercept), float(slope), used)
