"""``python -m hqcbench report --experiment NAME``: MLflow runs -> report.md, report.html, claims.csv,
runs.csv, history.csv, PNG plots.

Why this module is thin: loading (load.py), epochs (epochs.py), judging (judge.py), number formatting
(formatting.py), source links (sources.py), tables (tables.py, claim_tables.py), exports (exports.py),
provenance (provenance.py) and figures (plots.py) each live in a module of their own; this one only
decides the document's order and wording, writes the files, logs them as artifacts of a report run
(``names.TAG_KIND`` = report) and holds the CLI pair ``add_arguments`` / ``handle``.

The document reads top-down, answer first: the bottom line (at most six sentences computed from the
verdicts, bottom_line.py) and the forest plot of every claim's two differences (forest.py); the verdict
table, one row per claim with the protocols as columns, under a banner when runs are shorter than the
published budget, and one line naming the claims without data; the figures; then the details (how to
read, the claims with per-seed values, the runs and the training versions behind them, per dataset x
protocol the table in the paper's shape with, under each, the arms whose masking checks failed or whose
attacks used EOT; paired comparisons, the hybrid's hardware bill). The body speaks in plain names
(labels.py); the appendix holds the glossary of MLflow identifiers, further metrics under their MLflow
names, provenance and commands, and the sources every number links to: run ids with the one command that
opens them in the MLflow UI (a link only into a UI every reader can reach, never a loopback address).
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
from hqcbench.report import tuning
from hqcbench.report.bottom_line import bottom_line
from hqcbench.report.claim_tables import claim_tables, no_data_line
from hqcbench.report.claims import DATASET_LABELS, FLAWS, TIME_METRIC
from hqcbench.report.contribution import contribution_section
from hqcbench.report.document import Anchor, Document
from hqcbench.report.epochs import CONTENDED_SHARE, banner
from hqcbench.report.exports import read_related, write_exports
from hqcbench.report.forest import forest_file_name, write_forest
from hqcbench.report.formatting import relative_path, relative_paths
from hqcbench.report.judge import ARM_LABELS
from hqcbench.report.labels import glossary
from hqcbench.report.load import RunSet, WithRelated, load_runs
from hqcbench.report.masking_gate import UNRESOLVED_MASKING, UNRESOLVED_NO_WORST, check_names, group_notes
from hqcbench.report.noise import noise_section
from hqcbench.report.plots import make_figures
from hqcbench.report.provenance import provenance, run_commands
from hqcbench.report.sources import Sources
from hqcbench.report.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_SEEDS
from hqcbench.report.tables import further_metrics, hardware_table, paired_table, results_table, run_rows, table_metrics
from hqcbench.report.user_models import user_model_sentences, user_models_section
from hqcbench.tracking import runs as tracking


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class Report:
    """A written report: its document, the claims table as records (claims.csv) and every file written."""

    document: Document
    claims: list[dict]  # per claim and protocol: verdict, metric, epochs; per arm compared: mean, low, high, n, ...
    files: list[Path]


def _how_to_read() -> list:
    control = ARM_LABELS["control"]
    return [
        f"Each number is the mean over seeds ± the half-width of its {CONFIDENCE:.0%} Student-t interval "
        "(scipy.stats.t, df = seeds - 1), with the per-seed values beside it. With a single run, test accuracy gets a "
        f"percentile bootstrap interval over test examples ({BOOTSTRAP_RESAMPLES:,} resamples, seeded); other "
        "single-run numbers carry no interval. An interval that leaves the metric's possible values (an accuracy "
        "above 100 %) is flagged in its cell: with few seeds the t-interval ignores the bound.",
        "Accuracies are percent; differences of accuracies are percentage points (pp). Every number links to the "
        "list of MLflow runs it came from (Appendix: sources, with the command that opens them); runs.csv and "
        "history.csv beside this report hold every run's final and per-epoch metrics.",
        "Paired comparisons use the same seeds for both arms: same seed = same split and batch order.",
        "A claim is a directional hypothesis on the paired per-seed differences, judged against both classical "
        f"arms: hybrid - cnn (the published baseline) and hybrid - control ({control}: the same network without "
        "the circuit). Against each, it holds when the whole 95 % interval lies on the claimed side, does not hold "
        "when it lies wholly on the other side, and is inconclusive otherwise; no verdict from fewer than "
        f"{MIN_SEEDS} seeds. The claim holds only when it holds against both; otherwise the verdict says against "
        "which arm it holds.",
        "Beside each interval, for a reader who does not trust normality: the one-sided Wilcoxon signed-rank "
        "p-value of the per-seed differences (Holm-adjusted over the report's claims, one family per classical "
        "arm), the Hodges-Lehmann shift, and for an unsettled verdict the seeds a paired t-test would need for "
        "80 % power at the observed effect and spread. They inform; the verdict stays the interval rule above.",
        "Speed: the claim holds only when the interval of the cnn / hybrid time ratio lies above 5x (the lower end "
        "of the published 5-12x); above 1x but not above 5x reads 'faster, but not 5-12x'.",
        f"Timing: an epoch in which the process got less CPU than {CONTENDED_SHARE:g} x its threads shared the "
        "machine and is left out of every timing (seconds per epoch, speed ratios); the results tables count "
        "such contended epochs per arm.",
        "Robustness, under every protocol: the worst case over every attack run on the model at eps 0.1 in pixel "
        "units (per image, correct only if no attack broke it; it counts only with AutoAttack or Square among "
        "the attacks), on the seeds where both arms have it (n says how many). The published measure (PGD with "
        "eps 0.1 in normalised units on inputs clamped to [0, 1] there) and the clamp alone (no attack step) "
        "are shown beside it, labelled, and never judged on: most of the published measure is the clamp. Runs "
        "without a worst case fall back to PGD alone (fair, tuned) or the published measure (paper), and a "
        f"verdict that would settle on that one gradient attack reads '{UNRESOLVED_NO_WORST}'. Masking can only "
        "inflate a robust accuracy, so a difference holds only when neither arm failed a masking check in any "
        "seed, and a refutation stands only when the flags sit on the arm whose lower true number would refute "
        f"it further; otherwise '{UNRESOLVED_MASKING}', naming the checks, arms and seeds. Perturbations out of "
        "bounds block every settled verdict.",
        "Practical size: each claim has a threshold of practical relevance (accuracy 0.5 pp, robustness 2 pp, "
        "speed 1.1x, parameters 1 %, process memory 50 MB, CPU 0.1 cores; docs/report.md says why). A "
        "difference that holds but whose mean lies inside it, or an unsettled one whose whole interval does, "
        "reads 'negligible'. Parameter savings also give the absolute count.",
        "A CPU-use claim whose runs all used one thread reads 'not testable here': each process could keep at "
        "most one core busy, so no difference in CPU use can show.",
        "Under the paper protocol the accuracy claims compare the published measure (best validation epoch, "
        "augmented validation split); under the fair protocol they compare test accuracy of the checkpoint "
        "selected on validation.",
        "'no data' / 'not measured here: no data': that metric was not logged for that configuration.",
    ]


def build_report(runset: RunSet, out_dir: Path, ui_url: str = "", report_command: str = "",
                 report_run_id: str | None = None, rebuild: str = "", note: str = "",
                 related: list[str] | None = None, studies_file: Path | None = None) -> Report:
    """Write report.md, report.html, claims.csv, runs.csv, history.csv and the figures of ``runset`` into
    ``out_dir``; ``related``: report folders whose runs.csv feed the growth proxy; ``studies_file``: the
    Optuna SQLite file of a campaign's tuned blocks (their budget and search spaces are printed);
    ``ui_url``: an MLflow UI every reader can reach, to link runs into (none: run ids and the command that
    opens them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = str(out_dir)
    sources = Sources(runset, ui_url)
    related_runs = read_related(related or [])
    related_source = WithRelated(runset, related_runs) if len(related_runs) else None
    sources.add_external({str(r.run_id): f"{r.dataset}/{r.protocol}/{r.arm}/seed {r.seed} "
                          f"(runs.csv of {relative_path(str(r.source), out)})" for r in related_runs.itertuples()})
    claims = claim_tables(runset, sources, related_source, related_runs)
    figures = make_figures(runset, out_dir)
    forest_name = forest_file_name(runset.experiment_name)
    has_forest = write_forest(claims.forest, f"hqcbench: {runset.experiment_name}", out_dir / forest_name)

    doc = Document(f"hqcbench report: {runset.experiment_name}")
    doc.h2("Bottom line")
    doc.summary(_bottom_line(claims.verdicts, user_model_sentences(runset)), forest_name if has_forest else "",
                FOREST_CAPTION)
    doc.h2("Verdicts by claim")
    top = banner(runset.runs, DATASET_LABELS)
    if claims.verdict_rows:
        doc.p("One row per claim of the published abstract (arXiv 2509.13353) with data here; one column per "
              "protocol. Each cell: the verdict, then hybrid - CNN and hybrid - control with their 95 % intervals "
              "over seeds. A claim holds only when it holds against both; 'negligible' marks a difference below the "
              "claim's threshold of practical relevance. Details, per-seed values and rank tests: Claims in detail.")
        if top:
            doc.p(top)
        doc.table(claims.verdict_header, claims.verdict_rows, "verdicts")
        if claims.without_data:
            doc.p(no_data_line(claims.without_data))
    else:
        doc.p("No claim of the published abstract (arXiv 2509.13353) has data here: they compare the published "
              "hybrid with the CNN and the control, and these runs hold no such trio.")
        if top:
            doc.p(top)
    doc.h2("Figures")
    for section, title in (("learning", "Learning curves"), ("robustness", "Robustness vs eps"),
                           ("time", "Time per epoch")):
        doc.h3(title)
        if not figures[section]:
            doc.p("Not measured here: no data.")
        for name, caption in figures[section]:
            doc.img(name, caption)
    doc.h2("What the circuit contributes")
    contribution = contribution_section(doc, runset, sources, figures["contribution"], out_dir)
    user_models = user_models_section(doc, runset, sources, out_dir)
    noise_files = noise_section(doc, runset, sources, out_dir)
    doc.h2("How to read this report")
    doc.ul(_how_to_read())
    doc.h2("Claims in detail")
    doc.table(claims.header, claims.rows, "claims")
    doc.p("Known flaws of the published measurements (named beside each published number above):")
    doc.ul([Anchor(f"flaw-{key}", f"{short}: {full}") for key, (short, full) in FLAWS.items()])
    tuning_files = _tuning_section(doc, studies_file, out_dir)
    doc.h2("Runs")
    doc.table(["dataset", "protocol", "arms", "seeds", "epochs run (planned)", "train / val / test images",
               "batch", "caveats"],
              [[*row[:-1], relative_paths(str(row[-1]), out)] for row in run_rows(runset)], "runs")
    doc.p(training_versions_line(runset))
    if runset.excluded:
        doc.p(f"Left out ({len(runset.excluded)}):")
        doc.ul([[sources.run_ref(rid), f": {relative_paths(why, out)}"] for rid, why in runset.excluded])
    _detail_tables(doc, runset, sources)
    doc.h2(f"{APPENDIX}: glossary")
    doc.p("The plain names used above and the MLflow identifiers they stand for (runs.csv, claims.csv and the MLflow "
          "UI use the identifiers).")
    doc.table(["name in this report", "identifier", "what it is"], _glossary(runset, claims), "glossary")
    doc.h2(f"{APPENDIX}: further metrics")
    _further_metrics(doc, runset, sources)
    doc.h2(f"{APPENDIX}: provenance and commands")
    doc.ul(provenance(runset, report_command or "python -m hqcbench report", report_run_id, rebuild, note, out,
                      related))
    doc.p("Main jobs behind these runs (equivalent commands, parameters that differ from the defaults; paths "
          "relative to this report's folder):")
    doc.code("\n".join(run_commands(runset, out)) or "(parent runs not found)")
    doc.h2(f"{APPENDIX}: sources")
    doc.p(sources.how_to_open(out))
    doc.ul(sources.items())

    files = [out_dir / name for items in figures.values() for name, _ in items]
    if has_forest:
        files.append(out_dir / forest_name)
    files += noise_files
    md_path, html_path, claims_path = out_dir / "report.md", out_dir / "report.html", out_dir / "claims.csv"
    md_path.write_text(doc.to_markdown())
    html_path.write_text(doc.to_html(out_dir))
    pd.DataFrame(claims.records).to_csv(claims_path, index=False)
    exports = write_exports(runset, out_dir)
    return Report(doc, claims.records,
                  [md_path, html_path, claims_path, contribution.path, *([user_models] if user_models else []),
                   *exports, *files, *tuning_files])


MAX_BOTTOM_LINE = 6  # sentences: the answer in thirty seconds


def _bottom_line(verdicts, user_sentences: list[str]) -> list[str]:
    """The published claims' sentences, then the user models' (bottom_line.py, user_models.py), at most
    MAX_BOTTOM_LINE; models past that are counted and pointed to their section."""
    lines = bottom_line(verdicts)
    room = MAX_BOTTOM_LINE - len(lines)
    if len(user_sentences) > room:
        kept = user_sentences[:max(room - 1, 0)]
        user_sentences = kept + [f"{len(user_sentences) - len(kept)} more of your models: see Your models against "
                                 "their classical twins."]
    return (lines + user_sentences)[:MAX_BOTTOM_LINE] or ["No claim has data here."]


APPENDIX = "Appendix"  # every h2 from the first one starting with this is reference material, not the body
FOREST_CAPTION = ("Every claim and protocol with data: hybrid - CNN (circles) and hybrid - control (squares) with "
                  "95 % intervals over seeds; the line is no difference, diamonds the published difference, the grey "
                  "band the threshold below which a difference is negligible; one panel per unit.")


def training_versions_line(runset: RunSet) -> str:
    """Which training versions (jobs/fingerprint.TRAINING_VERSION, tag hqcbench.training_version) the runs carry:
    a version changes when the code changes what a configuration trains."""
    column = f"tags.{names.TAG_TRAINING_VERSION}"
    values = runset.runs[column] if column in runset.runs.columns else pd.Series(None, index=runset.runs.index)
    counts = values.astype(object).where(values.notna(), "not recorded").astype(str).value_counts()
    parts = [f"{version} ({count} run{'s' if count != 1 else ''})" for version, count in sorted(counts.items())]
    return ("Training version of the code that trained the runs: " + ", ".join(parts)
            + " ('not recorded': trained before runs carried it).")


def _glossary(runset: RunSet, claims) -> list[list[str]]:
    """Every arm, claim metric, robustness metric and masking check the body names, with its identifier."""
    arms = list(dict.fromkeys(a for d, p in runset.groups() for a in runset.arms(d, p)))
    metrics = ["best_val_acc", "test_acc", TIME_METRIC, "params_total", "rss_peak_mb_max", "cpu_util_cores_mean",
               "paper_memory_gb", "paper_cpu_percent"]
    metrics += [m.name for m in table_metrics(runset) if m.name not in metrics]
    return glossary(metrics, arms, check_names(runset.runs))


def _tuning_section(doc: Document, studies_file: Path | None, out_dir: Path) -> list[Path]:
    """The tuned protocol's studies: equal budgets, search spaces, best configurations (tuning.csv + a figure)."""
    studies = tuning.load_studies(studies_file) if studies_file else []
    if not studies:
        return []
    doc.h2("The tuned protocol: budgets and search spaces")
    doc.p("Under the tuned protocol every arm first gets an Optuna study (TPE sampler, median pruner; trials train "
          "with the fair recipe on the first seed and are scored by their best validation accuracy) with the same "
          "number of trials over the same search of what the arms share (backbone width, learning rate; the "
          "middle's width for the control and the circuit arms; the circuit's depth, encoding and ansatz for the "
          "circuit arms). Each arm's best configuration is then retrained with every seed and tested once. "
          f"Budget: {tuning.budget_line(studies)}.")
    header, rows = tuning.table(studies)
    doc.table(header, rows, "tuning")
    files = [out_dir / "tuning.csv"]
    tuning.records(studies).to_csv(files[0], index=False)
    for name, caption in tuning.history_figure(studies, out_dir):
        doc.img(name, caption)
        files.append(out_dir / name)
    return files


def _detail_tables(doc: Document, runset: RunSet, sources: Sources) -> None:
    """Results in the paper's shape, paired comparisons, the hardware bill and further metrics."""
    doc.h2("Results in the paper's shape")
    for dataset, protocol in runset.groups():
        doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
        head, body, missing = results_table(runset, sources, dataset, protocol)
        doc.table(head, body, f"results-{dataset}-{protocol}")
        for line in group_notes(runset.group(dataset, protocol), runset.arms(dataset, protocol)):
            doc.p(line)
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
        doc.p("Not measured here: no data (no hybrid run logged hardware-cost metrics).")


def _further_metrics(doc: Document, runset: RunSet, sources: Sources) -> None:
    """Every other final metric, by its MLflow name (the appendix)."""
    for dataset, protocol in runset.groups():
        head, body = further_metrics(runset, sources, dataset, protocol)
        if body:
            doc.h3(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol")
            doc.table(head, body, f"further-{dataset}-{protocol}")


def write_report(experiment: str, out: str = "", ui_url: str = "", log_run: bool = True,
                 report_command: str = "", rebuild: str = "", note: str = "",
                 related: list[str] | None = None, studies_file: Path | None = None) -> Report:
    """Load, write and (by default) log the report as artifacts of a report run."""
    runset = load_runs(experiment)
    out_dir = Path(out or os.path.join("reports", experiment))
    ui_url = ui_url or os.environ.get("HQCBENCH_MLFLOW_UI", "")
    if not log_run:
        return build_report(runset, out_dir, ui_url, report_command, None, rebuild, note, related, studies_file)
    resumed = bool(os.environ.get("MLFLOW_RUN_ID"))  # `mlflow run . -e report`: reuse the project run
    start = {} if resumed else {"experiment_id": runset.experiment_id, "run_name": f"report-{experiment}"}
    with tracking.open_run(**start) as run:
        mlflow.set_tags({names.TAG_KIND: "report", names.TAG_REPORT_OF: runset.experiment_name})
        report = build_report(runset, out_dir, ui_url, report_command, run.info.run_id, rebuild, note, related,
                              studies_file)
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
    related = [f.strip() for f in (args.related or "").split(",") if f.strip()]
    report = write_report(args.experiment, args.out or "", args.ui_url or "", args.log_run == "true", command,
                          args.rebuild or "", args.note or "", related)
    print(f"hqcbench: report written to {report.files[0].parent} ({', '.join(p.name for p in report.files)})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's flags (= the MLproject ``report`` parameters)."""
    parser.add_argument("--experiment", default=None, help="MLflow experiment name holding the runs")
    parser.add_argument("--out", default="", help="output folder (default: reports/<experiment>)")
    parser.add_argument("--ui_url", default="", help="an MLflow UI every reader can reach, to link runs into "
                        "(default: env HQCBENCH_MLFLOW_UI; none: the report lists run ids and the command that "
                        "opens them; a loopback address is never linked)")
    parser.add_argument("--log_run", default="true", help="log the report as a report run (true|false)")
    parser.add_argument("--rebuild", default="", help="command that rebuilds runs and report, named in the report")
    parser.add_argument("--note", default="", help="a line added to the provenance (e.g. how timings were taken)")
    parser.add_argument("--related", default="", help="comma-separated report folders holding a runs.csv (e.g. "
                        "reports/digits,reports/fashion_mnist): their runs feed only the growth proxy row")
