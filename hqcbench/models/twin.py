"""Quantum submodules of any model, its classical twin, and its frozen variant.

Why a module of its own: the field's standing criticism of hybrid claims is that they come without a
matched classical control. hqcbench builds one for any model: it finds every *outermost* quantum
submodule (hqcbench's ``QuantumLayer``, a TorchQuantum ``QuantumModule`` -- the outermost of each
subtree, not every gate inside it --, a PennyLane ``qml.qnn.TorchLayer``, or any module that sets
``hqcbench_quantum = True``) and swaps each for a classical layer with the same input and output
widths: Linear (with bias) + tanh, as the control's ``TanhLinear``, for expectation values in [-1, 1];
Linear + softmax where the outputs are probabilities. Widths are read from the module where it states
them (``QuantumLayer``), otherwise from one forward pass on a probe batch, which also tells
probabilities (non-negative rows summing to 1) from expectation values. TorchQuantum and PennyLane
are optional: without them installed, their modules cannot occur.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from hqcbench.errors import UserInputError
from hqcbench.models.blocks import TanhLinear
from hqcbench.models.quantum import QuantumLayer, input_width

QUANTUM_FLAG = "hqcbench_quantum"  # a module attribute that marks a user's own quantum layer


def _foreign_types() -> tuple[type, ...]:
    """TorchQuantum's and PennyLane's module classes, where those libraries are installed."""
    found: list[type] = []
    try:
        import torchquantum as tq
        found.append(tq.QuantumModule)
    except Exception:  # not installed, or broken: its modules cannot be in the model then
        pass
    try:
        from pennylane.qnn import TorchLayer
        found.append(TorchLayer)
    except Exception:
        pass
    return tuple(found)


def is_quantum(module: nn.Module) -> bool:
    return (isinstance(module, QuantumLayer) or bool(getattr(module, QUANTUM_FLAG, False))
            or isinstance(module, _foreign_types()))


def quantum_submodules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted path, module) of every outermost quantum submodule, in definition order; what is inside one
    (a TorchQuantum circuit's gates) is part of it, not another."""
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if is_quantum(child):
                out.append((path, child))
            else:
                walk(child, path)
    if is_quantum(model):
        return [("", model)]
    walk(model, "")
    return out


def quantum_parameter_count(model: nn.Module) -> int:
    """Parameters of every quantum submodule, foreign ones included."""
    return sum(p.numel() for _, m in quantum_submodules(model) for p in m.parameters())


@dataclass(frozen=True)
class Swap:
    """One quantum submodule replaced by its classical twin."""

    path: str
    kind: str  # the quantum module's class
    in_width: int
    out_width: int
    output: str  # expectation (Linear + tanh) | probabilities (Linear + softmax)
    params_before: int
    params_after: int

    def text(self) -> str:
        return (f"{self.path}: {self.kind}({self.in_width} -> {self.out_width}, {self.params_before} parameters) -> "
                f"Linear + {'softmax' if self.output == 'probabilities' else 'tanh'} ({self.params_after} parameters)")


class SoftmaxLinear(nn.Module):
    """The twin of a circuit that outputs probabilities: Linear(k -> n) + softmax."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.linear = nn.Linear(k, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """A forward pass that changes nothing: eval mode (no batch-norm statistic moves), no gradient, the
    model's mode restored after."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _probe(model: nn.Module, modules: list[tuple[str, nn.Module]], probe: torch.Tensor, arm: str) -> dict:
    """Input and output of each quantum submodule on one forward pass (eval mode, no gradient, no state
    changed); a module whose forward is not one tensor in and one tensor out is refused, naming it."""
    seen: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
    hooks = []
    for path, module in modules:
        def hook(mod, inputs, output, path=path):
            tensors_in = [i for i in inputs if isinstance(i, torch.Tensor)]
            if len(inputs) != 1 or len(tensors_in) != 1 or not isinstance(output, torch.Tensor):
                seen[path] = (None, None)
            else:
                seen[path] = (tensors_in[0].detach(), output.detach())
        hooks.append(module.register_forward_hook(hook))
    try:
        with evaluating(model):
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    for path, _ in modules:
        x, y = seen.get(path, (None, None))
        if x is None or y is None or x.dim() != 2 or y.dim() != 2:
            raise UserInputError("arms", f"arm {arm!r}: quantum submodule {path!r} does not map one tensor "
                                 "(batch, in) to one tensor (batch, out), so no classical twin can replace it",
                                 "give the arm its own twin factory (twin_fn) or a quantum layer with one tensor "
                                 "in and one out")
    return seen


def make_twin(model: nn.Module, probe: torch.Tensor, arm: str) -> list[Swap]:
    """Swap, in place, every outermost quantum submodule of ``model`` for its classical twin; returns what was
    swapped. ``probe``: one input batch as the model receives it. A model without any quantum submodule is
    refused (it has no twin: it is classical already)."""
    modules = quantum_submodules(model)
    if not modules:
        raise UserInputError("arms", f"arm {arm!r} has no quantum submodule, so it has no classical twin",
                             "twin: of a model holding a QuantumLayer, a TorchQuantum QuantumModule, a PennyLane "
                             "TorchLayer or a module with hqcbench_quantum = True")
    if modules[0][0] == "":
        raise UserInputError("arms", f"arm {arm!r}: the whole model is one quantum module", "a model with a "
                             "classical part around its quantum layer")
    seen = _probe(model, modules, probe, arm)
    swaps = []
    for path, module in modules:
        x, y = seen[path]
        if isinstance(module, QuantumLayer):  # it states its widths
            k, n = input_width(module.n_qubits, module.encoding), module.n_qubits
        else:
            k, n = x.shape[1], y.shape[1]
        probabilities = bool((y >= 0).all() and torch.allclose(y.sum(dim=1), torch.ones(len(y)), atol=1e-4))
        twin: nn.Module = SoftmaxLinear(k, n) if probabilities else TanhLinear(k, n)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, twin)
        swaps.append(Swap(path, type(module).__name__, k, n, "probabilities" if probabilities else "expectation",
                          sum(p.numel() for p in module.parameters()), sum(p.numel() for p in twin.parameters())))
    return swaps


def freeze_quantum(model: nn.Module, arm: str) -> int:
    """Freeze every quantum submodule's parameters at their current (seeded) values; returns how many."""
    modules = quantum_submodules(model)
    if not modules:
        raise UserInputError("arms", f"arm {arm!r} has no quantum submodule to freeze",
                             "frozen: of a model holding a quantum layer")
    count = 0
    for _, module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
            count += p.numel()
    return count
