"""The claims as the report shows them: the verdicts at a glance, the one line naming the claims without
data, the detailed claims table, and the same numbers as records for claims.csv.

Why a module of its own: the claims are the report's answer, shown twice (a compact table that opens the
report, a detailed one with per-seed values further down) and written once more as data; all three
come from one evaluation per (claim, protocol), so they cannot disagree.

Every cell names both comparisons, hybrid - cnn and hybrid - control (judge.py joins their verdicts);
a verdict resting on runs shorter than the published budget carries the budget mark
("[ran 3 of the published 50 epochs]", epochs.py).

Beside each interval of the detailed table (and in claims.csv) stand the rank test's p-value, its
Holm-adjusted p-value, the Hodges-Lehmann shift and, for an unsettled verdict, the seeds it would need.
Holm needs the whole report, so it is done here: one family per classical arm (every claim and protocol
judged against cnn; every one judged against the control), members the comparisons with at least
``MIN_SEEDS`` seeds (the ones that can get a verdict). Two families, not one: a claim holds only when it
holds against both arms (an intersection-union test), so the two comparisons of a claim are not two
chances at a false "holds" and need no correction between them; the claims and protocols within one arm are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from hqcbench import names
from hqcbench.report.bottom_line import Side, VerdictRecord
from hqcbench.report.claims import FLAWS, claims_for
from hqcbench.report.document import Inline, Link
from hqcbench.report.epochs import EPOCHS_COLUMN, SHORT_COLUMN, budget_mark, epochs_span
from hqcbench.report.forest import ForestRow
from hqcbench.report.formatting import (
    NO_DATA_CELL,
    fmt_claim_interval,
    fmt_claim_values,
    fmt_evidence,
    fmt_seeds_needed,
)
from hqcbench.report.judge import COMPARED, ClaimResult, Comparison, PairSource, evaluate_claim, mark_not_testable
from hqcbench.report.labels import CHECK_LABELS, metric_label
from hqcbench.report.load import PROTOCOL_ORDER, RunSet, dataset_rank
from hqcbench.report.masking_gate import evaluate_robustness
from hqcbench.report.sources import Sources
from hqcbench.report.stats import MIN_SEEDS, NO_DATA, NOT_TESTABLE, Interval, holm

HolmKey = tuple[str, str, str]  # (claim key, protocol, classical arm)


@dataclass
class ClaimTables:
    """The claims part of the report (see the module docstring)."""

    verdict_header: list[Inline]
    verdict_rows: list[list[Inline]]  # one row per claim with data, the protocols as columns
    without_data: list[str]  # claims with no data under any protocol
    header: list[Inline]
    rows: list[list[Inline]]
    records: list[dict]  # claims.csv
    verdicts: list[VerdictRecord]  # per claim and protocol with data: what the bottom line reads
    forest: list[ForestRow]  # per claim and protocol with data: the forest plot's rows


def evaluate_all(runset: RunSet, related_source: PairSource | None = None) -> list[dict[str, ClaimResult]]:
    """Every claim under every protocol; the growth proxy reads ``related_source`` (runs of other reports);
    the robustness claims go through masking_gate.py (worst case, masking flags)."""
    datasets = sorted(set(runset.runs.dataset), key=dataset_rank)
    out = []
    for claim in claims_for(datasets):
        if claim.gated:
            out.append({p: evaluate_robustness(claim, p, runset.runs) for p in PROTOCOL_ORDER})
            continue
        source = related_source if claim.related and related_source is not None else runset
        results = {p: evaluate_claim(claim, p, source) for p in PROTOCOL_ORDER}
        if claim.needs_threads:
            results = {p: _threads_gate(r, runset.runs) for p, r in results.items()}
        out.append(results)
    return out


def _threads_gate(result: ClaimResult, runs: pd.DataFrame) -> ClaimResult:
    why = single_thread_why(runs, result.run_ids)
    return mark_not_testable(result, why) if why else result


def holm_families(evaluated: list[dict[str, ClaimResult]]) -> dict[HolmKey, float]:
    """Holm-adjusted p-values, one family per arm of COMPARED (why: the module docstring); a comparison
    with fewer than ``MIN_SEEDS`` seeds or without a rank test is left out and gets none."""
    out: dict[HolmKey, float] = {}
    for other in COMPARED:
        keys, pvalues = [], []
        for results in evaluated:
            for protocol, res in results.items():
                c = res.comparisons[other]
                if c.evidence.p is not None and c.n >= MIN_SEEDS:
                    keys.append((res.claim.key, protocol, other))
                    pvalues.append(c.evidence.p)
        out.update(zip(keys, holm(pvalues)))
    return out


def _budget_frame(runset: RunSet, related: pd.DataFrame | None) -> pd.DataFrame:
    """run_id, epochs run, short of budget: of the experiment's runs and the related ones."""
    frames = [runset.runs[["run_id", EPOCHS_COLUMN, SHORT_COLUMN]]]
    if related is not None and len(related) and {EPOCHS_COLUMN, SHORT_COLUMN} <= set(related.columns):
        extra = related[["run_id", EPOCHS_COLUMN, SHORT_COLUMN]].copy()
        extra[SHORT_COLUMN] = extra[SHORT_COLUMN].astype(str).str.lower().isin(["true", "1", "1.0"])
        frames.append(extra)
    return pd.concat(frames, ignore_index=True)


