"""README.md of the scaling study, written from the CSVs and the record of each part's run.

Every sentence is computed from the numbers (the slopes, the accuracies, the timings): nothing in
it is a conclusion written in advance. ``study.json`` in the same folder records, per part, the
command, the machine and the compute it used, so a README rebuilt after another part still names
how each half was made.
"""
from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import nnls

from hqcbench.data.datasets import REGISTRY
from hqcbench.hardware import cpu_model
from hqcbench.study.gradients import BATCH, TWO_DESIGN_SLOPE
from hqcbench.study.settings import DEFAULTS, ScalingSettings, parse_ints
from hqcbench.study.summary import (
    ACCURACY_COLUMNS,
    ACCURACY_CSV,
    ACCURACY_PNG,
    GRADIENT_COLUMNS,
    GRADIENT_CSV,
    GRADIENT_PNG,
    accuracy_summary,
    read_table,
    slope_table,
)
from hqcbench.threads import available_cpus

RECORD = "study.json"
EXPONENTIAL = -0.05  # a slope below this (variance x0.89 or less per qubit) counts as exponential decay
CLOSE_TO_2DESIGN = 0.06  # |slope - log10(1/2)| within this (factor 1.74..2.3 per qubit): "close to 2^-n"
FLAT_POINTS = 0.1  # accuracy trend within +-this many points per qubit: "about flat"
# A training that ends below this multiple of chance (1/classes) did not learn: said apart, because a mean
# over seeds with one stuck seed reads as a weak model rather than as an unreliable one.
STUCK_TIMES_CHANCE = 1.5


