"""Adjoint differentiation of the fused engine: exact gradients for the memory of a few state vectors.

Why: backpropagation through ``circuit.evolve`` keeps the state before every wire-group product
for its backward pass, ``depth x groups`` state vectors of ``batch x 2**n`` amplitudes. At 16
qubits, depth 6, batch 32 that is 419 MiB per layer call (25 MiB with this method), and it grows
with depth. A circuit is
reversible, so nothing has to be kept: the backward pass can recover every intermediate state by
undoing the gates one at a time, from the final state alone.

How (the adjoint method of Jones and Gacon, arXiv:2009.02823): the loss reaches the readout
through ``grad_out`` (B, n); the readout is <psi|M|psi> with M = diag(sum_w grad_out[b, w] Z_w), so
the adjoint state starts as lambda = M psi. Walking the circuit backwards, each gate U (here: each
wire group's Kronecker matrix K of one layer, or a CNOT ring) is undone on both psi and lambda
(K^dagger, the inverse permutation). Before undoing K, its gradient is
``2 * sum over batch and other wires of lambda[.., a, ..] * conj(psi_before[.., c, ..])`` (PyTorch's
convention for a real loss: d/dRe + i d/dIm). At the start, lambda is the gradient of the encoded
state: amplitude encoding takes ``2 Re(lambda)`` for its real amplitudes, angle encoding takes,
per wire w, ``2 Re(lambda) . (R_w psi0)`` with ``R = [[0, -1], [1, 0]]`` on wire w (the derivative
of the product state by that wire's half-angle). psi and lambda are stacked into one (2B, 2**n)
tensor, so every undo is one matrix product for both.

The group matrices and the encoding are the autograd inputs: their own chain rule to the circuit
weights (``circuit.layer_gates``, ``kron_chain``) and to ``x`` (tanh, the normalisation) stays
ordinary autograd on small tensors. The backward gives first derivatives only: nothing in the
package asks for a second derivative of the circuit (attacks need first-order input gradients;
no module passes ``create_graph=True``), and a backward pass that would build a differentiable
gradient (``create_graph=True``) raises instead of returning one that silently treats the
circuit's part as constant. (``torch.autograd.function.once_differentiable`` would not catch it:
it only guards when the incoming gradient itself requires grad, which a plain ``.sum()`` loss's does not.)

Memory: the forward pass saves the final state (B x 2**n complex) and the small matrices; the
backward pass works on psi and lambda together, their undone copy and ``torch.matmul``'s broadcast
copies: about 10 state vectors of one chunk in flight (measured), whatever the depth
(``memory.estimate_peak_bytes``). The gates' own 2^g x 2^g matrices and their autograd graph grow
with depth, not with the batch.
"""
from __future__ import annotations

import torch

from hqcbench.models.circuit import apply_layers, best_groups, choose_method, ry_product_state

DIFF_METHODS = ("auto", "backprop", "adjoint")  # QuantumLayer.diff_method: how the exact output is differentiated
# The adjoint method against backpropagation, forward + backward at batch 32 (angle, strong; min of
# interleaved rounds, one thread, niced on the shared 2-core dev machine; docs/quantum_layer.md):
# 0.97-1.09x the time at 8-16 qubits, 1.1-1.5x at 4-6 qubits (twice the operations on tiny states,
# where per-operation overhead dominates), while backpropagation keeps depth x groups state vectors
# (16 qubits, depth 6: 419 MiB against 25 MiB). Below this many bytes kept the saving is not worth
# a possibly slower step; above it, it is.
ADJOINT_MIN_SAVED_BYTES = 16 * 2 ** 20


def backprop_saved_states(n_qubits: int, depth: int, batch: int) -> float:
    """State vectors (batch x 2**n complex) autograd keeps for backpropagating the ``gates`` method.

    One per wire-group product and layer (the matmul's input), one for the readout's squares, and
    about half of one for the encoding (the product state's outer products, or the normalised
    amplitudes). The CNOT rings keep only their index. Checked against
    ``torch.autograd.graph.saved_tensors_hooks`` in tests/test_adjoint.py.
    """
    return depth * best_groups(n_qubits, depth, batch) + 1.5


def choose_diff_method(n_qubits: int, depth: int, batch: int, itemsize: int = 8) -> str:
    """``backprop`` or ``adjoint`` for a pass autograd records (``QuantumLayer.diff_method="auto"``).

    The adjoint method runs the ``gates`` evolution and keeps one state vector instead of
    ``backprop_saved_states`` of them. Its time is about backpropagation's from ~8 qubits up and
    higher below, where per-operation overhead dominates (``ADJOINT_MIN_SAVED_BYTES``), so it is
    chosen only where backpropagation would keep more than that many bytes. itemsize: bytes per
    complex amplitude (8 for complex64, 16 for complex128).
    """
    if choose_method(n_qubits, depth, batch) == "unitary":
        return "backprop"
    saved = backprop_saved_states(n_qubits, depth, batch) * batch * 2 ** n_qubits * itemsize
    return "adjoint" if saved > ADJOINT_MIN_SAVED_BYTES else "backprop"


