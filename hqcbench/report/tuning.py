"""The tuned protocol's budget in the report: every arm's study, its search space and its best configuration.

A "tuned" column is only as fair as its tuning: a referee asks whether every arm got the same number of
trials over the same search of what the arms share. The studies live in the campaign's ``optuna.db``
(``jobs.campaign_tuning``); this module reads them (never writes) and turns them into a table, a
figure of the best validation accuracy so far against the trial number, and ``tuning.csv``.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hqcbench import names
from hqcbench.report.labels import arm_label
from hqcbench.report.plots import save  # also selects the headless backend

SEARCHED = (  # (setting keys, label, log scale): the order the table prints the space in
    (("width_min", "width_max"), "width", True),
    (("lr_min", "lr_max"), "lr", True),
    (("qubits_min", "qubits_max"), "n_qubits", False),
    (("depth_min", "depth_max"), "depth", False),
)


@dataclass(frozen=True)
class StudySummary:
    """One arm's study: budget spent, the space searched, the best trial."""

    name: str
    arm: str
    dataset: str
    epochs: int
    complete: int
    pruned: int
    failed: int
    space: str
    best_value: float | None
    best_params: dict
    best_so_far: list[float]  # best validation accuracy after each finished trial, in trial order

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def describe_space(settings: dict) -> str:
    """'width 4-32 (log), lr 0.0001-0.01 (log), ...' from the settings the study was created with."""
    parts = []
    for (low, high), label, log in SEARCHED:
        if low in settings and high in settings:
            parts.append(f"{label} {settings[low]:g}-{settings[high]:g}{' (log)' if log else ''}")
    for key, label in (("encodings", "encoding"), ("ansatzes", "ansatz")):
        if key in settings:
            parts.append(f"{label} {{{', '.join(settings[key])}}}")
    return ", ".join(parts)


def _complete_value(trial: FrozenTrial) -> float:
    """The objective value of a complete trial (a study here has one objective)."""
    assert trial.value is not None  # Optuna stores the value of every complete single-objective trial
    return trial.value


def load_studies(storage_file: Path) -> list[StudySummary]:
    """Every hqcbench study in ``storage_file`` (an Optuna SQLite file), in name order; [] without one."""
    if not Path(storage_file).is_file():
        return []
    url = f"sqlite:///{Path(storage_file).resolve()}"
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for frozen in sorted(optuna.get_all_study_summaries(url, include_best_trial=False), key=lambda s: s.study_name):
            study = optuna.load_study(study_name=frozen.study_name, storage=url)
            settings = study.user_attrs.get(names.STUDY_SETTINGS_ATTR)
            if settings is None:
                continue
            trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            state = [t.state for t in trials]
            best, best_so_far = None, []
            for t in trials:
                if t.state == TrialState.COMPLETE and t.value is not None:
                    best = t.value if best is None else max(best, t.value)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                    best_so_far.append(np.nan if best is None else best)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            top = max(complete, key=_complete_value) if complete else None
            out.append(StudySummary(study.study_name, str(settings.get("arms", "")), str(settings.get("dataset", "")),
                                    int(settings.get("epochs", 0)), state.count(TrialState.COMPLETE),
                                    state.count(TrialState.PRUNED), state.count(TrialState.FAIL),
                                    describe_space(settings), top.value if top else None,
                                    dict(top.params) if top else {}, best_so_far))
    return out


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(params.items()))


def budget_line(studies: list[StudySummary]) -> str:
    """One sentence: equal budgets or not, per dataset."""
    lines = []
    for dataset in sorted({s.dataset for s in studies}):
        group = [s for s in studies if s.dataset == dataset]
        counts = sorted({s.finished for s in group})
        epochs = sorted({s.epochs for s in group})
        equal = "the same budget for every arm" if len(counts) == 1 else "UNEQUAL budgets"
        lines.append(f"{dataset}: {', '.join(map(str, counts))} trials per arm ({equal}), "
                     f"{', '.join(map(str, epochs))} epochs per trial, {len(group)} arms")
    return "; ".join(lines)


def table(studies: list[StudySummary]) -> tuple[list[str], list[list[str]]]:
    """One row per study, by arm (plain names; the Optuna study names are in tuning.csv)."""
    header = ["arm", "trials (complete / pruned / failed)", "search space", "best val acc (%)",
              "best configuration (retrained with every seed)"]
    rows = [[arm_label(s.arm), f"{s.finished} ({s.complete} / {s.pruned} / {s.failed})", s.space or "(none)",
             "n/a" if s.best_value is None else f"{100 * s.best_value:.2f}", _fmt_params(s.best_params)]
            for s in studies]
    return header, rows


def records(studies: list[StudySummary]) -> pd.DataFrame:
    """tuning.csv: one row per study."""
    return pd.DataFrame([{"study": s.name, "dataset": s.dataset, "arm": s.arm, "epochs_per_trial": s.epochs,
                          "trials": s.finished, "complete": s.complete, "pruned": s.pruned, "failed": s.failed,
                          "search_space": s.space, "best_val_acc": s.best_value,
                          "best_params": json.dumps(s.best_params, sort_keys=True)} for s in studies])


def history_figure(studies: list[StudySummary], out_dir: Path) -> list[tuple[str, str]]:
    """Best validation accuracy so far against the trial number, one panel per dataset, one line per arm."""
    files = []
    for dataset in sorted({s.dataset for s in studies}):
        group = [s for s in studies if s.dataset == dataset and s.best_so_far]
        if not group:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for s in group:
            ax.plot(np.arange(1, len(s.best_so_far) + 1), 100 * np.asarray(s.best_so_far), marker=".",
                    label=arm_label(s.arm))
        ax.set_xlabel("trial (finished, in order)")
        ax.set_ylabel("best validation accuracy so far (%)")
        ax.set_title(f"Tuning, {dataset}: equal trial budgets per arm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"tuning_{dataset}.png"
        save(fig, out_dir / name)
        files.append((name, f"Tuning history, {dataset}: best validation accuracy so far per arm"))
    return files
