"""The attack table: every attack hqcbench runs, what it needs, how it is built and its stages.

One table, read twice: ``planned_stages`` turns it into the list of stages one model's evaluation
passes through (the progress bar's total, known before the first attack starts), and
``robustness.attack_model`` walks exactly that list, dispatching each stage on its ``step``. Adding an
attack is one row here (and its name in ``config.ATTACKS``, the parameter's allowed values, which a
test keeps equal to the table's selectable rows); neither the plan nor the run restates the other.

The ``step`` kinds:

* ``eps``: a standalone attack on every subset image at one eps (``build`` makes the ART attack);
* ``curve``: the attack's robustness curve over ``CURVE_GRID`` (white-box attacks: FGSM, PGD);
* ``bpda``, ``convergence``, ``zero_grad``: the worst-case diagnostics of ``evaluation.worst_case``;
* none: ``pgd_paper`` runs on the validation subset in ``robustness.run_all`` (or in the epoch hook
  under the paper protocol), outside the per-model pixel-space plan.

A model without input gradients (a user's circuit simulated by a non-differentiable device, a model
that leaves autograd) cannot be attacked by gradient methods at all: ``planned_stages(cfg,
gradients=False)`` keeps only the rows that do not need them, and puts Square in place of the
requested gradient attacks when none of the requested attacks is gradient-free
(``GRADIENT_FREE_STAND_IN``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hqcbench.config import RunConfig
from hqcbench.evaluation.attacks import SQUARE_P_INIT, make_autoattack, pgd_step_size, square_queries

# The robustness curve over eps 0..0.3 (plus the user's eps and the eps-0.5 check). FGSM costs one
# gradient per point, so it gets a fine grid. PGD's cost is dominated by points below the user's eps
# (almost every image is still unbroken there; above it, only the few survivors are attacked, see
# robustness.robustness_sweep), so PGD gets a coarse grid: on digits a 0.05 point alone doubled the
# attack time.
CURVE_GRID = {"fgsm": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3), "pgd": (0.0, 0.1, 0.2, 0.3)}
GRADIENT_FREE_STAND_IN = "square"


@dataclass(frozen=True)
class Stage:
    """One step of one model's evaluation: ``label`` is what the progress bar shows."""

    label: str
    step: str  # eps | curve | bpda | convergence | zero_grad
    attack: str
    eps: float | None = None


Builder = Callable[..., object]  # (classifier, eps, cfg, batch_size) -> an ART evasion attack


@dataclass(frozen=True)
class AttackEntry:
    """A row of the table.

    ``needs_gradients``: the attack differentiates the model with respect to its input.
    ``selectable``: a value of the ``attacks`` parameter (``zero_grad`` runs on its own whenever a
    gradient attack does). ``runs_with``: other selected attacks that bring this row along
    (AutoAttack brings BPDA: the worst case must see through saturating maps too).
    ``stages``: the row's stages for a config."""

    name: str
    needs_gradients: bool
    stages: Callable[[RunConfig], list[Stage]]
    build: Builder | None = None
    selectable: bool = True
    runs_with: tuple[str, ...] = field(default_factory=tuple)


def _fgsm(classifier, eps: float, cfg: RunConfig, batch_size: int):
    from art.attacks.evasion import FastGradientMethod  # ~2.4 s import, only when an attack runs

    return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=batch_size)


def _pgd(classifier, eps: float, cfg: RunConfig, batch_size: int):
    """PGD defaults (``pgd_steps`` 40, step eps/10, ``pgd_restarts`` 1 random start): 40 steps of eps/10
    can travel 4 eps, so any point of the ball is reachable twice over and the last ~30 steps refine
    rather than travel (Madry et al. used 40 steps of 0.01 at eps 0.3 on MNIST, i.e. 1.3 eps); the
    random start avoids the zero-gradient point a saturated softmax can put at the clean image."""
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=pgd_step_size(eps, cfg),
                                    max_iter=cfg.pgd_steps, num_random_init=cfg.pgd_restarts,
                                    batch_size=batch_size, verbose=False)


def _square(classifier, eps: float, cfg: RunConfig, batch_size: int):
    from art.attacks.evasion import SquareAttack

    return SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=square_queries(cfg), p_init=SQUARE_P_INIT,
                        nb_restarts=1, batch_size=batch_size, verbose=False)