class _AdjointExpvals(torch.autograd.Function):
    """(encoded input, group matrices) -> (B, n) <Z_w>, differentiated by the adjoint method.

    Inputs: ``enc`` -- angle encoding: (B, n) half-angles of the RY product state; amplitude
    encoding: (B, 2**n) real normalised amplitudes. ``signs2`` -- the (re, im)-interleaved +-1
    readout table with the last CNOT ring folded in (``QuantumLayer.zsigns2_folded``): the forward
    leaves that ring out, as the ``gates`` method does. ``plan`` -- (n_qubits, wire groups,
    encoding, entangle), plain Python values. ``mats`` -- one (depth, 2^g, 2^g) matrix per group.
    """

    @staticmethod
    def forward(ctx, enc: torch.Tensor, signs2: torch.Tensor, perm: torch.Tensor, inv_perm: torch.Tensor,
                plan: tuple, *mats: torch.Tensor) -> torch.Tensor:
        _, groups, encoding, entangle = plan
        psi0 = ry_product_state(enc) if encoding == "angle" else enc
        state = apply_layers(psi0.to(mats[0].dtype), list(mats), groups, perm, inv_perm,
                             permute_last=False, entangle=entangle)
        ri = torch.view_as_real(state).reshape(state.shape[0], -1)
        ctx.plan = plan
        ctx.save_for_backward(state, signs2, inv_perm, *mats)  # the final state only: no intermediates
        return ri.square() @ signs2.to(ri.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if torch.is_grad_enabled():  # create_graph=True: autograd wants a differentiable gradient
            raise RuntimeError("QuantumLayer's adjoint method gives first derivatives only (this backward pass was "
                               "asked for a differentiable gradient, create_graph=True); use "
                               "diff_method='backprop' for higher derivatives")
        state, signs2, inv_perm, *mats = ctx.saved_tensors
        n, groups, encoding, entangle = ctx.plan
        rows, depth = state.shape[0], mats[0].shape[0]
        want_mats = ctx.needs_input_grad[5:]
        # psi and lambda = M psi in one tensor; signs2[0::2] is the folded (2**n, n) sign table
        both = torch.empty((2 * rows, state.shape[1]), dtype=state.dtype, device=state.device)
        both[:rows] = state
        torch.mul(state, grad_out @ signs2[0::2].T.to(grad_out.dtype), out=both[rows:])
        grads = [torch.zeros_like(m) if want else None for m, want in zip(mats, want_mats)]
        inverses = [m.mH.contiguous() for m in mats]  # K^dagger, materialised once: a conj view costs a copy per use
        for layer in reversed(range(depth)):
            if entangle and n > 1 and layer < depth - 1:  # the last ring was folded into signs2
                both = both.index_select(-1, inv_perm)
            for (start, size), inverse, grad in reversed(list(zip(groups, inverses, grads))):
                half, rest = rows * 2 ** start, 2 ** (n - start - size)
                after = both.reshape(2 * half, 2 ** size, rest)
                both = _group_product(inverse[layer], after)  # undo the group on psi and lambda at once
                if grad is not None:  # 2 sum lambda_after[a] conj(psi_before[c]) over rows and other wires
                    grad[layer] = 2 * _outer_sum(after[half:], both[:half])
            both = both.reshape(2 * rows, -1)
        grad_enc = None
        if ctx.needs_input_grad[0]:
            lam_re = 2 * both[rows:].real
            if encoding == "angle":
                psi0 = both[:rows].real
                cols = []
                for w in range(n):  # d psi0 / d half_w = R_w psi0, R = [[0, -1], [1, 0]] on wire w
                    lam_w, psi_w = lam_re.view(rows, 2 ** w, 2, -1), psi0.view(rows, 2 ** w, 2, -1)
                    cols.append((lam_w[:, :, 1] * psi_w[:, :, 0] - lam_w[:, :, 0] * psi_w[:, :, 1]).sum((1, 2)))
                grad_enc = torch.stack(cols, dim=1)
            else:
                grad_enc = lam_re
        return (grad_enc, None, None, None, None, *grads)


def _group_product(mat: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """mat (k, k) applied to axis 1 of view (M, k, r). With r = 1 (the last wire group) one plain
    matrix product of the (M, k) rows with mat^T, measured ~3.5x faster than ``torch.matmul``'s
    broadcast, which transposes the state into a copy and back."""
    if view.shape[2] == 1:
        return (view.reshape(view.shape[0], -1) @ mat.T).unsqueeze(2)
    return torch.matmul(mat, view)


def _outer_sum(lam: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """(k, k) sum over rows m and trailing axis r of lam[m, a, r] * conj(psi[m, c, r]), both (M, k, r).

    r = 1: one (k x M) @ (M x k) product, conjugated afterwards (BLAS takes the conjugate
    transpose without a copy); otherwise a batched product per row, summed (the (M, k, k) partial
    sums are no larger than the state for the wire groups ``best_groups`` picks).
    """
    if lam.shape[2] == 1:
        return (lam.reshape(lam.shape[0], -1).mH @ psi.reshape(psi.shape[0], -1)).conj()
    return torch.matmul(lam, psi.mH).sum(0)


def adjoint_expvals(enc: torch.Tensor, mats: list[torch.Tensor], groups: list[tuple[int, int]],
                    signs2: torch.Tensor, perm: torch.Tensor, inv_perm: torch.Tensor, n_qubits: int,
                    encoding: str, entangle: bool) -> torch.Tensor:
    """(B, n) <Z_w> of the circuit, with gradients to ``enc`` and ``mats`` by the adjoint method.

    enc: angle encoding (B, n) half-angles; amplitude encoding (B, 2**n) normalised real amplitudes.
    mats: ``circuit.group_matrices`` of the layer's gates for ``groups``. signs2: the folded,
    (re, im)-interleaved sign table. The forward runs the ``gates`` method's operations (a test
    checks the outputs are bit for bit the same when autograd records both).
    """
    return _AdjointExpvals.apply(enc, signs2, perm, inv_perm, (n_qubits, groups, encoding, entangle), *mats)
