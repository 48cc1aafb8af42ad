"""Robustness verdicts a referee accepts: synthetic runs with known robust accuracies and masking checks in a
temporary MLflow store -> the verdicts, the worst-case and clamp-only columns and the EOT note of the report.

Three experiments carry the same robust accuracies (hybrid 20.6 pp above cnn and 10.6 pp above the control
in every seed, so the interval rule alone says "holds"):
- ``clean``: the worst case over every attack, no check failed -> holds;
- ``masked``: the same, but two hybrid seeds failed the converged and zero_grad checks -> unresolved;
- ``old``: an older store, PGD only (no worst-case metric) -> unresolved: no worst-case evaluation;
- ``gradient_only``: a worst case over gradient attacks alone (no AutoAttack, no Square) -> the same.
``clean`` also has paper-protocol runs with the published measure, its clamp-only baseline and the worst
case (not on the control), and a finite-shot hybrid attacked with EOT.
"""
from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from hqcbench import names
from hqcbench.report.build import write_report
from hqcbench.report.claims import claims_for
from hqcbench.report.judge import Comparison
from hqcbench.report.masking_gate import (
    PGD_METRIC,
    UNRESOLVED_MASKING,
    UNRESOLVED_NO_WORST,
    WORST_METRIC,
    ArmFlags,
    evaluate_robustness,
    gate,
)
from hqcbench.report.stats import DOES_NOT_HOLD, HOLDS, Interval, Verdict
from tests.conftest import private_mlflow_store
from tests.test_report import T4, _log_child, _md_tables, _verdict_cell

ROBUST = {"hybrid": [0.30, 0.32, 0.31, 0.33, 0.29], "cnn": [0.10, 0.11, 0.09, 0.12, 0.10],
          "control": [0.20, 0.21, 0.19, 0.22, 0.20]}  # hybrid - cnn: 20, 21, 22, 21, 19 pp; - control: 10 .. 12
MASKED_SEEDS = (1, 3)
AUTOATTACK = names.robust_metric("autoattack", 0.1)
PAPER = {  # paper protocol: published measure, its clamp-only baseline, worst case (pixel eps 0.1)
    "hybrid": {"robust_acc_pgd_paper_eps_0.1": [0.40, 0.42, 0.41, 0.43, 0.39],
               "pgd_paper_clamp_only_acc": [0.90, 0.92, 0.91, 0.93, 0.89],
               WORST_METRIC: [0.12, 0.13, 0.12, 0.14, 0.14], AUTOATTACK: [0.12, 0.13, 0.12, 0.14, 0.14]},
    "cnn": {"robust_acc_pgd_paper_eps_0.1": [0.10, 0.12, 0.11, 0.10, 0.12],
            "pgd_paper_clamp_only_acc": [0.60, 0.62, 0.61, 0.60, 0.62],
            WORST_METRIC: [0.01, 0.01, 0.02, 0.01, 0.00], AUTOATTACK: [0.01, 0.01, 0.02, 0.01, 0.00]},
    "control": {"robust_acc_pgd_paper_eps_0.1": [0.20, 0.21, 0.22, 0.20, 0.22]},  # an older run: nothing else
}
EOT = "10 readout samples averaged per gradient (EOT; sampled readout, 100 shots); predictions are single draws"


def _checks(masked: bool) -> tuple[dict, dict]:
    """Metrics and tags of a run's masking checks (the two that fail when ``masked``)."""
    passes = {"bounds": 1.0, "pgd_le_fgsm": 1.0, "high_eps": 1.0, "transfer": 1.0, "zero_grad": 1.0,
              "converged": 1.0}
    if masked:
        passes.update(converged=0.0, zero_grad=0.0)
    metrics = {f"check_{k}_pass": v for k, v in passes.items()}
    metrics[names.TAG_MASKING] = 1.0 if masked else 0.0
    tags = {names.check_tag(k): "pass" if v else "fail" for k, v in passes.items()}
    tags[names.check_tag("bpda")] = "skipped: nothing saturates"
    tags[names.TAG_MASKING] = "true" if masked else "false"
    if masked:
        tags[names.TAG_MASKING_REASON] = "converged: PGD still falls; zero_grad: 40 % vanish"
    return metrics, tags


