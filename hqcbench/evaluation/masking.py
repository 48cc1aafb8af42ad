"""Checks against fake robustness: does the attack behind a robust-accuracy number work?

A robust accuracy is only trustworthy if the attack worked, so every attacked model is checked:
  bounds      every adversarial example is within eps (+1e-6) of its image and inside [0, 1]
  pgd_le_fgsm PGD (iterative) is at least as strong as FGSM (one step), up to a small tolerance
  high_eps    at eps 0.5 any image can be moved to uniform grey, so a working attack leaves no more
              than chance accuracy
  transfer    examples crafted on the cnn arm, applied to the others (and the reverse), must not beat
              the target's own white-box PGD
  square      the gradient-free SquareAttack (when run) must not beat white-box PGD; with ``autoattack``
              and no standalone ``square``, AutoAttack's own Square (5000 queries) must not break more
              than the tolerance's share of the images all three APGD variants left: a gradient-free
              search succeeding where every gradient attack failed is the same evidence per image, at
              a fraction of the cost (Square runs only on APGD's survivors)
  zero_grad   the input gradient (of the logit margin) must not vanish on more than the tolerance's
              share of the correctly classified images, at the clean image or at PGD's random start
  bpda        PGD through a smooth surrogate of the saturating maps (``evaluation.bpda``) must not
              beat PGD through the model's own gradient
  converged   (``pgd_convergence``) PGD's robust accuracy must not keep falling when the steps
              (100 -> 200) or the random restarts (5 -> 10) double
A failed pgd_le_fgsm, high_eps, transfer, square, zero_grad, bpda or converged check means gradients
mislead the attack (Athalye et al. 2018; Carlini et al. 2019): the run is tagged
``possible_gradient_masking=true`` with the reason. A failed bounds check means the attack itself is
broken (its numbers are invalid).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

HIGH_EPS = 0.5  # a uniform grey image is within 0.5 of every image in [0, 1]
BOUND_TOL = 1e-6


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
class ZeroGrad:
    """The gradient diagnostic on one model: correctly classified images whose input gradient vanishes."""

    vanishing: int
    checked: int  # correctly classified images of the attacked subset
    eps: float  # the ball PGD's random start was drawn from

    @property
    def fraction(self) -> float:
        return self.vanishing / self.checked if self.checked else 0.0


@dataclass
class Convergence:
    """PGD's robust accuracy against its budget on the first ``n`` images of the attacked subset."""

    eps: float
    n: int
    steps: dict[int, float] = field(default_factory=dict)  # PGD iterations -> robust acc (1 restart)
    restarts: dict[int, float] = field(default_factory=dict)  # restarts -> robust acc (cumulative, pgd_steps)
    seconds: float = 0.0


def _doubling_drops(curve: dict[int, float], tol: float) -> list[str]:
    """The largest budget b of ``curve`` whose double 2b is in it too, if the robust accuracy falls by
    more than ``tol`` from b to 2b. Only the top of the grid counts: falling from 10 to 20 steps is
    how PGD works; still falling from 100 to 200 is an attack stopped too early."""
    pairs = [b for b in sorted(curve) if 2 * b in curve]
    if not pairs:
        return []
    b = pairs[-1]
    return [f"{b} -> {2 * b}: {curve[b]:.4f} -> {curve[2 * b]:.4f}"] if curve[2 * b] < curve[b] - tol else []


@dataclass
class Check:
    name: str
    status: str  # pass | fail | skipped
    detail: str
    masking: bool = False  # a failure here suggests gradient masking

    @property
    def failed(self) -> bool:
        return self.status == "fail"


class AttackOutcome(Protocol):
    """What the checks read from one model's attack results (``robustness.ModelResult``)."""

    n: int
    classes: int
    robust: dict[str, dict[float, float]]
    curves: dict[str, dict[float, float]]
    transfer: dict[tuple[str, float], float]
    bounds: BoundCheck
    zero_grad: ZeroGrad | None
    bpda_surrogates: list[str] | None  # None: BPDA not requested; []: nothing in the model to replace
    convergence: Convergence | None
    autoattack_first: dict[float, dict[str, np.ndarray]]  # eps -> member -> images it broke first


