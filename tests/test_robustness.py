"""Robustness: ART attacks in pixel space and the checks against fake robustness.

Every test runs real ART attacks on real (tiny) models; nothing here is mocked.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.evaluation import attack_table, attacks, masking, paper_attack
from hqcbench.evaluation import robustness as rb
from hqcbench.models.blocks import Classifier
from hqcbench.tracking import figures as plots

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- fixtures
class ZeroGradRound(nn.Module):
    """Rounding to a 1/64 grid (in normalised units): predictions barely change, but torch.round's
    gradient is exactly zero, so every gradient-based attack is blind -- textbook gradient masking."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 64) / 64


def masked_copy(model: Classifier, arm: str) -> Classifier:
    return Classifier(model.normalize, nn.Sequential(ZeroGradRound(), model.body), arm, "fair").eval()


# ----------------------------------------------------------------------------- closed form
class TwoClassLinear(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(w.shape[1], 2)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            self.linear.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_fgsm_matches_closed_form_on_linear_model():
    """For logits W x + b and cross-entropy, the loss gradient w.r.t. x is -(1 - p_y) (w_y - w_o), so
    L-inf FGSM moves x to x - eps * sign(w_y - w_o), and the margin m = (w_y - w_o).x + b_y - b_o
    drops by exactly eps * ||w_y - w_o||_1 -- the smallest margin anywhere in the eps ball, so FGSM is
    optimal and PGD cannot do better. Inputs stay in [0.3, 0.7]: clipping to [0, 1] never binds."""
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.normal(0, 0.3, (2, 16)).astype(np.float32))
    b = torch.from_numpy(rng.normal(0, 0.1, 2).astype(np.float32))
    model = TwoClassLinear(w, b)
    x = rng.uniform(0.3, 0.7, (64, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 2, 64)
    eps = 0.1
    clf = attacks.art_classifier(model, (1, 4, 4), 2, CPU)
    x_adv = attack_table.build_attack("fgsm", clf, eps, RunConfig()).generate(x, y)

    wn, bn, xf = w.numpy().astype(np.float64), b.numpy().astype(np.float64), x.reshape(64, -1).astype(np.float64)
    d = wn[y] - wn[1 - y]  # (64, 16): w_y - w_other per example
    margin = (d * xf).sum(1) + bn[y] - bn[1 - y]
    expected_margin = margin - eps * np.abs(d).sum(1)
    expected_x = xf - eps * np.sign(d)

    np.testing.assert_allclose(x_adv.reshape(64, -1), expected_x, atol=1e-6)
    logits = model(torch.from_numpy(x_adv)).detach().numpy().astype(np.float64)
    got_margin = logits[np.arange(64), y] - logits[np.arange(64), 1 - y]
    np.testing.assert_allclose(got_margin, expected_margin, atol=1e-5)
    assert ((got_margin > 0).mean() == pytest.approx((expected_margin > 0).mean()))
    assert (expected_margin < 0).any() and (expected_margin > 0).any()  # both outcomes are exercised

    cfg = RunConfig(pgd_steps=20)
    with attacks.seeded_numpy(0):
        x_pgd = attack_table.build_attack("pgd", clf, eps, cfg).generate(x, y)
    logits = model(torch.from_numpy(x_pgd)).detach().numpy().astype(np.float64)
    pgd_margin = logits[np.arange(64), y] - logits[np.arange(64), 1 - y]
    assert (pgd_margin >= expected_margin - 1e-5).all()  # nothing in the ball beats the closed form
    np.testing.assert_allclose(pgd_margin, expected_margin, atol=1e-4)  # and PGD converges to it


# ----------------------------------------------------------------------------- bound and range check
def test_bound_check_passes_valid_and_fails_violating_perturbations():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, (8, 1, 4, 4)).astype(np.float32)
    eps = 0.1
    valid = np.clip(x + eps * np.sign(rng.normal(size=x.shape)), 0, 1).astype(np.float32)
    assert masking.check_bounds(x, valid, eps).ok

    too_far = x.copy()
    too_far[3, 0, 1, 1] += eps + 1e-3  # one pixel beyond the ball
    check = masking.check_bounds(x, too_far, eps)
    assert not check.ok and check.linf_excess == pytest.approx(1e-3, abs=1e-5)

    x_edge = x.copy()
    x_edge[0, 0, 0, 0] = 0.98
    out_of_range = x_edge.copy()
    out_of_range[0, 0, 0, 0] = 1.05  # within eps of its pixel, but outside [0, 1]
    check = masking.check_bounds(x_edge, out_of_range, eps)
    assert check.linf_excess <= masking.BOUND_TOL and not check.ok
    assert check.range_excess == pytest.approx(0.05, abs=1e-6)

    below = x.copy()
    below[5, 0, 2, 2] = -0.01
    assert not masking.check_bounds(x, below, 1.0).ok

    result = rb.ModelResult("cnn", 8, 10)
    result.bounds.update(x, too_far, eps)
    bounds = next(c for c in masking.run_checks(result) if c.name == "bounds")
    assert bounds.failed and not bounds.masking  # a broken attack, not gradient masking


