"""Worst-case robustness and the gradient-masking evidence: AutoAttack, BPDA, the gradient diagnostic,
PGD convergence and EOT for a sampled readout.

Real ART attacks on tiny digits models (60 images, budgets shrunk by monkeypatching the module
constants); nothing is mocked.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.evaluation import attacks, bpda, masking, worst_case
from hqcbench.evaluation import robustness as rb
from hqcbench.models.arms import build_model
from hqcbench.models.blocks import Classifier
from hqcbench.models.quantum import QuantumLayer, configure_readout
from hqcbench.models.readout import make_rng
from hqcbench.tracking import figures as plots

CPU = torch.device("cpu")
NEW_CHECKS = ("zero_grad", "bpda", "converged")


class Quantise(nn.Module):
    """Rounding to a 1/64 grid: predictions barely change, the gradient is exactly zero (masking by
    construction). It declares itself non-differentiable, so BPDA passes gradients straight through."""

    bpda_identity = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 64) / 64


@pytest.fixture(scope="module")
def evaluated(digits, small_cnn):
    """One run of every new piece on the cnn and a masked copy (budgets shrunk to keep it seconds)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(attacks, "APGD_ITER", 10)
    patch.setattr(attacks, "APGD_TARGETS", 3)
    patch.setattr(attacks, "SQUARE_MAX_ITER_STRONG", 100)
    patch.setattr(worst_case, "CONVERGENCE_IMAGES", 60)
    patch.setattr(worst_case, "CONVERGENCE_STEPS", (5, 10, 20, 40))
    patch.setattr(worst_case, "CONVERGENCE_RESTARTS", (1, 2, 4))
    masked = Classifier(small_cnn.normalize, nn.Sequential(Quantise(), small_cnn.body), "hybrid", "fair").eval()
    cfg = RunConfig(attacks="fgsm,pgd,autoattack,pgd_convergence", eps="0.2", attack_samples="60",
                    pgd_steps=20)
    trained = [SimpleNamespace(arm="cnn", seed=0, model=small_cnn), SimpleNamespace(arm="hybrid", seed=0, model=masked)]
    try:
        yield rb.run_all(trained, digits, cfg, CPU)
    finally:
        patch.undo()


def _check(found, name: str) -> str:
    return found.tags[names.check_tag(name)]


def test_masked_model_is_flagged_by_the_new_checks_and_its_worst_case_is_near_zero(evaluated):
    masked = evaluated["hybrid"]
    failed = [c for c in NEW_CHECKS if _check(masked, c) == "fail"]
    assert len(failed) >= 2, (failed, masked.texts[rb.SUMMARY_FILE])
    assert {"zero_grad", "bpda"} <= set(failed)
    assert masked.metrics[names.METRIC_ZERO_GRAD_FRACTION] == 1.0  # rounding: every gradient is exactly zero
    assert masked.metrics["check_zero_grad_pass"] == 0.0 and masked.tags[names.TAG_MASKING] == "true"
    assert "Quantise -> identity" in masked.tags[names.TAG_BPDA_SURROGATES]
    # gradient attacks see nothing, BPDA and the gradient-free attacks break it anyway
    assert masked.metrics["robust_acc_pgd_eps_0.2"] > 0.8
    assert masked.metrics["robust_acc_bpda_eps_0.2"] < 0.2
    assert masked.metrics["robust_acc_worst_eps_0.2"] <= 0.1


def test_normal_cnn_is_not_flagged(evaluated):
    cnn = evaluated["cnn"]
    assert _check(cnn, "zero_grad") == "pass" and _check(cnn, "converged") == "pass"
    assert _check(cnn, "bpda").startswith("skipped")  # nothing saturating to replace
    assert cnn.metrics[names.METRIC_ZERO_GRAD_FRACTION] == 0.0
    assert cnn.tags[names.TAG_MASKING] == "false", cnn.texts[rb.SUMMARY_FILE]
    assert names.TAG_ATTACK_EOT not in cnn.tags  # exact readout: no EOT


