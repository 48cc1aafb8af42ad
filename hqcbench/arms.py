"""The arm registry: one record per arm, read by every stage that treats arms differently.

An arm is a network compared with the others: the classical CNN, the hybrid, the control that swaps
the hybrid's circuit for a classical layer, and the ablations that change one thing in the circuit.
What sets one arm apart from another (its middle, its circuit variant, its role in the comparison,
what tuning searches, which published recipe trains it, which config fields do not apply to it, how
its middle is built) lives in its ``ArmSpec`` here, so config, models, training, jobs and the report
ask the registry instead of comparing names, and a new arm is one ``register`` call.

The module imports only ``hqcbench.names``, so every unit may import it. A middle none of the
three built-in kinds covers names a ``"module:callable"`` builder, resolved only when a model is
built, so the registry still needs no upward import.

User arms. ``resolve`` also accepts a researcher's own model: ``module:callable`` (importable from
``PYTHONPATH``; the ``hqcbench`` command adds the current directory), a name a package registers under
the entry-point group ``hqcbench.arms``, and either prefixed by ``twin:`` (the same model with every
outermost quantum submodule swapped for a classical layer of the same widths) or ``frozen:`` (its quantum
submodules frozen at their seeded initialisation). ``twin:hybrid`` is the built-in ``control`` and
``frozen:hybrid`` is ``hybrid_frozen``, resolved before anything runs. The callable is a factory
``factory(in_shape, classes, **hparams) -> torch.nn.Module`` returning logits; its record carries the
digest of its module's source, so editing the model changes its training fingerprint.
"""
from __future__ import annotations

import enum
import hashlib
import importlib
import importlib.metadata
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hqcbench import names as names_contract  # names() below is the registry's own

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
    USER = "user"  # a whole model from a user's factory (no shared backbone or head)


class Role(enum.Enum):
    """What the arm is in the comparison."""

    BASELINE = "baseline"  # the published classical network
    HYBRID = "hybrid"  # the network whose claims are tested
    TWIN = "twin"  # the hybrid with only its circuit swapped for a classical layer
    ABLATION = "ablation"  # the hybrid with one change to its circuit
    USER = "user"  # a researcher's own model


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
    # user arms only: the factory ("module:callable"), the transform applied to its model ("", "twin",
    # "frozen"), the hyperparameters its signature names, and the digest of its module's source
    factory: str = ""
    transform: str = ""
    hparams: tuple[str, ...] = ()
    source_digest: str = ""
    # a user factory's own search space (its attribute ``search_space``): (name, (low, high[, "log"]) or
    # [choices]) in the order tuning draws them, after the learning rate and the run settings it names
    search_space: tuple[tuple[str, Any], ...] = ()

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

    @property
    def is_user(self) -> bool:
        return self.middle is Middle.USER

    def resolve_factory(self) -> Callable[..., Any]:
        """A user arm's factory (its module is imported already: ``resolve`` checked it)."""
        return _load_callable(self.name, self.factory)


_REGISTRY: dict[str, ArmSpec] = {}


