"""The report's section "Under device noise": what the circuit arms keep of their accuracy and robustness
under a noise model, beside the classical arms that have no circuit to be noisy.

Why a section of its own: every other number of the report is a noiseless statevector's. A reader who
would run the hybrid on a device asks how much of its accuracy survives gate, decoherence and readout
errors (docs/noise.md). Per (dataset, protocol):

* a table: per circuit arm and noise model (the tag ``hqcbench.noise``), its noiseless test accuracy, its
  accuracy under the noise (``test_acc_noisy``) and the per-seed difference with its 95 % t-interval;
  models trained under noise (``train_noise``, ``RunSet.noise_trained``) get rows of their own, so the
  reader sees whether noise-aware training recovers what evaluation under noise loses;
* a robustness table: per circuit arm, noise model and eps, the worst case over the attacks run under that
  noise (``robust_acc_<attack>_eps_<eps>_noisy_<setting>``: crafted against the noisy model, classified
  under its noise) beside the same arm's noiseless worst case over the same attacks, and against each
  classical arm's noiseless worst case over them: does a robustness lead survive the device?
* a figure of the depolarizing sweep (``test_acc_depolarizing_<P>``): mean and 95 % t-interval over seeds
  per circuit arm against P, the noiseless accuracies of the classical arms (CNN, control, the user's
  classical models) as dashed reference lines: they have no circuit, so noise cannot touch them.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hqcbench import names  # noqa: E402
from hqcbench.report.claims import DATASET_LABELS  # noqa: E402
from hqcbench.report.contribution import answer  # noqa: E402
from hqcbench.report.document import Document, Inline  # noqa: E402
from hqcbench.report.formatting import fmt_claim_interval, fmt_interval  # noqa: E402
from hqcbench.report.labels import arm_label  # noqa: E402
from hqcbench.report.load import RunSet, col, group_rank  # noqa: E402
from hqcbench.report.sources import Sources  # noqa: E402
from hqcbench.report.stats import t_interval  # noqa: E402
from hqcbench.tracking.figures import save_png  # noqa: E402

SECTION_TITLE = "Under device noise"
SWEEP_PREFIX = "test_acc_depolarizing_"
TRAINED_NOISELESS = "noiseless"
PP = 100.0


def sweep_columns(runs: pd.DataFrame) -> dict[float, str]:
    """P -> the column of ``test_acc_depolarizing_<P>`` present with data."""
    out = {}
    for column in runs.columns:
        if column.startswith(SWEEP_PREFIX) and runs[column].notna().any():
            try:
                out[float(column[len(SWEEP_PREFIX):])] = column
            except ValueError:
                continue
    return dict(sorted(out.items()))


def _trained_under(runs: pd.DataFrame) -> pd.Series:
    """Per run: the noise model it was trained under ('noiseless' for the ordinary runs)."""
    tag = col(runs, f"tags.{names.TAG_TRAIN_NOISE}")
    return tag.fillna(TRAINED_NOISELESS).astype(str).str.split(";").str[0].str.strip()


def _all_runs(runset: RunSet) -> pd.DataFrame:
    frames = [runset.runs.assign(trained=TRAINED_NOISELESS)]
    if not runset.noise_trained.empty:
        frames.append(runset.noise_trained.assign(trained=_trained_under(runset.noise_trained)))
    return pd.concat(frames, ignore_index=True)


def _has_noise(runs: pd.DataFrame) -> bool:
    noisy = names.METRIC_TEST_ACC_NOISY
    return bool(noisy in runs and runs[noisy].notna().any()) or bool(sweep_columns(runs))


def _circuit(runs: pd.DataFrame) -> pd.Series:
    return col(runs, "params_quantum").fillna(0).astype(float) > 0


def _label(arm: str, trained: str) -> str:
    return arm_label(arm) if trained == TRAINED_NOISELESS else f"{arm_label(arm)}, trained under {trained}"


def setting_columns(runs: pd.DataFrame) -> dict[str, str]:
    """Noise setting (as the metric name spells it: ``device_FakeManilaV2``) -> its ``test_acc_noisy_<setting>``
    column with data: every noise model evaluated on the runs, not only the latest."""
    prefix = names.METRIC_TEST_ACC_NOISY + "_"
    return {c[len(prefix):]: c for c in sorted(runs.columns)
            if c.startswith(prefix) and runs[c].notna().any()}


def setting_label(suffix: str) -> str:
    """A metric name's setting back in the parameter's spelling: ``device_FakeManilaV2`` -> ``device:FakeManilaV2``,
    ``depolarizing_0.01_readout_0.02`` -> ``depolarizing:0.01+readout:0.02`` (names.noise_setting_metric)."""
    if suffix.startswith("device_"):
        return "device:" + suffix[len("device_"):]
    parts = [f"{kind}:{p}" for kind, p in re.findall(r"(depolarizing|readout)_([^_]+)", suffix)]
    if suffix.endswith("_" + names.NOISE_IDEAL_LOADING):
        parts.append(names.NOISE_IDEAL_LOADING)
    return "+".join(parts) if parts else suffix


def setting_cell(suffix: str) -> str:
    """A setting as a table shows it: the parameter's spelling, an idealisation said to be one."""
    label = setting_label(suffix)
    if label.endswith(names.NOISE_IDEAL_LOADING):
        return f"{label} (idealisation: the encoding's gates error-free)"
    return label