def _log_fair(experiment: str, kind: str) -> None:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="mnist-fair", tags={names.TAG_KIND: "main"}):
        for seed in range(5):
            for arm, values in ROBUST.items():
                final = {"test_acc": 0.95, PGD_METRIC: values[seed] + 0.05}
                tags: dict = {}
                if kind != "old":
                    final[WORST_METRIC] = values[seed]
                    if kind != "gradient_only":
                        final[AUTOATTACK] = values[seed] + 0.01
                    checks, tags = _checks(kind == "masked" and arm == "hybrid" and seed in MASKED_SEEDS)
                    final.update(checks)
                _log_child(arm, "fair", "mnist", seed, final, tags, curves=False)


def _log_paper() -> None:
    with mlflow.start_run(run_name="mnist-paper", tags={names.TAG_KIND: "main"}):
        for seed in range(5):
            for arm, metrics in PAPER.items():
                tags = {names.TAG_ATTACK_EOT: EOT} if arm == "hybrid" else {}
                final = {"best_val_acc": 0.98, **{k: v[seed] for k, v in metrics.items()}}
                _log_child(arm, "paper", "mnist", seed, final, tags, curves=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Three experiments in one private store, a report of each (not logged as a run)."""
    tmp = tmp_path_factory.mktemp("robust")
    with private_mlflow_store(tmp):
        out = {}
        for kind in ("clean", "masked", "old", "gradient_only"):
            _log_fair(kind, kind)
            if kind == "clean":
                _log_paper()
            out[kind] = write_report(kind, str(tmp / kind), log_run=False), tmp / kind
        yield out


def _robust_row(report) -> dict:
    return next(c for c in report.claims if c["claim"] == "robust_mnist")


def _csv_row(folder) -> pd.Series:
    return pd.read_csv(folder / "claims.csv").set_index("claim").loc["robust_mnist"]


def _verdict(folder, protocol: str) -> str:
    return _verdict_cell((folder / "report.md").read_text(), "more robust at eps 0.1, MNIST", protocol)


MASKED_TEXT = "hybrid: PGD not converged, vanishing input gradients in 2/5 seeds"  # the checks' plain names


# ----------------------------------------------------------------------------------------- the verdicts
def test_clean_worst_case_difference_holds(reports):
    report, folder = reports["clean"]
    row = _robust_row(report)
    assert row["fair_cnn_mean"] == pytest.approx(20.6) and row["fair_control_mean"] == pytest.approx(10.6)
    assert row["fair_verdict"] == HOLDS and row["fair_cnn_verdict"] == HOLDS
    assert row["fair_metric"] == WORST_METRIC and row["fair_cnn_masking"] == ""
    assert _verdict(folder, "fair").startswith("holds against the CNN and control")


def test_masking_flag_on_the_hybrid_blocks_holds_and_is_named(reports):
    report, folder = reports["masked"]
    row = _robust_row(report)
    assert row["fair_cnn_mean"] == pytest.approx(20.6)  # the same numbers as the clean store ...
    assert row["fair_verdict"] == UNRESOLVED_MASKING  # ... but not "holds"
    assert row["fair_cnn_verdict"] == row["fair_control_verdict"] == UNRESOLVED_MASKING
    assert row["fair_cnn_masking"] == MASKED_TEXT
    glance = _verdict(folder, "fair")
    assert glance.startswith(UNRESOLVED_MASKING) and MASKED_TEXT in glance
    claims = next(t for t in _md_tables((folder / "report.md").read_text()) if t[0][:3] == [
        "claim", "published", "known flaw of the published number"])
    detail = next(r for r in claims if r[0].startswith("hybrid more robust"))[claims[0].index("verdict (fair)")]
    assert "worst case over every attack at eps 0.1 alone would say holds" in detail
    assert "neither arm raised a masking flag" in detail
    # the results table says so too, under the table
    assert f"Masking checks failed ({MASKED_TEXT})" in (folder / "report.md").read_text()


def test_runs_without_worst_case_fall_back_to_pgd_and_never_settle(reports):
    report, folder = reports["old"]
    row = _robust_row(report)
    assert row["fair_metric"] == PGD_METRIC and row["fair_cnn_metric"] == PGD_METRIC
    assert row["fair_cnn_mean"] == pytest.approx(20.6)  # PGD numbers: worst + 5 pp for every arm
    assert row["fair_verdict"] == UNRESOLVED_NO_WORST
    glance = _verdict(folder, "fair")
    assert glance.startswith(f"{UNRESOLVED_NO_WORST} against the CNN and control (on PGD at eps 0.1 alone)")
    claims = next(t for t in _md_tables((folder / "report.md").read_text()) if t[0][:3] == [
        "claim", "published", "known flaw of the published number"])
    claim = next(r for r in claims if r[0].startswith("hybrid more robust"))
    assert "PGD at eps 0.1 alone would say holds" in claim[claims[0].index("verdict (fair)")]
    assert claim[3] == ("worst case over every attack at eps 0.1 / worst case over every attack at eps 0.1 (where no "
                        "run has it: PGD at eps 0.1, at most unresolved)")


def test_a_worst_case_over_gradient_attacks_alone_does_not_count(reports):
    """Without AutoAttack or Square the worst case shares the gradient attacks' blind spot: the verdict
    falls back to PGD and cannot settle, as for a store without any worst case."""
    row = _robust_row(reports["gradient_only"][0])
    assert row["fair_verdict"] == UNRESOLVED_NO_WORST and row["fair_metric"] == PGD_METRIC
    assert _robust_row(reports["clean"][0])["fair_verdict"] == HOLDS  # the same numbers with AutoAttack beside


def test_claims_csv_carries_verdict_and_metric(reports):
    for kind, verdict, metric in (("clean", HOLDS, WORST_METRIC), ("masked", UNRESOLVED_MASKING, WORST_METRIC),
                                  ("old", UNRESOLVED_NO_WORST, PGD_METRIC)):
        row = _csv_row(reports[kind][1])
        assert (row["fair_verdict"], row["fair_metric"], row["fair_cnn_metric"]) == (verdict, metric, metric), kind
    masked = _csv_row(reports["masked"][1])
    assert masked["fair_control_masking"] == MASKED_TEXT


def test_paper_protocol_judges_the_worst_case_with_the_published_measure_beside_it(reports):
    """Against cnn the runs carry the worst case: the paper verdict rests on it (hybrid - cnn 11, 12, 10, 13,
    14 pp), and the published measure (30 pp) and its clamp alone stand beside it, labelled, never judged on.
    The control's runs carry only the published measure: against it the verdict falls back and cannot settle."""
    report, folder = reports["clean"]
    row = _robust_row(report)
    assert row["paper_cnn_metric"] == WORST_METRIC and row["paper_cnn_mean"] == pytest.approx(12.0)
    assert row["paper_cnn_verdict"] == HOLDS
    assert row["paper_control_metric"] == "robust_acc_pgd_paper_eps_0.1"
    assert row["paper_control_verdict"] == UNRESOLVED_NO_WORST and row["paper_control_mean"] == pytest.approx(20.0)
    assert row["paper_verdict"] == "holds against cnn only"
    cell = _verdict(folder, "paper")
    assert cell.startswith(f"holds against the CNN only: against the control: {UNRESOLVED_NO_WORST}")
    assert "; vs CNN +12.00 pp [" in cell
    assert "; published measure (vs CNN) +30.00 pp [" in cell
    assert "; published clamp alone, no attack step (vs CNN) +30.00 pp [" in cell


# ----------------------------------------------------------------------------------------- the tables
def _cell(values: list[float]) -> str:
    pct = np.asarray(values) * 100
    return f"{pct.mean():.2f} ± {T4 * pct.std(ddof=1) / math.sqrt(len(pct)):.2f}"


def test_paper_table_sets_worst_case_and_clamp_only_beside_the_published_measure(reports):
    _, folder = reports["clean"]
    md = (folder / "report.md").read_text()
    table = next(t for t in _md_tables(md) if t[0][:2] == ["arm", "seeds"] and "published PGD eps 0.1 (%)" in t[0])
    header = table[0]
    published = header.index("published PGD eps 0.1 (%)")
    assert header[published + 1] == "published clamp alone, no attack step (%)"
    assert header[published + 2] == "worst case over every attack, pixel eps 0.1 (%)"
    rows = {r[0]: r for r in table[1:]}
    for arm, label in (("hybrid", "hybrid"), ("cnn", "CNN")):
        assert rows[label][published] == _cell(PAPER[arm]["robust_acc_pgd_paper_eps_0.1"]), arm
        assert rows[label][published + 1] == _cell(PAPER[arm]["pgd_paper_clamp_only_acc"]), arm
        assert rows[label][published + 2] == _cell(PAPER[arm][WORST_METRIC]), arm
    assert rows["hybrid"][published + 1] == "91.00 ± 1.96"  # by hand: 90, 92, 91, 93, 89 %, sd sqrt(2.5)
    assert rows["control"][published + 1] == rows["control"][published + 2] == "no data"  # not logged: said so
    assert rows["hybrid, per seed"][published + 1] == "90.0 / 92.0 / 91.0 / 93.0 / 89.0"
    further = [r[0] for t in _md_tables(md) if t[0][0] == "metric (latest logged value)" for r in t]
    assert "pgd_paper_clamp_only_acc" not in further  # a results column now, not repeated


def test_eot_attacks_are_named(reports):
    _, folder = reports["clean"]
    md = (folder / "report.md").read_text()
    assert ("Gradient attacks on hybrid averaged the loss gradient over readout samples (EOT) in 5/5 seeds: "
            + EOT) in md
    claims = next(t for t in _md_tables(md) if t[0][:3] == ["claim", "published", "known flaw of the published number"])
    robust = next(r for r in claims if r[0].startswith("hybrid more robust"))
    assert "averaged the loss gradient over readout samples (EOT)" in robust[claims[0].index("paper: hybrid - CNN")]
    assert "EOT" not in robust[claims[0].index("fair: hybrid - CNN")]  # the fair runs were not finite-shot


# ----------------------------------------------------------------------------------------- the rule itself
def _comparison(low: float, high: float) -> Comparison:
    status = HOLDS if low > 0 else DOES_NOT_HOLD
    return Comparison("cnn", Interval((low + high) / 2, low, high, 5, "t"), Verdict(status, "interval"),
                      metric=WORST_METRIC)


ROBUST_MNIST = next(c for c in claims_for(["mnist"]) if c.key == "robust_mnist")
ROBUST_CIFAR = next(c for c in claims_for(["mnist"]) if c.key == "robust_cifar100")
CLEAN = ArmFlags("cnn", 5)


@pytest.mark.parametrize("hybrid, other, interval, expected", [
    (ArmFlags("hybrid", 5, {"transfer": 1}), CLEAN, (5.0, 9.0), UNRESOLVED_MASKING),  # inflated hybrid: no holds
    (ArmFlags("hybrid", 5), ArmFlags("cnn", 5, {"square": 2}), (5.0, 9.0), UNRESOLVED_MASKING),  # both must be clean
    (ArmFlags("hybrid", 5, {"transfer": 1}), CLEAN, (-9.0, -5.0), DOES_NOT_HOLD),  # lower still: refutation stands
    (ArmFlags("hybrid", 5), ArmFlags("cnn", 5, {"square": 2}), (-9.0, -5.0), UNRESOLVED_MASKING),  # cnn may be lower
    (ArmFlags("hybrid", 5, {"bounds": 1}), CLEAN, (-9.0, -5.0), UNRESOLVED_MASKING),  # invalid numbers: nothing stands
])
def test_masking_can_only_inflate(hybrid, other, interval, expected):
    verdict = gate(ROBUST_MNIST, _comparison(*interval), hybrid, other, worst_case=True)
    assert verdict.status == expected
    if expected == UNRESOLVED_MASKING:
        assert flags_named(verdict, hybrid, other)


def flags_named(verdict: Verdict, *flags: ArmFlags) -> bool:
    return all(f.text() in verdict.reason and f.text() in verdict.short for f in flags if f.raised)


def test_equivalence_refutation_blocked_by_the_arm_that_could_close_the_gap():
    """'comparably fragile' refuted with hybrid 5-9 pp above: only a lower true hybrid could bring it back."""
    far_above = Comparison("cnn", Interval(7.0, 5.0, 9.0, 5, "t"), Verdict(DOES_NOT_HOLD, "outside"),
                           metric=WORST_METRIC)
    flagged_hybrid, flagged_cnn = ArmFlags("hybrid", 5, {"zero_grad": 3}), ArmFlags("cnn", 5, {"zero_grad": 3})
    assert gate(ROBUST_CIFAR, far_above, flagged_hybrid, CLEAN, True).status == UNRESOLVED_MASKING
    assert gate(ROBUST_CIFAR, far_above, ArmFlags("hybrid", 5), flagged_cnn, True).status == DOES_NOT_HOLD


def test_pgd_fallback_leaves_out_runs_whose_pgd_did_not_converge():
    """An older store with the converged check but no worst case: the unconverged PGD number is not used."""
    rows = [{"run_id": f"{arm}-{seed}", "dataset": "mnist", "protocol": "fair", "arm": arm, "seed": seed,
             PGD_METRIC: ROBUST[arm][seed], "check_converged_pass": 0.0 if (arm, seed) == ("hybrid", 2) else 1.0}
            for arm in ROBUST for seed in range(5)]
    result = evaluate_robustness(ROBUST_MNIST, "fair", pd.DataFrame(rows))
    cnn = result.comparisons["cnn"]
    assert cnn.metric == PGD_METRIC and cnn.n == 4 and "hybrid-2" not in cnn.run_ids
    assert cnn.interval.mean == pytest.approx(np.mean([20, 21, 21, 19]))
    assert "left out, PGD not converged (check converged failed): hybrid seed 2" in cnn.detail
    assert cnn.masking == "hybrid: PGD not converged in 1/5 seeds" and cnn.verdict.status == "no verdict"
    assert "possible gradient masking: hybrid: PGD not converged in 1/5 seeds" in cnn.verdict.reason


def test_seeds_without_worst_case_are_left_out_and_named():
    """A store half re-evaluated: the worst case on seeds 0-3, PGD on all five; ours uses the four."""
    rows = [{"run_id": f"{arm}-{seed}", "dataset": "mnist", "protocol": "fair", "arm": arm, "seed": seed,
             PGD_METRIC: ROBUST[arm][seed] + 0.05, WORST_METRIC: ROBUST[arm][seed] if seed < 4 else np.nan,
             AUTOATTACK: ROBUST[arm][seed] if seed < 4 else np.nan}
            for arm in ROBUST for seed in range(5)]
    cnn = evaluate_robustness(ROBUST_MNIST, "fair", pd.DataFrame(rows)).comparisons["cnn"]
    assert cnn.metric == WORST_METRIC and cnn.n == 4 and cnn.interval.mean == pytest.approx(21.0)
    assert cnn.detail == "seed(s) 4 left out: no worst-case evaluation"
