"""The forest plot: one axes per unit, one y tick per row labelled "claim (protocol)", the no-difference
line in every panel, rows without data left out, a page-wide figure and a PNG written only with data."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from hqcbench.report.forest import ForestRow, forest_figure, forest_file_name, row_label, write_forest

ACC = "accuracy and robustness (pp)"
SPEED = "training speed (x, cnn or control time / hybrid time)"
PARAMS = "parameters (% fewer)"


def _rows() -> list[ForestRow]:
    return [
        ForestRow("more accurate, MNIST", "paper", ACC, (1.0, -0.5, 2.5), (0.2, -1.0, 1.4), published=1.2,
                  negligible=0.5),
        ForestRow("no data anywhere", "fair", ACC, None, None),
        ForestRow("more robust, MNIST", "fair", ACC, (12.0, 5.0, 19.0), (3.0, None, None)),
        ForestRow("faster to train, MNIST", "paper", SPEED, (0.5, 0.4, 0.6), (0.7, 0.6, 0.8), reference=1.0,
                  log_scale=True, published=2.0, negligible=1.1),
        ForestRow("faster to train, CIFAR-100", "tuned", SPEED, None, (0.8, 0.7, 0.9), reference=1.0,
                  log_scale=True),
        ForestRow("more robust, Fashion-MNIST", "paper", ACC, (4.0, 1.0, 7.0), None),
        ForestRow("fewer parameters", "paper", PARAMS, (6.1, None, None), (0.04, None, None)),
    ]


def _vertical_lines_at(ax, x: float) -> list:
    """axvline draws a Line2D whose two x values are both ``x``, in data units."""
    return [line for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and np.allclose(np.asarray(line.get_xdata(), float), x)
            and list(line.get_ydata()) == [0, 1]]


@pytest.fixture()
def figure():
    fig = forest_figure(_rows(), "claims")
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def test_one_axes_per_panel_in_order_of_first_appearance(figure):
    assert [ax.get_xlabel() for ax in figure.axes] == [ACC, SPEED, PARAMS]


def test_each_panel_has_one_tick_per_row_labelled_claim_and_protocol_top_to_bottom(figure):
    acc, speed, params = figure.axes
    labels = {ax.get_xlabel(): [t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])]
              for ax in figure.axes}
    assert labels[ACC] == ["more accurate, MNIST (paper)", "more robust, MNIST (fair)",
                           "more robust, Fashion-MNIST (paper)"]
    assert labels[SPEED] == ["faster to train, MNIST (paper)", "faster to train, CIFAR-100 (tuned)"]
    assert labels[PARAMS] == ["fewer parameters (paper)"]
    assert [len(ax.get_yticks()) for ax in (acc, speed, params)] == [3, 2, 1]


def test_a_row_without_any_comparison_is_not_drawn(figure):
    labels = [t.get_text() for ax in figure.axes for t in ax.get_yticklabels()]
    assert not any("no data anywhere" in text for text in labels)


def test_the_reference_line_is_in_every_panel(figure):
    acc, speed, params = figure.axes
    assert _vertical_lines_at(acc, 0.0) and _vertical_lines_at(params, 0.0)
    assert _vertical_lines_at(speed, 1.0) and not _vertical_lines_at(speed, 0.0)
    assert speed.get_xscale() == "log" and acc.get_xscale() == "linear"


def test_both_comparisons_and_the_published_value_are_plotted(figure):
    acc = figure.axes[0]
    points = {(round(float(x), 3), round(float(y), 3)) for line in acc.get_lines()
              for x, y in zip(np.atleast_1d(line.get_xdata()), np.atleast_1d(line.get_ydata()))
              if line.get_linestyle() == "None"}
    top = 2  # three rows: the first is drawn at y = 2
    assert (1.0, top + 0.17) in points and (0.2, top - 0.17) in points  # cnn above, control below
    assert (1.2, top) in points  # the published difference on the row itself
    # the row with only hybrid - cnn has no control marker
    assert not any(y == pytest.approx(0 - 0.17) for _, y in points)


def test_the_figure_fits_a_page_and_grows_with_rows():
    small = forest_figure(_rows()[:1], "one")
    big = forest_figure(_rows(), "many")
    try:
        assert big.get_figwidth() <= 8.5 and small.get_figwidth() <= 8.5
        assert big.get_figheight() > small.get_figheight()
        assert len(big.legends) == 1
    finally:
        plt.close(small)
        plt.close(big)


def test_long_labels_are_cut_with_an_ellipsis():
    row = ForestRow("x" * 80, "paper", ACC, (1.0, None, None), None)
    assert len(row_label(row)) <= 45 and row_label(row).endswith("\u2026")


def test_write_forest_writes_a_png_and_nothing_without_rows(tmp_path):
    path = tmp_path / forest_file_name("hqcbench-mnist / run 1")
    assert "forest" in path.name and "/" not in path.name[len("forest"):] and path.suffix == ".png"
    assert write_forest(_rows(), "claims", path) is True
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "P"
    empty = tmp_path / forest_file_name("empty")
    assert write_forest([], "claims", empty) is False and not empty.exists()
    assert write_forest([ForestRow("no data", "fair", ACC, None, None)], "claims", empty) is False
    assert not empty.exists()
