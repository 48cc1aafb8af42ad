"""BPDA: the same model forward, a smooth surrogate backward for the maps that saturate.

Backward Pass Differentiable Approximation (Athalye et al. 2018): where a model's own gradient is
useless -- zero, vanishing or shattered -- an attack keeps the exact forward pass and replaces the
offending map by a differentiable surrogate in the backward pass only. The maps replaced here, each
by the identity (straight-through):

  nn.Softmax                  the paper architectures' Softmax in front of amplitude encoding: a
                              confident reducer saturates it, and its Jacobian diag(p) - p p^T -> 0;
  TanhLinear's tanh           the control arm's bounded middle;
  angle encoding's tanh       RY(scale * tanh x) in a ``QuantumLayer``: the circuit is kept and
                              differentiated exactly as a function of u = tanh(x), only du/dx = 1;
  ``bpda_identity = True``    any module that declares itself a non-differentiable map with
                              input-shaped output (quantisers, masks), e.g. a test's rounding layer.

The surrogate model shares every parameter, buffer and circuit with the original (no copy of the
weights), so query counting and finite-shot sampling see the same layers. The examples it yields
are judged on the original model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from hqcbench.config import DEFAULT_ENCODING_SCALE
from hqcbench.models.blocks import TanhLinear
from hqcbench.models.circuit import ry_product_state
from hqcbench.models.quantum import QuantumLayer


class _StraightThrough(torch.autograd.Function):
    """forward: fn(x) exactly; backward: the identity (the gradient passes through unchanged)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn) -> torch.Tensor:
        out = fn(x)
        if out.shape != x.shape:
            raise ValueError(f"a straight-through map must keep the input's shape, got {tuple(x.shape)} -> "
                             f"{tuple(out.shape)}")
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(x: torch.Tensor, fn) -> torch.Tensor:
    return _StraightThrough.apply(x, fn)


class StraightThrough(nn.Module):
    """``inner`` forward, identity backward (Softmax, declared non-differentiable maps)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(x, self.inner)


class TanhLinearBPDA(nn.Module):
    """``TanhLinear`` with tanh's derivative replaced by 1."""

    def __init__(self, inner: TanhLinear):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(self.inner.linear(x), torch.tanh)


class AngleEncodingBPDA(nn.Module):
    """An angle-encoded ``QuantumLayer`` with the encoding's tanh differentiated as the identity.

    The angle-encoded state RY(scale * u) |0..0>, u = tanh(x), is a unit vector; fed to the same
    layer read as amplitude-encoded (a shallow view sharing weights and readout settings), it gives
    the same <Z> (up to rounding), and autograd differentiates the circuit with respect to u exactly.
    """

    def __init__(self, layer: QuantumLayer):
        super().__init__()
        if layer.encoding != "angle":
            raise ValueError("AngleEncodingBPDA needs an angle-encoded layer")
        self.scale = float(getattr(layer, "encoding_scale", DEFAULT_ENCODING_SCALE))
        view = copy.copy(layer)  # shares parameters, buffers, hooks and the shot stream's settings
        view.encoding = "amplitude"
        self.view = view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = straight_through(x, torch.tanh)
        return self.view(ry_product_state((self.scale / 2) * u))


def _surrogate(module: nn.Module) -> tuple[nn.Module, str] | None:
    """(replacement, description) for a module BPDA replaces, else None."""
    if isinstance(module, nn.Softmax):
        return StraightThrough(module), "Softmax -> identity"
    if isinstance(module, TanhLinear):
        return TanhLinearBPDA(module), "tanh -> identity"
    if isinstance(module, QuantumLayer) and module.encoding == "angle":
        return AngleEncodingBPDA(module), "angle encoding's tanh -> identity"
    if getattr(module, "bpda_identity", False):
        return StraightThrough(module), f"{type(module).__name__} -> identity"
    return None


def bpda_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """(surrogate model, what was replaced as "path: description"); an empty list means nothing in
    ``model`` saturates and the surrogate is ``model`` itself.

    Containers along the path to a replaced module are shallow copies with their own child table;
    every other module (and every parameter) is the original's.
    """
    replaced: list[str] = []

    def rebuild(module: nn.Module, path: str) -> nn.Module:
        swap = _surrogate(module)
        if swap is not None:
            replaced.append(f"{path or 'model'}: {swap[1]}")
            return swap[0]
        children = {name: rebuild(child, f"{path}.{name}" if path else name)
                    for name, child in module._modules.items() if child is not None}
        if all(children[name] is module._modules[name] for name in children):
            return module
        clone = copy.copy(module)
        clone._modules = {**module._modules, **children}
        return clone

    surrogate = rebuild(model, "")
    return surrogate, replaced
