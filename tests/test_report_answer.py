"""The report's answer: the bottom line computed from the verdict records, the forest plot beside it, plain
words in the body, practical size, untestable claims, the proxy's wording, and a first screen that shows
both (headless chromium at 1280x800)."""
from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd
import pytest

from hqcbench.report.bottom_line import GROUPS, Side, VerdictRecord, bottom_line, group_of
from hqcbench.report.build import APPENDIX
from hqcbench.report.claim_tables import single_thread_why
from hqcbench.report.claims import claims_for
from hqcbench.report.formatting import fmt_interval
from hqcbench.report.judge import ClaimResult, Comparison, mark_not_testable, trend_wording
from hqcbench.report.practical import practical_verdict
from hqcbench.report.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NEGLIGIBLE, NOT_TESTABLE, Interval, Verdict
from tests.browser import Chromium, require_chromium
from tests.test_report import _md_tables, built_report  # noqa: F401  (the module's report fixture)


def _iv(mean: float, low: float, high: float) -> Interval:
    return Interval(mean, low, high, 5, "t")


def _record(status: str, cnn: Interval, control: Interval, claim: str = "more accurate, MNIST",
            protocol: str = "paper") -> VerdictRecord:
    return VerdictRecord(claim, protocol, status, Side("cnn", status, cnn, "pp"),
                         Side("control", status, control, "pp"))


# ----------------------------------------------------------------------------------------- the bottom line
def test_the_bottom_line_is_computed_from_the_records():
    holds = _record("holds against cnn only", _iv(1.37, 1.25, 1.48), _iv(0.01, -0.04, 0.06))
    refuted = _record(DOES_NOT_HOLD, _iv(-0.26, -0.50, -0.01), _iv(-0.27, -0.45, -0.10), protocol="fair")
    lines = bottom_line([holds, refuted])
    assert len(lines) == 2
    assert lines[0].startswith("Holds against the CNN only") and "+1.37 pp [+1.25, +1.48] vs CNN" in lines[0]
    assert "+0.01 pp [-0.04, +0.06] vs control" in lines[0] and "(5 seeds, 95 % intervals)" in lines[0]
    assert lines[1].startswith("Does not hold") and "fair: -0.26 pp [-0.50, -0.01] vs CNN" in lines[1]
    # change a record: its sentence changes with it
    moved = replace(holds, status=HOLDS, cnn=replace(holds.cnn, interval=_iv(2.5, 2.0, 3.0)))
    changed = bottom_line([moved, refuted])
    assert changed[0].startswith("Holds against both the CNN and the control")
    assert "+2.50 pp [+2.00, +3.00]" in changed[0]
    assert "Holds against the CNN only" not in " ".join(changed)


def test_the_bottom_line_has_at_most_six_sentences_and_says_why_unresolved():
    records = [_record(status, _iv(0.5, -1.0, 2.0), _iv(0.2, -1.0, 1.4), claim=f"claim {k}")
               for k, status in enumerate([HOLDS, "holds against cnn only", "holds against control only", NEGLIGIBLE,
                                           DOES_NOT_HOLD, INCONCLUSIVE, "faster, but not 5-12x", NOT_TESTABLE])]
    records[-1] = replace(records[-1], why="not testable here: every run used one thread")
    lines = bottom_line(records)
    assert len(lines) == len(GROUPS) == 6
    assert [group_of(r) for r in records] == ["both", "cnn", "control", "negligible", "refuted", "unresolved",
                                              "refuted", "unresolved"]
    assert "the intervals contain no difference" in lines[-1] and "every run used one thread" in lines[-1]
    assert bottom_line([]) == []


