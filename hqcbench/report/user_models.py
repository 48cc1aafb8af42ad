"""The report's section "Your models against their classical twins": every user circuit arm of a run against
every classical arm of the same run and against its twin.

Why a section of its own: the published claims (claims.py) concern the published models; a researcher who
brings a model asks the same question of it. For each user arm with a quantum submodule (``params_quantum``
> 0 in its runs) the section compares, over the same seeds: the classical arms of the run (the built-in
cnn and control, and the user's own models without a quantum submodule) and, where they ran, its classical
twin (``twin:<arm>``: every quantum submodule swapped for Linear + tanh of the same widths) and its frozen
variant. Accuracy and robustness use the rules of "What the circuit contributes" (contribution.py): the
same metrics, the same paired t-intervals, the same answers, so a user arm is judged as the built-in
hybrid is.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hqcbench import arms as arm_registry
from hqcbench.report.claims import DATASET_LABELS
from hqcbench.report.contribution import QUANTITIES, accuracy_metric, difference, difference_cell
from hqcbench.report.document import Document, Inline
from hqcbench.report.formatting import fmt_claim_interval
from hqcbench.report.labels import arm_label, metric_label
from hqcbench.report.load import RunSet
from hqcbench.report.sources import Sources
from hqcbench.report.stats import seeds_of

USER_MODELS_CSV = "user_models.csv"


def _is_user(arm: str) -> bool:
    try:
        return arm_registry.get(arm).is_user
    except KeyError:
        return False


def _has_circuit(runset: RunSet, dataset: str, protocol: str, arm: str) -> bool:
    runs = runset.arm_runs(dataset, protocol, arm)
    return "params_quantum" in runs and bool((runs.params_quantum.fillna(0) > 0).any())


def user_circuit_arms(runset: RunSet, dataset: str, protocol: str) -> list[str]:
    """User arms with a quantum submodule in this group, not the twins or frozen variants themselves."""
    return [a for a in runset.arms(dataset, protocol) if _is_user(a) and not arm_registry.parse(a)[0]
            and _has_circuit(runset, dataset, protocol, a)]


def compared_with(runset: RunSet, dataset: str, protocol: str, arm: str) -> list[tuple[str, str]]:
    """(other arm, why it is compared): the classical arms of the run, then the twin and the frozen variant."""
    arms = runset.arms(dataset, protocol)
    out = [(other, "a classical arm of the run") for other in arms
           if other != arm and not arm_registry.parse(other)[0] and not _has_circuit(runset, dataset, protocol, other)]
    for prefix, why in (("twin", "its classical twin: what the circuit adds"),
                        ("frozen", "its circuit frozen: what training the circuit adds")):
        if f"{prefix}:{arm}" in arms:
            out.append((f"{prefix}:{arm}", why))
    return out


def user_models_section(doc: Document, runset: RunSet, sources: Sources, out_dir: Path) -> Path | None:
    """Write the section into ``doc`` when the runs hold a user circuit arm, and user_models.csv; else nothing."""
    groups = [(d, p) for d, p in runset.groups() if user_circuit_arms(runset, d, p)]
    if not groups:
        return None
    doc.h2("Your models against their classical twins")
    doc.p("Each row: your model minus another arm of the same run, over the seeds both have, with its 95 % "
          "t-interval and each seed's difference, answered by the rules of What the circuit contributes. The twin "
          "is your model with every quantum submodule swapped for a classical layer of the same widths: if it does "
          "as well, the circuit adds nothing.")
    records = []
    for dataset, protocol in groups:
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        header: list[Inline] = ["model - compared with", f"accuracy ({metric_label(accuracy_metric(protocol))}, pp)",
                                "does it add accuracy?", "robustness (eps 0.1, pp)", "does it add robustness?"]
        rows: list[list[Inline]] = []
        for arm in user_circuit_arms(runset, dataset, protocol):
            for other, why in compared_with(runset, dataset, protocol, arm):
                row: list[Inline] = [f"{arm_label(arm)} - {arm_label(other)} ({why})"]
                for quantity in QUANTITIES:
                    diff = difference(runset, dataset, protocol, other, quantity, base=arm)
                    row += [difference_cell(diff, sources), diff.verdict]
                    iv = diff.interval
                    records.append({"dataset": dataset, "protocol": protocol, "arm": arm, "compared_with": other,
                                    "quantity": quantity, "metric": diff.metric or "",
                                    "mean": None if iv is None else iv.mean, "low": None if iv is None else iv.low,
                                    "high": None if iv is None else iv.high, "verdict": diff.verdict})
                rows.append(row)
        doc.table(header, rows, f"user-models-{dataset}-{protocol}")
    path = out_dir / USER_MODELS_CSV
    pd.DataFrame(records).to_csv(path, index=False)
    return path


def _said(diff) -> str:
    """'no difference shown (-0.41 pp [-1.20, +0.38])': the answer, then its interval."""
    if diff.interval is None:
        return diff.verdict
    return f"{diff.verdict} ({fmt_claim_interval(diff.interval, 'pp', with_n=False)})"


def user_model_sentences(runset: RunSet) -> list[str]:
    """The bottom line's sentences on the user's models: per circuit model and group, what its circuit adds
    over its twin (the comparison that answers "does the circuit add anything?"), then how it fares against
    the run's classical arms, in accuracy and in worst-case robustness. Computed from the same differences
    as the section, so the bottom line and the table cannot disagree."""
    sentences = []
    for dataset, protocol in runset.groups():
        for arm in user_circuit_arms(runset, dataset, protocol):
            others = compared_with(runset, dataset, protocol, arm)
            others.sort(key=lambda item: not item[0].startswith("twin:"))  # the twin first: the question asked
            parts: list[str] = []
            seeds: set[int] = set()
            for other, _why in others:
                acc, rob = (difference(runset, dataset, protocol, other, q, base=arm) for q in QUANTITIES)
                seeds.update(seeds_of(d.interval) for d in (acc, rob) if d.interval is not None)
                name = "its classical twin" if other.startswith("twin:") else (
                    "its frozen circuit" if other.startswith("frozen:") else arm_label(other))
                parts.append(f"against {name}, accuracy: {_said(acc)}; robustness: {_said(rob)}")
            n = "-".join(map(str, sorted(seeds)[:: max(len(seeds) - 1, 1)])) if seeds else "0"
            sentences.append(f"Your model {arm_label(arm)} ({DATASET_LABELS.get(dataset, dataset)}, {protocol} "
                             f"protocol, {n} seeds), {'; '.join(parts)}.")
    return sentences
