"""Test accuracy of trained circuit arms under a noise model, and along a depolarizing sweep.

The noise engine is a model component (``hqcbench.models.noise``); this module only evaluates a
finished model with its quantum layers under noise and hands the numbers, tags and a plot to tracking.
Noise never reaches training or model selection: the layers compute under noise only inside
``noisy_layers`` here, and ``test_acc`` stays the noiseless number.

Robust accuracy under noise: the attacks of ``noise_attacks`` (by default the FGSM and PGD of
``attacks``; AutoAttack when named, whose budget under noise is many times theirs) are run white-box
against the model *with* its noise (the attacker knows the device; gradients flow through the density
matrix, AutoAttack's Square queries the noisy model), on the usual fixed attacked subset and at every
``eps``, and the adversarial examples are classified under the same noise:
``robust_acc_<attack>_eps_<eps>_noisy``.

Only hqcbench's own ``QuantumLayer`` is modelled: a model with a TorchQuantum, PennyLane or marked
circuit gets the tag ``hqcbench.noise = not modelled: ...`` and no number, and the run goes on.
"""
from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import ImageSet
from hqcbench.errors import UserInputError
from hqcbench.evaluation.attack_table import build_attack
from hqcbench.evaluation.attacks import (
    ATTACK_RNG_SEED,
    art_classifier,
    attack_batch_size,
    attack_subset,
    predict_labels,
    seeded_numpy,
)
from hqcbench.models import noise_device
from hqcbench.models.noise import noisy_layers
from hqcbench.models.noise_spec import NoiseSpec, parse_noise, parse_sweep
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.twin import quantum_submodules
from hqcbench.tracking.figures import plt
from hqcbench.tracking.findings import Findings
from hqcbench.training.loop import evaluate
from hqcbench.training.recipes import effective_batch_size

PPM = 1_000_000  # the sweep curve's step: P in parts per million (MLflow steps are integers)


def not_modelled(model: nn.Module) -> str:
    """Why noise cannot be evaluated on ``model`` ('' when it can): circuits other than hqcbench's own layer."""
    foreign = [f"{path} ({type(m).__name__})" for path, m in quantum_submodules(model)
               if not isinstance(m, QuantumLayer)]
    return ("not modelled: the noise engine simulates hqcbench's QuantumLayer only, not " + ", ".join(foreign)
            if foreign else "")


def method_text(used: set[str], method: str, trajectories: int) -> str:
    """What the tag ``hqcbench.noise_method`` records: the methods the passes used (trajectories with K)."""
    words = sorted(used) or [method]
    return ", ".join(f"trajectories (K={trajectories})" if w == "trajectories" else w for w in words)


def noisy_accuracy(model: nn.Module, test: ImageSet, spec: NoiseSpec, batch_size: int, device: torch.device,
                   method: str, trajectories: int, seed: int) -> tuple[float, set[str]]:
    """(test accuracy with every QuantumLayer under ``spec``, the simulation methods used)."""
    with noisy_layers(model, spec, method, trajectories, seed) as used:
        acc = evaluate(model, test, batch_size, device).acc
    return acc, set(used)


def evaluate_noise(model: nn.Module, test: ImageSet, spec: NoiseSpec, sweep: list[float], batch_size: int,
                   device: torch.device, method: str, trajectories: int, seed: int, title: str = "") -> Findings:
    """``test_acc_noisy`` under ``spec`` (unless none), ``test_acc_depolarizing_<P>`` along ``sweep`` with its
    curve, CSV and plot; tags ``hqcbench.noise`` and ``hqcbench.noise_method``; a device's transpiled size."""
    findings = Findings()
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer)]
    if not layers:
        return findings
    used_all: set[str] = set()
    if not spec.is_none:
        acc, used = noisy_accuracy(model, test, spec, batch_size, device, method, trajectories, seed)
        used_all |= used
        findings.metrics[names.METRIC_TEST_ACC_NOISY] = acc
        findings.metrics[names.noise_setting_metric(names.METRIC_TEST_ACC_NOISY, spec.text())] = acc
        findings.summary.append(f"test acc under {spec.text()}: {acc:.4f}")
        if spec.device is not None and len(layers) == 1:
            findings.metrics.update(noise_device.device_program(layers[0], spec.device).metrics())
    findings.tags[names.TAG_NOISE] = spec.text()
    if sweep:
        curve = []
        for p in sweep:
            acc, used = noisy_accuracy(model, test, NoiseSpec(depolarizing=p), batch_size, device, method,
                                       trajectories, seed)
            used_all |= used
            findings.metrics[names.noise_sweep_metric(p)] = acc
            findings.stepped.append((names.NOISE_SWEEP_CURVE, acc, int(round(p * PPM))))
            curve.append((p, acc))
        clean = evaluate(model, test, batch_size, device).acc
        findings.figures["noise_sweep.png"] = sweep_figure(curve, clean, title)
        findings.texts["noise_sweep.csv"] = "depolarizing_p,test_acc\n" + "".join(
            f"{p:g},{a:.6f}\n" for p, a in curve)
        findings.summary.append("test acc under depolarizing:P: " + ", ".join(f"P={p:g} {a:.4f}" for p, a in curve))
    findings.tags[names.TAG_NOISE_METHOD] = method_text(used_all, method, trajectories)
    return findings


