"""The report's robustness and learning-curve figures, drawn from hand-made dicts: the PGD convergence
curves on their own raw-step axes, attacks measured at one eps together in one panel, no panel holding
a single point, and figures no wider than a landscape page; a RunSet's histories read back with the
convergence curves' raw steps."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from hqcbench import names
from hqcbench.report.load import CURVE_PREFIX, RunSet
from hqcbench.report.plots import ARM_COLORS, convergence_eps, learning_curves, robustness_curves, robustness_points
from hqcbench.report.stats import t_interval

STEPS = names.CONVERGENCE_STEPS_CURVE[len(CURVE_PREFIX):]
RESTARTS = names.CONVERGENCE_RESTARTS_CURVE[len(CURVE_PREFIX):]
EPS = (0.0, 0.1, 0.2, 0.3)


def _runs(points: dict[float, list[float]]) -> list[dict[float, float]]:
    """x -> per-seed values, as one {x: value} per seed."""
    seeds = len(next(iter(points.values())))
    return [{x: values[s] for x, values in points.items()} for s in range(seeds)]


def _attacks() -> dict:
    curve = {"cnn": _runs({e: [0.9 - e, 0.8 - e, 0.85 - e] for e in EPS}),
             "hybrid": _runs({e: [0.95 - e, 0.9 - e, 0.92 - e] for e in EPS})}
    at = {"cnn": _runs({0.1: [0.10, 0.20, 0.15]}), "hybrid": _runs({0.1: [0.30, 0.50, 0.40]}),
          "control": _runs({0.1: [0.20, 0.25, 0.30]})}
    return {
        STEPS: {"cnn": _runs({s: [0.5 / s ** 0.2] * 3 for s in (10, 40, 100, 200)}),
                "hybrid": _runs({s: [0.8 / s ** 0.1, 0.7, 0.75] for s in (10, 40, 100, 200)})},
        RESTARTS: {"cnn": _runs({r: [0.05, 0.04, 0.03] for r in (1, 5, 10)})},
        "fgsm": curve,
        "pgd": curve,
        "autoattack": at,
        "bpda": {"hybrid": at["hybrid"], "control": at["control"]},
        names.WORST: at,
        "pgd_paper": at,
    }


@pytest.fixture()
def figure():
    fig = robustness_curves(_attacks(), "MNIST / paper", convergence_eps=0.1)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def _by_xlabel(fig) -> dict[str, list]:
    out: dict[str, list] = {}
    for ax in fig.axes:
        out.setdefault(ax.get_xlabel(), []).append(ax)
    return out


def _plotted_points(ax) -> int:
    """Data markers drawn in an axes (curves and error-bar points alike; error-bar caps are not points)."""
    return sum(len(np.atleast_1d(line.get_xdata())) for line in ax.get_lines()
               if line.get_marker() not in (None, "None", "", "_", "|"))


def test_convergence_curves_have_their_own_panels_on_raw_steps(figure):
    panels = _by_xlabel(figure)
    (steps,), (restarts,) = panels["PGD steps"], panels["random restarts"]
    for ax, xs in ((steps, [10, 40, 100, 200]), (restarts, [1, 5, 10])):
        for line in ax.get_lines():
            assert list(line.get_xdata()) == xs  # raw steps, not divided like an eps
        assert ax.get_title() == "PGD convergence (eps 0.1)"
    assert steps.get_xscale() == "log" and restarts.get_xscale() == "linear"  # 10..200 spans more than a decade
    cnn = steps.get_lines()[0]
    assert list(cnn.get_ydata()) == pytest.approx([100 * 0.5 / s ** 0.2 for s in (10, 40, 100, 200)])


def test_eps_curves_keep_their_panels_on_an_eps_axis(figure):
    eps_panels = _by_xlabel(figure)["eps (L-inf, pixel units)"]
    assert sorted(ax.get_title() for ax in eps_panels) == ["FGSM", "PGD"]
    for ax in eps_panels:
        assert max(max(line.get_xdata()) for line in ax.get_lines()) == pytest.approx(0.3)


def test_attacks_at_one_eps_share_one_panel_with_plain_labels(figure):
    single = [ax for ax in figure.axes if ax.get_title() == "at eps 0.1"]
    assert len(single) == 1
    ax = single[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[:2] == ["AutoAttack", "BPDA"] and labels[3] == "worst case"
    assert labels[2].startswith("published PGD")
    # one point per arm and attack: 3 arms at AutoAttack, worst case and published PGD, 2 at BPDA
    assert _plotted_points(ax) == 3 + 2 + 3 + 3
    # the hybrid's AutoAttack point is the mean over seeds with its t-interval as the error bar
    hybrid = next(c for c in ax.containers if to_hex(c.lines[0].get_color()) == ARM_COLORS["hybrid"])
    assert hybrid.lines[0].get_ydata()[0] == pytest.approx(40.0)
    iv = t_interval([0.30, 0.50, 0.40])
    segment = hybrid.lines[2][0].get_segments()[0]
    assert segment[:, 1] == pytest.approx([100 * iv.low, 100 * iv.high])


def test_attacks_at_different_single_eps_still_share_one_panel():
    attacks = {"autoattack": {"cnn": _runs({0.1: [0.1, 0.2]})}, "bpda": {"cnn": _runs({0.2: [0.3, 0.4]})}}
    fig = robustness_curves(attacks, "t")
    try:
        (ax,) = fig.axes
        assert [t.get_text() for t in ax.get_xticklabels()] == ["AutoAttack\neps 0.1", "BPDA\neps 0.2"]
    finally:
        plt.close(fig)


def test_no_panel_holds_a_single_point_and_the_figure_fits_a_page(figure):
    assert all(_plotted_points(ax) > 1 for ax in figure.axes)
    assert len(figure.axes) == 2 + 1 + 2  # FGSM, PGD, the single-eps panel, steps, restarts
    assert figure.get_figwidth() <= 11
    columns = {round(ax.get_position().x0, 3) for ax in figure.axes}
    assert len(columns) <= 3
    assert len(figure.legends) == 1


def test_convergence_title_without_a_known_eps():
    fig = robustness_curves({STEPS: _attacks()[STEPS]}, "t")
    try:
        assert fig.axes[0].get_title() == "PGD convergence"
    finally:
        plt.close(fig)


def test_learning_curves_fit_a_page():
    runs = [{1: 0.5, 2: 0.6, 3: 0.7}, {1: 0.4, 2: 0.6, 3: 0.8}]
    panels = {m: {"cnn": runs, "hybrid": runs} for m in ("val_acc", "train_loss", "val_loss", "train_acc")}
    fig = learning_curves(panels, "t")
    try:
        assert fig.get_figwidth() <= 11 and len(fig.axes) == 4
    finally:
        plt.close(fig)


def test_robustness_points_keep_raw_steps_for_convergence_and_eps_for_attacks():
    curve_steps, curve_fgsm = names.CONVERGENCE_STEPS_CURVE, names.robust_curve_metric("fgsm")
    runs = pd.DataFrame({"run_id": ["a"], curve_steps: [0.5], curve_fgsm: [0.3],
                         names.robust_metric("autoattack", 0.1): [0.2], "pgd_convergence_eps": [0.1]})
    runset = RunSet("1", "synthetic", runs, pd.DataFrame(),
                    histories={("a", curve_steps): {10: 0.6, 40: 0.5}, ("a", curve_fgsm): {0: 0.9, 100: 0.3}})
    points = robustness_points(runset, runs)
    assert points == {STEPS: [{10: 0.6, 40: 0.5}], "fgsm": [{0.0: 0.9, 0.1: 0.3}], "autoattack": [{0.1: 0.2}]}
    assert convergence_eps(runs) == 0.1
    assert convergence_eps(runs.assign(pgd_convergence_eps=[None])) is None
