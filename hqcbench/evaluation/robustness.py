"""Adversarial robustness with ART, in pixel space, with checks against fake robustness.

Why this module exists: the published study attacked normalised tensors that its attack library
clamped to [0, 1], so its "eps = 0.1" was neither 0.1 nor a bounded perturbation. Here every model
is attacked as a user sees it: inputs in [0, 1], normalisation inside the model, ART's
``PyTorchClassifier`` with ``clip_values=(0, 1)``, L-inf budgets in pixel units. The published
procedure survives only as the named ``pgd_paper`` mode, so its number can be put beside the honest one.

A robust-accuracy number is only trustworthy if the attack worked, so every run also checks:
  bounds      every adversarial example is within eps (+1e-6) of its image and inside [0, 1]
  pgd_le_fgsm PGD (iterative) is at least as strong as FGSM (one step), up to a small tolerance
  high_eps    at eps 0.5 any image can be moved to uniform grey, so a working attack leaves no more
              than chance accuracy
  transfer    examples crafted on the cnn arm, applied to the others (and the reverse), must not beat
              the target's own white-box PGD
  square      the gradient-free SquareAttack (when run) must not beat white-box PGD
A failed pgd_le_fgsm, high_eps, transfer or square check means gradients mislead the attack: the run
is tagged ``possible_gradient_masking=true`` with the reason. A failed bounds check means the attack
itself is broken (its numbers are invalid).

Everything returns ``tracking.Findings``; MLflow calls stay in ``tracking``/``runner``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import ImageSet, Splits, to_float
from hqcbench.tracking.findings import Findings

log = logging.getLogger("hqcbench")

ATTACK_SUBSET_SEED = 2024  # the attacked subset is the same for every seed and arm
ATTACK_RNG_SEED = 0  # random starts / Square's random squares: the same draws for every arm
WHITE_BOX = ("fgsm", "pgd")
# The robustness curve over eps 0..0.3 (plus the user's eps and the eps-0.5 check). FGSM costs one
# gradient per point, so it gets a fine grid. PGD's cost is dominated by points below the user's eps
# (almost every image is still unbroken there; above it, only the few survivors are attacked, see
# robustness_sweep), so PGD gets a coarse grid: on digits a 0.05 point alone doubled the attack time.
CURVE_GRID = {"fgsm": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3), "pgd": (0.0, 0.1, 0.2, 0.3)}
HIGH_EPS = 0.5  # a uniform grey image is within 0.5 of every image in [0, 1]
BOUND_TOL = 1e-6
# SquareAttack queries per image. ART's L-inf Square predicts on the whole subset every iteration, so
# its cost is ~max_iter/40 PGD-40 runs; 300 queries keep a 1000-image MNIST check within minutes on a
# 2-core CPU. It is a check for gradient masking (does a gradient-free search beat PGD?), not a
# state-of-the-art bound: AutoAttack uses 5000 queries.
SQUARE_MAX_ITER = 300
SQUARE_P_INIT = 0.8  # ART's and the Square paper's default for L-inf
# The published attack (arXiv 2509.13353, authors' code): PGD eps 0.1, step 0.01, 10 steps on
# normalised inputs clamped to [0, 1]; every 5 epochs on the validation split.
PAPER_EPS, PAPER_STEP, PAPER_STEPS, PAPER_EVERY = 0.1, 0.01, 10, 5
PAPER_METRIC = names.robust_metric("pgd_paper", PAPER_EPS)  # robust_acc_pgd_paper_eps_0.1

TAG_MASKING = "possible_gradient_masking"
TAG_MASKING_REASON = "possible_gradient_masking.reason"
TAG_CHECK = "hqcbench.check."  # + check name: pass | fail | skipped: why
TAG_ATTACK_NOTE = "hqcbench.attack_note"
TAG_ATTACK_SETTINGS = "hqcbench.attack_settings"
SUMMARY_FILE = "robustness_summary.txt"
CURVE_FILE = "robustness_curve.png"
PAPER_SUMMARY_FILE = "robustness_pgd_paper.txt"


# ============================================================================ data and ART plumbing
@dataclass(frozen=True)
class AttackSet:
    """A fixed subset of one split: images in [0, 1] (float32, N C H W), labels, and a note if capped."""

    x: np.ndarray
    y: np.ndarray
    note: str = ""

    def __len__(self) -> int:
        return int(self.y.shape[0])


def attack_subset(data: ImageSet, count: int | None, split: str = "test") -> AttackSet:
    """``count`` images drawn with a constant seed (same for every seed and arm); None = all.

    A request larger than the split is capped at the split's size, with a note to log.
    """
    n = len(data) if count is None else min(count, len(data))
    note = ""
    if count is not None and count > len(data):
        note = f"attack_samples={count} capped at the {split} split's size ({len(data)} images)"
    gen = torch.Generator().manual_seed(ATTACK_SUBSET_SEED)
    index = torch.randperm(len(data), generator=gen)[:n].sort().values
    return AttackSet(to_float(data.images[index]).numpy(), data.labels[index].numpy(), note)


def attack_batch_size(x: np.ndarray) -> int:
    """Images per attack batch: big batches amortise ART's per-step overhead, bounded by activation
    memory (about 2**20 input values per batch: 1024 MNIST images, 37 STL-10 images)."""
    per_image = int(np.prod(x.shape[1:])) or 1
    return int(max(16, min(1024, 2 ** 20 // per_image)))


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], classes: int, device: torch.device):
    """ART's wrapper around the *whole* model (normalisation included), inputs clipped to [0, 1]."""
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=classes,
                             clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")


