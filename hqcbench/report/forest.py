"""The report's forest plot: every claim's difference (hybrid - cnn and hybrid - control) with its
interval, on one page, beside the no-difference line and the published difference.

Why a panel per unit: accuracy points, speed ratios, parameter shares and megabytes cannot share an
x axis without one of them being squeezed to a dot, so each unit gets its own axes, as tall as its
rows, stacked on one page. Why pure drawing: the caller (the report) decides which numbers are shown
and in which unit; this module only places them, so it can be checked on hand-made rows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report runs headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from hqcbench.report.plots import ARM_COLORS, save  # noqa: E402

Estimate = tuple[float, float | None, float | None]  # mean, low, high (low/high None: no interval)

CNN_STYLE = {"color": ARM_COLORS["cnn"], "marker": "o", "label": "hybrid - cnn"}
CONTROL_STYLE = {"color": ARM_COLORS["control"], "marker": "s", "label": "hybrid - control"}
OFFSET = 0.17  # vertical offset of the two comparisons of a row, in row units: they never overlap
MAX_LABEL = 45  # characters of a y tick label before it is cut with an ellipsis
WIDTH_IN = 8.0  # fits a portrait page with margins (at most 8.5 in)
ROW_IN = 0.28  # height per row
PANEL_IN = 0.75  # per panel: its x axis, tick labels and x label
FIGURE_IN = 0.9  # title and legend


@dataclass(frozen=True)
class ForestRow:
    """One claim under one protocol: its two differences in the panel's display unit."""

    claim: str
    protocol: str
    panel: str
    cnn: Estimate | None
    control: Estimate | None
    reference: float = 0.0
    log_scale: bool = False
    published: float | None = None
    negligible: float | None = None


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers (0.5, 2) instead of powers of ten: a speed ratio spans a
    decade or two, and "5e-01" reads worse than "0.5". Which ticks get a label stays LogFormatter's call."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def drawable(rows: list[ForestRow]) -> list[ForestRow]:
    """The rows with at least one comparison: a row without data would only be an empty label."""
    return [r for r in rows if r.cnn is not None or r.control is not None]


def row_label(row: ForestRow) -> str:
    """'claim (protocol)', cut to MAX_LABEL characters so the data keep most of the page's width."""
    text = f"{row.claim} ({row.protocol})"
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1].rstrip() + "\u2026"


def _panels(rows: list[ForestRow]) -> dict[str, list[ForestRow]]:
    """panel -> its rows, panels in order of first appearance, rows in input order."""
    out: dict[str, list[ForestRow]] = {}
    for row in rows:
        out.setdefault(row.panel, []).append(row)
    return out


def _point(ax, estimate: Estimate | None, y: float, style: dict) -> None:
    """One comparison: a marker, with a horizontal bar when both ends of its interval are known."""
    if estimate is None:
        return
    mean, low, high = estimate
    xerr = [[mean - low], [high - mean]] if low is not None and high is not None else None
    ax.errorbar([mean], [y], xerr=xerr, fmt=style["marker"], color=style["color"], ms=5, capsize=2.5,
                elinewidth=1.2, zorder=3)


def _negligible_span(ax, row: ForestRow) -> None:
    """The practically negligible band around the reference (a factor on a log axis)."""
    if row.negligible is None:
        return
    if row.log_scale:
        low, high = row.reference / row.negligible, row.reference * row.negligible
    else:
        low, high = row.reference - row.negligible, row.reference + row.negligible
    ax.axvspan(low, high, color="0.88", zorder=0, lw=0)


def _draw_panel(ax, name: str, rows: list[ForestRow]) -> None:
    """One unit: rows top to bottom, the reference line, the published values and negligible bands."""
    n = len(rows)
    for i, row in enumerate(rows):
        y = n - 1 - i
        _negligible_span(ax, row)
        _point(ax, row.cnn, y + OFFSET, CNN_STYLE)
        _point(ax, row.control, y - OFFSET, CONTROL_STYLE)
        if row.published is not None:
            ax.plot([row.published], [y], "D", mfc="none", mec="black", ms=6, mew=1.2, zorder=4)
    for reference in sorted({row.reference for row in rows}):
        ax.axvline(reference, color="0.25", lw=0.9, ls="--", zorder=1)
    if any(row.log_scale for row in rows):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    ax.set_yticks(range(n - 1, -1, -1), [row_label(row) for row in rows], fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(name, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3, which="both")


def _legend_handles(rows: list[ForestRow]) -> list:
    """The figure's one legend: the two comparisons, and the published marker and band when drawn."""
    handles: list = [Line2D([], [], ls="none", ms=5, marker=s["marker"], color=s["color"], label=s["label"])
                     for s in (CNN_STYLE, CONTROL_STYLE)]
    if any(r.published is not None for r in rows):
        handles.append(Line2D([], [], ls="none", marker="D", mfc="none", mec="black", ms=6, label="published"))
    if any(r.negligible is not None for r in rows):
        handles.append(Patch(color="0.88", label="practically negligible"))
    return handles


def forest_figure(rows: list[ForestRow], title: str) -> Figure:
    """One axes per panel (unit), stacked, each as tall as its rows; one legend above them all.
    Raises ValueError when no row has a comparison (write_forest checks first)."""
    rows = drawable(rows)
    if not rows:
        raise ValueError("a forest plot needs at least one row with a comparison")
    panels = _panels(rows)
    height = FIGURE_IN + PANEL_IN * len(panels) + ROW_IN * len(rows)
    fig = plt.figure(figsize=(WIDTH_IN, height), layout="constrained")
    grid = fig.add_gridspec(len(panels), 1, height_ratios=[len(r) + PANEL_IN / ROW_IN for r in panels.values()])
    for k, (name, panel_rows) in enumerate(panels.items()):
        _draw_panel(fig.add_subplot(grid[k, 0]), name, panel_rows)
    handles = _legend_handles(rows)
    # the title as the legend's title: both sit above the panels and constrained layout keeps them apart
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8, frameon=False,
               title=title, title_fontsize=10)
    return fig


def forest_file_name(experiment: str) -> str:
    """'forest_<experiment>.png' with every character a file name may not hold replaced by '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._")
    return f"forest_{safe}.png" if safe else "forest.png"


def write_forest(rows: list[ForestRow], title: str, path: Path) -> bool:
    """Draw and save as a palette PNG; False (and no file) when no row has data to draw."""
    if not drawable(rows):
        return False
    save(forest_figure(rows, title), Path(path))
    return True
