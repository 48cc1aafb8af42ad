"""What the circuit contributes: synthetic runs of the hybrid and the arms that take one thing away from it
(control, hybrid_noent, hybrid_frozen) with known per-seed differences -> the section's intervals and answers;
and an encoding-scale sweep whose runs must stay out of the tables and still reach the sweep, runs.csv and
its figure.

Per-seed test accuracies (fair protocol, 5 seeds), hybrid minus each arm:
- hybrid_noent: +1, +2, +1, +2, +1 pp -> mean +1.4 pp, the whole interval above 0: "adds accuracy";
- hybrid_frozen: +0.1, -0.2, +0.15, -0.1, +0.05 pp -> the interval inside +-0.5 pp: "equivalent within ±0.5 pp";
- control: -3, -2, -4, -3, -2.5 pp -> "costs accuracy".
Robustness: the hybrid and hybrid_noent have the worst case over every attack, the control PGD only.
"""
from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hqcbench import names
from hqcbench.report.build import write_report
from hqcbench.report.contribution import (
    CONTRIBUTION_CSV,
    NOT_MEASURED,
    PGD_METRIC,
    WORST_METRIC,
    answer,
    contribution_section,
)
from hqcbench.report.document import Document
from hqcbench.report.exports import read_related
from hqcbench.report.load import RunSet, load_runs
from hqcbench.report.sources import Sources
from hqcbench.report.stats import Interval
from tests.conftest import private_mlflow_store
from tests.test_report import _log_child, _md_tables

HYBRID = [0.90, 0.91, 0.92, 0.93, 0.94]
AUTOATTACK = names.robust_metric("autoattack", 0.1)
DIFFS_PP = {"hybrid_noent": [1.0, 2.0, 1.0, 2.0, 1.0], "hybrid_frozen": [0.1, -0.2, 0.15, -0.1, 0.05],
            "control": [-3.0, -2.0, -4.0, -3.0, -2.5]}
ROBUST = {"hybrid": [0.30, 0.31, 0.32, 0.33, 0.34], "hybrid_noent": [0.28, 0.30, 0.29, 0.30, 0.31],
          "hybrid_frozen": [0.30, 0.30, 0.31, 0.33, 0.33], "control": [0.20, 0.22, 0.21, 0.20, 0.22]}
SWEEP = {0.1: [0.60, 0.62, 0.61], 10.0: [0.80, 0.81, 0.79]}  # scale / pi -> test_acc of seeds 0, 1, 2


def _test_acc(arm: str, seed: int) -> float:
    return HYBRID[seed] if arm == "hybrid" else HYBRID[seed] - DIFFS_PP[arm][seed] / 100


def _log_contribution_experiment() -> dict:
    """Experiment 'contrib': 4 arms x 5 seeds at the default scale, then the hybrid (seeds 0-2) at 0.1 and 10 x pi
    (logged later, so a latest-per-seed rule would let them win), one 0.1 x pi point twice."""
    mlflow.set_experiment("contrib")
    with mlflow.start_run(run_name="mnist-fair", tags={names.TAG_KIND: "main"}):
        for seed in range(5):
            for arm in ("hybrid", "control", "hybrid_noent", "hybrid_frozen"):
                final = {"test_acc": _test_acc(arm, seed), "best_val_acc": 0.95}
                if arm == "control":
                    final[PGD_METRIC] = ROBUST[arm][seed]
                else:
                    final.update({WORST_METRIC: ROBUST[arm][seed], PGD_METRIC: ROBUST[arm][seed] + 0.05})
                    if arm != "hybrid_frozen":  # its worst case is over gradient attacks alone: it does not count
                        final[AUTOATTACK] = ROBUST[arm][seed]
                params = {"encoding_scale": str(math.pi)} if arm != "control" else {}  # missing param: default
                _log_child(arm, "fair", "mnist", seed, final, curves=False, params=params)
    superseded = ""
    with mlflow.start_run(run_name="mnist-fair-sweep", tags={names.TAG_KIND: "main"}):
        for multiple, values in SWEEP.items():
            for seed in range(len(values)):
                if multiple == 0.1 and seed == 0:
                    superseded = _log_child("hybrid", "fair", "mnist", seed, {"test_acc": 0.10}, curves=False,
                                            params={"encoding_scale": str(multiple * math.pi)})
                _log_child("hybrid", "fair", "mnist", seed, {"test_acc": values[seed]}, curves=False,
                           params={"encoding_scale": str(multiple * math.pi)})
    return {"superseded": superseded}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One private store, the experiment's report (not logged as a run) and its RunSet."""
    tmp = tmp_path_factory.mktemp("contribution")
    with private_mlflow_store(tmp):
        fixture = _log_contribution_experiment()
        report = write_report("contrib", str(tmp / "contrib"), log_run=False)
        yield {"report": report, "out": tmp / "contrib", "runset": load_runs("contrib"), **fixture}