def pgd_step_size(eps: float, cfg: RunConfig) -> float:
    return cfg.pgd_step_size or eps / 10


def make_attack(name: str, classifier, eps: float, cfg: RunConfig, batch_size: int = 256):
    """An ART evasion attack under the L-inf norm.

    PGD defaults (``pgd_steps`` 40, step eps/10, ``pgd_restarts`` 1 random start): 40 steps of eps/10
    can travel 4 eps, so any point of the ball is reachable twice over and the last ~30 steps refine
    rather than travel (Madry et al. used 40 steps of 0.01 at eps 0.3 on MNIST, i.e. 1.3 eps); the
    random start avoids the zero-gradient point a saturated softmax can put at the clean image.
    """
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent, SquareAttack

    if name == "fgsm":
        return FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=batch_size)
    if name == "pgd":
        return ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=pgd_step_size(eps, cfg),
                                        max_iter=cfg.pgd_steps, num_random_init=cfg.pgd_restarts,
                                        batch_size=batch_size, verbose=False)
    if name == "square":
        return SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=SQUARE_MAX_ITER, p_init=SQUARE_P_INIT,
                            nb_restarts=1, batch_size=batch_size, verbose=False)
    raise ValueError(f"unknown attack {name!r}")


def attack_settings(cfg: RunConfig) -> str:
    step = f"{cfg.pgd_step_size:g}" if cfg.pgd_step_size else "eps/10"
    return (f"L-inf, pixel units; fgsm: one step of eps; pgd: {cfg.pgd_steps} steps of {step}, "
            f"{cfg.pgd_restarts} random start(s); square: {SQUARE_MAX_ITER} queries, p_init {SQUARE_P_INIT}; "
            f"pgd_paper: {PAPER_STEPS} steps of {PAPER_STEP:g} at eps {PAPER_EPS:g} in normalised space")


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """ART draws random starts and Square's squares from numpy's global RNG: seed it for
    reproducible numbers, and restore it so the attacks leave training's randomness untouched."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def predict_labels(classifier, x: np.ndarray, batch_size: int) -> np.ndarray:
    return classifier.predict(x, batch_size=batch_size).argmax(1)


# ============================================================================ checks
@dataclass
class BoundCheck:
    """Largest violation of ||x_adv - x||_inf <= eps and of x_adv in [0, 1] seen so far (pixel units)."""

    linf_excess: float = -np.inf  # max over examples of ||x_adv - x||_inf - eps
    range_excess: float = 0.0  # how far any value lies outside [0, 1]
    examples: int = 0

    @property
    def ok(self) -> bool:
        return self.linf_excess <= BOUND_TOL and self.range_excess <= BOUND_TOL

    def update(self, x: np.ndarray, x_adv: np.ndarray, eps: float) -> "BoundCheck":
        if len(x):
            diff = np.abs(x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1).max(1)
            self.linf_excess = max(self.linf_excess, float(diff.max()) - eps)
            below, above = -float(x_adv.min()), float(x_adv.max()) - 1.0
            self.range_excess = max(self.range_excess, below, above, 0.0)
            self.examples += len(x)
        return self

    def describe(self) -> str:
        return (f"max(||x_adv - x||inf - eps) = {self.linf_excess:.2e} (limit {BOUND_TOL:g}), "
                f"max distance outside [0,1] = {self.range_excess:.2e}, over {self.examples} examples")


def check_bounds(x: np.ndarray, x_adv: np.ndarray, eps: float) -> BoundCheck:
    """The perturbation-bound and range check on one batch of adversarial examples."""
    return BoundCheck().update(x, x_adv, eps)


def tolerance(n: int) -> float:
    """How much a weaker attack may "beat" a stronger one before we call it a failure: one
    percentage point or two images, whichever is larger (attacks are randomised and n is finite)."""
    return max(0.01, 2.0 / max(1, n))


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skipped
    detail: str
    masking: bool = False  # a failure here suggests gradient masking

    @property
    def failed(self) -> bool:
        return self.status == "fail"


# ============================================================================ per-model attacks
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
    paper: "PaperResult | None" = None
    seconds: float = 0.0


def _standalone(classifier, attack: str, data: AttackSet, eps: float, cfg: RunConfig, batch: int,
                bounds: BoundCheck) -> tuple[np.ndarray, np.ndarray, float]:
    """Attack every image of the subset at one eps: (adversarial examples, fooled mask, seconds)."""
    t0 = time.perf_counter()
    with seeded_numpy(ATTACK_RNG_SEED):
        x_adv = make_attack(attack, classifier, eps, cfg, batch).generate(data.x, data.y)
    seconds = time.perf_counter() - t0
    bounds.update(data.x, x_adv, eps)
    fooled = predict_labels(classifier, x_adv, batch) != data.y
    return x_adv, fooled, seconds


def robustness_sweep(classifier, attack: str, data: AttackSet, points: Sequence[float], done: dict[float, np.ndarray],
                     clean_wrong: np.ndarray, cfg: RunConfig, batch: int, bounds: BoundCheck) -> dict[float, float]:
    """Robust accuracy at increasing eps, attacking only images not yet broken.

    An adversarial example found within a smaller ball is inside every larger one, so an image broken
    at eps stays broken at every larger eps; each point is the worst case over the attack run at that
    eps and every smaller one (the curve never rises). This makes the curve cost about two attacks of
    the whole subset instead of one per point. ``done``: eps -> fooled mask of runs already made on
    the whole subset (the user's eps), reused instead of re-run.
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
    return curve


def attack_model(model: nn.Module, arm: str, data: AttackSet, input_shape: tuple[int, ...], classes: int,
                 cfg: RunConfig, device: torch.device) -> ModelResult:
    """Clean accuracy, every requested attack at every requested eps, and the curves (with the
    eps-0.5 check point) on one model."""
    t_start = time.perf_counter()
    classifier = art_classifier(model, input_shape, classes, device)
    batch = attack_batch_size(data.x)
    result = ModelResult(arm, len(data), classes)
    clean_wrong = predict_labels(classifier, data.x, batch) != data.y
    result.clean_acc = 1.0 - float(clean_wrong.mean())
    attacks = cfg.attack_list
    for attack in (a for a in ("fgsm", "pgd", "square") if a in attacks):
        fooled_at: dict[float, np.ndarray] = {}
        result.times[attack] = 0.0
        for eps in cfg.eps_list:
            x_adv, fooled, seconds = _standalone(classifier, attack, data, eps, cfg, batch, result.bounds)
            fooled_at[eps] = fooled
            result.times[attack] += seconds
            # an image the model already gets wrong stays wrong: robust accuracy counts it as broken
            result.robust.setdefault(attack, {})[eps] = 1.0 - float((fooled | clean_wrong).mean())
            if attack == "pgd":
                result.adversarial[eps] = x_adv
        if attack in WHITE_BOX:
            t0 = time.perf_counter()
            points = [*CURVE_GRID[attack], *cfg.eps_list, HIGH_EPS]
            result.curves[attack] = robustness_sweep(classifier, attack, data, points, fooled_at, clean_wrong,
                                                     cfg, batch, result.bounds)
            result.curve_times[attack] = time.perf_counter() - t0
    result.seconds = time.perf_counter() - t_start
    return result


def run_transfer(results: dict[str, ModelResult], models: dict[str, nn.Module], data: AttackSet,
                 input_shape: tuple[int, ...], device: torch.device) -> None:
    """PGD examples crafted on cnn, applied to every other arm, and each other arm's applied to cnn.

    A model whose own white-box PGD is beaten by examples crafted on a different model is hiding its
    gradients (Athalye et al. 2018): transfer is a black-box attack and should be the weaker one.
    """
    if "cnn" not in results or "cnn" not in models:
        return
    batch = attack_batch_size(data.x)
    pairs = [("cnn", arm) for arm in results if arm != "cnn"] + [(arm, "cnn") for arm in results if arm != "cnn"]
    for source, target in pairs:
        target_clf = art_classifier(models[target], input_shape, results[target].classes, device)
        for eps, x_adv in results[source].adversarial.items():
            acc = float((predict_labels(target_clf, x_adv, batch) == data.y).mean())
            results[target].transfer[(source, eps)] = acc


def run_checks(result: ModelResult) -> list[Check]:
    """The checks against fake robustness, in the order of the module docstring."""
    tol = tolerance(result.n)
    checks: list[Check] = []
    if result.bounds.examples:
        checks.append(Check("bounds", "pass" if result.bounds.ok else "fail", result.bounds.describe()))
    else:
        checks.append(Check("bounds", "skipped", "no pixel-space attack was run"))
    pgd, fgsm = result.robust.get("pgd", {}), result.robust.get("fgsm", {})
    if pgd and fgsm:
        worse = [eps for eps in pgd if eps in fgsm and pgd[eps] > fgsm[eps] + tol]
        detail = ", ".join(f"eps {e:g}: pgd {pgd[e]:.4f} vs fgsm {fgsm[e]:.4f}" for e in sorted(pgd) if e in fgsm)
        checks.append(Check("pgd_le_fgsm", "fail" if worse else "pass",
                            f"{detail} (tolerance {tol:.4f})", masking=True))
    else:
        checks.append(Check("pgd_le_fgsm", "skipped", "needs both fgsm and pgd"))
    high = {a: c[HIGH_EPS] for a, c in result.curves.items() if HIGH_EPS in c}
    if high:
        best = min(high.values())
        chance = 1.0 / result.classes
        detail = ", ".join(f"{a} {v:.4f}" for a, v in high.items()) + f" (must be <= chance {chance:.4f})"
        checks.append(Check("high_eps", "pass" if best <= chance else "fail",
                            f"eps {HIGH_EPS:g}: {detail}", masking=True))
    else:
        checks.append(Check("high_eps", "skipped", "needs fgsm or pgd"))
    if pgd and result.transfer:
        beaten = [(s, e, a) for (s, e), a in result.transfer.items() if e in pgd and a < pgd[e] - tol]
        detail = ", ".join(f"from {s} eps {e:g}: {a:.4f} vs own pgd {pgd[e]:.4f}"
                           for (s, e), a in sorted(result.transfer.items()))
        checks.append(Check("transfer", "fail" if beaten else "pass", f"{detail} (tolerance {tol:.4f})",
                            masking=True))
    else:
        checks.append(Check("transfer", "skipped", "needs pgd and the cnn arm beside another arm"))
    square = result.robust.get("square", {})
    if square and pgd:
        beaten_eps = [e for e in square if e in pgd and square[e] < pgd[e] - tol]
        detail = ", ".join(f"eps {e:g}: square {square[e]:.4f} vs pgd {pgd[e]:.4f}" for e in sorted(square) if e in pgd)
        checks.append(Check("square", "fail" if beaten_eps else "pass", f"{detail} (tolerance {tol:.4f})",
                            masking=True))
    else:
        checks.append(Check("square", "skipped", "needs square and pgd in attacks"))
    return checks


def masking_reasons(checks: Sequence[Check]) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in checks if c.masking and c.failed]