def machine() -> dict[str, Any]:
    """CPU model and counts, read now (the study may run on another machine than the one before)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": available_cpus(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__}


def record_part(out: Path, part: str, settings: ScalingSettings, seconds: float, cpu_seconds: float) -> None:
    """Add (or replace) ``part``'s entry in study.json."""
    path = out / RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    record[part] = {"command": settings.command(part), "machine": machine(), "seconds": round(seconds, 1),
                    "cpu_seconds": round(cpu_seconds, 1),
                    "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    path.write_text(json.dumps(record, indent=2) + "\n")


# ------------------------------------------------------------------ estimates of the default settings
def gradient_estimate(grad: pd.DataFrame) -> float | None:
    """CPU seconds the default gradient part would take. Per initialisation, a cell costs a fixed call
    overhead, an encoding and readout pass over the 2**n amplitudes, and one pass per layer:
    a + (b + c * depth) * 2**n, fitted (non-negative least squares) on the measured cells."""
    if grad.empty:
        return None
    size = 2.0 ** grad["n"].to_numpy(float)
    features = np.column_stack([np.ones_like(size), size, grad["depth"].to_numpy(float) * size])
    a, b, c = nnls(features, (grad["cpu_seconds"] / grad["inits"]).to_numpy(float))[0]
    qubits, depths = parse_ints(DEFAULTS["qubits"], "qubits", 1), parse_ints(DEFAULTS["depths"], "depths", 1)
    return float(int(DEFAULTS["inits"]) * sum(a + (b + c * d) * 2.0 ** n for n in qubits for d in depths))


def accuracy_estimate(acc: pd.DataFrame) -> tuple[float, list[str]] | None:
    """CPU seconds the default accuracy part would take, and the default datasets without any timing.

    Per (dataset, arm), a training costs epochs x (one epoch) + the rest (test pass, logging), each
    fitted as a + b * 2**n on the measured trainings (the circuit's states have 2**n amplitudes)."""
    if acc.empty:
        return None
    total, missing = 0.0, []
    widths = np.array(parse_ints(DEFAULTS["train_qubits"], "train_qubits", 1), dtype=float)
    seeds, epochs = len(parse_ints(DEFAULTS["seeds"], "seeds", 0)), int(DEFAULTS["epochs"])
    for dataset in DEFAULTS["datasets"].split(","):
        rows = acc[(acc["dataset"] == dataset) & acc["epoch_cpu_seconds"].notna()]
        if rows.empty:
            missing.append(dataset)
            continue
        for _, part in rows.groupby("arm"):
            size = 2.0 ** part["n"].to_numpy(float)
            epoch = part["epoch_cpu_seconds"].to_numpy(float)
            rest = np.maximum(part["cpu_seconds"].to_numpy(float) - part["epochs"].to_numpy(float) * epoch, 0.0)
            features = np.column_stack([np.ones_like(size), size])
            per_epoch, fixed = nnls(features, epoch)[0], nnls(features, rest)[0]
            total += seeds * sum(epochs * (per_epoch @ [1, 2 ** n]) + fixed @ [1, 2 ** n] for n in widths)
    return total, missing


# ------------------------------------------------------------------ text
def vanishing_sentence(slopes: pd.DataFrame) -> str:
    """Where the gradients vanish, from the per-depth slopes of the mean-over-weights variance."""
    valid = slopes.dropna(subset=["slope_mean"]).sort_values("depth")
    if valid.empty:
        return "No depth has two or more widths with a non-zero variance: no slope could be fitted."
    decaying = valid["slope_mean"] < EXPONENTIAL
    onset = None
    for i in range(len(valid)):
        if decaying.iloc[i:].all():
            onset = int(valid["depth"].iloc[i])
            break
    if onset is None:
        return (f"No depth shows exponential decay: every fitted slope is above {EXPONENTIAL} "
                f"(from {valid['slope_mean'].min():.3f} to {valid['slope_mean'].max():.3f}).")
    tail = valid[valid["depth"] >= onset]
    lo, hi = tail["slope_mean"].min(), tail["slope_mean"].max()
    factor = 10 ** -tail["slope_mean"].mean()
    close = (tail["slope_mean"] - TWO_DESIGN_SLOPE).abs().max() <= CLOSE_TO_2DESIGN
    relation = "close to" if close else "far from"
    text = (f"At depth >= {onset} the variance (mean over weights) falls by about x{factor:.2f} per qubit "
            f"(slopes {lo:.3f} to {hi:.3f}), {relation} the 2^-n of a unitary 2-design (slope "
            f"{TWO_DESIGN_SLOPE:.3f}, x2 per qubit).")
    shallow = valid[valid["depth"] < onset]
    if not shallow.empty:
        text += (f" Below that depth the slopes are {shallow['slope_mean'].min():.3f} to "
                 f"{shallow['slope_mean'].max():.3f}.")
    return text


def _trend(part: pd.DataFrame) -> float:
    """Accuracy change per qubit in percentage points (least-squares slope of the means)."""
    return float(np.polyfit(part["n"], part["mean"], 1)[0] * 100) if part["n"].nunique() > 1 else math.nan


def accuracy_sentences(acc: pd.DataFrame) -> list[str]:
    """Per dataset: how hybrid accuracy moves with n, and how it compares with the control."""
    summary, out = accuracy_summary(acc), []
    for dataset, rows in summary.groupby("dataset", sort=False):
        hyb = rows[rows["arm"] == "hybrid"].sort_values("n")
        ctl = rows[rows["arm"] == "control"].sort_values("n")
        if hyb.empty:
            continue
        trend = _trend(hyb)
        first, last = hyb.iloc[0], hyb.iloc[-1]
        if math.isnan(trend):
            move = f"is {first['mean']:.1%} at n={first['n']} (one width only)"
        else:
            verb = "grows" if trend > FLAT_POINTS else "falls" if trend < -FLAT_POINTS else "stays about flat"
            move = (f"{verb} with n: {first['mean']:.1%} at n={first['n']} to {last['mean']:.1%} at n={last['n']} "
                    f"(trend {trend:+.2f} points per qubit)")
        text = f"On {dataset}, hybrid test accuracy {move}."
        both = hyb.merge(ctl, on="n", suffixes=("_h", "_c"))
        diff = (both["mean_h"] - both["mean_c"]) * 100
        if len(both) == 1:
            text += f" The control is at {ctl.iloc[0]['mean']:.1%} (hybrid - control {diff.iloc[0]:+.1f} points)."
        elif len(both) > 1:
            text += (f" The control goes from {ctl.iloc[0]['mean']:.1%} to {ctl.iloc[-1]['mean']:.1%}; the hybrid "
                     f"is ahead at {int((diff > 0).sum())} of {len(both)} widths (hybrid - control from "
                     f"{diff.min():+.1f} to {diff.max():+.1f} points, mean {diff.mean():+.1f}).")
        out.append(text + stuck_sentence(acc[acc["dataset"] == dataset], str(dataset)))
    return out


def stuck_sentence(runs: pd.DataFrame, dataset: str) -> str:
    """Which trainings ended near chance (below ``STUCK_TIMES_CHANCE`` / classes), per arm; '' if none."""
    classes = REGISTRY[dataset].classes if dataset in REGISTRY else 10
    limit = STUCK_TIMES_CHANCE / classes
    parts = []
    for arm, rows in runs.groupby("arm", sort=False):
        stuck = rows[rows["test_acc"] < limit].sort_values(["n", "seed"])
        if not stuck.empty:
            which = ", ".join(f"n={int(n)} seed {int(seed)}" for n, seed in zip(stuck["n"], stuck["seed"]))
            parts.append(f"{len(stuck)} of {len(rows)} {arm} trainings ({which})")
    if not parts:
        return ""
    return (f" Ended near chance (test accuracy below {limit:.0%}, {STUCK_TIMES_CHANCE:g} x 1/{classes}): "
            + "; ".join(parts) + ".")


def _gradient_section(grad: pd.DataFrame) -> list[str]:
    slopes = slope_table(grad)
    lines = ["## Gradient variance at initialisation", "",
             f"Cost: the mean over {BATCH} fixed inputs of <Z> on qubit 0 (a local cost); variance over "
             f"{', '.join(str(i) for i in sorted(grad['inits'].unique()))} random initialisations of the hybrid "
             f"circuit. Slopes are least-squares fits of log10(variance) = a + b n; a unitary 2-design gives "
             f"b = {TWO_DESIGN_SLOPE:.3f}. Cells with a numerically zero variance are left out of the fit.", "",
             f"![gradient variance]({GRADIENT_PNG})", "",
             "| depth | slope b (mean over weights) | falls per qubit | widths fitted | slope b (first weight) "
             "| falls per qubit | widths fitted |", "|---|---|---|---|---|---|---|"]
    for r in slopes.to_dict("records"):
        lines.append(f"| {r['depth']} | {_num(r['slope_mean'], '.3f')} | {_num(r['factor_mean'], '.2f', 'x')} | "
                     f"{r['widths_mean']} | {_num(r['slope_first'], '.3f')} | {_num(r['factor_first'], '.2f', 'x')} | "
                     f"{r['widths_first']} |")
    lines += ["", vanishing_sentence(slopes), ""]
    return lines


def _num(value: float, fmt: str, prefix: str = "") -> str:
    """A table number, or "-" where nothing could be fitted."""
    return "-" if math.isnan(value) else f"{prefix}{value:{fmt}}"


def _accuracy_section(acc: pd.DataFrame) -> list[str]:
    summary = accuracy_summary(acc)
    wide = summary.pivot(index=["dataset", "n"], columns="arm", values=["mean", "std", "seeds"])
    epochs = ", ".join(str(e) for e in sorted(acc["epochs"].unique()))
    lines = ["## Trained test accuracy against width", "",
             f"Fair protocol, {epochs} epoch(s), test accuracy of the validation-selected checkpoint; the control "
             "replaces the circuit by Linear + tanh of the same width.", "",
             f"![accuracy]({ACCURACY_PNG})", "",
             "| dataset | n | hybrid | control | hybrid - control (points) | seeds |", "|---|---|---|---|---|---|"]
    for (dataset, n), (_, r) in zip(wide.index, wide.iterrows()):
        cells = [_mean_sd(r, arm) for arm in ("hybrid", "control")]
        diff = (r.get(("mean", "hybrid"), math.nan) - r.get(("mean", "control"), math.nan)) * 100
        seeds = int(np.nanmax([r.get(("seeds", arm), 0) for arm in ("hybrid", "control")]))
        lines.append(f"| {dataset} | {n} | {cells[0]} | {cells[1]} | {diff:+.1f} | {seeds} |")
    lines += [""] + accuracy_sentences(acc) + [""]
    return lines


def _mean_sd(row: pd.Series, arm: str) -> str:
    mean, sd = row.get(("mean", arm), math.nan), row.get(("std", arm), math.nan)
    if math.isnan(mean):
        return "-"
    return f"{mean:.1%} ± {sd:.1%}" if not math.isnan(sd) else f"{mean:.1%}"


def _runs_section(record: dict[str, Any]) -> list[str]:
    lines = ["## How these numbers were made", "", "| part | command | machine | finished | wall s | CPU s |",
             "|---|---|---|---|---|---|"]
    for part, entry in record.items():
        m = entry["machine"]
        where = (f"{m['cpu_model']}, {m['cpu_count']} logical CPUs ({m['cpus_usable']} usable, "
                 f"{m['torch_threads']} torch threads)" + (f", {m['gpu']}" if m.get("gpu") else ""))
        lines.append(f"| {part} | `{entry['command']}` | {where} | {entry['finished']} | {entry['seconds']:.0f} | "
                     f"{entry['cpu_seconds']:.0f} |")
    lines += ["", "CPU s is process CPU time (wall time is longer when other jobs share the cores). "
              "Data folder: `DATA_DIR` holds `MNIST/raw` (or leave `--data_dir` out to use $HQCBENCH_DATA_DIR)."]
    return lines + [""]


def _too_narrow(table: pd.DataFrame, key: str) -> str | None:
    """Why the default part of ``key``'s widths cannot be estimated from ``table``, or None.

    The widest cells dominate (cost ~ 2**n), so extrapolating up to them from narrower ones is a guess."""
    widest = max(parse_ints(DEFAULTS[key], key, 1))
    if table.empty or table["n"].max() >= widest:
        return None
    return (f"its widest cell (n = {widest}) is wider than any measured here (n <= {table['n'].max()}), "
            "and the cost grows like 2^n")


def _cost_section(grad: pd.DataFrame, acc: pd.DataFrame) -> list[str]:
    lines = ["## Cost", ""]
    for name, table in (("gradient part", grad), ("accuracy part", acc)):
        if not table.empty:
            lines.append(f"- Measured, {name}: {table['cpu_seconds'].sum():.0f} CPU s ({table['seconds'].sum():.0f} "
                         f"wall s) over {len(table)} rows.")
    for name, table, key in (("gradient", grad, "qubits"), ("accuracy", acc, "train_qubits")):
        reason = _too_narrow(table, key)
        if reason:
            lines.append(f"- Default {name} part not estimated: {reason}.")
    g = gradient_estimate(grad) if not _too_narrow(grad, "qubits") else None
    a = accuracy_estimate(acc) if not _too_narrow(acc, "train_qubits") else None
    if g is not None:
        lines.append(f"- Estimated from these timings, default gradient part ({DEFAULTS['qubits']} qubits, depths "
                     f"{DEFAULTS['depths']}, {DEFAULTS['inits']} inits): {g / 3600:.2f} CPU h.")
    if a is not None:
        missing = f" (no timing for {', '.join(a[1])}: not included)" if a[1] else ""
        lines.append(f"- Estimated from these timings{missing}, default accuracy part ({DEFAULTS['datasets']}, "
                     f"widths {DEFAULTS['train_qubits']}, seeds {DEFAULTS['seeds']}, {DEFAULTS['epochs']} epochs): "
                     f"{a[0] / 3600:.2f} CPU h.")
    return lines + [""]


def write_readme(out: Path) -> Path:
    """README.md from whatever CSVs and run records ``out`` holds."""
    grad = read_table(out / GRADIENT_CSV, GRADIENT_COLUMNS)
    acc = read_table(out / ACCURACY_CSV, ACCURACY_COLUMNS)
    record = json.loads((out / RECORD).read_text()) if (out / RECORD).exists() else {}
    lines = ["# Barren plateaus and width scaling of the hybrid circuit", "",
             "Written by `python -m hqcbench study scaling` from the CSVs in this folder "
             "(what is measured and why: docs/scaling.md).", ""]
    if record:
        lines += _runs_section(record)
    lines += _gradient_section(grad) if not grad.empty else ["## Gradient variance at initialisation", "",
                                                             "Not run yet (`--part gradients`).", ""]
    lines += _accuracy_section(acc) if not acc.empty else ["## Trained test accuracy against width", "",
                                                          "Not run yet (`--part accuracy`).", ""]
    lines += _cost_section(grad, acc)
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