def _autoattack(classifier, eps: float, cfg: RunConfig, batch_size: int):
    return make_autoattack(classifier, eps, batch_size)


def _at_every_eps(name: str, curve: bool) -> Callable[[RunConfig], list[Stage]]:
    def stages(cfg: RunConfig) -> list[Stage]:
        out = [Stage(f"{name} eps={eps:g}", "eps", name, eps) for eps in cfg.eps_list]
        return out + [Stage(f"{name} curve", "curve", name)] if curve else out
    return stages


def _once(label: str, step: str) -> Callable[[RunConfig], list[Stage]]:
    return lambda cfg: [Stage(label, step, label)]


def _none(cfg: RunConfig) -> list[Stage]:
    return []


# In the order the stages run: the standalone attacks, then the diagnostics that read their masks.
ATTACK_TABLE: dict[str, AttackEntry] = {entry.name: entry for entry in (
    AttackEntry("fgsm", True, _at_every_eps("fgsm", curve=True), _fgsm),
    AttackEntry("pgd", True, _at_every_eps("pgd", curve=True), _pgd),
    AttackEntry("square", False, _at_every_eps("square", curve=False), _square),
    AttackEntry("autoattack", True, _at_every_eps("autoattack", curve=False), _autoattack),
    AttackEntry("bpda", True, _once("bpda", "bpda"), runs_with=("autoattack",)),
    AttackEntry("pgd_convergence", True, _once("pgd_convergence", "convergence")),
    AttackEntry("zero_grad", True, _once("zero_grad", "zero_grad"), selectable=False),
    AttackEntry("pgd_paper", True, _none),  # validation subset, normalised space: robustness.run_all
)}


def selectable_attacks() -> tuple[str, ...]:
    """The values the ``attacks`` parameter accepts, in table order (``config.ATTACKS``)."""
    return tuple(name for name, entry in ATTACK_TABLE.items() if entry.selectable)


def build_attack(name: str, classifier, eps: float, cfg: RunConfig, batch_size: int = 256):
    """The ART evasion attack of row ``name`` under the L-inf norm."""
    entry = ATTACK_TABLE.get(name)
    if entry is None or entry.build is None:
        raise ValueError(f"no standalone attack {name!r}; known: "
                         + ", ".join(n for n, e in ATTACK_TABLE.items() if e.build is not None))
    return entry.build(classifier, eps, cfg, batch_size)


def gradient_attacks(cfg: RunConfig) -> list[str]:
    """The requested attacks of the per-model plan that differentiate the model: what a model without
    input gradients cannot run."""
    return [a for a in cfg.attack_list
            if a in ATTACK_TABLE and ATTACK_TABLE[a].needs_gradients and ATTACK_TABLE[a].stages(cfg)]


def selected_rows(cfg: RunConfig, gradients: bool = True) -> list[str]:
    """The table rows that run for ``cfg`` on a model with (or without) input gradients, in table order."""
    chosen = set(cfg.attack_list)
    if not gradients and gradient_attacks(cfg) and not any(
            a in ATTACK_TABLE and not ATTACK_TABLE[a].needs_gradients for a in chosen):
        chosen.add(GRADIENT_FREE_STAND_IN)
    rows = []
    for name, entry in ATTACK_TABLE.items():
        if not entry.selectable:
            continue
        if name in chosen or any(other in chosen for other in entry.runs_with):
            if gradients or not entry.needs_gradients:
                rows.append(name)
    gradient_rows = [r for r in rows if ATTACK_TABLE[r].needs_gradients and ATTACK_TABLE[r].stages(cfg)]
    if gradient_rows:  # the gradient diagnostic: does any attacked image have a vanishing input gradient?
        rows.append("zero_grad")
    return sorted(rows, key=list(ATTACK_TABLE).index)


def planned_stages(cfg: RunConfig, gradients: bool = True) -> list[Stage]:
    """The stages ``robustness.attack_model`` passes through for ``cfg``, in order."""
    return [stage for name in selected_rows(cfg, gradients) for stage in ATTACK_TABLE[name].stages(cfg)]


def stage_labels(cfg: RunConfig, gradients: bool = True) -> list[str]:
    """What the progress bar counts: the planned stages' labels."""
    return [stage.label for stage in planned_stages(cfg, gradients)]