def _records(out) -> pd.DataFrame:
    return pd.read_csv(out / CONTRIBUTION_CSV)


def _record(out, arm: str, quantity: str) -> pd.Series:
    frame = _records(out)
    return frame[(frame.arm == arm) & (frame.quantity == quantity)].iloc[0]


def _t_bounds(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def _section(md: str) -> str:
    return md.split("## What the circuit contributes")[1].split("\n## ")[0]


# ----------------------------------------------------------------------------------------- the ablation table
def test_entanglement_difference_equals_the_paired_t_interval(built):
    row = _record(built["out"], "hybrid_noent", "accuracy")
    low, high = _t_bounds(DIFFS_PP["hybrid_noent"])
    assert row.metric == "test_acc" and row.n == 5
    assert row["mean"] == pytest.approx(1.4) and (row.low, row.high) == pytest.approx((low, high))
    assert row.verdict == "adds accuracy"
    d = DIFFS_PP["hybrid_noent"]  # every seed positive: one-sided signed-rank p = 1/32; shift = median Walsh
    assert row.wilcoxon_p == pytest.approx(1 / 32)
    walsh = [(d[i] + d[j]) / 2 for i in range(5) for j in range(i, 5)]
    assert row.hodges_lehmann == pytest.approx(float(np.median(walsh)))


def test_frozen_circuit_within_half_a_point_reads_equivalent(built):
    row = _record(built["out"], "hybrid_frozen", "accuracy")
    low, high = _t_bounds(DIFFS_PP["hybrid_frozen"])
    assert -0.5 < low < 0 < high < 0.5  # the data really are what the wording claims
    assert (row.low, row.high) == pytest.approx((low, high))
    assert row.verdict == "equivalent within ±0.5 pp"
    assert pd.isna(row.seeds_needed)  # a settled answer: no seeds-needed estimate


def test_control_costs_accuracy_and_robustness_falls_back_to_pgd(built):
    out = built["out"]
    assert _record(out, "control", "accuracy").verdict == "costs accuracy"
    control, noent = _record(out, "control", "robustness"), _record(out, "hybrid_noent", "robustness")
    assert control.metric == PGD_METRIC and noent.metric == WORST_METRIC
    assert _record(out, "hybrid_frozen", "robustness").metric == PGD_METRIC  # no AutoAttack / Square behind it
    diffs = 100 * (np.asarray(ROBUST["hybrid"]) + 0.05 - np.asarray(ROBUST["control"]))  # hybrid's PGD is worst + 5
    assert control["mean"] == pytest.approx(diffs.mean())
    assert noent["mean"] == pytest.approx(100 * np.mean(np.subtract(ROBUST["hybrid"], ROBUST["hybrid_noent"])))


def test_section_renders_the_table_after_the_figures(built):
    md = (built["out"] / "report.md").read_text()
    assert md.index("## Figures") < md.index("## What the circuit contributes") < md.index("## How to read")
    table = next(t for t in _md_tables(_section(md)) if t[0][0] == "compared with")
    rows = {r[0].split(":")[0]: r for r in table[1:]}
    # plain names in the body: the identifiers live in the glossary
    assert list(rows) == ["control", "hybrid without entanglement", "hybrid with frozen circuit"]
    noent = rows["hybrid without entanglement"]
    low, high = _t_bounds(DIFFS_PP["hybrid_noent"])
    assert noent[1].startswith(f"+1.40 pp [{low:+.2f}, {high:+.2f}] (n=5); per seed (0, 1, 2, 3, 4): +1.0 / +2.0")
    assert "Wilcoxon p = 0.031" in noent[1] and noent[2] == "adds accuracy"
    assert "PGD alone" in rows["control"][3] and "worst case over every attack" in noent[3]
    assert rows["hybrid with frozen circuit"][2] == "equivalent within ±0.5 pp"
    assert built["out"] / CONTRIBUTION_CSV in built["report"].files


def test_csv_holds_every_arm_and_quantity(built):
    frame = _records(built["out"])
    assert len(frame) == 3 * 2 and set(frame.quantity) == {"accuracy", "robustness"}
    assert {"dataset", "protocol", "arm", "quantity", "metric", "mean", "low", "high", "n", "verdict",
            "wilcoxon_p", "hodges_lehmann"} <= set(frame.columns)
    assert (frame.dataset == "mnist").all() and (frame.protocol == "fair").all()


@pytest.mark.parametrize("interval, expected", [
    (Interval(0.3, 0.1, 0.45, 5, "t"), "adds accuracy, by less than 0.5 pp"),
    (Interval(-2.0, -3.0, -1.0, 5, "t"), "costs accuracy"),
    (Interval(0.5, -1.0, 2.0, 5, "t"), "no difference shown"),
    (Interval(1.4, 0.5, 2.3, 4, "t"), "no verdict (n < 5)"),
])
def test_answer_wording(interval, expected):
    assert answer("accuracy", interval) == expected


def test_without_ablations_the_section_says_so(tmp_path):
    """A RunSet of hybrid and cnn only, built the way older callers build one (no variants given)."""
    runs = pd.DataFrame([{"run_id": f"{arm}{seed}", "dataset": "digits", "protocol": "fair", "arm": arm,
                          "seed": seed, "test_acc": 0.9 + 0.01 * seed} for arm in ("hybrid", "cnn") for seed in (0, 1)])
    runset = RunSet("0", "plain", runs, pd.DataFrame())
    assert runset.variants.empty and runset.sweep().empty
    doc = Document("plain")
    result = contribution_section(doc, runset, Sources(runset, "http://ui"), [], tmp_path)
    md = doc.to_markdown()
    assert NOT_MEASURED in md and "no arm ran at more than one encoding scale" in md
    assert result.records == [] and _records(tmp_path).empty and result.path == tmp_path / CONTRIBUTION_CSV


# ----------------------------------------------------------------------------------------- the sweep
def test_sweep_runs_do_not_replace_the_default_runs(built):
    runset = built["runset"]
    hybrid = runset.arm_runs("mnist", "fair", "hybrid")
    assert len(hybrid) == 5 and hybrid.test_acc.mean() == pytest.approx(np.mean(HYBRID))
    variants = runset.variants
    assert len(variants) == 6 and set(variants.arm) == {"hybrid"}
    scales = sorted({round(s / math.pi, 9) for s in variants.encoding_scale})
    assert scales == [0.1, 10.0]
    low = variants[np.isclose(variants.encoding_scale, 0.1 * math.pi)].sort_values("seed")
    assert low.test_acc.tolist() == pytest.approx(SWEEP[0.1])  # the later rerun of seed 0 won
    assert built["superseded"] in dict(runset.excluded)


def test_runs_csv_keeps_one_used_row_per_seed_and_carries_the_scale(built):
    out = built["out"]
    runs = pd.read_csv(out / "runs.csv", dtype={"left_out": str})
    used = runs[runs.left_out.isna()]
    assert not used.duplicated(["dataset", "protocol", "arm", "seed"]).any() and len(used) == 20
    variant_ids = set(built["runset"].variants.run_id)
    rows = runs[runs.run_id.isin(variant_ids)]
    assert len(rows) == 6 and rows.left_out.str.startswith("encoding-scale sweep").all()
    sweep = rows.groupby(rows.encoding_scale / math.pi).test_acc.mean()  # a reader recomputes the sweep
    assert sweep.round(9).to_dict() == pytest.approx({0.1: np.mean(SWEEP[0.1]), 10.0: np.mean(SWEEP[10.0])})
    assert np.allclose(used.encoding_scale, math.pi)
    related = read_related([str(out)])  # the growth proxy reads the default runs only
    assert not related.duplicated(["dataset", "protocol", "arm", "seed"]).any() and len(related) == 20


def test_sweep_figure_and_table_are_written(built):
    out = built["out"]
    png = out / "encoding_scale_mnist_fair.png"
    assert png.is_file() and png.stat().st_size > 0 and png in built["report"].files
    section = _section((out / "report.md").read_text())
    assert "![Test accuracy vs encoding scale, MNIST / fair](encoding_scale_mnist_fair.png)" in section
    table = next(t for t in _md_tables(section) if t[0][:2] == ["arm", "encoding scale (x pi)"])
    hybrid = {r[1]: r for r in table[1:] if r[0] == "hybrid"}
    assert list(hybrid) == ["0.1", "1 (default)", "10"]
    for key, values in (("0.1", SWEEP[0.1]), ("1 (default)", HYBRID), ("10", SWEEP[10.0])):
        pct = 100 * np.asarray(values)
        half = sps.t.ppf(0.975, len(pct) - 1) * pct.std(ddof=1) / math.sqrt(len(pct))
        assert hybrid[key][2:] == [str(len(pct)), f"{pct.mean():.2f} ± {half:.2f}"], key
    assert table[-1][0].startswith("control")


def test_hybrid_minus_control_has_one_number_in_both_sections(built):
    """The robustness row against the control takes the metric and seeds the robustness verdict takes."""
    claim = next(c for c in built["report"].claims if c["claim"] == "robust_mnist")
    row = _record(built["out"], "control", "robustness")
    assert row["metric"] == claim["fair_control_metric"]
    assert row["mean"] == pytest.approx(claim["fair_control_mean"]) and row["n"] == claim["fair_control_n"]
    assert (row["low"], row["high"]) == pytest.approx((claim["fair_control_low"], claim["fair_control_high"]))