def _comparison_cell(sources: Sources, comparison: Comparison, unit: str, detail: bool,
                     holm_p: float | None = None) -> Inline:
    """'+1.00 pp [+0.60, +1.15] (n=5)' linked to its runs; in detail also the rank evidence and the
    per-seed values."""
    if comparison.interval is None:
        cell: list[Inline] = [NO_DATA_CELL]
    else:
        cell = [sources.link(fmt_claim_interval(comparison.interval, unit), comparison.run_ids)]
    evidence = fmt_evidence(comparison.evidence, holm_p, unit) if detail and comparison.interval else ""
    if evidence:
        cell.append(f"; {evidence}")
    if detail and comparison.per_seed:
        what = "per seed" if all(label.isdigit() for label in comparison.labels) else "mean gain per dataset"
        values = fmt_claim_values(comparison.per_seed, unit)
        cell.append(f"; {what} ({', '.join(comparison.labels)}): {values}")
    if comparison.note:
        cell.append(f" ({comparison.note})")
    if comparison.absolute:
        cell.append(f" ({comparison.absolute})")
    if detail and comparison.metric and comparison.interval is not None:
        cell.append(f"; on {metric_label(comparison.metric)}")
    if detail:
        for label, iv, run_ids in comparison.beside:
            cell += [f"; beside it, {label}: ", sources.link(fmt_claim_interval(iv, unit), run_ids)]
    if detail and comparison.detail:
        cell.append(f"; {plain_verdict(comparison.detail)}")
    return cell


def _record(res: ClaimResult, budget: pd.DataFrame, holm_p: dict[HolmKey, float]) -> dict:
    out: dict = {"verdict": res.verdict.status, "metric": res.metric or "",
                 "epochs": epochs_span(budget, res.run_ids)}
    for other in COMPARED:
        c = res.comparisons[other]
        iv, ev = c.interval, c.evidence
        out.update({f"{other}_mean": None if iv is None else iv.mean, f"{other}_low": None if iv is None else iv.low,
                    f"{other}_high": None if iv is None else iv.high, f"{other}_n": c.n,
                    f"{other}_verdict": c.verdict.status, f"{other}_rank_test": ev.test,
                    f"{other}_wilcoxon_p": ev.p, f"{other}_holm_p": holm_p.get((res.claim.key, res.protocol, other)),
                    f"{other}_hl_shift": ev.shift, f"{other}_seeds_needed": fmt_seeds_needed(ev),
                    f"{other}_metric": (c.metric or res.metric or "") if c.interval is not None else "",
                    f"{other}_masking": c.masking, f"{other}_run_ids": " ".join(c.run_ids)})
    return out