# ----------------------------------------------------------------------------- gradient masking
def test_masked_model_is_flagged_and_normal_cnn_is_not(digits, small_cnn, monkeypatch):
    cfg = RunConfig(attacks="fgsm,pgd,square", eps="0.1", attack_samples="100", pgd_steps=20)
    trained = [SimpleNamespace(arm="cnn", seed=0, model=small_cnn),
               SimpleNamespace(arm="hybrid", seed=0, model=masked_copy(small_cnn, "hybrid"))]
    found = rb.run_all(trained, digits, cfg, CPU)

    cnn, masked = found["cnn"], found["hybrid"]
    assert cnn.tags[names.TAG_MASKING] == "false", cnn.texts[rb.SUMMARY_FILE]
    for name in ("bounds", "pgd_le_fgsm", "high_eps", "transfer", "square"):
        assert cnn.tags[names.TAG_CHECK_PREFIX + name] == "pass", (name, cnn.texts[rb.SUMMARY_FILE])
    assert cnn.metrics["robust_acc_pgd_eps_0.1"] < cnn.metrics["clean_acc_attack_subset"] - 0.2

    assert masked.tags[names.TAG_MASKING] == "true"
    reason = masked.tags[names.TAG_MASKING_REASON]
    assert "transfer: from cnn" in reason and "square:" in reason
    assert masked.metrics[names.TAG_MASKING] == 1.0 and cnn.metrics[names.TAG_MASKING] == 0.0
    # gradients are zero: FGSM leaves every image where it was, so its robust acc is the clean acc
    assert masked.metrics["robust_acc_fgsm_eps_0.1"] == masked.metrics["clean_acc_attack_subset"]
    assert masked.metrics["transfer_acc_from_cnn_eps_0.1"] < masked.metrics["robust_acc_pgd_eps_0.1"] - 0.2
    assert masked.tags[names.TAG_CHECK_PREFIX + "bounds"] == "pass"  # the examples are valid, only useless

    # the metric names of docs/metrics.md, the curve steps and the artifacts
    for key in ("clean_acc_attack_subset", "robust_acc_fgsm_eps_0.1", "robust_acc_pgd_eps_0.1",
                "robust_acc_square_eps_0.1", "attack_time_s_fgsm", "attack_time_s_pgd", "attack_time_s_square"):
        assert key in cnn.metrics, key
    steps = {name: sorted(s for n, _, s in cnn.stepped if n == name)
             for name in ("robust_curve_fgsm", "robust_curve_pgd")}
    assert steps["robust_curve_fgsm"] == [0, 50, 100, 150, 200, 250, 300]
    assert steps["robust_curve_pgd"] == [0, 100, 200, 300]
    curve = [v for n, v, s in sorted(cnn.stepped, key=lambda t: t[2]) if n == "robust_curve_pgd"]
    assert curve == sorted(curve, reverse=True) and curve[0] == cnn.metrics["clean_acc_attack_subset"]
    assert rb.CURVE_FILE in cnn.figures and "possible_gradient_masking: false" in cnn.texts[rb.SUMMARY_FILE]
    for fig in [*cnn.figures.values(), *masked.figures.values()]:
        plots.close(fig)


def test_each_masking_check_fails_on_its_own_symptom():
    """FGSM beating PGD, or accuracy above chance at eps 0.5, flags the model (pure check logic)."""
    fgsm_wins = rb.ModelResult("hybrid", 500, 10, robust={"fgsm": {0.1: 0.30}, "pgd": {0.1: 0.50}})
    checks = {c.name: c for c in masking.run_checks(fgsm_wins)}
    assert checks["pgd_le_fgsm"].failed and masking.masking_reasons(checks.values())
    within_tolerance = rb.ModelResult("hybrid", 500, 10, robust={"fgsm": {0.1: 0.300}, "pgd": {0.1: 0.305}})
    assert not masking.masking_reasons(masking.run_checks(within_tolerance))
    above_chance = rb.ModelResult("hybrid", 500, 10, curves={"pgd": {0.0: 0.9, 0.5: 0.4}})
    assert {c.name for c in masking.run_checks(above_chance) if c.failed} == {"high_eps"}