def run_checks(result: AttackOutcome) -> list[Check]:
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
    checks.append(_square_check(result, pgd, tol))
    checks.append(_zero_grad_check(result))
    checks.append(_bpda_check(result, pgd, tol))
    checks.append(_converged_check(result))
    return checks


def _square_check(result: AttackOutcome, pgd: dict[float, float], tol: float) -> Check:
    """Standalone Square against PGD when Square was run; otherwise AutoAttack's Square member against
    the APGD variants it followed (see the module docstring)."""
    square = result.robust.get("square", {})
    if square and pgd:
        beaten_eps = [e for e in square if e in pgd and square[e] < pgd[e] - tol]
        detail = ", ".join(f"eps {e:g}: square {square[e]:.4f} vs pgd {pgd[e]:.4f}" for e in sorted(square) if e in pgd)
        return Check("square", "fail" if beaten_eps else "pass", f"{detail} (tolerance {tol:.4f})", masking=True)
    inside = {e: members["square"] for e, members in getattr(result, "autoattack_first", {}).items()
              if "square" in members}
    if inside:
        failed = [e for e, mask in inside.items() if mask.mean() > tol]
        detail = ", ".join(f"eps {e:g}: {int(mask.sum())} of {result.n} images ({mask.mean():.4f})"
                           for e, mask in sorted(inside.items()))
        return Check("square", "fail" if failed else "pass",
                     f"AutoAttack's Square broke after every APGD variant failed: {detail} (tolerance {tol:.4f})",
                     masking=True)
    return Check("square", "skipped", "needs square and pgd, or autoattack, in attacks")


def _zero_grad_check(result: AttackOutcome) -> Check:
    """Fails when more than the tolerance's share of the correctly classified images has a gradient
    that is numerically zero (see ``worst_case.gradient_diagnostic``)."""
    zero = getattr(result, "zero_grad", None)
    if zero is None or not zero.checked:
        return Check("zero_grad", "skipped", "needs a gradient attack and a correctly classified image")
    limit = tolerance(zero.checked)
    return Check("zero_grad", "fail" if zero.fraction > limit else "pass",
                 f"{zero.vanishing} of {zero.checked} correctly classified images ({zero.fraction:.4f}) have a "
                 f"vanishing input gradient at the image or at a random start in eps {zero.eps:g} "
                 f"(limit {limit:.4f})", masking=True)


def _bpda_check(result: AttackOutcome, pgd: dict[float, float], tol: float) -> Check:
    surrogates = getattr(result, "bpda_surrogates", None)
    bpda = result.robust.get("bpda", {})
    if surrogates is None:
        return Check("bpda", "skipped", "needs bpda or autoattack in attacks")
    if not surrogates:
        return Check("bpda", "skipped", "no saturating map (Softmax, tanh, angle encoding) to replace")
    if not (bpda and pgd):
        return Check("bpda", "skipped", "needs pgd in attacks")
    beaten = [e for e in bpda if e in pgd and bpda[e] < pgd[e] - tol]
    detail = ", ".join(f"eps {e:g}: bpda {bpda[e]:.4f} vs pgd {pgd[e]:.4f}" for e in sorted(bpda) if e in pgd)
    return Check("bpda", "fail" if beaten else "pass", f"{detail} (tolerance {tol:.4f})", masking=True)


def _converged_check(result: AttackOutcome) -> Check:
    """PGD has converged when doubling its steps or restarts no longer lowers robust accuracy by more
    than the tolerance (1 pp or 2 images of the convergence subset): the default budget's number is
    then not an artefact of stopping early."""
    conv = getattr(result, "convergence", None)
    if conv is None:
        return Check("converged", "skipped", "needs pgd_convergence in attacks")
    tol = tolerance(conv.n)
    drops = [f"steps {d}" for d in _doubling_drops(conv.steps, tol)]
    drops += [f"restarts {d}" for d in _doubling_drops(conv.restarts, tol)]
    curves = (", ".join(f"{k}: {v:.4f}" for k, v in sorted(conv.steps.items())) + "; restarts "
              + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(conv.restarts.items())))
    detail = (f"eps {conv.eps:g}, {conv.n} images, steps {curves}"
              + (f"; still falling at {', '.join(drops)}" if drops else "") + f" (tolerance {tol:.4f})")
    return Check("converged", "fail" if drops else "pass", detail, masking=True)


def masking_reasons(checks: Sequence[Check]) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in checks if c.masking and c.failed]