def _verdict_cell(sources: Sources, res: ClaimResult, mark: str) -> Inline:
    """A cell of the verdict table: the short verdict, then hybrid - CNN and hybrid - control with their
    intervals (and for robustness the published measure and its clamp alone, labelled)."""
    if not res.shown:
        return "no data"
    cell: list[Inline] = [plain_verdict(res.verdict.short)]
    for other in COMPARED:
        c = res.comparisons[other]
        if c.interval is None:
            cell += [f"; {ARM_NAMES[other]}: {c.note}"] if c.note else []
            continue
        cell += [f"; {ARM_NAMES[other]} ", sources.link(fmt_claim_interval(c.interval, res.claim.unit), c.run_ids)]
        if c.absolute:
            cell.append(f": {c.absolute}")
        if c.note:
            cell.append(f" ({c.note})")
    for label, iv, run_ids in res.comparisons["cnn"].beside:
        cell += [f"; {label} (vs CNN) ", sources.link(fmt_claim_interval(iv, res.claim.unit), run_ids)]
    if mark:
        cell.append(mark)
    return cell


ARM_NAMES = {"cnn": "vs CNN", "control": "vs control"}


def plain_verdict(text: str) -> str:
    """A verdict's wording with arms and checks under their plain names (labels.py)."""
    for identifier, label in (("the Linear+tanh control", "the control"), ("against cnn", "against the CNN"),
                              ("vs cnn", "vs CNN")):
        text = text.replace(identifier, label)
    for check, label in sorted(CHECK_LABELS.items(), key=lambda item: -len(item[0])):
        text = re.sub(rf"(?<![\w-]){re.escape(check)}(?![\w-])", label, text) if "_" in check else text
    return text


def _record_of(res: ClaimResult) -> VerdictRecord:
    def side(other: str) -> Side:
        c = res.comparisons[other]
        return Side(other, c.verdict.status, c.interval, res.claim.unit)
    why = ""
    if res.verdict.status == NOT_TESTABLE:
        why = res.verdict.short
    elif res.verdict.status.startswith("unresolved"):
        why = plain_verdict(res.verdict.short)
    elif "(vs " in res.verdict.short:  # a joint verdict whose two sides differ: say both
        why = plain_verdict(res.verdict.short.split("(", 1)[1].rstrip(")"))
    return VerdictRecord(res.claim.label, res.protocol, res.verdict.status, side("cnn"), side("control"), why,
                         BOTTOM_LINE_RANK.get(res.claim.key.rsplit("_", 1)[0], len(BOTTOM_LINE_RANK)))


# The order of claims within a bottom-line sentence: the question's core first (claim key without its dataset).
BOTTOM_LINE_RANK = {"accuracy": 0, "robust": 1, "generalization": 2, "speed": 3, "params": 4, "growth": 5,
                    "memory_process": 6, "memory_published": 7, "cpu_process": 8, "cpu_published": 9}


def _forest_row(res: ClaimResult) -> ForestRow | None:
    claim = res.claim
    cnn, control = (res.comparisons[o].interval for o in COMPARED)
    if cnn is None and control is None:
        return None

    def triple(iv: Interval | None) -> tuple[float, float | None, float | None] | None:
        return None if iv is None else (iv.mean, iv.low, iv.high)
    published = None
    if claim.magnitude is not None and claim.magnitude[0] == claim.magnitude[1] and not claim.magnitude_note:
        published = claim.magnitude[0]
    ratio = claim.quantity == "speedup"
    panel = FOREST_PANELS.get((claim.topic, claim.unit), f"{claim.topic} ({claim.unit})")
    return ForestRow(claim.label, res.protocol, panel,
                     triple(cnn), triple(control), reference=claim.threshold if ratio else 0.0, log_scale=ratio,
                     published=published, negligible=claim.negligible if claim.direction != "equivalent" else None)


# One forest panel per quantity and unit (no axis mixes units); the hybrid's difference from each arm.
FOREST_PANELS = {
    ("accuracy", "pp"): "accuracy: hybrid - arm (pp)",
    ("robustness", "pp"): "robustness at eps 0.1: hybrid - arm (pp)",
    ("training time", "x"): "speed: arm's time / hybrid's time per epoch (x)",
    ("parameters", "%"): "parameters: % fewer in the hybrid",
    ("memory", "GB"): "memory, published measure: hybrid - arm (GB)",
    ("memory", "MB"): "memory, process peak: hybrid - arm (MB)",
    ("CPU", "pp"): "CPU, published measure: hybrid - arm (pp of CPU %)",
    ("CPU", "cores"): "CPU, process: hybrid - arm (cores)",
}