def test_worst_case_is_at_most_every_attack_on_the_same_images(evaluated):
    for arm, found in evaluated.items():
        worst = found.metrics["robust_acc_worst_eps_0.2"]
        singles = {k: v for k, v in found.metrics.items()
                   if k.startswith("robust_acc_") and k.endswith("_eps_0.2") and "worst" not in k}
        assert {"robust_acc_fgsm_eps_0.2", "robust_acc_pgd_eps_0.2", "robust_acc_autoattack_eps_0.2"} <= set(singles)
        assert all(worst <= acc + 1e-12 for acc in singles.values()), (arm, worst, singles)
        assert worst <= found.metrics["transfer_acc_from_" + ("hybrid" if arm == "cnn" else "cnn") + "_eps_0.2"]
        # per example: the artifact's worst column is the AND of every attack column
        rows = [line.split(",") for line in found.texts[names.ROBUST_CORRECT_ARTIFACT].strip().splitlines()]
        header, table = rows[0], np.array(rows[1:], dtype=int)
        attack_cols = [i for i, h in enumerate(header) if h.endswith("_eps_0.2") and not h.startswith("worst")]
        assert len(table) == 60 and len(attack_cols) >= 4
        np.testing.assert_array_equal(table[:, header.index("worst_eps_0.2")], table[:, attack_cols].min(1))
        assert table[:, header.index("worst_eps_0.2")].mean() == pytest.approx(worst)


def test_autoattack_members_account_for_every_image_it_broke(evaluated):
    """Each AutoAttack member's first breaks are disjoint shares; together they are what AutoAttack took
    from the clean accuracy. On the masked model every APGD variant fails (zero gradient), so Square
    breaks nearly all it breaks alone (APGD's random starts land on a few), and the square check reads that
    as masking."""
    for arm, found in evaluated.items():
        shares = {m: found.metrics[names.autoattack_first_metric(m, 0.2)] for m in attacks.autoattack_members(10)}
        taken = found.metrics["clean_acc_attack_subset"] - found.metrics["robust_acc_autoattack_eps_0.2"]
        assert sum(shares.values()) == pytest.approx(taken), (arm, shares)
    masked = evaluated["hybrid"]
    apgd = sum(masked.metrics[names.autoattack_first_metric(m, 0.2)] for m in ("apgd_ce", "apgd_dlr", "apgd_t"))
    first = {k: v for k, v in masked.metrics.items() if k.startswith("autoattack_first")}
    assert masked.metrics[names.autoattack_first_metric("square", 0.2)] > 2 * apgd, first
    assert _check(masked, "square") == "fail"
    assert _check(evaluated["cnn"], "square") == "pass", evaluated["cnn"].texts[rb.SUMMARY_FILE]


def test_convergence_curves_and_figure(evaluated):
    cnn = evaluated["cnn"]
    steps = sorted(s for n, _, s in cnn.stepped if n == names.CONVERGENCE_STEPS_CURVE)
    restarts = [v for n, v, s in sorted(cnn.stepped, key=lambda t: t[2]) if n == names.CONVERGENCE_RESTARTS_CURVE]
    assert steps == [5, 10, 20, 40] and len(restarts) == 3
    assert restarts == sorted(restarts, reverse=True)  # restarts only add broken images
    assert worst_case.CONVERGENCE_FILE in cnn.figures and cnn.metrics["pgd_convergence_images"] == 60
    for found in evaluated.values():
        for fig in found.figures.values():
            plots.close(fig)


def test_converged_check_fails_while_accuracy_still_falls():
    falling = rb.ModelResult("hybrid", 200, 10, convergence=masking.Convergence(
        0.1, 200, steps={10: 0.6, 40: 0.5, 100: 0.45, 200: 0.40}, restarts={1: 0.5, 5: 0.45, 10: 0.449}))
    check = next(c for c in masking.run_checks(falling) if c.name == "converged")
    assert check.failed and check.masking and "steps 100 -> 200" in check.detail
    assert "restarts" not in check.detail.split("still falling")[1]
    flat = rb.ModelResult("hybrid", 200, 10, convergence=masking.Convergence(
        0.1, 200, steps={100: 0.45, 200: 0.445}, restarts={5: 0.45, 10: 0.445}))
    assert not next(c for c in masking.run_checks(flat) if c.name == "converged").failed