# ============================================================================ the published attack
@dataclass
class PaperResult:
    acc: float
    clamp_only_acc: float  # accuracy on the clamped, unattacked inputs: what the clamp alone costs
    pixel_linf_mean: float  # the perturbation actually applied, in pixel units
    pixel_linf_max: float
    n: int
    seconds: float


def paper_attack(model: nn.Module, data: AttackSet, device: torch.device, seed: int = ATTACK_RNG_SEED) -> PaperResult:
    """The published procedure, kept to reproduce its number: PGD eps 0.1, step 0.01, 10 steps, one
    uniform random start, run on ``model.body`` (no normalisation) against *normalised* inputs, every
    iterate clamped to [0, 1] in that normalised space.

    Hand-written on purpose: ART projects after clipping, so its PGD never returns the clamped tensor
    the published attack produced, and torchattacks (whose PGD clamps exactly like this) pins
    requests~=2.25, which conflicts with mlflow. The 10-line loop below is that library's PGD.
    """
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    normalize, body = model.normalize, model.body
    gen = torch.Generator().manual_seed(seed)
    batch = attack_batch_size(data.x)
    correct = clamp_correct = 0
    linf: list[torch.Tensor] = []
    try:
        for start in range(0, len(data), batch):
            x = torch.from_numpy(data.x[start:start + batch]).to(device)
            y = torch.from_numpy(data.y[start:start + batch]).to(device)
            with torch.no_grad():
                xn = normalize(x)
                clamp_correct += int((body(xn.clamp(0, 1)).argmax(1) == y).sum())
            noise = (torch.rand(xn.shape, generator=gen) * 2 - 1).to(device) * PAPER_EPS
            adv = (xn + noise).clamp(0, 1)
            for _ in range(PAPER_STEPS):
                adv.requires_grad_(True)
                loss = nn.functional.cross_entropy(body(adv), y)
                grad, = torch.autograd.grad(loss, adv)
                adv = adv.detach() + PAPER_STEP * grad.sign()
                delta = (adv - xn).clamp(-PAPER_EPS, PAPER_EPS)
                adv = (xn + delta).clamp(0, 1).detach()
            with torch.no_grad():
                correct += int((body(adv).argmax(1) == y).sum())
                pixels = adv * normalize.std + normalize.mean  # what the attacked image is in pixel units
                linf.append((pixels - x).abs().flatten(1).max(1).values.cpu())
    finally:
        model.train(was_training)
    n = max(1, len(data))
    dist = torch.cat(linf) if linf else torch.zeros(1)
    return PaperResult(correct / n, clamp_correct / n, float(dist.mean()), float(dist.max()), len(data),
                       time.perf_counter() - t0)