def noise_table(runs: pd.DataFrame, sources: Sources,
                classical: pd.DataFrame | None = None) -> tuple[list[Inline], list[list[Inline]]]:
    """Rows: circuit arm (and what it was trained under) x noise model: noiseless, noisy, noisy - noiseless,
    then noisy - each classical arm's noiseless accuracy on the seeds both have (does the advantage, or the
    deficit, survive the noise?), answered by the rules of "What the circuit contributes".
    One row per setting the runs were evaluated under (``test_acc_noisy_<setting>``); runs logged before
    per-setting names existed give one row from ``test_acc_noisy`` and the tag ``hqcbench.noise``."""
    references: dict[str, pd.Series] = {} if classical is None else {
        str(arm): rows_.dropna(subset=["test_acc"]).set_index("seed").test_acc.astype(float)
        for arm, rows_ in classical.groupby("arm")}
    settings = setting_columns(runs)
    if not settings and names.METRIC_TEST_ACC_NOISY not in runs:
        return [], []
    rows: list[list[Inline]] = []
    cells: list[tuple[object, object, str, pd.DataFrame, str]]  # arm, trained under, setting, its runs, column
    if settings:
        cells = [(arm, trained, setting_cell(setting),
                  group.dropna(subset=[column, "test_acc"]).sort_values("seed"), column)
                 for (arm, trained), group in runs.groupby(["arm", "trained"]) for setting, column in settings.items()]
    else:
        model = col(runs, f"tags.{names.TAG_NOISE}").fillna("")
        noisy = names.METRIC_TEST_ACC_NOISY
        cells = [(arm, trained, str(noise), group.dropna(subset=[noisy, "test_acc"]).sort_values("seed"), noisy)
                 for (arm, trained, noise), group in runs.assign(noise_model=model).groupby(
                     ["arm", "trained", "noise_model"])]
    for arm, trained, setting, group, column in cells:
        if group.empty:
            continue
        clean, under = group.test_acc.astype(float), group[column].astype(float)
        rows.append([_label(str(arm), str(trained)), str(setting),
                     sources.link(fmt_interval(t_interval(clean.tolist()), "pct"), group.run_id),
                     sources.link(fmt_interval(t_interval(under.tolist()), "pct"), group.run_id),
                     sources.link(fmt_interval(t_interval((under - clean).tolist()), "pct", signed=True, unit="pp"),
                                  group.run_id),
                     *(_versus(group.set_index("seed")[column].astype(float), reference, sources, group, other)
                       for other, reference in references.items())])
    header: list[Inline] = ["circuit arm", "noise model", "test accuracy, noiseless (%)", "under noise (%)",
                            "noise - noiseless (same seeds)",
                            *(f"under noise - {arm_label(other)}, noiseless" for other in references)]
    return (header, rows) if rows else ([], [])


