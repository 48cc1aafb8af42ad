"""One model's attack evaluation: clean accuracy, then exactly the planned stages, in order.

``attack_model`` walks ``attack_table.planned_stages(cfg, gradients)`` and runs each stage by its step
(``STEPS``): standalone attacks at every eps, the white-box curves, BPDA, PGD's convergence runs and the
gradient diagnostic, each keeping its per-example fooled mask for the worst case. Apart from
``robustness`` (which attacks every arm of a seed, adds transfer, the checks and the findings) so that
each module keeps one job: this one touches one model and knows nothing of arms or MLflow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hqcbench.config import RunConfig
from hqcbench.evaluation import worst_case
from hqcbench.evaluation.attack_table import CURVE_GRID, Stage, build_attack, planned_stages
from hqcbench.evaluation.attacks import (
    ATTACK_RNG_SEED,
    AttackSet,
    art_classifier,
    attack_batch_size,
    eot_samples_for,
    first_breaks,
    predict_labels,
    sampled_shots,
    seeded_numpy,
)
from hqcbench.evaluation.masking import HIGH_EPS, BoundCheck, Convergence, ZeroGrad
from hqcbench.evaluation.paper_attack import PaperResult
from hqcbench.evaluation.stages import StageBar


@dataclass
class ModelResult:
    """Everything measured on one model; turned into Findings once transfer results are in."""

    arm: str
    n: int
    classes: int
    clean_acc: float = float("nan")
    robust: dict[str, dict[float, float]] = field(default_factory=dict)  # attack -> eps -> acc (standalone)
    curves: dict[str, dict[float, float]] = field(default_factory=dict)  # attack -> eps -> acc (cumulative)
    times: dict[str, float] = field(default_factory=dict)  # attack -> seconds at the user's eps
    curve_times: dict[str, float] = field(default_factory=dict)  # attack -> seconds of the extra curve points
    adversarial: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> PGD examples (for transfer)
    transfer: dict[tuple[str, float], float] = field(default_factory=dict)  # (source arm, eps) -> acc
    bounds: BoundCheck = field(default_factory=BoundCheck)
    paper: PaperResult | None = None
    seconds: float = 0.0
    # per example (True = fooled) for the worst case: attack (or "transfer_from_{arm}", "{attack}_curve",
    # "pgd_convergence") -> eps -> mask over the subset
    fooled: dict[str, dict[float, np.ndarray]] = field(default_factory=dict)
    clean_wrong: np.ndarray | None = None
    zero_grad: ZeroGrad | None = None
    bpda_surrogates: list[str] | None = None  # None: bpda not requested
    convergence: Convergence | None = None
    # eps -> AutoAttack member -> images it broke first (each member attacks only what the earlier left)
    autoattack_first: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)
    eot: int = 1  # readout samples averaged per gradient
    shots: int | None = None
    eps: tuple[float, ...] = ()  # the run's eps

    @property
    def worst(self) -> dict[float, float]:
        """eps -> accuracy on the images that survive every attack run at that eps or a smaller one."""
        if self.clean_wrong is None:
            return {}
        return {e: 1.0 - float(worst_case.worst_mask(self.fooled, self.clean_wrong, e).mean()) for e in self.eps}


def _standalone(classifier, attack: str, data: AttackSet, eps: float, cfg: RunConfig, batch: int,
                bounds: BoundCheck) -> tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]:
    """Attack every image of the subset at one eps: (adversarial examples, fooled mask, seconds, and for
    ``autoattack`` the images each member broke first; else empty)."""
    t0 = time.perf_counter()
    with seeded_numpy(ATTACK_RNG_SEED):
        made = build_attack(attack, classifier, eps, cfg, batch)
        x_adv = made.generate(data.x, data.y)
    seconds = time.perf_counter() - t0
    bounds.update(data.x, x_adv, eps)
    fooled = predict_labels(classifier, x_adv, batch) != data.y
    members = first_breaks(made, classifier.nb_classes) if attack == "autoattack" else {}
    return x_adv, fooled, seconds, members


def robustness_sweep(classifier, attack: str, data: AttackSet, points: Sequence[float], done: dict[float, np.ndarray],
                     clean_wrong: np.ndarray, cfg: RunConfig, batch: int, bounds: BoundCheck,
                     masks: dict[float, np.ndarray] | None = None) -> dict[float, float]:
    """Robust accuracy at increasing eps, attacking only images not yet broken.

    An adversarial example found within a smaller ball is inside every larger one, so an image broken
    at eps stays broken at every larger eps; each point is the worst case over the attack run at that
    eps and every smaller one (the curve never rises). This makes the curve cost about two attacks of
    the whole subset instead of one per point. ``done``: eps -> fooled mask of runs already made on
    the whole subset (the user's eps), reused instead of re-run. ``masks`` (if given) receives each
    point's broken mask.
    """
    broken = clean_wrong.copy()
    curve = {0.0: 1.0 - float(broken.mean())}
    for eps in sorted(p for p in set(points) if p > 0):
        if eps in done:
            broken |= done[eps]
        else:
            todo = np.flatnonzero(~broken)
            if todo.size:
                with seeded_numpy(ATTACK_RNG_SEED):
                    x_adv = build_attack(attack, classifier, eps, cfg, batch).generate(data.x[todo], data.y[todo])
                bounds.update(data.x[todo], x_adv, eps)
                broken[todo] |= predict_labels(classifier, x_adv, batch) != data.y[todo]
        curve[eps] = 1.0 - float(broken.mean())
        if masks is not None:
            masks[eps] = broken.copy()
    return curve


@dataclass
class _Attacking:
    """What every stage of one model's evaluation reads and writes."""

    model: nn.Module
    classifier: object
    data: AttackSet
    input_shape: tuple[int, ...]
    cfg: RunConfig
    device: torch.device
    batch: int
    result: ModelResult


def _eps_stage(run: _Attacking, stage: Stage) -> None:
    """A standalone attack on every subset image at one eps."""
    result, attack, eps = run.result, stage.attack, float(stage.eps)  # type: ignore[arg-type]
    x_adv, fooled, seconds, members = _standalone(run.classifier, attack, run.data, eps, run.cfg, run.batch,
                                                  result.bounds)
    result.fooled.setdefault(attack, {})[eps] = fooled
    if members:
        result.autoattack_first[eps] = members
    result.times[attack] = result.times.get(attack, 0.0) + seconds
    # an image the model already gets wrong stays wrong: robust accuracy counts it as broken
    result.robust.setdefault(attack, {})[eps] = 1.0 - float((fooled | result.clean_wrong).mean())
    if attack == "pgd":
        result.adversarial[eps] = x_adv


def _curve_stage(run: _Attacking, stage: Stage) -> None:
    """The attack's robustness curve, reusing its runs at the user's eps (``_eps_stage`` ran them)."""
    result, attack = run.result, stage.attack
    assert result.clean_wrong is not None  # attack_model sets it before the stages run
    t0 = time.perf_counter()
    points = [*CURVE_GRID[attack], *run.cfg.eps_list, HIGH_EPS]
    masks: dict[float, np.ndarray] = {}
    result.curves[attack] = robustness_sweep(run.classifier, attack, run.data, points, result.fooled.get(attack, {}),
                                             result.clean_wrong, run.cfg, run.batch, result.bounds, masks)
    result.fooled[f"{attack}_curve"] = masks
    result.curve_times[attack] = time.perf_counter() - t0


def _bpda_stage(run: _Attacking, stage: Stage) -> None:
    result = run.result
    replaced, fooled_at, seconds = worst_case.run_bpda(run.model, run.classifier, run.data, run.input_shape,
                                                       result.classes, run.device, run.cfg, run.batch, result.bounds)
    result.bpda_surrogates = replaced
    if fooled_at:
        result.fooled["bpda"] = fooled_at
        result.robust["bpda"] = {e: 1.0 - float((f | result.clean_wrong).mean()) for e, f in fooled_at.items()}
        result.times["bpda"] = seconds


def _convergence_stage(run: _Attacking, stage: Stage) -> None:
    eps = run.cfg.eps_list[0]
    run.result.convergence, any_fooled = worst_case.pgd_convergence(run.classifier, run.data, eps, run.cfg, run.batch,
                                                                    run.result.bounds)
    run.result.fooled["pgd_convergence"] = {eps: any_fooled}


def _zero_grad_stage(run: _Attacking, stage: Stage) -> None:
    assert run.result.clean_wrong is not None  # attack_model sets it before the stages run
    t0 = time.perf_counter()
    run.result.zero_grad = worst_case.gradient_diagnostic(run.model, run.data, run.input_shape, run.result.classes,
                                                          run.device, run.cfg.eps_list[0], run.batch,
                                                          run.result.clean_wrong)
    run.result.times["zero_grad"] = time.perf_counter() - t0


# How each kind of stage of attack_table.planned_stages runs.
STEPS: dict[str, Callable[[_Attacking, Stage], None]] = {
    "eps": _eps_stage, "curve": _curve_stage, "bpda": _bpda_stage, "convergence": _convergence_stage,
    "zero_grad": _zero_grad_stage,
}


def attack_model(model: nn.Module, arm: str, data: AttackSet, input_shape: tuple[int, ...], classes: int,
                 cfg: RunConfig, device: torch.device, bar: StageBar | None = None,
                 gradients: bool = True) -> ModelResult:
    """Clean accuracy, then exactly the stages of ``attack_table.planned_stages(cfg, gradients)`` in
    order: every requested attack at every requested eps, the curves (with the eps-0.5 check point),
    BPDA, the PGD convergence runs and the gradient diagnostic. A finite-shot model is attacked with
    EOT. ``gradients=False`` (a model without input gradients): the gradient-free attacks only.
    ``bar`` hears of each stage as it starts and ends."""
    t_start = time.perf_counter()
    plan = planned_stages(cfg, gradients)
    bar = bar or StageBar([stage.label for stage in plan], arm, enabled=False)
    classifier = art_classifier(model, input_shape, classes, device)
    batch = attack_batch_size(data.x)
    result = ModelResult(arm, len(data), classes, eot=eot_samples_for(model), shots=sampled_shots(model),
                         eps=tuple(cfg.eps_list))
    clean_wrong = predict_labels(classifier, data.x, batch) != data.y
    result.clean_acc = 1.0 - float(clean_wrong.mean())
    result.clean_wrong = clean_wrong
    run = _Attacking(model, classifier, data, input_shape, cfg, device, batch, result)
    for stage in plan:
        with bar.stage(stage.label, len(data) if stage.step in ("eps", "bpda", "zero_grad") else None):
            STEPS[stage.step](run, stage)
    result.seconds = time.perf_counter() - t_start
    return result
