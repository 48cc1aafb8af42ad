"""Circuit math shared by the quantum layer and its finite-shot readout: one simulator, no nn.Module.

Everything here is a function of tensors (or of the circuit's shape), so ``quantum`` (the layer)
and ``readout`` (sampling, parameter shift) both build on it and neither imports the other's
internals. It imports nothing from hqcbench: the bottom of the models package.

* Gates: ``layer_gates`` turns weights (any leading batch dims) into single-qubit gate matrices
  with TorchQuantum's formulas (``torchquantum.functional.{rx,ry,rz}_matrix``; a test checks they
  agree), written out so that float64 inputs can be simulated in complex128 (TorchQuantum's
  matrices are always complex64) and so that nothing here imports TorchQuantum (~2.4 s).
* Encodings: ``encode_real`` (angle: RY product state; amplitude: ``normalise_amplitudes``).
* Evolution: ``evolve`` is the one state-vector evolution of the ansatz. The exact forward pass
  gives it one gate set for the whole batch; the parameter-shift readout gives it one gate set per
  state row (the shifted circuits). Its two halves, ``group_matrices`` and ``apply_layers``, are
  also what the adjoint method (``hqcbench.models.adjoint``) runs forward and differentiates.
  ``ansatz_unitary_t`` is the other exact method: the whole ansatz as one matrix, cheaper while
  2**n is small (``choose_method``).
* Tables (readout signs, ring permutation) are built with tensor bit operations, so that 20
  qubits (2**20 basis states) take milliseconds.

Conventions (see docs/quantum_layer.md):
* Wire 0 is the most significant bit of the basis-state index (TorchQuantum's convention).
* The CNOT ring is CNOT(0,1), CNOT(1,2), ..., CNOT(n-1,0) for n >= 3; for n = 2 a single CNOT(0,1)
  (as PennyLane's BasicEntanglerLayers does); none for n = 1.
* angle encoding: RY(scale * tanh(x_w)) on wire w of |0...0>, scale = pi unless the caller sets
  another (the ``encoding_scale`` ablation); amplitude encoding: x / ||x|| per sample.
* strong ansatz layer: RY(w[l, i, 0]) then RZ(w[l, i, 1]) on every wire i, then the CNOT ring;
  basic ansatz layer: RX(w[l, i, 0]) on every wire, then the CNOT ring.
* entangle=False (the ``hybrid_noent`` ablation) leaves every CNOT ring out: with angle encoding
  the state stays a product state, which isolates what entanglement contributes.
* Precision: complex64 for float32/float16 inputs, complex128 for float64 inputs.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from hqcbench.config import DEFAULT_ENCODING_SCALE  # angle encoding RY(pi * tanh x) unless a scale is given

AMPLITUDE_NORM_FLOOR = 1e-12  # an all-zero input stays all-zero instead of becoming NaN

# Cost model of ``choose_method``, in complex multiply-adds (forward; backward scales both paths
# about alike). OP_COST: one extra tensor operation (~10 us of dispatch and autograd overhead at
# ~1 complex MAC/ns). PASS_COST: one sweep over the batch's state (B * 2**n amplitudes) beyond its
# arithmetic, per amplitude -- memory traffic and the small-matrix inefficiency that make 2-3 wire
# groups beat one group per wire. Fitted by timing every method and group count on the 2-core dev
# machine (docs/quantum_layer.md); the choice is only sensitive to them near a crossover, where
# the two candidates cost about the same anyway.
OP_COST = 10_000.0
PASS_COST = 32.0
# Per-row gates (the parameter-shift readout) build one Kronecker matrix per row, group and layer:
# cost per gathered entry (size * 4**size of them per group; index_select + complex product),
# measured at ~9-14 ns per entry on the dev machine, i.e. ~10 multiply-adds. Without it the model
# would pick one group (a full 2**n x 2**n matrix per row): 10x slower at 4 qubits, 100x at 6.
ROW_BUILD_COST = 10.0


# ------------------------------------------------------------------------------------ shapes
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
    """Index map P with new_state = state[..., P] after the whole CNOT ring (small n: kron indices)."""
    return tuple(_ring_permutation_tensor(n_qubits, torch.device("cpu")).tolist())


def _ring_permutation_tensor(n_qubits: int, device: torch.device) -> torch.Tensor:
    """The ring's index map as a tensor, one vectorised step per CNOT: at 20 qubits a Python list
    comprehension per CNOT took ~5 s, this takes milliseconds."""
    y = torch.arange(2 ** n_qubits, device=device)
    perm = y
    for control, target in cnot_ring_pairs(n_qubits):
        cbit, tbit = 1 << (n_qubits - 1 - control), 1 << (n_qubits - 1 - target)
        # new[y] = old[f(y)] with f the (involutive) CNOT map; compose with what came before
        perm = perm[torch.where((y & cbit) != 0, y ^ tbit, y)]
    return perm


def z_sign_table(n_qubits: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """(2**n, n) table of <Z_w> eigenvalues: +1 where wire w's bit is 0, -1 where it is 1.

    Built with tensor bit operations, not Python tuples: at 20 qubits the table has 2**20 x 20
    entries, which as Python floats cost seconds and half a gigabyte.
    """
    index = torch.arange(2 ** n_qubits, device=device).unsqueeze(1)
    shifts = (n_qubits - 1 - torch.arange(n_qubits, device=device)).unsqueeze(0)
    return (1 - 2 * ((index >> shifts) & 1)).to(dtype)


def ring_permutation(n_qubits: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return _ring_permutation_tensor(n_qubits, torch.device(device))


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
    """(..., depth, n, k) weights -> (..., depth, n, 2, 2) complex gate of every layer and wire.

    strong: RZ(b) @ RY(a); basic: RX(a) (see ``_gate_mixer``). Leading dims carry one weight set
    per state row (the parameter-shift readout's shifted circuits). A few vectorised operations for
    all gates at once: per-gate Python work is what makes TorchQuantum slow on small states.
    """
    lead = weights.shape[:-1]  # (..., depth, n)
    trig = torch.cos(weights.unsqueeze(-1) * 0.5 - _half_angle_offsets(weights.dtype, weights.device))
    if ansatz == "strong":
        prods = (trig[..., 0, :, None] * trig[..., 1, None, :]).reshape(*lead, 4)
    else:
        prods = trig.reshape(*lead, 2)
    ri = prods @ _gate_mixer(ansatz, weights.dtype, weights.device)
    return torch.view_as_complex(ri.reshape(*lead, 4, 2)).reshape(*lead, 2, 2)


@lru_cache(maxsize=None)
def _bits(k: int) -> tuple[tuple[int, ...], ...]:
    """(k, 2**k): bit of wire w in basis index i, wire 0 most significant."""
    return tuple(tuple((i >> (k - 1 - w)) & 1 for i in range(2 ** k)) for w in range(k))


@lru_cache(maxsize=128)
def _kron_index(k: int, ring: bool, transpose: bool, device: torch.device) -> torch.Tensor:
    """Flat index into gates.reshape(..., k * 4) with gathered.view(..., k, 2**k, 2**k).prod(-3) = the kron.

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
    """(..., k, 2, 2) -> (..., 2**k, 2**k): kron(g_0, ..., g_{k-1}), wire 0 most significant.

    K[r, c] = prod_w g_w[bit_w(r), bit_w(c)]: one gather and one product for any k, instead of k - 1
    Kronecker steps. ring / transpose: see ``_kron_index``.
    """
    lead, k = gates.shape[:-3], gates.shape[-3]
    index = _kron_index(k, ring, transpose, gates.device)
    return gates.reshape(*lead, 4 * k).index_select(-1, index).view(*lead, k, 2 ** k, 2 ** k).prod(dim=-3)


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
def gates_cost(n_qubits: int, depth: int, batch: int, n_groups: int, per_row: bool = False) -> float:
    """Estimated cost of the ``gates`` method with n_groups wire groups per layer.

    per_row: one gate set per state row, so the group matrices are built ``batch`` times
    (``ROW_BUILD_COST``); with shared gates that build is negligible next to the batch.
    """
    dim = 2 ** n_qubits
    groups = wire_groups(n_qubits, n_groups)
    per_layer = sum(2 ** size + PASS_COST for _, size in groups)
    passes = depth * per_layer + depth * PASS_COST  # group matmuls; CNOT-ring gathers + readout
    ops = depth * (n_groups + 1) + n_qubits + 12
    cost = batch * dim * passes + OP_COST * ops
    if per_row:
        cost += ROW_BUILD_COST * batch * depth * sum(size * 4 ** size for _, size in groups)
    return cost


def best_groups(n_qubits: int, depth: int, batch: int, per_row: bool = False) -> int:
    return min(range(1, n_qubits + 1), key=lambda k: gates_cost(n_qubits, depth, batch, k, per_row))


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


# ------------------------------------------------------------------------------------ encoding
def angle_params(x: torch.Tensor, scale: float = DEFAULT_ENCODING_SCALE) -> torch.Tensor:
    """Angle encoding: the RY angles a_i = scale * tanh(x_i) (B, n); tanh keeps them bounded.

    scale is pi by default (angles span a full turn); the ``encoding_scale`` ablation varies it.
    """
    return scale * torch.tanh(x)


def normalise_amplitudes(x: torch.Tensor) -> torch.Tensor:
    """Amplitude encoding: x / ||x|| per sample (never across the batch), norm clamped at 1e-12."""
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(AMPLITUDE_NORM_FLOOR)


def ry_product_state(half: torch.Tensor) -> torch.Tensor:
    """(B, n) half-angles t_w / 2 -> (B, 2**n) real product state RY(t_0)|0> x ... x RY(t_{n-1})|0>.

    Takes half-angles so that the angle encoding needs no extra elementwise operation.
    """
    bsz, n_qubits = half.shape
    cs = torch.cos(half.unsqueeze(-1) - _half_angle_offsets(half.dtype, half.device))  # RY(t)|0> = (c, s)
    if n_qubits <= 6:  # product state in one gather + product (few ops: small states are overhead-bound)
        index = _product_state_index(n_qubits, half.device)
        gathered = cs.reshape(bsz, 2 * n_qubits).index_select(1, index)
        return gathered.view(bsz, n_qubits, 2 ** n_qubits).prod(dim=1)
    state = cs[:, 0]  # large states: n - 1 outer products, no (B, n, 2**n) intermediate
    for w in range(1, n_qubits):
        state = (state.unsqueeze(2) * cs[:, w].unsqueeze(1)).reshape(bsz, -1)
    return state


def encode_real(x: torch.Tensor, n_qubits: int, encoding: str, scale: float = DEFAULT_ENCODING_SCALE) -> torch.Tensor:
    """(B, 2**n) real state after encoding, per sample (never mixes samples).

    scale: the angle encoding's RY(scale * tanh x); amplitude encoding has no angle and ignores it.
    """
    if encoding == "angle":
        return ry_product_state((scale / 2) * torch.tanh(x))
    return normalise_amplitudes(x)


def encode_state(x: torch.Tensor, n_qubits: int, encoding: str, scale: float = DEFAULT_ENCODING_SCALE) -> torch.Tensor:
    """(B, 2**n) complex state after encoding (complex128 for float64 inputs, else complex64)."""
    return encode_real(x, n_qubits, encoding, scale).to(complex_dtype(x.dtype))


# ------------------------------------------------------------------------------------ evolution
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


def evolve(state: torch.Tensor, gates: torch.Tensor, perm: torch.Tensor, inv_perm: torch.Tensor,
           permute_last: bool = True, entangle: bool = True) -> torch.Tensor:
    """Apply the ansatz to (R, 2**n) states -> (R, 2**n) complex, a few wire groups per layer.

    gates: (depth, n, 2, 2) shared by every row (the exact forward pass), or (R, depth, n, 2, 2),
    one gate set per row (the parameter-shift readout's shifted circuits). Each layer: each wire
    group's Kronecker matrix (2**g x 2**g) multiplies a reshaped view of the state (no axis
    permutation), then the CNOT ring is one gather (``perm``, ``inv_perm`` = its inverse for the
    backward). permute_last=False leaves out the last ring, for a caller that folds it into its
    readout table. entangle=False: no CNOT ring at all (the product-state ablation), so there is
    nothing to fold either. The group count comes from the cost model (``best_groups``, which
    charges per-row gates for building their matrices row by row).
    """
    per_row = gates.dim() == 5
    depth, n = gates.shape[-4], gates.shape[-3]
    groups = wire_groups(n, best_groups(n, depth, state.shape[0], per_row))
    return apply_layers(state.to(gates.dtype), group_matrices(gates, groups), groups, perm, inv_perm,
                        permute_last, entangle)


def group_matrices(gates: torch.Tensor, groups: list[tuple[int, int]]) -> list[torch.Tensor]:
    """One Kronecker matrix per wire group and layer (and row): [(..., depth, 2^g, 2^g) per group].

    Split from ``evolve`` so that the adjoint method (``hqcbench.models.adjoint``) takes these
    small matrices as its differentiable inputs and leaves their chain rule to the weights to autograd.
    """
    lead = (slice(None),) * (gates.dim() - 3)  # plain slicing: measured ~5 us cheaper than narrow
    return [kron_chain(gates[lead + (slice(start, start + size),)]) for start, size in groups]


def apply_layers(state: torch.Tensor, mats: list[torch.Tensor], groups: list[tuple[int, int]],
                 perm: torch.Tensor, inv_perm: torch.Tensor, permute_last: bool = True, entangle: bool = True
                 ) -> torch.Tensor:
    """``evolve``'s loop over layers, on group matrices already built (see ``group_matrices``).

    state: (R, 2**n) in the matrices' complex dtype. Per-row matrices (R, depth, 2^g, 2^g) give each
    row its own circuit; shared ones (depth, 2^g, 2^g) are applied to the whole batch at once.
    """
    per_row = mats[0].dim() == 4
    depth, n, rows = mats[0].shape[-3], sum(size for _, size in groups), state.shape[0]
    for layer in range(depth):
        for (start, size), mat in zip(groups, mats):
            if per_row:  # (R, 1, 2^g, 2^g) @ (R, 2^start, 2^g, rest): each row its own matrix
                state = torch.matmul(mat[:, layer, None], state.reshape(rows, 2 ** start, 2 ** size, -1))
            else:  # contract the group's axis: view (R * 2^start, 2^g, rest), multiply from the left
                state = torch.matmul(mat[layer], state.reshape(rows * 2 ** start, 2 ** size, -1))
        state = state.reshape(rows, -1)
        if entangle and n > 1 and (layer < depth - 1 or permute_last):
            state = _Permute.apply(state, perm, inv_perm)
    return state


def ansatz_unitary_t(gates: torch.Tensor, entangle: bool = True) -> torch.Tensor:
    """(2**n, 2**n) transpose of the ansatz's unitary from shared gates (depth, n, 2, 2), rings included.

    The ``unitary`` method of the exact forward pass: U = (P K_{d-1}) ... (P K_0) with K_l the kron
    of layer l's gates and P the ring, so U^T = (P K_0)^T ... (P K_{d-1})^T; the transpose lets the
    batch use it without a copy. entangle=False drops every P (the product-state ablation).
    """
    mats = list(kron_chain(gates, ring=entangle, transpose=True))
    while len(mats) > 1:                        # pairwise products: log2(depth) rounds
        pairs = [mats[i] @ mats[i + 1] for i in range(0, len(mats) - 1, 2)]
        mats = pairs + ([mats[-1]] if len(mats) % 2 else [])
    return mats[0]