def paper_findings(result: PaperResult, step: int | None = None) -> Findings:
    """Metrics of one paper-mode evaluation; ``step`` = epoch when run during training."""
    found = Findings()
    values = {PAPER_METRIC: result.acc, "pgd_paper_clamp_only_acc": result.clamp_only_acc,
              "pgd_paper_pixel_linf_mean": result.pixel_linf_mean, "pgd_paper_pixel_linf_max": result.pixel_linf_max,
              names.attack_time_metric("pgd_paper"): result.seconds}
    if step is None:
        found.metrics.update(values)
    else:
        found.stepped.extend((name, value, step) for name, value in values.items())
    found.summary.append(
        f"pgd_paper (published procedure, {result.n} validation images{'' if step is None else f', epoch {step}'}): "
        f"robust acc {result.acc:.4f} at a claimed eps {PAPER_EPS:g}; the perturbation actually applied is "
        f"{result.pixel_linf_mean:.3f} mean / {result.pixel_linf_max:.3f} max in pixel units "
        f"(clamping alone leaves accuracy {result.clamp_only_acc:.4f})")
    return found


# ============================================================================ findings
def curve_figure(result: ModelResult, title: str):
    from hqcbench.tracking.figures import plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for attack, curve in result.curves.items():
        points = sorted((e, a) for e, a in curve.items() if e != HIGH_EPS)
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=attack)
        if HIGH_EPS in curve:
            ax.plot([HIGH_EPS], [curve[HIGH_EPS]], "x", color=line.get_color(),
                    label=f"{attack}, eps {HIGH_EPS:g} check")
    for eps, acc in sorted(result.robust.get("square", {}).items()):
        ax.plot([eps], [acc], "s", color="black", label="square" if eps == min(result.robust["square"]) else None)
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
    high = [c[HIGH_EPS] for c in result.curves.values() if HIGH_EPS in c]
    if high:
        m["check_high_eps_robust_acc"] = min(high)
    if result.bounds.examples:
        m["check_linf_excess_max"] = result.bounds.linf_excess
        m["check_range_excess_max"] = result.bounds.range_excess
    for check in checks:
        found.tags[TAG_CHECK + check.name] = check.status if check.status != "skipped" else f"skipped: {check.detail}"
        if check.status != "skipped":
            m[f"check_{check.name}_pass"] = 0.0 if check.failed else 1.0
    reasons = masking_reasons(checks)
    found.tags[TAG_MASKING] = "true" if reasons else "false"
    m[TAG_MASKING] = 1.0 if reasons else 0.0
    if reasons:
        found.tags[TAG_MASKING_REASON] = "; ".join(reasons)[:5000]
    found.tags[TAG_ATTACK_SETTINGS] = attack_settings(cfg)
    if data.note:
        found.tags[TAG_ATTACK_NOTE] = data.note
    m["robustness_time_s"] = result.seconds
    if result.curves or result.robust:
        found.figures[CURVE_FILE] = curve_figure(result, title)
    found.summary.extend(summary_lines(result, checks, cfg, data))
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
    lines.append("checks:")
    for check in checks:
        lines.append(f"  {check.name}: {check.status.upper()} - {check.detail}")
    reasons = masking_reasons(checks)
    lines.append(f"{TAG_MASKING}: {'true (' + '; '.join(reasons) + ')' if reasons else 'false'}")
    if any(c.name == "bounds" and c.failed for c in checks):
        lines.append("WARNING: adversarial examples violate the eps bound or [0,1]: "
                     "the robust accuracies above are invalid")
    return lines


