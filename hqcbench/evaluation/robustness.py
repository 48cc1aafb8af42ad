"""Adversarial robustness of the trained arms: every attack, the curves, transfer, checks, findings.

Every model is attacked in pixel space (``evaluation.attacks``), its numbers are checked against
fake robustness (``evaluation.masking``), and the published attack runs as the named ``pgd_paper``
mode (``evaluation.paper_attack``) so its number can be put beside the honest one. Each attack keeps
its per-example fooled mask, so the worst case over all of them is per example
(``evaluation.worst_case``, with the gradient diagnostic, BPDA and the PGD convergence runs).

Everything returns ``tracking.findings.Findings``; the MLflow calls stay in ``jobs``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hqcbench import names
from hqcbench.arms import CNN
from hqcbench.config import RunConfig
from hqcbench.data.datasets import Splits
from hqcbench.evaluation import worst_case
from hqcbench.evaluation.attacks import (
    ATTACK_RNG_SEED,
    SQUARE_P_INIT,
    AttackSet,
    art_classifier,
    attack_batch_size,
    attack_subset,
    autoattack_settings,
    eot_samples_for,
    first_breaks,
    inputs_only,
    make_attack,
    predict_labels,
    sampled_shots,
    seeded_numpy,
    square_queries,
)
from hqcbench.evaluation.masking import HIGH_EPS, BoundCheck, Check, Convergence, ZeroGrad, masking_reasons, run_checks
from hqcbench.evaluation.paper_attack import (
    PAPER_EPS,
    PAPER_STEP,
    PAPER_STEPS,
    PaperResult,
    paper_attack,
    paper_findings,
)
from hqcbench.evaluation.stages import GRADIENT, STANDALONE, WHITE_BOX, StageBar, planned_stages
from hqcbench.tracking.figures import plt
from hqcbench.tracking.findings import Findings

log = logging.getLogger(__name__)

# The robustness curve over eps 0..0.3 (plus the user's eps and the eps-0.5 check). FGSM costs one
# gradient per point, so it gets a fine grid. PGD's cost is dominated by points below the user's eps
# (almost every image is still unbroken there; above it, only the few survivors are attacked, see
# robustness_sweep), so PGD gets a coarse grid: on digits a 0.05 point alone doubled the attack time.
CURVE_GRID = {"fgsm": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3), "pgd": (0.0, 0.1, 0.2, 0.3)}
SUMMARY_FILE = "robustness_summary.txt"
CURVE_FILE = "robustness_curve.png"


def attack_settings(cfg: RunConfig) -> str:
    step = f"{cfg.pgd_step_size:g}" if cfg.pgd_step_size else "eps/10"
    text = (f"L-inf, pixel units; fgsm: one step of eps; pgd: {cfg.pgd_steps} steps of {step}, "
            f"{cfg.pgd_restarts} random start(s); square: {square_queries(cfg)} queries, p_init {SQUARE_P_INIT}; "
            f"pgd_paper: {PAPER_STEPS} steps of {PAPER_STEP:g} at eps {PAPER_EPS:g} in normalised space")
    attacks = cfg.attack_list
    if "autoattack" in attacks:
        text += f"; {autoattack_settings()}"
    if "bpda" in attacks or "autoattack" in attacks:
        text += "; bpda: pgd's settings, backward through identity surrogates of Softmax / tanh"
    if "pgd_convergence" in attacks:
        text += (f"; pgd_convergence: {worst_case.CONVERGENCE_IMAGES} images, steps "
                 f"{','.join(map(str, worst_case.CONVERGENCE_STEPS))}, restarts "
                 f"{','.join(map(str, worst_case.CONVERGENCE_RESTARTS))}")
    return text


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
        made = make_attack(attack, classifier, eps, cfg, batch)
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
                    x_adv = make_attack(attack, classifier, eps, cfg, batch).generate(data.x[todo], data.y[todo])
                bounds.update(data.x[todo], x_adv, eps)
                broken[todo] |= predict_labels(classifier, x_adv, batch) != data.y[todo]
        curve[eps] = 1.0 - float(broken.mean())
        if masks is not None:
            masks[eps] = broken.copy()
    return curve


def attack_model(model: nn.Module, arm: str, data: AttackSet, input_shape: tuple[int, ...], classes: int,
                 cfg: RunConfig, device: torch.device, bar: StageBar | None = None) -> ModelResult:
    """Clean accuracy, every requested attack at every requested eps, and the curves (with the
    eps-0.5 check point) on one model; with them the per-example masks, the gradient diagnostic,
    BPDA and the PGD convergence runs when requested. A finite-shot model is attacked with EOT.
    ``bar`` hears of each stage of ``stages.planned_stages(cfg)`` as it starts and ends."""
    t_start = time.perf_counter()
    bar = bar or StageBar(planned_stages(cfg), arm, enabled=False)
    classifier = art_classifier(model, input_shape, classes, device)
    batch = attack_batch_size(data.x)
    result = ModelResult(arm, len(data), classes, eot=eot_samples_for(model), shots=sampled_shots(model),
                         eps=tuple(cfg.eps_list))
    clean_wrong = predict_labels(classifier, data.x, batch) != data.y
    result.clean_acc = 1.0 - float(clean_wrong.mean())
    result.clean_wrong = clean_wrong
    attacks = cfg.attack_list
    for attack in (a for a in STANDALONE if a in attacks):
        fooled_at: dict[float, np.ndarray] = {}
        result.times[attack] = 0.0
        for eps in cfg.eps_list:
            with bar.stage(f"{attack} eps={eps:g}", len(data)):
                x_adv, fooled, seconds, members = _standalone(classifier, attack, data, eps, cfg, batch, result.bounds)
            fooled_at[eps] = fooled
            if members:
                result.autoattack_first[eps] = members
            result.times[attack] += seconds
            # an image the model already gets wrong stays wrong: robust accuracy counts it as broken
            result.robust.setdefault(attack, {})[eps] = 1.0 - float((fooled | clean_wrong).mean())
            if attack == "pgd":
                result.adversarial[eps] = x_adv
        result.fooled[attack] = fooled_at
        if attack in WHITE_BOX:
            t0 = time.perf_counter()
            points = [*CURVE_GRID[attack], *cfg.eps_list, HIGH_EPS]
            masks: dict[float, np.ndarray] = {}
            with bar.stage(f"{attack} curve"):
                result.curves[attack] = robustness_sweep(classifier, attack, data, points, fooled_at, clean_wrong,
                                                         cfg, batch, result.bounds, masks)
            result.fooled[f"{attack}_curve"] = masks
            result.curve_times[attack] = time.perf_counter() - t0
    _diagnostics(model, classifier, result, data, input_shape, cfg, device, batch, bar)
    result.seconds = time.perf_counter() - t_start
    return result


def _diagnostics(model: nn.Module, classifier, result: ModelResult, data: AttackSet, input_shape: tuple[int, ...],
                 cfg: RunConfig, device: torch.device, batch: int, bar: StageBar) -> None:
    """BPDA (``bpda`` or ``autoattack``), the PGD convergence runs (``pgd_convergence``) and the
    gradient diagnostic (any gradient attack) on one model, into ``result``."""
    attacks = cfg.attack_list
    if "bpda" in attacks or "autoattack" in attacks:
        with bar.stage("bpda", len(data)):
            replaced, fooled_at, seconds = worst_case.run_bpda(model, classifier, data, input_shape, result.classes,
                                                               device, cfg, batch, result.bounds)
        result.bpda_surrogates = replaced
        if fooled_at:
            result.fooled["bpda"] = fooled_at
            result.robust["bpda"] = {e: 1.0 - float((f | result.clean_wrong).mean()) for e, f in fooled_at.items()}
            result.times["bpda"] = seconds
    if "pgd_convergence" in attacks:
        eps = cfg.eps_list[0]
        with bar.stage("pgd_convergence"):
            result.convergence, any_fooled = worst_case.pgd_convergence(classifier, data, eps, cfg, batch, result.bounds)
        result.fooled["pgd_convergence"] = {eps: any_fooled}
    if any(a in attacks for a in GRADIENT):
        t0 = time.perf_counter()
        with bar.stage("zero_grad", len(data)):
            result.zero_grad = worst_case.gradient_diagnostic(model, data, input_shape, result.classes, device,
                                                              cfg.eps_list[0], batch, result.clean_wrong)
        result.times["zero_grad"] = time.perf_counter() - t0


def run_transfer(results: dict[str, ModelResult], models: dict[str, nn.Module], data: AttackSet,
                 input_shape: tuple[int, ...], device: torch.device) -> None:
    """PGD examples crafted on cnn, applied to every other arm, and each other arm's applied to cnn.

    A model whose own white-box PGD is beaten by examples crafted on a different model is hiding its
    gradients (Athalye et al. 2018): transfer is a black-box attack and should be the weaker one.
    """
    if CNN not in results or CNN not in models:
        return
    batch = attack_batch_size(data.x)
    pairs = [(CNN, arm) for arm in results if arm != CNN] + [(arm, CNN) for arm in results if arm != CNN]
    for source, target in pairs:
        target_clf = art_classifier(models[target], input_shape, results[target].classes, device)
        for eps, x_adv in results[source].adversarial.items():
            fooled = predict_labels(target_clf, x_adv, batch) != data.y
            results[target].transfer[(source, eps)] = 1.0 - float(fooled.mean())
            results[target].fooled.setdefault(f"transfer_from_{source}", {})[eps] = fooled


def curve_figure(result: ModelResult, title: str):
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for attack, curve in result.curves.items():
        points = sorted((e, a) for e, a in curve.items() if e != HIGH_EPS)
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=attack)
        if HIGH_EPS in curve:
            ax.plot([HIGH_EPS], [curve[HIGH_EPS]], "x", color=line.get_color(),
                    label=f"{attack}, eps {HIGH_EPS:g} check")
    for attack, marker in (("square", "s"), ("autoattack", "D"), ("bpda", "v"), (names.WORST, "*")):
        points = sorted((result.robust.get(attack, {}) if attack != names.WORST else result.worst).items())
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker, ls="none", label=attack,
                    color="black" if attack == "square" else None)
    for (source, eps), acc in sorted(result.transfer.items()):
        ax.plot([eps], [acc], "^", label=f"transfer from {source}")
    ax.axhline(1.0 / result.classes, color="grey", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("eps (L-inf, pixel units)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def to_findings(result: ModelResult, checks: list[Check], cfg: RunConfig, data: AttackSet, title: str) -> Findings:
    found = Findings()
    m = found.metrics
    m["clean_acc_attack_subset"] = result.clean_acc
    for attack, per_eps in result.robust.items():
        for eps, acc in per_eps.items():
            m[names.robust_metric(attack, eps)] = acc
    for attack, seconds in result.times.items():
        m[names.attack_time_metric(attack)] = seconds
    for attack, seconds in result.curve_times.items():
        m[f"curve_time_s_{attack}"] = seconds
    for attack, curve in result.curves.items():
        for eps, acc in sorted(curve.items()):
            if eps != HIGH_EPS or eps in cfg.eps_list:
                found.stepped.append((names.robust_curve_metric(attack), acc, names.eps_step(eps)))
    for (source, eps), acc in result.transfer.items():
        m[f"transfer_acc_from_{source}_eps_{eps:g}"] = acc
    for eps, members in result.autoattack_first.items():
        for member, mask in members.items():
            m[names.autoattack_first_metric(member, eps)] = float(mask.mean())
    high = [c[HIGH_EPS] for c in result.curves.values() if HIGH_EPS in c]
    if high:
        m["check_high_eps_robust_acc"] = min(high)
    if result.bounds.examples:
        m["check_linf_excess_max"] = result.bounds.linf_excess
        m["check_range_excess_max"] = result.bounds.range_excess
    for check in checks:
        found.tags[names.check_tag(check.name)] = check.status if check.status != "skipped" else f"skipped: {check.detail}"
        if check.status != "skipped":
            m[f"check_{check.name}_pass"] = 0.0 if check.failed else 1.0
    reasons = masking_reasons(checks)
    found.tags[names.TAG_MASKING] = "true" if reasons else "false"
    m[names.TAG_MASKING] = 1.0 if reasons else 0.0
    if reasons:
        found.tags[names.TAG_MASKING_REASON] = "; ".join(reasons)[:5000]
    found.tags[names.TAG_ATTACK_SETTINGS] = attack_settings(cfg)
    if data.note:
        found.tags[names.TAG_ATTACK_NOTE] = data.note
    m["robustness_time_s"] = result.seconds
    if result.curves or result.robust:
        found.figures[CURVE_FILE] = curve_figure(result, title)
    found.summary.extend(summary_lines(result, checks, cfg, data))
    if result.clean_wrong is not None:
        found.merge(worst_case.worst_findings(result.fooled, result.clean_wrong, data, cfg, result.zero_grad,
                                              result.bpda_surrogates, result.convergence, result.eot, result.shots,
                                              title.replace("robust accuracy vs eps", "PGD convergence")))
    if result.paper is not None:
        found.merge(paper_findings(result.paper))
    found.texts[SUMMARY_FILE] = "\n".join(found.summary) + "\n"
    return found


def summary_lines(result: ModelResult, checks: list[Check], cfg: RunConfig, data: AttackSet) -> list[str]:
    lines = [f"robustness of {result.arm}: {result.n} fixed test images, {attack_settings(cfg)}"]
    if data.note:
        lines.append(f"note: {data.note}")
    lines.append(f"clean accuracy on the attacked subset: {result.clean_acc:.4f}")
    for attack, per_eps in result.robust.items():
        accs = ", ".join(f"eps {e:g}: {a:.4f}" for e, a in sorted(per_eps.items()))
        lines.append(f"{attack}: {accs} ({result.times.get(attack, 0.0):.1f} s)")
    for attack, curve in result.curves.items():
        lines.append(f"curve {attack}: " + ", ".join(f"{e:g}: {a:.3f}" for e, a in sorted(curve.items())))
    for (source, eps), acc in sorted(result.transfer.items()):
        lines.append(f"transfer (pgd crafted on {source}) eps {eps:g}: {acc:.4f}")
    for eps, members in sorted(result.autoattack_first.items()):
        lines.append(f"autoattack eps {eps:g}, images each member broke first: "
                     + ", ".join(f"{k} {int(v.sum())}" for k, v in members.items()))
    lines.append("checks:")
    for check in checks:
        lines.append(f"  {check.name}: {check.status.upper()} - {check.detail}")
    reasons = masking_reasons(checks)
    lines.append(f"{names.TAG_MASKING}: {'true (' + '; '.join(reasons) + ')' if reasons else 'false'}")
    if any(c.name == "bounds" and c.failed for c in checks):
        lines.append("WARNING: adversarial examples violate the eps bound or [0,1]: "
                     "the robust accuracies above are invalid")
    return lines


def _input_shape(splits: Splits) -> tuple[int, int, int]:
    spec = splits.spec
    return (spec.channels, spec.size, spec.size)


def run_all(trained, splits: Splits, cfg: RunConfig, device: torch.device, progress: bool = False
            ) -> dict[str, Findings]:
    """Attack every trained arm of one seed on the same fixed test subset; transfer between arms;
    run the checks. ``trained``: objects with ``.arm`` and ``.model`` (runner.TrainedArm);
    ``progress``: a bar per model over its attack stages."""
    attacks = cfg.attack_list
    if not attacks:
        return {}
    models = {item.arm: item.model for item in trained}
    with inputs_only(models.values()):
        return _run_all(trained, models, splits, cfg, device, progress)


def _run_all(trained, models: dict[str, nn.Module], splits: Splits, cfg: RunConfig, device: torch.device,
             progress: bool) -> dict[str, Findings]:
    attacks = cfg.attack_list
    shape = _input_shape(splits)
    results: dict[str, ModelResult] = {}
    pixel_attacks = [a for a in attacks if a != "pgd_paper"]
    data = attack_subset(splits.test, cfg.attack_sample_count)
    if data.note and pixel_attacks:
        log.warning("robustness: %s", data.note)
    for arm, model in models.items():
        if pixel_attacks:
            with StageBar(planned_stages(cfg), f"attacks {arm}", enabled=progress) as bar:
                results[arm] = attack_model(model, arm, data, shape, splits.spec.classes, cfg, device, bar)
        else:
            results[arm] = ModelResult(arm, len(data), splits.spec.classes)
    if pixel_attacks:
        run_transfer(results, models, data, shape, device)
    if "pgd_paper" in attacks and cfg.protocol != "paper":  # under protocol=paper the epoch hook runs it
        val = attack_subset(splits.val, cfg.attack_sample_count, split="validation")
        for arm, model in models.items():
            results[arm].paper = paper_attack(model, val, device)
    out: dict[str, Findings] = {}
    for arm, result in results.items():
        if pixel_attacks:
            seed = getattr(next(t for t in trained if t.arm == arm), "seed", "")
            title = f"{splits.spec.name} / {arm} / seed {seed}: robust accuracy vs eps"
            out[arm] = to_findings(result, run_checks(result), cfg, data, title)
        elif result.paper is not None:
            out[arm] = paper_findings(result.paper)
            out[arm].texts[SUMMARY_FILE] = "\n".join(out[arm].summary) + "\n"
        else:
            continue
        for line in out[arm].summary:
            log.info("robustness %s: %s", arm, line)
    for arm, found in out.items():
        if found.tags.get(names.TAG_MASKING) == "true":
            log.warning("robustness: %s flagged possible_gradient_masking: %s", arm, found.tags[names.TAG_MASKING_REASON])
    return out