# ----------------------------------------------------------------------------- pieces
def test_bpda_keeps_the_forward_and_replaces_the_backward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Softmax(dim=1), nn.Linear(5, 3))
    surrogate, replaced = bpda.bpda_model(net)
    assert replaced == ["1: Softmax -> identity"] and surrogate[1] is not net[1] and surrogate[0] is net[0]
    x = torch.randn(4, 6, requires_grad=True)
    torch.testing.assert_close(surrogate(x), net(x))
    grad, = torch.autograd.grad(surrogate(x).sum(), x)
    expected = (net[2].weight.sum(0) @ net[0].weight).expand(4, 6)  # W2 . I . W1
    torch.testing.assert_close(grad, expected)
    assert bpda.bpda_model(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))[1] == []

    layer = QuantumLayer(3, 2, "angle", "strong", seed=1)
    z = (torch.randn(5, 3) * 3).requires_grad_(True)
    true_grad, = torch.autograd.grad(layer(z).sum(), z)
    wrapped = bpda.AngleEncodingBPDA(layer)
    torch.testing.assert_close(wrapped(z), layer(z), atol=1e-5, rtol=1e-5)
    bpda_grad, = torch.autograd.grad(wrapped(z).sum(), z)
    # the circuit is differentiated exactly; only tanh's derivative (1 - tanh^2) is replaced by 1
    torch.testing.assert_close(bpda_grad * (1 - torch.tanh(z.detach()) ** 2), true_grad, atol=1e-5, rtol=1e-4)


def test_dlr_loss_is_scale_invariant_and_margin_loss_is_the_margin():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.2, 2.0, 1.0, 0.0]])
    y = torch.tensor([0, 0])
    dlr = attacks.DLRLoss(reduction="none")
    torch.testing.assert_close(dlr(7 * logits + 2, y), dlr(logits, y))
    assert dlr(logits, y)[0] < 0 < dlr(logits, y)[1]  # negative while correct
    margin = attacks.MarginLoss(reduction="none")(logits, torch.nn.functional.one_hot(y, 4).float())
    torch.testing.assert_close(margin, torch.tensor([-2.0, 1.8]))


def test_sampled_readout_gets_eot_and_its_gradient_is_the_mean_of_draws(digits, monkeypatch):
    from art.estimators.classification import PyTorchClassifier

    from hqcbench.evaluation.art_ext import EOTClassifier

    monkeypatch.setattr(attacks, "EOT_SAMPLES", 4)
    torch.manual_seed(0)
    model = build_model("hybrid", digits.spec, RunConfig(width=4, n_qubits=3)).eval()
    configure_readout(model, 200, None, seed=0)
    layer = model.quantum_layers()[0]
    data = attacks.attack_subset(digits.test, 6)
    clf = attacks.art_classifier(model, (1, 8, 8), 10, CPU)
    assert isinstance(clf, EOTClassifier) and clf.eot_samples == 4

    y = np.eye(10, dtype=np.float32)[data.y]  # one-hot, as ART's attacks pass labels
    layer.shot_rng = make_rng(5)
    averaged = clf.loss_gradient(data.x, y)
    layer.shot_rng = make_rng(5)  # the same draws, one by one
    draws = [PyTorchClassifier.loss_gradient(clf, data.x, y) for _ in range(4)]
    np.testing.assert_allclose(averaged, np.mean(draws, axis=0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(draws[0], draws[1])  # each draw samples fresh shots
    assert np.abs(averaged).max() > 0

    # the attack path uses it and says so
    monkeypatch.setattr(worst_case, "CONVERGENCE_IMAGES", 6)
    found = rb.run_all([SimpleNamespace(arm="hybrid", seed=0, model=model)], digits,
                       RunConfig(attacks="fgsm", eps="0.1", attack_samples="6"), CPU)["hybrid"]
    assert "4 readout samples averaged per gradient" in found.tags[names.TAG_ATTACK_EOT]
    assert any("finite-shot model: gradient attacks use 4 readout samples" in line for line in found.summary)
    assert layer.weights.requires_grad  # parameter gradients are switched back on afterwards
    for fig in found.figures.values():
        plots.close(fig)
