"""The arm registry: one record per arm, read by every stage that treats arms differently.

An arm is a network compared with the others: the classical CNN, the hybrid, the control that swaps
the hybrid's circuit for a classical layer, and the ablations that change one thing in the circuit.
What sets one arm apart from another (its middle, its circuit variant, its role in the comparison,
what tuning searches, which published recipe trains it, which config fields do not apply to it, how
its middle is built) lives in its ``ArmSpec`` here, so config, models, training, jobs and the report
ask the registry instead of comparing names, and a new arm is one ``register`` call.

The module imports nothing from the package, so every unit may import it. A middle none of the
three built-in kinds covers names a ``"module:callable"`` builder, resolved only when a model is
built, so the registry still needs no upward import.
"""
from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass
from typing import Any, Callable

# The built-in arms' names, for the code that compares arms by their role in the study (the report's
# "hybrid vs cnn", "hybrid vs control"); everything else asks the arm's record.
CNN = "cnn"
HYBRID = "hybrid"
CONTROL = "control"
HYBRID_NOENT = "hybrid_noent"
HYBRID_FROZEN = "hybrid_frozen"

# RunConfig fields that only a circuit reads; the control keeps n_qubits and encoding (its middle's
# width and input width follow them).
CIRCUIT_FIELDS = ("depth", "ansatz", "engine", "shots", "train_shots", "encoding_scale")
MIDDLE_FIELDS = ("n_qubits", "encoding")  # the size of any middle: a cnn has none
SHARED_SEARCH = ("width", "lr")  # every arm tunes what it shares, so the baseline is tuned as hard as the hybrid
CIRCUIT_SEARCH = SHARED_SEARCH + ("n_qubits", "depth", "encoding", "ansatz")


class Middle(enum.Enum):
    """What sits between the shared backbone and the shared head."""

    NONE = "none"  # backbone -> head
    CIRCUIT = "circuit"  # reducer -> QuantumLayer
    CLASSICAL = "classical"  # reducer -> Linear + tanh, as wide as the circuit's readout


class Role(enum.Enum):
    """What the arm is in the comparison."""

    BASELINE = "baseline"  # the published classical network
    HYBRID = "hybrid"  # the network whose claims are tested
    TWIN = "twin"  # the hybrid with only its circuit swapped for a classical layer
    ABLATION = "ablation"  # the hybrid with one change to its circuit


class PaperRecipe(enum.Enum):
    """Which published recipe trains the arm under the paper protocol (the fair recipe is shared)."""

    CNN = "cnn"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Circuit:
    """The variant of the hybrid's circuit an arm uses."""

    entangle: bool = True  # False: the CNOT rings are dropped (a product-state circuit)
    trained: bool = True  # False: the weights stay at their seeded random initialisation


@dataclass(frozen=True)
class ArmSpec:
    """One arm: everything the stages need to treat it differently from the others.

    ``search`` lists RunConfig fields in the order tuning draws them (the order fixes what a seeded
    sampler draws, so it is part of a study's reproducibility). ``unused_fields`` are dropped from
    the training fingerprint: they cannot make two trainings of this arm differ. ``builder`` is
    empty for the three built-in middles (the models package maps ``middle``), else a
    ``"module:callable"`` the fair protocol calls as ``builder(spec, k, n_qubits, depth, encoding,
    ansatz, engine, encoding_scale)`` for the middle's core after the reducer.
    """

    name: str
    middle: Middle
    role: Role
    description: str
    circuit: Circuit | None = None
    search: tuple[str, ...] = SHARED_SEARCH
    paper_recipe: PaperRecipe = PaperRecipe.HYBRID
    unused_fields: tuple[str, ...] = ()
    builder: str = ""

    def __post_init__(self) -> None:
        if (self.middle is Middle.CIRCUIT) != (self.circuit is not None):
            raise ValueError(f"arm {self.name!r}: a circuit variant is given exactly when the middle is a circuit")
        if self.builder and ":" not in self.builder:
            raise ValueError(f"arm {self.name!r}: builder {self.builder!r} is not 'module:callable'")

    @property
    def has_circuit(self) -> bool:
        return self.circuit is not None

    def resolve_builder(self) -> Callable[..., Any]:
        """The callable named by ``builder``, imported now (so the registry imports nothing upward)."""
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ArmSpec] = {}


def register(spec: ArmSpec) -> ArmSpec:
    """Add ``spec``; a name already taken is refused, so no arm is silently replaced."""
    if spec.name in _REGISTRY:
        raise ValueError(f"arm {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ArmSpec:
    """The record of arm ``name``; an unknown name raises ``KeyError`` listing the known arms."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown arm {name!r}; known arms: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Every registered arm, in registration order (the display order of tables and figures)."""
    return tuple(_REGISTRY)


def circuit_arms() -> tuple[str, ...]:
    """The arms whose middle is a QuantumLayer."""
    return tuple(name for name, spec in _REGISTRY.items() if spec.has_circuit)


# ---------------------------------------------------------------------------------- the built-in arms
register(ArmSpec(CNN, Middle.NONE, Role.BASELINE, "the classical CNN (the published baseline)",
                 paper_recipe=PaperRecipe.CNN,
                 # under the paper protocol MIDDLE_FIELDS are fixed, and so dropped, anyway
                 unused_fields=CIRCUIT_FIELDS + MIDDLE_FIELDS))
register(ArmSpec(HYBRID, Middle.CIRCUIT, Role.HYBRID, "the CNN backbone, a reducer, the quantum circuit, the same head",
                 circuit=Circuit(), search=CIRCUIT_SEARCH))
register(ArmSpec(CONTROL, Middle.CLASSICAL, Role.TWIN,
                 "the hybrid with only the circuit swapped for a classical Linear+tanh layer of the same width",
                 search=SHARED_SEARCH + ("n_qubits",), unused_fields=CIRCUIT_FIELDS))
# the ablations search exactly the hybrid's space, so a difference after tuning is the ablation's
register(ArmSpec(HYBRID_NOENT, Middle.CIRCUIT, Role.ABLATION, "the hybrid's circuit without its entangling gates",
                 circuit=Circuit(entangle=False), search=CIRCUIT_SEARCH))
register(ArmSpec(HYBRID_FROZEN, Middle.CIRCUIT, Role.ABLATION,
                 "the hybrid with its circuit's weights frozen at their seeded random initialisation",
                 circuit=Circuit(trained=False), search=CIRCUIT_SEARCH))