def single_thread_why(runs: pd.DataFrame, run_ids: list[str]) -> str:
    """Why the runs cannot test a CPU-use claim ('' when they can): every run used one torch thread, so
    each process could keep at most one core busy whatever its model."""
    column = f"tags.{names.TAG_TORCH_THREADS}"
    if column not in runs.columns or not run_ids:
        return ""
    threads = pd.to_numeric(runs.loc[runs.run_id.isin(run_ids), column], errors="coerce")
    if threads.empty or threads.isna().any() or threads.max() > 1:
        return ""
    return "every run used one thread, so no process could use more than one core"


def claim_tables(runset: RunSet, sources: Sources, related_source: PairSource | None = None,
                 related: pd.DataFrame | None = None) -> ClaimTables:
    """The verdict table, the names of claims without data, the detailed table, claims.csv's records, the
    verdict records of the bottom line and the forest plot's rows."""
    budget = _budget_frame(runset, related)
    header: list[Inline] = ["claim", "published", "known flaw of the published number", "measure (paper / fair)"]
    for p in PROTOCOL_ORDER:
        header += [f"{p}: hybrid - CNN", f"{p}: hybrid - control", f"verdict ({p})"]
    header.append("published magnitude in our hybrid - CNN interval (" + " / ".join(PROTOCOL_ORDER) + ")")
    evaluated = evaluate_all(runset, related_source)
    protocols = [p for p in PROTOCOL_ORDER if any(r[p].shown for r in evaluated)]
    verdict_header: list[Inline] = ["claim", "published", *protocols]
    verdict_rows, rows, records, without, verdicts, forest = [], [], [], [], [], []
    holm_p = holm_families(evaluated)
    for results in evaluated:
        claim = results[PROTOCOL_ORDER[0]].claim
        records.append({"claim": claim.key, **{f"{p}_{k}": v for p in PROTOCOL_ORDER
                                               for k, v in _record(results[p], budget, holm_p).items()}})
        if not any(r.shown for r in results.values()):
            without.append(claim.label)
            continue
        flaw = Link(FLAWS[claim.flaw][0], f"#flaw-{claim.flaw}") if claim.flaw else "-"
        fair = metric_label(claim.metric_fair) if claim.metric_fair else "-"
        if claim.fallback_fair:
            fair += f" (where no run has it: {metric_label(claim.fallback_fair)}, at most unresolved)"
        paper = metric_label(claim.metric_paper) if claim.metric_paper else "-"
        row: list[Inline] = [claim.claim, claim.published, flaw, f"{paper} / {fair}"]
        verdict_row: list[Inline] = [claim.label, claim.published]
        for p in PROTOCOL_ORDER:
            res = results[p]
            mark = budget_mark(budget, res.run_ids)
            row += [_comparison_cell(sources, res.comparisons[other], claim.unit, True,
                                     holm_p.get((claim.key, p, other))) for other in COMPARED]
            row.append(plain_verdict(f"{res.verdict.status} ({res.verdict.reason}){mark}"))
            if p in protocols:
                verdict_row.append(_verdict_cell(sources, res, mark))
            if res.shown:
                verdicts.append(_record_of(res))
                forest_row = _forest_row(res)
                if forest_row is not None:
                    forest.append(forest_row)
        row.append(" / ".join(results[p].comparisons["cnn"].magnitude for p in PROTOCOL_ORDER))
        rows.append(row)
        verdict_rows.append(verdict_row)
    return ClaimTables(verdict_header, verdict_rows, without, header, rows, records, verdicts, forest)


def no_data_line(names_without: list[str]) -> str:
    """The one line that names every claim without data here."""
    if not names_without:
        return ""
    return f"{NO_DATA.capitalize()} for {len(names_without)} claim(s): " + "; ".join(names_without) + "."
