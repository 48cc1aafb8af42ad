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

from dataclasses import dataclass

import pandas as pd

from hqcbench.report.claims import FLAWS, claims_for
from hqcbench.report.document import Inline, Link
from hqcbench.report.epochs import EPOCHS_COLUMN, SHORT_COLUMN, budget_mark, epochs_span
from hqcbench.report.formatting import (NO_DATA_CELL, fmt_claim_interval, fmt_claim_values, fmt_evidence,
                                        fmt_seeds_needed)
from hqcbench.report.judge import COMPARED, ClaimResult, Comparison, PairSource, evaluate_claim
from hqcbench.report.load import PROTOCOL_ORDER, RunSet, dataset_rank
from hqcbench.report.masking_gate import evaluate_robustness
from hqcbench.report.sources import Sources
from hqcbench.report.stats import MIN_SEEDS, NO_DATA, holm

HolmKey = tuple[str, str, str]  # (claim key, protocol, classical arm)


@dataclass
class ClaimTables:
    """The claims part of the report (see the module docstring)."""

    glance_header: list[Inline]
    glance_rows: list[list[Inline]]
    without_data: list[str]  # claims with no data under any protocol
    header: list[Inline]
    rows: list[list[Inline]]
    records: list[dict]  # claims.csv


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
        out.append({p: evaluate_claim(claim, p, source) for p in PROTOCOL_ORDER})
    return out


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
    if detail and comparison.metric and comparison.interval is not None:
        cell.append(f"; on {comparison.metric}")
    if detail and comparison.detail:
        cell.append(f"; {comparison.detail}")
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


def claim_tables(runset: RunSet, sources: Sources, related_source: PairSource | None = None,
                 related: pd.DataFrame | None = None) -> ClaimTables:
    """The glance table, the names of claims without data, the detailed table and claims.csv's records."""
    budget = _budget_frame(runset, related)
    glance_header: list[Inline] = ["claim", "protocol", "published", "ours: hybrid - cnn", "ours: hybrid - control",
                                   "verdict"]
    header: list[Inline] = ["claim", "published", "known flaw of the published number", "measure (paper / fair)"]
    for p in PROTOCOL_ORDER:
        header += [f"{p}: hybrid - cnn", f"{p}: hybrid - control", f"verdict ({p})"]
    header.append("published magnitude in our hybrid - cnn interval (" + " / ".join(PROTOCOL_ORDER) + ")")
    glance, rows, records, without = [], [], [], []
    evaluated = evaluate_all(runset, related_source)
    holm_p = holm_families(evaluated)
    for results in evaluated:
        claim = results[PROTOCOL_ORDER[0]].claim
        records.append({"claim": claim.key, **{f"{p}_{k}": v for p in PROTOCOL_ORDER
                                               for k, v in _record(results[p], budget, holm_p).items()}})
        if not any(r.shown for r in results.values()):
            without.append(claim.claim)
            continue
        flaw = Link(FLAWS[claim.flaw][0], f"#flaw-{claim.flaw}") if claim.flaw else "-"
        fair = claim.metric_fair or "-"
        if claim.fallback_fair:
            fair += f" (where no run has it: {claim.fallback_fair}, at most unresolved)"
        row: list[Inline] = [claim.claim, claim.published, flaw, f"{claim.metric_paper or '-'} / {fair}"]
        for p in PROTOCOL_ORDER:
            res = results[p]
            mark = budget_mark(budget, res.run_ids)
            row += [_comparison_cell(sources, res.comparisons[other], claim.unit, True,
                                     holm_p.get((claim.key, p, other))) for other in COMPARED]
            row.append(f"{res.verdict.status} ({res.verdict.reason}){mark}")
            if res.shown:
                glance.append([claim.claim, p, claim.published,
                               *[_comparison_cell(sources, res.comparisons[o], claim.unit, False) for o in COMPARED],
                               res.verdict.short + mark])
        row.append(" / ".join(results[p].comparisons["cnn"].magnitude for p in PROTOCOL_ORDER))
        rows.append(row)
    return ClaimTables(glance_header, glance, without, header, rows, records)


def no_data_line(names_without: list[str]) -> str:
    """The one line that names every claim without data here."""
    if not names_without:
        return ""
    return f"{NO_DATA.capitalize()} for {len(names_without)} claim(s): " + "; ".join(names_without) + "."
