"""The two simulation methods of the noise engine, on a circuit given as a list of ``Step`` s.

Why its own module: this is the numerical core (a batched density matrix, Monte-Carlo trajectories,
the channels as superoperators or Kraus jumps) and knows nothing of layers, noise models or Qiskit;
``hqcbench.models.noise`` builds the steps from a layer and a noise model and reads the result out.

* ``density`` -- the exact density matrix (R, 2**n, 2**n). A gate and its error are fused into one
  superoperator S = S_error @ (U kron conj U) acting on the (row bits, column bits) of its wires; the
  single-qubit superoperators are folded into the next two-qubit one on their wire
  (``fused_superops``), so the density matrix is swept about once per two-qubit gate.
* ``trajectories`` -- K Monte-Carlo state vectors per row (seeded): after each gate a depolarizing
  error picks one of the 4**k Paulis with probability P (identity included, which is Aer's channel
  exactly on average); a general channel (a device's) picks Kraus operator i with probability
  ||K_i psi||**2. Their mean converges to the density matrix's result.

Both return measurement probabilities (R, 2**n) (wire 0 = most significant bit), so that readout
errors and finite shots act on the distribution a device would sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from hqcbench.models.circuit import z_sign_table


@dataclass
class Step:
    """One gate on ``wires`` (first wire = most significant bit of its matrix) and the error after it.

    unitary: (d, d) shared or (R, d, d) per row. depolarizing: Aer's depolarizing_error(P, k) on the same
    wires; kraus: (m, d, d) a general channel (a device's calibrated error); both may be absent.
    """

    wires: tuple[int, ...]
    unitary: torch.Tensor
    depolarizing: float = 0.0
    kraus: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------- channels
def _apply(tensor: torch.Tensor, matrix: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """Contract ``matrix`` ((D, D) shared or (R, D, D) per row, D = 2**len(axes)) with the given bit axes of
    ``tensor`` (R, 2, ..., 2); the axes' first is the matrix's most significant bit."""
    rows, k = tensor.shape[0], len(axes)
    front = list(range(1, k + 1))
    moved = tensor.movedim(axes, front)
    out = torch.matmul(matrix, moved.reshape(rows, 2 ** k, -1))
    return out.reshape(moved.shape).movedim(front, axes)


def _unitary_superop(u: torch.Tensor) -> torch.Tensor:
    """U rho U^dagger as a matrix on (row bits, column bits): kron(U, conj U), per row where U is."""
    d = u.shape[-1]
    return (u[..., :, None, :, None] * u.conj()[..., None, :, None, :]).reshape(*u.shape[:-2], d * d, d * d)


def depolarizing_superop(p: float, k: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Aer's depolarizing_error(p, k): rho -> (1 - p) rho + p Tr(rho) I / 2**k, on (row bits, column bits)."""
    d = 2 ** k
    vec_identity = torch.eye(d, dtype=dtype, device=device).reshape(-1)
    return (1 - p) * torch.eye(d * d, dtype=dtype, device=device) + p / d * torch.outer(vec_identity, vec_identity)


def kraus_superop(kraus: torch.Tensor) -> torch.Tensor:
    """sum_i kron(K_i, conj K_i) of (m, d, d) Kraus operators."""
    return _unitary_superop(kraus).sum(dim=0)


def step_superop(step: Step, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    s = _unitary_superop(step.unitary.to(device, dtype))
    k = len(step.wires)
    if step.depolarizing:
        s = depolarizing_superop(step.depolarizing, k, dtype, device) @ s
    if step.kraus is not None:
        s = kraus_superop(step.kraus.to(device, dtype)) @ s
    return s


def _pair_superop(first: torch.Tensor | None, second: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Two single-qubit superoperators (4, 4) (or per row) on wires (a, b) as one on the pair, in the pair's
    (row a, row b, column a, column b) order; None is the identity."""
    eye = torch.eye(4, dtype=like.dtype, device=like.device)
    sa = (first if first is not None else eye).reshape(*(first.shape[:-2] if first is not None else ()), 2, 2, 2, 2)
    sb = (second if second is not None else eye).reshape(*(second.shape[:-2] if second is not None else ()), 2, 2, 2, 2)
    # sa[r_a', c_a', r_a, c_a] sb[r_b', c_b', r_b, c_b] -> [r_a', r_b', c_a', c_b', r_a, r_b, c_a, c_b]
    pair = torch.einsum("...wyac,...xzbd->...wxyzabcd", sa, sb)
    return pair.reshape(*pair.shape[:-8], 16, 16)


def fused_superops(steps: list[Step], dtype: torch.dtype, device: torch.device
                   ) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """The steps as few superoperators as possible: the single-qubit steps on a wire since its last
    two-qubit gate are multiplied into one and folded into the next two-qubit gate on that wire (they
    commute with everything on other wires), so the density matrix is swept about once per two-qubit gate
    (a transpiled circuit's rz, sx, x chains cost nothing extra)."""
    pending: dict[int, torch.Tensor] = {}
    out: list[tuple[tuple[int, ...], torch.Tensor]] = []
    for step in steps:
        s = step_superop(step, dtype, device)
        if len(step.wires) == 1:
            (w,) = step.wires
            pending[w] = s @ pending[w] if w in pending else s
            continue
        if len(step.wires) == 2 and (step.wires[0] in pending or step.wires[1] in pending):
            s = s @ _pair_superop(pending.pop(step.wires[0], None), pending.pop(step.wires[1], None), s)
        out.append((step.wires, s))
    out += [((w,), s) for w, s in pending.items()]
    return out


# ----------------------------------------------------------------------------------------- methods
def density_probs(steps: list[Step], n_qubits: int, rows: int, dtype: torch.dtype, device: torch.device
                  ) -> torch.Tensor:
    """(rows, 2**n) exact measurement probabilities of |0..0> run through ``steps`` as a density matrix."""
    dim = 2 ** n_qubits
    rho = torch.zeros(rows, dim * dim, dtype=dtype, device=device)
    rho[:, 0] = 1
    rho = rho.reshape(rows, *([2] * (2 * n_qubits)))
    for wires, superop in fused_superops(steps, dtype, device):
        axes = [1 + w for w in wires] + [1 + n_qubits + w for w in wires]
        rho = _apply(rho, superop, axes)
    return rho.reshape(rows, dim, dim).diagonal(dim1=-2, dim2=-1).real


def density_expvals(steps: list[Step], n_qubits: int, rows: int, dtype: torch.dtype, device: torch.device
                    ) -> torch.Tensor:
    """(rows, n) exact <Z_w> of |0..0> run through ``steps`` as a density matrix."""
    probs = density_probs(steps, n_qubits, rows, dtype, device)
    return probs @ z_sign_table(n_qubits, device, probs.dtype)


@lru_cache(maxsize=8)
def pauli_table(k: int) -> torch.Tensor:
    """(4**k, 2**k, 2**k) complex128: every k-qubit Pauli string, index digit i (base 4) = wire i's I, X, Y, Z."""
    single = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]],
                          dtype=torch.complex128)
    out = single
    for _ in range(k - 1):
        out = torch.stack([torch.kron(a, b) for a in out for b in single])
    return out


def _kraus_jump(psi: torch.Tensor, kraus: torch.Tensor, axes: list[int], generator: torch.Generator) -> torch.Tensor:
    """One trajectory step of a general channel: Kraus operator i with probability ||K_i psi||**2, renormalised."""
    rows, m, d = psi.shape[0], kraus.shape[0], kraus.shape[-1]
    front = list(range(1, len(axes) + 1))
    moved = psi.movedim(axes, front)
    branches = torch.matmul(kraus.reshape(m * d, d), moved.reshape(rows, d, -1)).reshape(rows, m, d, -1)
    weights = branches.real.square().sum((2, 3)) + branches.imag.square().sum((2, 3))  # (rows, m)
    choice = torch.multinomial(weights.detach().cpu().double().clamp_min(0), 1, generator=generator).squeeze(1)
    picked = torch.arange(rows, device=psi.device)
    chosen = branches[picked, choice.to(psi.device)] / weights[picked, choice.to(psi.device)].sqrt()[:, None, None]
    return chosen.reshape(moved.shape).movedim(front, axes)


def trajectory_probs(steps: list[Step], n_qubits: int, rows: int, trajectories: int, generator: torch.Generator,
                     dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(rows, trajectories, 2**n): the measurement probabilities of every sampled state vector."""
    total = rows * trajectories
    psi = torch.zeros(total, 2 ** n_qubits, dtype=dtype, device=device)
    psi[:, 0] = 1
    psi = psi.reshape(total, *([2] * n_qubits))
    for step in steps:
        u = step.unitary.to(device, dtype)
        if u.dim() == 3:  # one matrix per image -> the same for each of its trajectories
            u = u.repeat_interleave(trajectories, dim=0)
        axes = [1 + w for w in step.wires]
        if step.depolarizing:
            k = len(step.wires)
            hit = torch.rand(total, generator=generator) < step.depolarizing
            which = torch.randint(4 ** k, (total,), generator=generator) * hit
            u = pauli_table(k).to(device, dtype)[which.to(device)] @ u
        psi = _apply(psi, u, axes)
        if step.kraus is not None:
            psi = _kraus_jump(psi, step.kraus.to(device, dtype), axes, generator)
    return (psi.real.square() + psi.imag.square()).reshape(rows, trajectories, -1)


def trajectory_expvals(steps: list[Step], n_qubits: int, rows: int, trajectories: int, generator: torch.Generator,
                       dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard error), each (rows, n): <Z_w> over ``trajectories`` sampled state vectors per row."""
    probs = trajectory_probs(steps, n_qubits, rows, trajectories, generator, dtype, device)
    return mean_and_error(probs @ z_sign_table(n_qubits, device, probs.dtype))


def mean_and_error(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, K, ...) per-trajectory values -> (mean, standard error of the mean) over K."""
    k = samples.shape[1]
    std = samples.std(dim=1) if k > 1 else torch.zeros_like(samples[:, 0])
    return samples.mean(dim=1), std / math.sqrt(k)


def marginal(probs: torch.Tensor, wires: list[int], n_qubits: int) -> torch.Tensor:
    """(R, 2**n) probabilities -> (R, 2**len(wires)) of ``wires`` in that order (first = most significant)."""
    if wires == list(range(n_qubits)):
        return probs
    rest = [w for w in range(n_qubits) if w not in wires]
    t = probs.reshape(probs.shape[0], *([2] * n_qubits)).permute(0, *[1 + w for w in wires], *[1 + w for w in rest])
    return t.reshape(probs.shape[0], 2 ** len(wires), -1).sum(-1)


def confuse(probs: torch.Tensor, p1_given_0: torch.Tensor, p0_given_1: torch.Tensor) -> torch.Tensor:
    """Independent readout errors on every wire of (R, 2**n) probabilities: bit w reads 1 for a prepared 0
    with probability p1_given_0[w], 0 for a prepared 1 with probability p0_given_1[w]."""
    n = p1_given_0.shape[0]
    t = probs.reshape(probs.shape[0], *([2] * n))
    for w in range(n):
        a, b = float(p1_given_0[w]), float(p0_given_1[w])
        if a or b:  # rows: measured 0, 1; columns: prepared 0, 1
            t = _apply(t, torch.tensor([[1 - a, b], [a, 1 - b]], dtype=t.dtype, device=t.device), [1 + w])
    return t.reshape(probs.shape[0], -1)
