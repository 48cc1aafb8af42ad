"""hqcbench: do hybrid quantum-classical image classifiers beat comparable classical CNNs?

``hqcbench.benchmark(arms=[...], dataset=..., seeds=[...], **run_fields)`` runs the main job from Python
(``hqcbench.api``); it is imported on first use, so ``import hqcbench`` stays light.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "benchmark"]


def __getattr__(name: str) -> Any:
    if name == "benchmark":
        from hqcbench.api import benchmark  # torch and MLflow load only when a benchmark is asked for
        return benchmark
    raise AttributeError(f"module 'hqcbench' has no attribute {name!r}")
