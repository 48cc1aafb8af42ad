"""A progress bar over the stages of one model's attack evaluation.

Why: at 16 qubits PGD-40 on 1000 images takes minutes per eps, and the whole robustness evaluation
of one model (FGSM and PGD at the user's eps, their curves, the gradient diagnostic) ran for over ten
minutes without a line of output. The bar names the stage running now (e.g. ``pgd eps=0.1 (1000
images)``) and counts the stages done out of the planned ones, which ``planned_stages`` lists from the
config alone (``attack_table.planned_stages``), so the total is known before the first attack starts.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from tqdm.auto import tqdm


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
