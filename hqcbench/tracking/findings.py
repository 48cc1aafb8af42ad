"""What an evaluation step hands over for logging on a child run (metrics, tags, figures, texts)."""
from __future__ import annotations

from typing import Any

import mlflow

from hqcbench.tracking.figures import close, log_png


class Findings:
    """What an evaluation step (attacks, shots, hardware cost, ...) wants logged on a child run.

    Modules that compute results return one of these instead of calling MLflow themselves, so the
    naming and logging stay in one place and the computations stay testable without a tracking store.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.stepped: list[tuple[str, float, int]] = []  # (name, value, step)
        self.tags: dict[str, str] = {}
        self.figures: dict[str, Any] = {}  # artifact file name (.png) -> matplotlib figure
        self.texts: dict[str, str] = {}  # artifact file name -> text
        self.summary: list[str] = []  # human-readable lines for the run summary

    def merge(self, other: "Findings") -> "Findings":
        self.metrics.update(other.metrics)
        self.stepped.extend(other.stepped)
        self.tags.update(other.tags)
        self.figures.update(other.figures)
        self.texts.update(other.texts)
        self.summary.extend(other.summary)
        return self

    def log(self) -> None:
        """Log everything on the active run."""
        if self.metrics:
            mlflow.log_metrics(self.metrics)
        for name, value, step in self.stepped:
            mlflow.log_metric(name, value, step=step)
        if self.tags:
            mlflow.set_tags(self.tags)
        for file_name, fig in self.figures.items():
            log_png(fig, file_name)
            close(fig)
        for file_name, text in self.texts.items():
            mlflow.log_text(text, file_name)