# ============================================================================ entry points (runner)
def _input_shape(splits: Splits) -> tuple[int, int, int]:
    spec = splits.spec
    return (spec.channels, spec.size, spec.size)


def run_all(trained, splits: Splits, cfg: RunConfig, device: torch.device) -> dict[str, Findings]:
    """Attack every trained arm of one seed on the same fixed test subset; transfer between arms;
    run the checks. ``trained``: objects with ``.arm`` and ``.model`` (runner.TrainedArm)."""
    attacks = cfg.attack_list
    if not attacks:
        return {}
    models = {item.arm: item.model for item in trained}
    shape = _input_shape(splits)
    results: dict[str, ModelResult] = {}
    pixel_attacks = [a for a in attacks if a != "pgd_paper"]
    data = attack_subset(splits.test, cfg.attack_sample_count)
    if data.note and pixel_attacks:
        log.warning("robustness: %s", data.note)
    for arm, model in models.items():
        if pixel_attacks:
            results[arm] = attack_model(model, arm, data, shape, splits.spec.classes, cfg, device)
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
        if found.tags.get(TAG_MASKING) == "true":
            log.warning("robustness: %s flagged possible_gradient_masking: %s", arm, found.tags[TAG_MASKING_REASON])
    return out


def paper_epochs(epochs: int) -> list[int]:
    """Epochs at which the paper protocol runs the published attack: every 5th, and the last one (so a
    shortened run still gets a figure)."""
    return sorted({e for e in range(PAPER_EVERY, epochs + 1, PAPER_EVERY)} | {epochs})


def make_epoch_hook(cfg: RunConfig, splits: Splits, device: torch.device) -> Callable[[int, nn.Module], Findings]:
    """Under protocol=paper with ``pgd_paper`` in attacks: the published attack on the validation
    split every 5 epochs (step = epoch), as the authors did; otherwise a no-op."""
    active = cfg.protocol == "paper" and "pgd_paper" in cfg.attack_list
    due = set(paper_epochs(cfg.epochs)) if active else set()
    cache: dict[str, AttackSet] = {}
    lines: list[str] = []

    def hook(epoch: int, model: nn.Module) -> Findings:
        if epoch not in due:
            return Findings()
        if "val" not in cache:
            cache["val"] = attack_subset(splits.val, cfg.attack_sample_count, split="validation")
        found = paper_findings(paper_attack(model, cache["val"], device), step=epoch)
        if cache["val"].note:
            found.tags[TAG_ATTACK_NOTE] = cache["val"].note
        lines.extend(found.summary)
        found.texts[PAPER_SUMMARY_FILE] = "\n".join(lines) + "\n"  # rewritten with every evaluation so far
        return found

    return hook
