"""``hqcbench.benchmark(...)``: the main job from Python, for notebooks.

Why a module of its own: a notebook wants a table back, not a process exit code. This runs exactly the
code path of ``python -m hqcbench run`` (validation, one parent run with a child per arm and seed, the
same attacks, resources and MLflow names), then returns one row per (arm, seed) with the final metrics
each child logged, and the parent run's id (its row carries the paired differences).
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from hqcbench.config import RunConfig
from hqcbench.jobs.run import parent_of, run_main


def _csv(value: str | Iterable[Any]) -> str:
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


def benchmark(arms: str | Iterable[str] = ("cnn", "hybrid", "control"), dataset: str = "digits",
              seeds: str | Iterable[int] = (0,), progress: bool = True, **run_fields: Any) -> tuple[pd.DataFrame, str]:
    """Train and evaluate ``arms`` on ``dataset`` for each seed, as the main job does; returns
    (one row per (arm, seed): arm, seed, run_id and every final metric, the parent run id).

    ``run_fields`` are the main job's parameters (``epochs=2``, ``attacks="fgsm"``, ...; README,
    "Parameters of main"); a bad one raises ``UserInputError`` naming it and what it accepts. Arms may be
    user models (``"my_models:tiny_qnn"``, ``"twin:my_models:tiny_qnn"``; docs/byo.md)."""
    fields = {"arms": _csv(arms), "dataset": dataset, "seeds": _csv(seeds), **run_fields}
    cfg = RunConfig.from_strings({k: str(v) for k, v in fields.items()})
    trained = run_main(cfg, progress=progress)
    rows = [{"arm": item.arm, "seed": item.seed, "run_id": item.run_id, **item.metrics} for item in trained]
    return pd.DataFrame(rows), parent_of(trained)[1]