# ----------------------------------------------------------------------------------------- practical size and wording
def test_negligible_replaces_holds_below_the_threshold():
    holds = Verdict(HOLDS, "the whole 95 % interval is > 0")
    assert practical_verdict(holds, _iv(0.04, 0.04, 0.04), 1.0).status == NEGLIGIBLE  # 60 of 142,590 parameters
    assert practical_verdict(holds, _iv(6.08, 6.08, 6.08), 1.0).status == HOLDS
    unsettled = Verdict(INCONCLUSIVE, "contains 0")
    assert practical_verdict(unsettled, _iv(0.01, -0.04, 0.06), 0.5).status == NEGLIGIBLE  # bounded inside
    assert practical_verdict(unsettled, _iv(0.01, -0.9, 0.9), 0.5).status == INCONCLUSIVE
    refuted = Verdict(DOES_NOT_HOLD, "other side")
    assert practical_verdict(refuted, _iv(-0.1, -0.2, -0.05), 0.5).status == DOES_NOT_HOLD  # a refutation stays
    assert practical_verdict(Verdict("faster, but not 5-12x", ""), _iv(1.05, 1.02, 1.08), 1.1, 1.0, ratio=True,
                             partial="faster, but not 5-12x").status == NEGLIGIBLE


def test_the_proxy_says_a_shrinking_deficit_is_not_a_growing_advantage():
    labels, holds = ["digits", "MNIST", "Fashion-MNIST"], Verdict(HOLDS, "the whole 95 % interval is > 0")
    deficit = trend_wording(holds, labels, [-5.5, -0.26, -0.48], "pp", "cnn")
    assert deficit.status.startswith(DOES_NOT_HOLD) and "below zero on every dataset" in deficit.reason
    assert "digits -5.50 pp, MNIST -0.26 pp, Fashion-MNIST -0.48 pp" in deficit.reason
    assert "does not rise from MNIST -> Fashion-MNIST" in deficit.reason
    growing = trend_wording(holds, labels, [-1.0, 0.5, 2.0], "pp", "cnn")
    assert growing.status == HOLDS and "rises at every step" in growing.reason


def test_a_cpu_claim_on_one_thread_is_not_testable():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "tags.hqcbench.torch_threads": ["1", "1", "2"]})
    assert "one thread" in single_thread_why(runs, ["a", "b"])
    assert single_thread_why(runs, ["a", "c"]) == ""  # one run had two threads: testable
    assert single_thread_why(runs.drop(columns="tags.hqcbench.torch_threads"), ["a"]) == ""  # not recorded
    claim = next(c for c in claims_for(["mnist"]) if c.key == "cpu_process_mnist")
    comparison = Comparison("cnn", _iv(-0.01, -0.04, 0.02), Verdict(INCONCLUSIVE, "contains 0"), run_ids=["a", "b"])
    result = ClaimResult(claim, "paper", claim.metric_paper, {"cnn": comparison, "control": comparison},
                         Verdict(INCONCLUSIVE, "both"))
    marked = mark_not_testable(result, "every run used one thread")
    assert marked.verdict.status == NOT_TESTABLE and marked.comparisons["cnn"].verdict.status == NOT_TESTABLE
    assert marked.comparisons["cnn"].interval == comparison.interval  # the number stays for the reader


def test_durations_in_their_largest_sensible_unit():
    assert fmt_interval(Interval(25449974.09, 24764792.74, 26135155.44, 5, "t"), "dur") == "295 days ± 7.93 days"
    assert fmt_interval(Interval(90.0, None, None, 1, "single"), "dur") == "1.5 min (1 run)"


# ----------------------------------------------------------------------------------------- the built report
def _body(md: str) -> str:
    return md.split(f"## {APPENDIX}")[0]


def test_the_body_speaks_in_plain_words(built_report):  # noqa: F811
    _, out, _ = built_report
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    body = _body(md)
    assert "robust_acc_" not in body and "check_" not in body and not re.search(r"\bhybrid_(noent|frozen)\b", body)
    for identifier in ("zero_grad", "pgd_le_fgsm", "high_eps", "possible_gradient_masking", "best_val_acc"):
        assert identifier not in body, identifier
    assert "127.0.0.1" not in md + html and "localhost" not in md + html
    glossary = next(t for t in _md_tables(md) if t[0] == ["name in this report", "identifier", "what it is"])
    assert ["test accuracy", "metric `test_acc`"] in [r[:2] for r in glossary]
    # run ids with the one command that opens them
    assert "mlflow ui --backend-store-uri" in md.split(f"## {APPENDIX}: sources")[1]


