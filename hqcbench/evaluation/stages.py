"""A progress bar over the stages of one model's attack evaluation.

Why: at 16 qubits PGD-40 on 1000 images takes minutes per eps, and the whole robustness evaluation
of one model (FGSM and PGD at the user's eps, their curves, the gradient diagnostic) ran for over ten
minutes without a line of output. The bar names the stage running now (e.g. ``pgd eps=0.1 (1000
images)``) and counts the stages done out of the planned ones, which ``planned_stages`` lists from the
config alone, so the total is known before the first attack starts.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from tqdm.auto import tqdm

from hqcbench.config import RunConfig

WHITE_BOX = ("fgsm", "pgd")  # attacks with a robustness curve (eps sweep) after their run at the user's eps
STANDALONE = ("fgsm", "pgd", "square", "autoattack")  # run on every subset image at every eps
GRADIENT = ("fgsm", "pgd", "autoattack", "bpda", "pgd_convergence")  # any of them: the gradient diagnostic runs


def planned_stages(cfg: RunConfig) -> list[str]:
    """The stage names ``robustness.attack_model`` passes through for ``cfg``, in order."""
    attacks = cfg.attack_list
    stages = []
    for attack in (a for a in STANDALONE if a in attacks):
        stages += [f"{attack} eps={eps:g}" for eps in cfg.eps_list]
        if attack in WHITE_BOX:
            stages.append(f"{attack} curve")
    if "bpda" in attacks or "autoattack" in attacks:
        stages.append("bpda")
    if "pgd_convergence" in attacks:
        stages.append("pgd_convergence")
    if any(a in attacks for a in GRADIENT):
        stages.append("zero_grad")
    return stages


class StageBar:
    """``with bar.stage(name):`` shows ``name`` while it runs, then counts it done. Silent when disabled
    (campaign workers write logs, not terminals); ``done`` keeps the names in order either way."""

    def __init__(self, stages: list[str], desc: str, enabled: bool) -> None:
        self.done: list[str] = []
        self._bar = tqdm(total=len(stages), desc=desc, unit="stage", leave=False, disable=not enabled)

    @contextlib.contextmanager
    def stage(self, name: str, images: int | None = None) -> Iterator[None]:
        self._bar.set_postfix_str(name + (f" ({images} images)" if images is not None else ""))
        yield
        self.done.append(name)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
