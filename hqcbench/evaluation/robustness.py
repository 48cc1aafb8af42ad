"""Adversarial robustness of the trained arms: every attack, the curves, transfer, checks, findings.

Every model is attacked in pixel space (``evaluation.attacks``), its numbers are checked against
fake robustness (``evaluation.masking``), and the published attack runs as the named ``pgd_paper``
mode (``evaluation.paper_attack``) so its number can be put beside the honest one. Each attack keeps
its per-example fooled mask, so the worst case over all of them is per example
(``evaluation.worst_case``, with the gradient diagnostic, BPDA and the PGD convergence runs). One model's
stages run in ``evaluation.model_attacks``; this module attacks every arm of a seed and adds transfer.

Everything returns ``tracking.findings.Findings``; the MLflow calls stay in ``jobs``.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from hqcbench import names
from hqcbench.arms import CNN
from hqcbench.config import RunConfig
from hqcbench.data.datasets import Splits
from hqcbench.evaluation import worst_case
from hqcbench.evaluation.attack_table import gradient_attacks, selected_rows, stage_labels
from hqcbench.evaluation.attacks import (
    SQUARE_P_INIT,
    AttackSet,
    art_classifier,
    attack_batch_size,
    attack_subset,
    autoattack_settings,
    input_gradient_problem,
    inputs_only,
    predict_labels,
    square_queries,
)
from hqcbench.evaluation.masking import HIGH_EPS, Check, masking_reasons, run_checks
from hqcbench.evaluation.model_attacks import ModelResult, attack_model, robustness_sweep  # noqa: F401 (public)
from hqcbench.evaluation.paper_attack import PAPER_EPS, PAPER_STEP, PAPER_STEPS, paper_attack, paper_findings
from hqcbench.evaluation.stages import StageBar
from hqcbench.tracking.figures import plt
from hqcbench.tracking.findings import Findings

log = logging.getLogger(__name__)

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
        status = check.status if check.status != "skipped" else f"skipped: {check.detail}"
        found.tags[names.check_tag(check.name)] = status
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


def gradient_free_note(cfg: RunConfig, why: str) -> str:
    """The one line a model without input gradients gets: why, and which attacks it got instead."""
    skipped = gradient_attacks(cfg) + (["pgd_paper"] if "pgd_paper" in cfg.attack_list else [])
    kept = selected_rows(cfg, gradients=False)  # the table's own rule, Square standing in where needed
    return (f"no input gradients ({why}): gradient-free attacks only ({', '.join(kept) or 'none'}); "
            f"not run: {', '.join(skipped) or 'nothing'}")


def _run_all(trained, models: dict[str, nn.Module], splits: Splits, cfg: RunConfig, device: torch.device,
             progress: bool) -> dict[str, Findings]:
    attacks = cfg.attack_list
    shape = _input_shape(splits)
    results: dict[str, ModelResult] = {}
    pixel_attacks = [a for a in attacks if a != "pgd_paper"]
    data = attack_subset(splits.test, cfg.attack_sample_count)
    if data.note and pixel_attacks:
        log.warning("robustness: %s", data.note)
    no_gradient = {arm: why for arm, model in models.items()
                   if (why := input_gradient_problem(model, data.x, device)) is not None}
    for arm, model in models.items():
        if pixel_attacks:
            gradients = arm not in no_gradient
            if not gradients:
                no_gradient[arm] = gradient_free_note(cfg, no_gradient[arm])
                log.warning("robustness %s: %s", arm, no_gradient[arm])
            with StageBar(stage_labels(cfg, gradients), f"attacks {arm}", enabled=progress) as bar:
                results[arm] = attack_model(model, arm, data, shape, splits.spec.classes, cfg, device, bar,
                                            gradients=gradients)
        else:
            results[arm] = ModelResult(arm, len(data), splits.spec.classes)
    if pixel_attacks:
        run_transfer(results, models, data, shape, device)
    if "pgd_paper" in attacks and cfg.protocol != "paper":  # under protocol=paper the epoch hook runs it
        val = attack_subset(splits.val, cfg.attack_sample_count, split="validation")
        for arm, model in models.items():
            if arm not in no_gradient:  # a gradient attack: nothing to run on a model without input gradients
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
        if arm in no_gradient:
            out[arm].tags[names.TAG_GRADIENT_FREE] = no_gradient[arm][:5000]
            out[arm].summary.insert(1, no_gradient[arm])
        for line in out[arm].summary:
            log.info("robustness %s: %s", arm, line)
    for arm, found in out.items():
        if found.tags.get(names.TAG_MASKING) == "true":
            log.warning("robustness: %s flagged possible_gradient_masking: %s", arm,
                        found.tags[names.TAG_MASKING_REASON])
    return out