def _seed_difference(first: pd.Series, second: pd.Series):
    """(the 95 % t-interval of first - second in pp over the seeds both have, those seeds); both by seed."""
    seeds = sorted(set(first.dropna().index) & set(second.dropna().index))
    if not seeds:
        return None, seeds
    return t_interval([(float(first[s]) - float(second[s])) * PP for s in seeds]), seeds


def _versus(noisy: pd.Series, reference: pd.Series, sources: Sources, group: pd.DataFrame, other: str,
            quantity: str = "accuracy") -> Inline:
    """The noisy circuit arm minus a classical arm's noiseless value over the seeds both have, in pp, with
    its t-interval and the answer (adds / costs ``quantity``, no difference shown, no verdict under 5 seeds)."""
    interval, seeds = _seed_difference(noisy, reference)
    if interval is None:
        return "no shared seeds"
    return sources.link(f"{answer(quantity, interval)}: {fmt_claim_interval(interval, 'pp')}",
                        group[group.seed.isin(seeds)].run_id)


ROBUST_NOISY = re.compile(r"^robust_acc_([a-z]+)_eps_([^_]+)_noisy_(.+)$")


def robust_settings(runs: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """(eps, setting) -> {attack: its ``robust_acc_<attack>_eps_<eps>_noisy_<setting>`` column} with data."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for column in sorted(runs.columns):
        found = ROBUST_NOISY.match(column)
        if found and runs[column].notna().any():
            attack, eps, setting = found.groups()
            out.setdefault((eps, setting), {})[attack] = column
    return out


def worst_case(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Per run (indexed by seed): the lowest of ``columns``, NaN where any is missing (a partial worst case
    would flatter the model)."""
    if not columns or any(c not in frame for c in columns):
        return pd.Series(dtype=float)
    values = frame.set_index("seed")[columns].astype(float)
    return values.min(axis=1).where(values.notna().all(axis=1))


def robust_noise_table(runs: pd.DataFrame, sources: Sources,
                       classical: pd.DataFrame | None = None) -> tuple[list[Inline], list[list[Inline]]]:
    """Rows: circuit arm (and what it was trained under) x noise model x eps: the worst case over the attacks
    run under that noise, noiseless (the same attacks, ``robust_acc_<attack>_eps_<eps>``) and under the noise,
    their paired difference, then the noisy worst case minus each classical arm's noiseless one over the same
    attacks, answered as the robustness rows of "What the circuit contributes"."""
    settings = robust_settings(runs)
    others = {} if classical is None else dict(iter(classical.groupby("arm")))
    rows: list[list[Inline]] = []
    for (eps, setting), by_attack in settings.items():
        attacks = sorted(by_attack)
        clean_columns = [names.robust_metric(a, float(eps)) for a in attacks]
        for (arm, trained), group in runs.groupby(["arm", "trained"]):
            noisy = worst_case(group, [by_attack[a] for a in attacks]).dropna()
            if noisy.empty:
                continue
            clean = worst_case(group, clean_columns)
            interval, seeds = _seed_difference(noisy, clean)
            shared = group[group.seed.isin(seeds)].run_id
            rows.append([_label(str(arm), str(trained)), setting_cell(setting), eps, ", ".join(attacks),
                         sources.link(fmt_interval(t_interval(clean.reindex(seeds).tolist()), "pct"), shared),
                         sources.link(fmt_interval(t_interval(noisy.tolist()), "pct"), group.run_id),
                         "no shared seeds" if interval is None else sources.link(
                             fmt_claim_interval(interval, "pp"), shared),
                         *(_versus(noisy, worst_case(rows_, clean_columns), sources, group, str(other), "robustness")
                           for other, rows_ in others.items())])
    header: list[Inline] = ["circuit arm", "noise model", "eps", "attacks (worst case of)",
                            "robust accuracy, noiseless (%)", "under noise (%)", "noise - noiseless (same seeds)",
                            *(f"under noise - {arm_label(str(other))}, noiseless" for other in others)]
    return (header, rows) if rows else ([], [])


def recovery_lines(runs: pd.DataFrame, sources: Sources) -> list[list[Inline]]:
    """Does training under the noise recover what evaluation under it loses? Per arm trained under a noise
    model and evaluated under the same one: its noisy accuracy minus the noiseless-trained arm's under that
    noise, on the seeds both have, answered as in "What the circuit contributes"."""
    lines: list[list[Inline]] = []
    noisy = names.METRIC_TEST_ACC_NOISY
    under = col(runs, f"tags.{names.TAG_NOISE}").fillna("")
    for (arm, trained), group in runs.assign(noise_model=under).groupby(["arm", "trained"]):
        if trained == TRAINED_NOISELESS or noisy not in group:
            continue
        own = group[group.noise_model == trained].dropna(subset=[noisy]).set_index("seed")[noisy].astype(float)
        base = runs[(runs.arm == arm) & (runs.trained == TRAINED_NOISELESS)]
        column = names.noise_setting_metric(noisy, str(trained))
        if column not in base:
            base_values = base[under.loc[base.index] == trained].dropna(subset=[noisy]).set_index("seed")[noisy]
        else:
            base_values = base.dropna(subset=[column]).set_index("seed")[column]
        interval, seeds = _seed_difference(own, base_values.astype(float))
        if interval is None:
            continue
        lines.append([f"{arm_label(str(arm))} trained under {trained}, evaluated under it, minus the same arm "
                      f"trained noiseless and evaluated under it (does noise-aware training recover what the "
                      f"noise takes?): ",
                      sources.link(f"{answer('accuracy', interval)}: {fmt_claim_interval(interval, 'pp')}",
                                   group[group.seed.isin(seeds)].run_id), "."])
    return lines


def sweep_figure(circuit: dict[str, dict[float, list[float]]], classical: dict[str, float], title: str):
    """circuit: label -> {P: per-seed accuracies (fractions)}; classical: label -> mean noiseless accuracy.
    P = 0 sits at the left edge of a log axis (symlog below the smallest P > 0)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    positive = sorted({p for points in circuit.values() for p in points if p > 0})
    linthresh = positive[0] if positive else 1e-3
    for label, points in circuit.items():
        xs = sorted(points)
        ivs = [t_interval(points[x]) for x in xs]
        mean = np.array([iv.mean if iv is not None else np.nan for iv in ivs]) * PP
        low = np.array([iv.mean - iv.low if iv is not None and iv.low is not None else 0.0 for iv in ivs]) * PP
        high = np.array([iv.high - iv.mean if iv is not None and iv.high is not None else 0.0 for iv in ivs]) * PP
        seeds = sorted({len(points[x]) for x in xs})
        ax.errorbar(xs, mean, yerr=[low, high], fmt="o-", ms=4, capsize=3,
                    label=f"{label} (n={'/'.join(map(str, seeds))})")
    for style, (label, value) in zip(("--", ":", "-.", (0, (5, 1))), classical.items()):
        ax.axhline(value * PP, ls=style, color="grey", lw=1, label=f"{label}, noiseless (no circuit)")
    ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel("depolarizing probability P after every gate")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + " (mean, 95 % t-interval over seeds)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def noise_figure_name(dataset: str, protocol: str) -> str:
    return f"noise_sweep_{dataset}_{protocol}.png"


def depolarizing_setting_columns(runs: pd.DataFrame) -> dict[float, str]:
    """P -> ``test_acc_noisy_depolarizing_<P>``: a run evaluated under ``noise=depolarizing:P`` alone measured
    the sweep's quantity at that P (the same channel, the same test set), so the figure shows it too."""
    out = {}
    for suffix, column in setting_columns(runs).items():
        found = re.fullmatch(r"depolarizing_([^_]+)", suffix)
        if found:
            try:
                out[float(found.group(1))] = column
            except ValueError:
                continue
    return out


def _sweep_points(runs: pd.DataFrame) -> dict[str, dict[float, list[float]]]:
    """Per circuit arm label: P -> its runs' accuracies under depolarizing:P, from the sweep or, for a run
    without that sweep point, from its evaluation under that setting (one value per run)."""
    sweep, settings = sweep_columns(runs), depolarizing_setting_columns(runs)
    out: dict[str, dict[float, list[float]]] = {}
    for (arm, trained), group in runs.groupby(["arm", "trained"]):
        points = {}
        for p in sorted(set(sweep) | set(settings)):
            values = group[sweep[p]] if p in sweep else pd.Series(np.nan, index=group.index)
            if p in settings:
                values = values.fillna(group[settings[p]])
            points[p] = values.dropna().astype(float).tolist()
        points = {p: v for p, v in points.items() if v}
        if points:
            out[_label(str(arm), str(trained))] = points
    return out


def noise_section(doc: Document, runset: RunSet, sources: Sources, out_dir: Path) -> list[Path]:
    """Write the section into ``doc``; return the figures written."""
    doc.h2(SECTION_TITLE)
    runs = _all_runs(runset)
    if not _has_noise(runs):
        doc.p("Not measured here: no circuit arm was evaluated under noise (python -m hqcbench evaluate "
              "--noise ... --noise_sweep ... on a finished store; docs/noise.md).")
        return []
    doc.p("Test accuracy of the circuit arms with every gate, decoherence and readout error of a noise model "
          "(docs/noise.md; training and model selection noiseless unless a row says it was trained under noise), "
          "beside their noiseless accuracy on the same seeds; the figure sweeps the depolarizing probability, "
          "with the classical arms' noiseless accuracies as reference lines.")
    files = []
    groups = sorted({(d, p) for d, p in zip(runs.dataset, runs.protocol)}, key=group_rank)
    for dataset, protocol in groups:
        group = runs[(runs.dataset == dataset) & (runs.protocol == protocol)]
        circuit = group[_circuit(group)]
        if not _has_noise(circuit):
            continue
        label = f"{DATASET_LABELS.get(dataset, dataset)}, {protocol} protocol"
        doc.h3(label)
        classical_runs = group[~_circuit(group) & (group.trained == TRAINED_NOISELESS)]
        header, rows = noise_table(circuit, sources, classical_runs)
        if rows:
            doc.table(header, rows, f"noise-{dataset}-{protocol}")
        for line in recovery_lines(circuit, sources):
            doc.p(*line)
        header, rows = robust_noise_table(circuit, sources, classical_runs)
        if rows:
            doc.p("Robust accuracy under the noise: each attack crafted white-box against the noisy model and its "
                  "examples classified under the same noise, on the usual attacked subset; the worst case over the "
                  "attacks run under that noise, beside the same attacks' worst case without noise (robust "
                  "accuracy is the fraction of the attacked subset, so a clean-accuracy loss counts in it too).")
            doc.table(header, rows, f"noise-robust-{dataset}-{protocol}")
        points = _sweep_points(circuit)
        if points:
            references = {arm_label(str(arm)): float(rows_.test_acc.astype(float).mean())
                          for arm, rows_ in classical_runs.groupby("arm") if rows_.test_acc.notna().any()}
            name = noise_figure_name(dataset, protocol)
            fig = sweep_figure(points, references, label)
            save_png(fig, out_dir / name, dpi=110)
            doc.img(name, f"Test accuracy vs depolarizing probability, {label}")
            files.append(out_dir / name)
    return files