# ----------------------------------------------------------------------------- subset
def test_attack_subset_is_fixed_and_capped_with_a_note(digits):
    a, b = attacks.attack_subset(digits.test, 100), attacks.attack_subset(digits.test, 100)
    np.testing.assert_array_equal(a.x, b.x)
    assert len(a) == 100 and not a.note and 0.0 <= a.x.min() and a.x.max() <= 1.0
    capped = attacks.attack_subset(digits.test, 1000)
    assert len(capped) == len(digits.test) == 360 and "capped" in capped.note and "360" in capped.note
    assert len(attacks.attack_subset(digits.test, None)) == 360 and not attacks.attack_subset(digits.test, None).note


# ----------------------------------------------------------------------------- the published attack
def test_paper_attack_reproduces_the_clamping_flaw(digits, small_cnn):
    """On normalised inputs clamped to [0, 1], the 'eps 0.1' attack really moves pixels by far more."""
    val = attacks.attack_subset(digits.val, 120)
    result = paper_attack.paper_attack(small_cnn, val, CPU)
    # digits: a white pixel (1.0) normalises to 1.83 and is clamped to 1.0, i.e. 0.69 in pixel units
    assert result.pixel_linf_max > 0.3 > paper_attack.PAPER_EPS
    assert 0.0 <= result.acc <= 1.0 and result.n == 120
    assert not small_cnn.training


def test_epoch_hook_runs_paper_attack_every_fifth_and_last_epoch(digits, small_cnn):
    assert paper_attack.paper_epochs(12) == [5, 10, 12] and paper_attack.paper_epochs(3) == [3]
    cfg = RunConfig(protocol="paper", attacks="pgd_paper", epochs=7, attack_samples="60")
    hook = paper_attack.make_epoch_hook(cfg, digits, CPU)
    assert not hook(3, small_cnn).stepped
    found = hook(5, small_cnn)
    steps = {(n, s) for n, _, s in found.stepped}
    assert (paper_attack.PAPER_METRIC, 5) in steps and ("pgd_paper_pixel_linf_max", 5) in steps
    assert paper_attack.PAPER_METRIC == "robust_acc_pgd_paper_eps_0.1"
    assert (paper_attack.PAPER_METRIC, 7) in {(n, s) for n, _, s in hook(7, small_cnn).stepped}
    fair = paper_attack.make_epoch_hook(RunConfig(attacks="fgsm,pgd,pgd_paper", epochs=5), digits, CPU)
    assert not fair(5, small_cnn).stepped  # under fair the paper attack runs once, at the end


def test_no_attacks_means_no_findings(digits, small_cnn):
    trained = [SimpleNamespace(arm="cnn", seed=0, model=small_cnn)]
    assert rb.run_all(trained, digits, RunConfig(attacks="none"), CPU) == {}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_main_run_logs_robustness_to_each_child_run(mlflow_store, tmp_path):
    import mlflow

    from hqcbench.jobs.run import run_main

    cfg = RunConfig(epochs=1, arms="cnn,control", width=8, attacks="fgsm,pgd,pgd_paper", attack_samples="60",
                    pgd_steps=10)
    trained = run_main(cfg, progress=False)
    client = mlflow.MlflowClient()
    for item in trained:
        run = client.get_run(item.run_id)
        metrics, tags = run.data.metrics, run.data.tags
        for key in ("clean_acc_attack_subset", "robust_acc_fgsm_eps_0.1", "robust_acc_pgd_eps_0.1",
                    "robust_acc_pgd_paper_eps_0.1", "attack_time_s_pgd", "attack_time_s_pgd_paper"):
            assert key in metrics, (item.arm, key)
        history = client.get_metric_history(item.run_id, "robust_curve_pgd")
        assert sorted(m.step for m in history) == [0, 100, 200, 300]
        assert tags[names.TAG_MASKING] in ("true", "false") and tags[names.TAG_CHECK_PREFIX + "bounds"] == "pass"
        artifacts = {a.path for a in client.list_artifacts(item.run_id)}
        assert {rb.CURVE_FILE, rb.SUMMARY_FILE} <= artifacts


