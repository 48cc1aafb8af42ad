"""``python -m hqcbench report --experiment NAME``: MLflow runs -> report.md, report.html, claims.csv, PNG plots.

Why this module is thin: loading (load.py), number formatting (formatting.py), source links
(sources.py), tables (tables.py), provenance (provenance.py) and figures (plots.py) each live in a
module of their own; this one only decides the document's order and wording, writes the files, logs
them as artifacts of a report run (``names.TAG_KIND`` = report) and holds the CLI pair
``add_arguments`` / ``handle``.

The document: provenance; the runs; how to read it; the claims table (each published claim -> ours
under paper -> ours under fair -> verdict); per dataset x protocol the table in the paper's shape
(mean ± 95 % t-interval over seeds; a bootstrap interval over test examples for a single run's test
accuracy), paired comparisons hybrid - cnn and hybrid - control, the hybrid's hardware bill, further
metrics; figures; and the sources every number links to, each run linked into the MLflow UI.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from hqcbench import names
from hqcbench.errors import UserInputError
from hqcbench.report.claims import DATASET_LABELS, FLAWS
from hqcbench.report.document import Anchor, Document, Link
from hqcbench.report.load import RunSet, load_runs
from hqcbench.report.plots import make_figures
from hqcbench.report.provenance import provenance, run_commands
from hqcbench.report.sources import Sources
from hqcbench.report.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_SEEDS
from hqcbench.report.tables import claim_rows, further_metrics, hardware_table, paired_table, results_table, run_rows

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # what `mlflow ui` serves


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class Report:
    """A written report: its document, the claims table as records (claims.csv) and every file written."""

    document: Document
    claims: list[dict]  # per claim: paper_/fair_ mean, low, high, verdict
    files: list[Path]


def build_report(runset: RunSet, out_dir: Path, ui_url: str = DEFAULT_UI_URL, report_command: str = "",
                 report_run_id: str | None = None, rebuild: str = "", note: str = "") -> Report:
    """Write report.md, report.html, claims.csv and the figures of ``runset`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = Sources(runset, ui_url)
    doc = Document(f"hqcbench report: {runset.experiment_name}")
    doc.ul(provenance(runset, report_command or "python -m hqcbench report", report_run_id, rebuild, note))
    doc.h2("Runs")
    doc.p("Main jobs behind these runs (equivalent commands, parameters that differ from the defaults):")
    doc.code("\n".join(run_commands(runset)) or "(parent runs not found)")
    doc.table(["dataset", "protocol", "arms", "seeds", "epochs", "train / val / test images", "batch", "caveats"],
              run_rows(runset), "runs")
    if runset.excluded:
        doc.p(f"Left out ({len(runset.excluded)}):")
        doc.ul([[Link(rid[:8], sources.run_url(rid)), f": {why}"] for rid, why in runset.excluded])
    doc.h2("How to read this report")
    doc.ul([
        f"Each number is the mean over seeds ± the half-width of its {CONFIDENCE:.0%} Student-t interval "
        "(scipy.stats.t, df = seeds - 1). With a single run, test accuracy gets a percentile bootstrap interval "
        f"over test examples ({BOOTSTRAP_RESAMPLES:,} resamples, seeded); other single-run numbers carry no interval.",
        "Accuracies are percent; differences of accuracies are percentage points (pp). Every number links to the "
        "list of MLflow runs it came from (Sources, at the end), each linked into the MLflow UI.",
        "Paired comparisons use the same seeds for both arms: same seed = same split and batch order.",
        f"A claim is a directional hypothesis on the paired per-seed differences (hybrid vs cnn): it holds when "
        f"the whole 95 % interval lies on the claimed side, does not hold when it lies wholly on the other side, and "
        f"is inconclusive otherwise. No verdict from fewer than {MIN_SEEDS} seeds or without data.",
        "Under the paper protocol the accuracy claims compare the published measure (best validation epoch, "
        "augmented validation split); under the fair protocol they compare test accuracy of the checkpoint "
        "selected on validation.",
        "'no data' / 'not measured here: no data': that metric was not logged for that configuration.",
    ])
    header, rows, records = claim_rows(runset, sources)
    doc.h2("Claims of the published abstract")
    doc.table(header, rows, "claims")
    doc.p("Known flaws of the published measurements (named beside each published number above):")
    doc.ul([Anchor(f"flaw-{key}", f"{short}: {full}") for key, (short, full) in FLAWS.items()])
    doc.h2("Results in the paper's shape")
    for dataset, protocol in runset.groups():
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        head, body, missing = results_table(runset, sources, dataset, protocol)
        doc.table(head, body, f"results-{dataset}-{protocol}")
        if missing:
            doc.p("Not measured here (no data): " + ", ".join(m.label for m in missing) + ".")
    doc.h2("Paired comparisons (same seeds)")
    for dataset, protocol in runset.groups():
        head, body = paired_table(runset, sources, dataset, protocol)
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        if body:
            doc.table(head, body, f"paired-{dataset}-{protocol}")
        else:
            doc.p("No seed has hybrid together with cnn or control: no paired comparison.")
    doc.h2("Beyond the simulator: finite shots and the hardware bill")
    doc.p("What the hybrid's training and evaluation would cost on quantum hardware (circuit executions, "
          "shots, time at the configured shot rate; formula in docs/hardware_cost.md), and its test accuracy "
          "with finite-shot readout where a shots sweep ran.")
    any_hardware = False
    for dataset, protocol in runset.groups():
        head, body = hardware_table(runset, sources, dataset, protocol)
        if body:
            any_hardware = True
            doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
            doc.table(head, body, f"hardware-{dataset}-{protocol}")
    if not any_hardware:
        doc.p("Not measured here: no data (no hybrid run logged hw_* metrics).")
    doc.h2("Further metrics")
    for dataset, protocol in runset.groups():
        head, body = further_metrics(runset, sources, dataset, protocol)
        if body:
            doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
            doc.table(head, body, f"further-{dataset}-{protocol}")
    figures = make_figures(runset, out_dir)
    doc.h2("Figures")
    for section, title in (("learning", "Learning curves"), ("robustness", "Robustness vs eps"),
                           ("time", "Time per epoch")):
        doc.h3(title)
        if not figures[section]:
            doc.p("Not measured here: no data.")
        for name, caption in figures[section]:
            doc.img(name, caption)
    doc.h2("Sources")
    doc.ul(sources.items())
    files = [out_dir / name for items in figures.values() for name, _ in items]
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(doc.to_markdown())
    html_path.write_text(doc.to_html(out_dir))
    pd.DataFrame(records).to_csv(out_dir / "claims.csv", index=False)
    return Report(doc, records, [md_path, html_path, out_dir / "claims.csv", *files])


def write_report(experiment: str, out: str = "", ui_url: str = "", log_run: bool = True,
                 report_command: str = "", rebuild: str = "", note: str = "") -> Report:
    """Load, write and (by default) log the report as artifacts of a report run."""
    runset = load_runs(experiment)
    out_dir = Path(out or os.path.join("reports", experiment))
    ui_url = ui_url or os.environ.get("HQCBENCH_MLFLOW_UI", DEFAULT_UI_URL)
    if not log_run:
        return build_report(runset, out_dir, ui_url, report_command, None, rebuild, note)
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))  # `mlflow run . -e report`: reuse the project run
    start = {} if resumed else {"experiment_id": runset.experiment_id, "run_name": f"report-{experiment}"}
    with mlflow.start_run(**start) as run:
        mlflow.set_tags({names.TAG_KIND: "report", names.TAG_REPORT_OF: runset.experiment_name})
        report = build_report(runset, out_dir, ui_url, report_command, run.info.run_id, rebuild, note)
        for path in report.files:
            mlflow.log_artifact(str(path))
    return report


# ---------------------------------------------------------------------------------------------- CLI
def handle(args: argparse.Namespace) -> int:
    """The ``report`` subcommand (``cli`` registers it with ``add_arguments``)."""
    if not args.experiment:
        raise UserInputError("experiment", "an experiment name is required", "the name of an MLflow experiment")
    if args.log_run not in ("true", "false"):
        raise UserInputError("log_run", f"got {args.log_run!r}", "true|false")
    command = "python -m hqcbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    report = write_report(args.experiment, args.out or "", args.ui_url or "", args.log_run == "true", command,
                          args.rebuild or "", args.note or "")
    print(f"hqcbench: report written to {report.files[0].parent} ({', '.join(p.name for p in report.files)})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's flags (= the MLproject ``report`` parameters)."""
    parser.add_argument("--experiment", default=None, help="MLflow experiment name holding the runs")
    parser.add_argument("--out", default="", help="output folder (default: reports/<experiment>)")
    parser.add_argument("--ui_url", default="", help=f"MLflow UI base URL for run links (default: env "
                        f"HQCBENCH_MLFLOW_UI or {DEFAULT_UI_URL})")
    parser.add_argument("--log_run", default="true", help="log the report as a report run (true|false)")
    parser.add_argument("--rebuild", default="", help="command that rebuilds runs and report, named in the report")
    parser.add_argument("--note", default="", help="a line added to the provenance (e.g. how timings were taken)")
