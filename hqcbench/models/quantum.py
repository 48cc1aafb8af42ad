"""The quantum layer: encoding -> trainable ansatz -> <Z> on every wire.

Two engines compute the same circuit from the same ``weights`` parameter:

* ``torchquantum`` -- TorchQuantum's own batched simulation (``tq.QuantumDevice(bsz=...)``),
  gate by gate. It is the reference.
* ``fused`` (default) -- the same circuit with as few tensor operations as possible. The trainable
  part is the same for every sample, so its gates are built once per forward pass for all layers
  and wires at once, and then applied in one of two ways, chosen by an estimated cost
  (:func:`choose_method`):

  - ``unitary``: the whole ansatz becomes one 2**n x 2**n matrix (Kronecker products of each layer's
    single-qubit gates, the CNOT ring as a row permutation, a product over layers), applied to the
    batch as one real matrix product (the encoded state is real). Best while 2**n is small.
  - ``gates``: each layer's wires are split into a few groups; each group's gates become one small
    Kronecker matrix applied to the state with one batched matmul, then the CNOT ring is one gather.
    Best once 2**n grows past the batch size, where building the full unitary costs more than the
    batch does.

  In both, the last CNOT ring before the readout is folded into the <Z> sign table (permuting the
  amplitudes does not change which basis states they are, only which sign they get), and PauliZ
  readout is one matrix product with that +-1 table.

Why hand-written: TorchQuantum dispatches a module per gate, which costs far more than the
arithmetic on a 16-amplitude state; PennyLane's TorchLayer is slower still; no maintained library
offers a batched, autograd-friendly state-vector layer with this little overhead. The gate formulas
below are TorchQuantum's (``torchquantum.functional.{rx,ry,rz}_matrix``; a test checks they agree),
written out here so that float64 inputs can be simulated in complex128 (TorchQuantum's matrices are
always complex64) and so that the fused engine does not import TorchQuantum (~2.4 s).

Conventions (see docs/quantum_layer.md):
* Wire 0 is the most significant bit of the basis-state index (TorchQuantum's convention).
* The CNOT ring is CNOT(0,1), CNOT(1,2), ..., CNOT(n-1,0) for n >= 3; for n = 2 a single CNOT(0,1)
  (as PennyLane's BasicEntanglerLayers does); none for n = 1.
* angle encoding: RY(pi * tanh(x_w)) on wire w of |0...0>; amplitude encoding: x / ||x|| per sample.
* strong ansatz layer: RY(w[l, i, 0]) then RZ(w[l, i, 1]) on every wire i, then the CNOT ring;
  basic ansatz layer: RX(w[l, i, 0]) on every wire, then the CNOT ring.
* Precision: complex64 for float32/float16 inputs, complex128 for float64 inputs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

ANGLE_SCALE = math.pi  # angle encoding: RY(pi * tanh(x))
ENGINES = ("fused", "torchquantum")
METHODS = ("auto", "unitary", "gates")
ENCODINGS = ("angle", "amplitude")
ANSATZES = ("strong", "basic")

# Cost model of ``choose_method``, in complex multiply-adds (forward; backward scales both paths
# about alike). OP_COST: one extra tensor operation (~10 us of dispatch and autograd overhead at
# ~1 complex MAC/ns). PASS_COST: one sweep over the batch's state (B * 2**n amplitudes) beyond its
# arithmetic, per amplitude -- memory traffic and the small-matrix inefficiency that make 2-3 wire
# groups beat one group per wire. Fitted by timing every method and group count on the 2-core dev
# machine (docs/quantum_layer.md); the choice is only sensitive to them near a crossover, where
# the two candidates cost about the same anyway.
OP_COST = 10_000.0
PASS_COST = 32.0


def input_width(n_qubits: int, encoding: str) -> int:
    """Values the circuit takes per sample: n for angle encoding, 2**n for amplitude encoding."""
    return n_qubits if encoding == "angle" else 2 ** n_qubits


def weight_shape(n_qubits: int, depth: int, ansatz: str) -> tuple[int, ...]:
    """strong: RY and RZ per wire and layer; basic: RX per wire and layer."""
    return (depth, n_qubits, 2) if ansatz == "strong" else (depth, n_qubits, 1)


def cnot_ring_pairs(n_qubits: int) -> list[tuple[int, int]]:
    """(control, target) pairs of one CNOT ring, in application order."""
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


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """complex128 for float64 inputs, complex64 otherwise."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------ gates
@lru_cache(maxsize=64)
def _half_angle_offsets(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """cos(t/2 - [0, pi/2]) = [cos(t/2), sin(t/2)]: both in one elementwise operation."""
    return torch.tensor([0.0, math.pi / 2], dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _gate_mixer(ansatz: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Constant (products of half-angle cos/sin) -> (re, im) of the 4 gate entries, row-major.

    strong, from [c cb, c sb, s cb, s sb] (c, s of RY's angle a; cb, sb of RZ's angle b):
      RZ(b) RY(a) = [[e^{-ib/2} c, -e^{-ib/2} s], [e^{ib/2} s, e^{ib/2} c]]
    basic, from [c, s]: RX(a) = [[c, -i s], [-i s, c]]
    """
    if ansatz == "strong":  # columns: 00re 00im 01re 01im 10re 10im 11re 11im
        rows = [[1, 0, 0, 0, 0, 0, 1, 0], [0, -1, 0, 0, 0, 0, 0, 1],
                [0, 0, -1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1, 0, 0]]
    else:
        rows = [[1, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, -1, 0, -1, 0, 0]]
    return torch.tensor(rows, dtype=dtype, device=device)


def layer_gates(weights: torch.Tensor, ansatz: str) -> torch.Tensor:
    """(depth, n, 2, 2) complex single-qubit gate of every layer and wire, TorchQuantum's formulas.

    strong: RZ(b) @ RY(a); basic: RX(a) (see ``_gate_mixer``). A few vectorised operations for all
    gates at once: per-gate Python work is what makes TorchQuantum slow on small states.
    """
    depth, n = weights.shape[:2]
    trig = torch.cos(weights.unsqueeze(-1) * 0.5 - _half_angle_offsets(weights.dtype, weights.device))
    if ansatz == "strong":
        prods = (trig[..., 0, :, None] * trig[..., 1, None, :]).reshape(depth, n, 4)
    else:
        prods = trig.reshape(depth, n, 2)
    ri = prods @ _gate_mixer(ansatz, weights.dtype, weights.device)
    return torch.view_as_complex(ri.reshape(depth, n, 4, 2)).reshape(depth, n, 2, 2)


@lru_cache(maxsize=None)
def _bits(k: int) -> tuple[tuple[int, ...], ...]:
    """(k, 2**k): bit of wire w in basis index i, wire 0 most significant."""
    return tuple(tuple((i >> (k - 1 - w)) & 1 for i in range(2 ** k)) for w in range(k))


@lru_cache(maxsize=128)
def _kron_index(k: int, ring: bool, transpose: bool, device: torch.device) -> torch.Tensor:
    """Flat index into gates.reshape(d, k * 4) with gathered.view(d, k, 2**k, 2**k).prod(1) = the kron.

    Entry (w, r, c) picks g_w[bit_w(r), bit_w(c)], i.e. 4 * w + 2 * bit_w(r) + bit_w(c). ring: rows
    permuted by the CNOT ring (the layer's unitary P @ kron, P a permutation, costs nothing extra).
    transpose: the transposed matrix. (index_select on a flat index: its backward is an index_add,
    measured ~30 us cheaper per call than advanced indexing's accumulate-scatter on a 2-core CPU.)
    """
    bits = torch.tensor(_bits(k), device=device)
    rows = bits[:, list(_ring_permutation(k))] if ring and k > 1 else bits
    wire = torch.arange(k, device=device).view(k, 1, 1)
    row, col = (rows[:, None, :], bits[:, :, None]) if transpose else (rows[:, :, None], bits[:, None, :])
    return (4 * wire + 2 * row + col).reshape(-1)


@lru_cache(maxsize=64)
def _product_state_index(n_qubits: int, device: torch.device) -> torch.Tensor:
    """Flat index into (cos, sin) pairs (B, n * 2): entry (w, i) picks wire w's amplitude for bit_w(i)."""
    bits = torch.tensor(_bits(n_qubits), device=device)
    return (2 * torch.arange(n_qubits, device=device).view(-1, 1) + bits).reshape(-1)


def kron_chain(gates: torch.Tensor, ring: bool = False, transpose: bool = False) -> torch.Tensor:
    """(d, k, 2, 2) -> (d, 2**k, 2**k): kron(g_0, ..., g_{k-1}) per d, wire 0 most significant.

    K[r, c] = prod_w g_w[bit_w(r), bit_w(c)]: one gather and one product for any k, instead of k - 1
    Kronecker steps. ring / transpose: see ``_kron_index``.
    """
    d, k = gates.shape[:2]
    index = _kron_index(k, ring, transpose, gates.device)
    return gates.reshape(d, 4 * k).index_select(1, index).view(d, k, 2 ** k, 2 ** k).prod(dim=1)


def wire_groups(n_qubits: int, n_groups: int) -> list[tuple[int, int]]:
    """Split wires 0..n-1 into n_groups contiguous (start, size) blocks of near-equal size."""
    base, extra = divmod(n_qubits, n_groups)
    groups, start = [], 0
    for g in range(n_groups):
        size = base + (1 if g < extra else 0)
        groups.append((start, size))
        start += size
    return groups


# ------------------------------------------------------------------------------------ cost model
def gates_cost(n_qubits: int, depth: int, batch: int, n_groups: int) -> float:
    """Estimated cost of the ``gates`` method with n_groups wire groups per layer."""
    dim = 2 ** n_qubits
    per_layer = sum(2 ** size + PASS_COST for _, size in wire_groups(n_qubits, n_groups))
    passes = depth * per_layer + depth * PASS_COST  # group matmuls; CNOT-ring gathers + readout
    ops = depth * (n_groups + 1) + n_qubits + 12
    return batch * dim * passes + OP_COST * ops


def best_groups(n_qubits: int, depth: int, batch: int) -> int:
    return min(range(1, n_qubits + 1), key=lambda k: gates_cost(n_qubits, depth, batch, k))


def unitary_cost(n_qubits: int, depth: int, batch: int) -> float:
    """Estimated cost of the ``unitary`` method: build (kron + product over layers) + apply (real x)."""
    dim = 2 ** n_qubits
    build = 2 * depth * dim * dim + 2 * (depth - 1) * dim ** 3  # products: two more in backward
    apply = batch * dim * dim / 2 + batch * dim * PASS_COST    # real x times (re, im) columns; readout
    ops = n_qubits + math.ceil(math.log2(depth)) + 14
    return build + apply + OP_COST * ops


def choose_method(n_qubits: int, depth: int, batch: int) -> str:
    """``unitary`` or ``gates``, whichever the cost model says is cheaper for this batch."""
    gates = gates_cost(n_qubits, depth, batch, best_groups(n_qubits, depth, batch))
    return "unitary" if unitary_cost(n_qubits, depth, batch) <= gates else "gates"


class _Permute(torch.autograd.Function):
    """state[..., perm] whose backward is a gather with the inverse permutation.

    Autograd's generic indexing backward scatters with accumulation (it cannot know the index is a
    permutation); a gather is several times cheaper on the largest tensor of the layer.
    """

    @staticmethod
    def forward(ctx, state: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return state.index_select(-1, perm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(-1, inverse), None, None


# ------------------------------------------------------------------------------------ encoding
def encode_real(x: torch.Tensor, n_qubits: int, encoding: str) -> torch.Tensor:
    """(B, 2**n) real state after encoding, per sample (never mixes samples)."""
    if encoding == "angle":
        half = (ANGLE_SCALE / 2) * torch.tanh(x)
        cs = torch.cos(half.unsqueeze(-1) - _half_angle_offsets(x.dtype, x.device))  # RY(t)|0> = (c, s)
        if n_qubits <= 6:  # product state in one gather + product (few ops: small states are overhead-bound)
            index = _product_state_index(n_qubits, x.device)
            gathered = cs.reshape(x.shape[0], 2 * n_qubits).index_select(1, index)
            return gathered.view(x.shape[0], n_qubits, 2 ** n_qubits).prod(dim=1)
        state = cs[:, 0]  # large states: n - 1 outer products, no (B, n, 2**n) intermediate
        for w in range(1, n_qubits):
            state = (state.unsqueeze(2) * cs[:, w].unsqueeze(1)).reshape(x.shape[0], -1)
        return state
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
    return x / norm


def encode_state(x: torch.Tensor, n_qubits: int, encoding: str) -> torch.Tensor:
    """(B, 2**n) complex state after encoding (complex128 for float64 inputs, else complex64)."""
    return encode_real(x, n_qubits, encoding).to(complex_dtype(x.dtype))


class QuantumLayer(nn.Module):
    """n_qubits-wire circuit: (B, input_width) -> (B, n_qubits) values <Z_w> in [-1, 1].

    ``method`` (fused engine only): ``auto`` picks ``unitary`` or ``gates`` per forward pass by
    estimated cost; the other two force one (tests and benchmarks use them).
    """

    # Finite-shot readout (hqcbench.shots; None = exact <Z>): ``shots`` applies in eval mode,
    # ``train_shots`` in training mode; ``shot_rng`` is the seeded numpy Generator they sample with.
    shots: int | None = None
    train_shots: int | None = None
    shot_rng = None

    def __init__(self, n_qubits: int, depth: int, encoding: str = "angle", ansatz: str = "strong",
                 engine: str = "fused", seed: int | None = None, method: str = "auto"):
        super().__init__()
        for name, value, allowed in (("encoding", encoding, ENCODINGS), ("ansatz", ansatz, ANSATZES),
                                     ("engine", engine, ENGINES), ("method", method, METHODS)):
            if value not in allowed:
                raise ValueError(f"QuantumLayer: unknown {name} {value!r} (allowed: {', '.join(allowed)})")
        if n_qubits < 1 or depth < 1:
            raise ValueError(f"QuantumLayer: need n_qubits >= 1 and depth >= 1, got {n_qubits}, {depth}")
        self.n_qubits, self.depth, self.encoding, self.ansatz, self.engine = n_qubits, depth, encoding, ansatz, engine
        self.method = method
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.weights = nn.Parameter(torch.rand(weight_shape(n_qubits, depth, ansatz), generator=gen) * 2 * math.pi)
        perm = ring_permutation(n_qubits)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inv_perm", torch.argsort(perm), persistent=False)
        self.register_buffer("zsigns", z_sign_table(n_qubits), persistent=False)
        # readout tables for (re, im)-interleaved amplitudes; "folded": the last CNOT ring folded in,
        # since <Z> of state[perm] = probs @ zsigns[inv_perm]
        self.register_buffer("zsigns2", self.zsigns.repeat_interleave(2, dim=0), persistent=False)
        self.register_buffer("zsigns2_folded", self.zsigns[self.inv_perm].repeat_interleave(2, dim=0),
                             persistent=False)

    @property
    def in_features(self) -> int:
        return input_width(self.n_qubits, self.encoding)

    def extra_repr(self) -> str:
        return (f"n_qubits={self.n_qubits}, depth={self.depth}, encoding={self.encoding}, "
                f"ansatz={self.ansatz}, engine={self.engine}")

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantumLayer expects (batch, {self.in_features}) inputs, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        shots = self.train_shots if self.training else self.shots
        if shots is not None:  # sampled <Z>, parameter-shift gradients (hqcbench.models.readout)
            from hqcbench.models.readout import sampled_forward
            return sampled_forward(self, x, shots)
        if self.engine == "torchquantum":
            return self._forward_torchquantum(x)
        return self._forward_fused(x)

    def method_for(self, batch: int) -> str:
        """The fused method a forward pass on ``batch`` samples uses."""
        return self.method if self.method != "auto" else choose_method(self.n_qubits, self.depth, batch)

    # -------------------------------------------------------------- fused engine
    def _gates(self, dtype: torch.dtype) -> torch.Tensor:
        return layer_gates(self.weights.to(real_dtype(dtype)), self.ansatz)

    def _ansatz_unitary_t(self, gates: torch.Tensor) -> torch.Tensor:
        """(2**n, 2**n) transpose of the ansatz's unitary, CNOT rings included.

        U = (P K_{d-1}) ... (P K_0) with K_l the kron of layer l's gates and P the ring, so
        U^T = (P K_0)^T ... (P K_{d-1})^T; the transpose lets the batch use it without a copy.
        """
        mats = list(kron_chain(gates, ring=True, transpose=True))
        while len(mats) > 1:                        # pairwise products: log2(depth) rounds
            pairs = [mats[i] @ mats[i + 1] for i in range(0, len(mats) - 1, 2)]
            mats = pairs + ([mats[-1]] if len(mats) % 2 else [])
        return mats[0]

    def _evolve_gates(self, state: torch.Tensor, gates: torch.Tensor, permute_last: bool) -> torch.Tensor:
        """Apply the ansatz to (B, 2**n) states, a few wire groups per layer."""
        n, bsz = self.n_qubits, state.shape[0]
        groups = wire_groups(n, best_groups(n, self.depth, bsz))
        mats = [kron_chain(gates[:, start:start + size]) for start, size in groups]  # each (depth, 2^g, 2^g)
        state = state.to(gates.dtype)
        for layer in range(self.depth):
            for (start, size), mat in zip(groups, mats):
                # contract group's axis: view (B * 2^start, 2^size, rest) and multiply from the left
                state = torch.matmul(mat[layer], state.reshape(bsz * 2 ** start, 2 ** size, -1))
            state = state.reshape(bsz, -1)
            if n > 1 and (layer < self.depth - 1 or permute_last):
                state = _Permute.apply(state, self.perm, self.inv_perm)
        return state

    def _fused_state(self, x: torch.Tensor) -> torch.Tensor:
        psi0 = encode_real(x, self.n_qubits, self.encoding)
        gates = self._gates(x.dtype)
        if self.method_for(x.shape[0]) == "unitary":
            return psi0.to(gates.dtype) @ self._ansatz_unitary_t(gates)
        return self._evolve_gates(psi0, gates, permute_last=True)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_qubits
        psi0 = encode_real(x, n, self.encoding)
        gates = self._gates(x.dtype)
        if self.method_for(x.shape[0]) == "unitary":
            # psi0 is real: out[b, o] = sum_i psi0[b, i] U^T[i, o] as one real product, (re, im) columns
            w = torch.view_as_real(self._ansatz_unitary_t(gates)).reshape(2 ** n, 2 ** (n + 1))
            out = psi0 @ w
            return out.square() @ self.zsigns2.to(out.dtype)
        state = self._evolve_gates(psi0, gates, permute_last=False)  # last ring folded into the table
        ri = torch.view_as_real(state).reshape(state.shape[0], -1)
        return ri.square() @ self.zsigns2_folded.to(ri.dtype)

    def final_state(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2**n) complex state after encoding and ansatz (either engine)."""
        self._check(x)
        if self.engine == "torchquantum":
            return self._tq_state(x)
        return self._fused_state(x)

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


def configure_readout(model: nn.Module, eval_shots: int | None, train_shots: int | None, seed: int) -> None:
    """Set the readout of every quantum layer of ``model`` (None = exact) and seed its shot stream.

    ``eval_shots`` applies in eval mode (validation, test, attacks), ``train_shots`` in training mode.
    """
    from hqcbench.models.readout import make_rng

    for i, layer in enumerate(m for m in model.modules() if isinstance(m, QuantumLayer)):
        layer.shots = eval_shots
        layer.train_shots = train_shots
        layer.shot_rng = make_rng(seed, i) if (eval_shots or train_shots) else None


def _tq_expvals(qdev, n_qubits: int) -> torch.Tensor:
    """<Z> per wire through TorchQuantum's measurement module."""
    import torchquantum as tq

    return tq.MeasureAll(tq.PauliZ)(qdev).reshape(-1, n_qubits)