@pytest.mark.parametrize("attack_list, eps", [("fgsm,pgd,bpda,pgd_convergence", "0.05,0.1"), ("square", "0.1"),
                                              ("pgd", "0.1")])
def test_stage_bar_passes_through_exactly_the_planned_stages(digits, small_cnn, monkeypatch, attack_list, eps):
    """The bar's total comes from planned_stages(cfg) before anything runs; attack_model must pass
    through those stages, in that order, and no others."""
    from hqcbench.evaluation.stages import StageBar

    cfg = RunConfig(attacks=attack_list, eps=eps, attack_samples="40", pgd_steps=5)
    data = attacks.attack_subset(digits.test, cfg.attack_sample_count)
    bar = StageBar(attack_table.stage_labels(cfg), "attacks cnn", enabled=False)
    rb.attack_model(small_cnn, "cnn", data, rb._input_shape(digits), digits.spec.classes, cfg, CPU, bar)
    assert bar.done == attack_table.stage_labels(cfg)
    assert ("zero_grad" in bar.done) == (attack_list != "square")


def test_the_attack_table_is_the_parameter_s_allowed_values():
    """config.ATTACKS (what the ``attacks`` parameter accepts) and the table's selectable rows are one list."""
    from hqcbench.config import ATTACKS

    assert sorted(attack_table.selectable_attacks()) == sorted(ATTACKS)  # config keeps the reports' display order


def test_a_row_added_to_the_attack_table_is_planned_and_run(digits, small_cnn, monkeypatch):
    """One table feeds the plan and the run: a new row (built like FGSM, at every eps) appears in the
    planned stages and attack_model runs it, logging its robust accuracy, with no other change."""
    built: list[float] = []

    def build_noise(classifier, eps, cfg, batch_size):
        built.append(eps)
        return attack_table.ATTACK_TABLE["fgsm"].build(classifier, eps, cfg, batch_size)

    row = attack_table.AttackEntry("fake_noise", False, attack_table._at_every_eps("fake_noise", curve=False),
                                   build_noise)
    monkeypatch.setitem(attack_table.ATTACK_TABLE, "fake_noise", row)
    cfg = RunConfig(attacks="fake_noise", eps="0.05,0.1", attack_samples="30")
    assert attack_table.stage_labels(cfg) == ["fake_noise eps=0.05", "fake_noise eps=0.1"]
    data = attacks.attack_subset(digits.test, cfg.attack_sample_count)
    result = rb.attack_model(small_cnn, "cnn", data, rb._input_shape(digits), digits.spec.classes, cfg, CPU)
    assert built == [0.05, 0.1]
    assert set(result.robust["fake_noise"]) == {0.05, 0.1}
    assert result.robust["fake_noise"][0.1] < result.clean_acc  # it really attacked


class NoGradient(nn.Module):
    """A model whose forward leaves autograd (a circuit on a non-differentiable simulator, say)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.inner(x)


def test_a_model_without_input_gradients_gets_the_gradient_free_attacks_only(digits, small_cnn):
    """The gradient attacks would fail (or step on nothing); the plan keeps only the gradient-free rows,
    with Square in place of requested gradient attacks, and the run says so in one line."""
    cfg = RunConfig(attacks="fgsm,pgd,autoattack", eps="0.1", attack_samples="30")
    blind = NoGradient(small_cnn).eval()
    data = attacks.attack_subset(digits.test, cfg.attack_sample_count)
    assert attacks.input_gradient_problem(blind, data.x, CPU) is not None
    assert attacks.input_gradient_problem(small_cnn, data.x, CPU) is None
    assert attack_table.stage_labels(cfg, gradients=False) == ["square eps=0.1"]
    assert "zero_grad" in attack_table.stage_labels(cfg)  # with gradients, everything requested
    found = rb.run_all([SimpleNamespace(arm="blind", model=blind, seed=0)], digits, cfg, CPU)["blind"]
    note = found.tags[names.TAG_GRADIENT_FREE]
    assert "no input gradients" in note and "square" in note and "fgsm, pgd, autoattack" in note
    assert names.robust_metric("square", 0.1) in found.metrics
    assert not any(names.robust_metric(a, 0.1) in found.metrics for a in ("fgsm", "pgd", "autoattack"))