def noisy_robustness(model: nn.Module, test: ImageSet, spec: NoiseSpec, cfg: RunConfig, device: torch.device,
                     seed: int, input_shape: tuple[int, ...], classes: int) -> Findings:
    """``clean_acc_attack_subset_noisy`` and ``robust_acc_<attack>_eps_<eps>_noisy`` for the attacks of
    ``noise_attacks`` (by default the fgsm and pgd of ``attacks``): crafted against the noisy model, classified
    under the same noise."""
    findings = Findings()
    attacks = cfg.noise_attack_list
    if spec.is_none or not attacks:
        return findings
    data = attack_subset(test, cfg.attack_sample_count)
    batch = attack_batch_size(data.x)
    try:
        _noisy_attacks(model, data, batch, attacks, spec, cfg, device, seed, input_shape, classes, findings)
    except UserInputError as exc:  # the graph of one image does not fit: the clean numbers stand, this is skipped
        findings.summary.append(f"robust accuracy under {spec.text()} not measured: {exc}")
        findings.tags[names.TAG_NOISE_ROBUST_SKIPPED] = str(exc)[:5000]
    return findings


def _noisy_attacks(model: nn.Module, data, batch: int, attacks: list[str], spec: NoiseSpec, cfg: RunConfig,
                   device: torch.device, seed: int, input_shape: tuple[int, ...], classes: int,
                   findings: Findings) -> None:
    """The attacks of ``noisy_robustness``, crafted and classified under ``spec``, into ``findings``."""
    with noisy_layers(model, spec, cfg.noise_method, cfg.noise_trajectories, seed):
        classifier = art_classifier(model, input_shape, classes, device)
        clean = float(np.mean(predict_labels(classifier, data.x, batch) == data.y))
        findings.metrics[names.noisy_metric("clean_acc_attack_subset")] = clean
        for attack in attacks:
            for eps in cfg.eps_list:
                with seeded_numpy(ATTACK_RNG_SEED):
                    x_adv = build_attack(attack, classifier, eps, cfg, batch).generate(data.x, data.y)
                robust = float(np.mean(predict_labels(classifier, x_adv, batch) == data.y))
                metric = names.noisy_metric(names.robust_metric(attack, eps))
                findings.metrics[metric] = robust
                findings.metrics[names.noise_setting_metric(metric, spec.text())] = robust
                findings.summary.append(f"{attack} at eps {eps:g} under {spec.text()}: robust acc {robust:.4f} "
                                        f"(clean {clean:.4f} on {len(data)} images)")


def sweep_figure(curve: Iterable[tuple[float, float]], clean: float, title: str):
    points = sorted(curve)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if points:
        xs, accs = zip(*points)
        ax.plot(xs, accs, "o-", label="depolarizing after every gate")
        positive = [x for x in xs if x > 0]
        if positive:  # P = 0 stays on the axis: linear near 0, logarithmic above the smallest P
            ax.set_xscale("symlog", linthresh=min(positive))
    ax.axhline(clean, color="k", linestyle="--", label=f"noiseless ({clean:.3f})")
    ax.set_xlabel("depolarizing probability P per gate")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "test accuracy vs depolarizing noise")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_all(trained, splits, cfg, device: torch.device) -> dict[str, Findings]:
    """Per arm with a circuit, when ``cfg.noise`` or ``cfg.noise_sweep`` is set: the noisy evaluation, or the
    tag saying noise is not modelled for its circuit. Arms without a circuit get nothing."""
    spec, sweep = parse_noise(cfg.noise), parse_sweep(cfg.noise_sweep)
    out: dict[str, Findings] = {}
    if spec.is_none and not sweep:
        return out
    for item in trained:
        if not quantum_submodules(item.model):
            continue
        why = not_modelled(item.model)
        if why:
            findings = Findings()
            findings.tags[names.TAG_NOISE] = why
            out[item.arm] = findings
            continue
        started = time.perf_counter()
        findings = evaluate_noise(item.model, splits.test, spec, sweep, effective_batch_size(cfg), device,
                                  cfg.noise_method, cfg.noise_trajectories, item.seed,
                                  title=f"{cfg.dataset_name} / {item.arm} / seed {item.seed}")
        shape = (splits.spec.channels, splits.spec.size, splits.spec.size)
        findings = findings.merge(noisy_robustness(item.model, splits.test, spec, cfg, device, item.seed, shape,
                                                   splits.spec.classes))
        findings.metrics[names.METRIC_NOISE_TIME_S] = time.perf_counter() - started  # campaigns' estimates read it
        out[item.arm] = findings
    return out