def test_a_loopback_ui_is_never_linked(built_report, tmp_path):  # noqa: F811
    from hqcbench.report.build import build_report
    from hqcbench.report.load import load_runs
    from tests.conftest import private_mlflow_store
    _, _, fixture = built_report
    with private_mlflow_store(fixture["tmp"]):
        report = build_report(load_runs("synthetic"), tmp_path, ui_url="http://127.0.0.1:5000",
                              report_command="python -m hqcbench report --ui_url http://localhost:5000")
    text = (tmp_path / "report.md").read_text() + (tmp_path / "report.html").read_text()
    assert "127.0.0.1" not in text and "localhost" not in text and report.files
    assert "--ui_url (a loopback address)" in text  # the command is still shown, its address hidden


def test_the_forest_has_one_row_per_claim_and_protocol_with_data(built_report):  # noqa: F811
    report, out, _ = built_report
    from hqcbench.report.claim_tables import claim_tables
    from hqcbench.report.load import load_runs
    from hqcbench.report.sources import Sources
    from tests.conftest import private_mlflow_store
    _, _, fixture = built_report
    with private_mlflow_store(fixture["tmp"]):
        runset = load_runs("synthetic")
        tables = claim_tables(runset, Sources(runset))
    with_data = {(r["claim"], p) for r in report.claims for p in ("paper", "fair", "tuned")
                 if r[f"{p}_cnn_mean"] is not None and not pd.isna(r[f"{p}_cnn_mean"])
                 or r[f"{p}_control_mean"] is not None and not pd.isna(r[f"{p}_control_mean"])}
    assert len(tables.forest) == len(with_data) > 5
    assert len({(row.claim, row.protocol) for row in tables.forest}) == len(tables.forest)
    assert (out / "forest_synthetic.png").is_file()
    md = (out / "report.md").read_text()
    assert md.index("## Bottom line") < md.index("(forest_synthetic.png)") < md.index("## Verdicts by claim")


def test_runs_table_shows_epochs_run_and_training_versions(built_report):  # noqa: F811
    _, out, _ = built_report
    md = (out / "report.md").read_text()
    runs = next(t for t in _md_tables(md) if t[0][:2] == ["dataset", "protocol"])
    assert runs[0][4] == "epochs run (planned)" and all(r[4] for r in runs[1:])
    assert "Training version of the code that trained the runs: not recorded" in md  # synthetic runs carry none


@pytest.mark.browser
def test_first_screen_shows_the_bottom_line_and_the_forest(built_report, tmp_path):  # noqa: F811
    browser = require_chromium()
    _, out, _ = built_report
    with Chromium(browser, tmp_path / "profile", window=(1280, 800)) as page:
        page.navigate((out / "report.html").resolve().as_uri())
        page.wait_for("document.readyState === 'complete' && [...document.images].every(i => i.complete)", 60,
                      "the report and its images")
        boxes = page.evaluate("""(() => {
            const heading = [...document.querySelectorAll('h2')].find(h => h.textContent === 'Bottom line');
            const forest = [...document.images].find(i => i.src.startsWith('data:image/png') &&
                                                          i.alt.startsWith('Every claim and protocol'));
            const box = e => e ? e.getBoundingClientRect().toJSON() : null;
            return {heading: box(heading), forest: box(forest), loaded: forest ? forest.naturalWidth : 0,
                    height: window.innerHeight};
        })()""")
    assert boxes["height"] == 800 and boxes["heading"] and boxes["forest"], boxes
    assert 0 <= boxes["heading"]["top"] and boxes["heading"]["bottom"] <= 800
    assert boxes["loaded"] > 0 and boxes["forest"]["top"] < 800 - 200  # at least 200 px of the plot on screen
