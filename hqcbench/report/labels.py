"""Plain words for the report's body, and the glossary that maps them back to MLflow identifiers.

Why a module of its own: a QML researcher reads "worst case over every attack" and "hybrid without
entanglement", not ``robust_acc_worst_eps_0.1`` and ``hybrid_noent``; but a reader who opens the runs in
MLflow needs the identifiers. So the body speaks in labels from here, and the appendix's glossary (built
from the same tables) lists every label beside the identifier it stands for. Arms hqcbench does not know
(a user's own) appear under their own names.
"""
from __future__ import annotations

import re

from hqcbench import names
from hqcbench.report.claims import CLAMP_ONLY_METRIC, PUBLISHED_EPS, TIME_METRIC

ARM_LABELS: dict[str, str] = {
    "cnn": "CNN",
    "hybrid": "hybrid",
    "control": "control",
    "hybrid_noent": "hybrid without entanglement",
    "hybrid_frozen": "hybrid with frozen circuit",
}
ARM_MEANINGS: dict[str, str] = {
    "cnn": "the classical CNN (the published baseline)",
    "hybrid": "the CNN backbone, a reducer, the quantum circuit, the same head",
    "control": "the hybrid with only the circuit swapped for a classical Linear+tanh layer of the same width",
    "hybrid_noent": "the hybrid's circuit without its entangling gates",
    "hybrid_frozen": "the hybrid with its circuit's weights frozen at their seeded random initialisation",
}
ATTACK_LABELS: dict[str, str] = {
    "fgsm": "FGSM", "pgd": "PGD", "square": "Square", "autoattack": "AutoAttack", "bpda": "BPDA",
    "pgd_paper": "published measure (PGD in normalised units, clamped)", names.WORST: "worst case over every attack",
}
METRIC_LABELS: dict[str, str] = {
    "best_val_acc": "best validation accuracy",
    "test_acc": "test accuracy",
    TIME_METRIC: "median seconds per uncontended epoch",
    "params_total": "parameter count",
    CLAMP_ONLY_METRIC: "published clamp alone, no attack step",
    "rss_peak_mb_max": "peak memory (RSS) of the training process",
    "cpu_util_cores_mean": "CPU cores the training process kept busy",
    "paper_memory_gb": "published memory measure (system-wide)",
    "paper_cpu_percent": "published CPU measure (system-wide)",
    names.TAG_MASKING: "possible gradient masking (older runs, no check named)",
}
CHECK_LABELS: dict[str, str] = {
    "bounds": "perturbations out of bounds",
    "pgd_le_fgsm": "PGD weaker than FGSM",
    "high_eps": "accuracy above chance at eps 0.5",
    "transfer": "transferred examples beat white-box PGD",
    "square": "gradient-free Square beat PGD",
    "zero_grad": "vanishing input gradients",
    "bpda": "BPDA beat PGD",
    "converged": "PGD not converged",
    names.TAG_MASKING: "possible gradient masking",
}
_ROBUST = re.compile(r"^robust_acc_(.+)_eps_([0-9.eE+-]+)$")


def arm_label(arm: str) -> str:
    """A built-in arm's plain name; any other arm (a user's) under its own name."""
    return ARM_LABELS.get(arm, arm)


def metric_label(metric: str) -> str:
    """A metric's plain name: known ones from METRIC_LABELS, robust accuracies as 'attack at eps x'."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    match = _ROBUST.match(metric)
    if match:
        attack, eps = match.group(1), float(match.group(2))
        return f"{ATTACK_LABELS.get(attack, attack)} at eps {eps:g}"
    return metric


def check_label(check: str) -> str:
    return CHECK_LABELS.get(check, check.replace("_", " "))


def glossary(metrics: list[str], arms: list[str], checks: list[str]) -> list[list[str]]:
    """Rows (plain label, identifier in MLflow, what it is) for every arm, metric and check the report shows."""
    rows = [[arm_label(a), f"arm `{a}`", ARM_MEANINGS.get(a, "a user-defined arm")] for a in arms]
    rows += [[metric_label(m), f"metric `{m}`", _metric_meaning(m)] for m in dict.fromkeys(metrics)]
    rows += [[check_label(c), f"check `check_{c}_pass`" if c != names.TAG_MASKING else f"metric `{c}`",
              "a masking check failed: robust accuracies of that arm may be inflated"] for c in checks]
    return rows


def _metric_meaning(metric: str) -> str:
    if metric == names.robust_metric(names.WORST, PUBLISHED_EPS):
        return ("robust accuracy at pixel eps 0.1: per image, correct only if no attack run on the model broke it "
                "(counted only with AutoAttack or Square among the attacks)")
    if metric == names.robust_metric("pgd_paper", PUBLISHED_EPS):
        return "the published attack: PGD with eps 0.1 in normalised units on inputs clamped to [0, 1] there"
    if metric == CLAMP_ONLY_METRIC:
        return "accuracy after the published clamp alone: how much of the published measure is the clamp"
    if _ROBUST.match(metric):
        return "robust accuracy under that attack, L-inf eps in pixel units"
    return "see docs/metrics.md"