def register(spec: ArmSpec) -> ArmSpec:
    """Add ``spec``; a name already taken is refused, so no arm is silently replaced."""
    if spec.name in _REGISTRY:
        raise ValueError(f"arm {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ArmSpec:
    """The record of arm ``name`` (a user arm is resolved and registered on first use); an unknown name
    raises ``KeyError`` listing the known arms."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    try:
        return resolve(name)
    except ArmError as exc:
        raise KeyError(str(exc)) from None


def names() -> tuple[str, ...]:
    """Every built-in arm, in registration order (the display order of tables and figures)."""
    return tuple(name for name, spec in _REGISTRY.items() if not spec.is_user)


class ArmError(ValueError):
    """An arm name that cannot be resolved: the message names the arm and what was expected."""


TRANSFORMS = ("twin", "frozen")  # reserved prefixes of user arm names
# a built-in arm under a prefix: the built-in arm that already is that model
ALIASES = {("twin", HYBRID): CONTROL, ("frozen", HYBRID): HYBRID_FROZEN}
ENTRY_POINT_GROUP = names_contract.ARMS_ENTRY_POINT_GROUP
FACTORY_POSITIONAL = ("in_shape", "classes")  # what every factory receives first
_USER_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module.path:callable


def parse(name: str) -> tuple[str, str]:
    """'twin:pkg.mod:fn' -> ('twin', 'pkg.mod:fn'); a name without a reserved prefix -> ('', name)."""
    head, sep, rest = name.partition(":")
    if sep and head in TRANSFORMS:
        return head, rest
    return "", name


def canonical(name: str) -> str:
    """The registered name ``name`` stands for (``twin:hybrid`` -> ``control``), registering a user arm."""
    return resolve(name).name


def resolve(name: str) -> ArmSpec:
    """The record of a built-in arm, an alias of one, or a user arm (registered on first use).

    Raises ``ArmError`` with one line naming the arm and what was expected."""
    name = name.strip()
    if name in _REGISTRY:
        return _REGISTRY[name]
    transform, base = parse(name)
    if transform and (transform, base) in ALIASES:
        return _REGISTRY[ALIASES[(transform, base)]]
    if base in _REGISTRY and not _REGISTRY[base].is_user:
        raise ArmError(f"arm {name!r}: '{transform}:' applies to user arms and to hybrid only "
                       f"(twin:hybrid is control, frozen:hybrid is hybrid_frozen)")
    factory_path = base if _USER_NAME.match(base) else _entry_points().get(base, "")
    if not factory_path:
        raise ArmError(f"arm {name!r}: expected a built-in arm ({', '.join(names())}), "
                       f"[twin:|frozen:]module:callable, or an arm registered under the entry-point group "
                       f"{ENTRY_POINT_GROUP!r}")
    factory = _load_callable(name, factory_path)
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    hparams = tuple(p for p in params if p not in FACTORY_POSITIONAL
                    and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD))
    role = {"twin": Role.TWIN, "frozen": Role.ABLATION}.get(transform, Role.USER)
    declared = _declared_search(name, factory, hparams)
    run_settings = ("lr",) + tuple(k for k in CIRCUIT_SEARCH if k in hparams and k != "lr")
    spec = ArmSpec(name, Middle.USER, role, f"user model {factory_path}" + (f" ({transform})" if transform else ""),
                   search=run_settings + tuple(k for k, _ in declared if k not in run_settings),
                   search_space=tuple((k, v) for k, v in declared if k not in run_settings),
                   unused_fields=tuple(f for f in CIRCUIT_FIELDS + MIDDLE_FIELDS + ("width",) if f not in hparams),
                   factory=factory_path, transform=transform, hparams=hparams,
                   source_digest=_source_digest(factory))
    return register(spec)


SEARCH_SPACE_FORM = ("factory.search_space = {name: (low, high) | (low, high, 'log') | [choice, ...]}, "
                     "each name a keyword argument of the factory")


def _declared_search(name: str, factory: Callable[..., Any], hparams: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The factory's own search space (its ``search_space`` attribute), checked: a range of two numbers
    (ints: integers; floats: reals; a third element "log" for a log scale) or a list of choices, for
    keyword arguments the factory names. Tuning draws it with the same budget as every other arm."""
    declared = getattr(factory, "search_space", None)
    if declared is None:
        return []
    if not isinstance(declared, dict):
        raise ArmError(f"arm {name!r}: search_space is a {type(declared).__name__}; expected {SEARCH_SPACE_FORM}")
    out = []
    for key, space in declared.items():
        if key not in hparams:
            raise ArmError(f"arm {name!r}: search_space names {key!r}, which the factory does not take; "
                           f"expected {SEARCH_SPACE_FORM}")
        is_range = (isinstance(space, tuple) and len(space) in (2, 3)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space[:2])
                    and space[0] < space[1] and (len(space) == 2 or space[2] == "log")
                    and (len(space) == 2 or space[0] > 0))
        is_choice = isinstance(space, list) and len(space) > 0
        if not (is_range or is_choice):
            raise ArmError(f"arm {name!r}: search_space[{key!r}] = {space!r}; expected {SEARCH_SPACE_FORM}")
        out.append((key, space))
    return out


def _entry_points() -> dict[str, str]:
    """Arms packages register: entry-point name -> 'module:callable'."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_callable(name: str, path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import is the user's module's: one line, not a traceback
        raise ArmError(f"arm {name!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc}); "
                       "expected a module on PYTHONPATH or in the current directory") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ArmError(f"arm {name!r}: module {module_name!r} has no callable {attr!r}; expected a factory "
                       "factory(in_shape, classes, **hparams) -> torch.nn.Module")
    return factory


def _source_digest(factory: Callable[..., Any]) -> str:
    """16 hex digits over the source file of the factory's module: an edited model is a new training."""
    try:
        path = inspect.getsourcefile(inspect.getmodule(factory) or factory)
        data = open(path, "rb").read() if path else b""
    except (TypeError, OSError):
        data = b""
    return hashlib.sha256(data).hexdigest()[:16]


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
