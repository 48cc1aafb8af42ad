"""Evaluation under noise: config fields, the up-front check, test_acc_noisy and the depolarizing sweep,
logged beside the noiseless numbers (which noise never changes), and evaluate on finished runs."""
from __future__ import annotations

import mlflow
import pytest
import torch

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY, ImageSet
from hqcbench.errors import UserInputError
from hqcbench.evaluation import noise as noise_evaluation
from hqcbench.jobs.fingerprint import evaluation_kinds
from hqcbench.models.arms import build_model
from hqcbench.models.noise import check_settings
from hqcbench.models.noise_spec import parse_noise
from hqcbench.training.loop import evaluate

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _test_set(rows: int = 40) -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(rows, 1, 8, 8, generator=gen), torch.randint(0, 10, (rows,), generator=gen))


def test_config_fields_and_their_checks():
    cfg = RunConfig(noise="depolarizing:0.01+readout:0.02", noise_sweep="0,0.01").validate()
    assert cfg.noise_method == "auto" and cfg.noise_trajectories == 200
    for bad in (dict(noise_method="exact"), dict(noise_trajectories=0)):
        with pytest.raises(UserInputError) as info:
            RunConfig(**bad).validate()
        assert info.value.parameter == next(iter(bad))
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(noise="depolarizing:2"))
    assert info.value.parameter == "noise" and "device:NAME" in str(info.value)
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(noise_sweep="0.1,x"))
    assert info.value.parameter == "noise_sweep"
    assert "no effect" in check_settings(RunConfig(arms="cnn,control", noise="depolarizing:0.1"))
    assert check_settings(RunConfig(noise="depolarizing:0.1")) == ""
    assert check_settings(RunConfig()) == ""


def test_device_checked_before_any_work():
    pytest.importorskip("qiskit_ibm_runtime")
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(noise="device:FakeNowhereV2"))
    assert "FakeManilaV2" in str(info.value)
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(noise="device:FakeManilaV2", n_qubits=6))
    assert "only 5" in str(info.value)
    assert check_settings(RunConfig(noise="device:FakeManilaV2")) == ""
    # the paper protocol's circuit has 4 qubits whatever n_qubits says
    assert check_settings(RunConfig(protocol="paper", dataset="mnist", n_qubits=9, noise="device:FakeManilaV2")) == ""
    with pytest.raises(UserInputError) as info:
        check_settings(RunConfig(protocol="paper", dataset="mnist", train_noise="device:FakeArmonkV2"))
    assert info.value.parameter == "train_noise" and "4 qubits" in str(info.value)


def test_noise_is_an_optional_evaluation_kind():
    assert "noise" not in evaluation_kinds(RunConfig())  # old runs stay complete
    assert "noise" not in evaluation_kinds(RunConfig(noise_method="density"))
    assert "noise" in evaluation_kinds(RunConfig(noise="readout:0.1"))
    assert "noise" in evaluation_kinds(RunConfig(noise_sweep="0.01"))


def test_noisy_accuracy_sweep_and_tags_leave_the_model_noiseless():
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).eval()
    test = _test_set()
    clean = evaluate(model, test, 32, CPU).acc
    found = noise_evaluation.evaluate_noise(model, test, parse_noise("depolarizing:0"), [0.0, 0.5, 1.0], 32, CPU,
                                            "auto", 50, seed=0)
    assert found.metrics["test_acc_noisy"] == clean  # depolarizing:0 is the noiseless path
    assert found.metrics["test_acc_noisy_depolarizing_0"] == clean  # the same, named by its setting
    assert found.metrics["test_acc_depolarizing_0"] == clean
    assert {"test_acc_depolarizing_0.5", "test_acc_depolarizing_1"} <= set(found.metrics)
    assert [step for name, _, step in found.stepped if name == names.NOISE_SWEEP_CURVE] == [0, 500_000, 1_000_000]
    assert found.tags[names.TAG_NOISE] == "depolarizing:0" and "density" in found.tags[names.TAG_NOISE_METHOD]
    assert "noise_sweep.png" in found.figures and found.texts["noise_sweep.csv"].startswith("depolarizing_p,")
    assert evaluate(model, test, 32, CPU).acc == clean  # nothing of the noise stays in the model
    # at P = 1 every <Z> is 0: the classifier sees one constant input, so every image gets the same class
    with noise_evaluation.noisy_layers(model, parse_noise("depolarizing:1")):
        preds = evaluate(model, test, 32, CPU).predictions
    assert len(set(preds.tolist())) == 1


def test_robust_accuracy_under_noise():
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).eval()
    test = _test_set(30)
    cfg = RunConfig(attacks="fgsm,pgd,square", eps="0.05,0.3", attack_samples="20", pgd_steps=3)
    args = (model, test)
    free = noise_evaluation.noisy_robustness(*args, parse_noise("depolarizing:0"), cfg, CPU, 0, (1, 8, 8), 10)
    noisy = noise_evaluation.noisy_robustness(*args, parse_noise("depolarizing:0.1"), cfg, CPU, 0, (1, 8, 8), 10)
    expected = {"clean_acc_attack_subset_noisy", "robust_acc_fgsm_eps_0.05_noisy", "robust_acc_fgsm_eps_0.3_noisy",
                "robust_acc_pgd_eps_0.05_noisy", "robust_acc_pgd_eps_0.3_noisy"}
    named = {f"robust_acc_{a}_eps_{e}_noisy_depolarizing_0.1" for a in ("fgsm", "pgd") for e in ("0.05", "0.3")}
    assert set(noisy.metrics) == expected | named  # square is not run under noise
    assert set(free.metrics) - expected == {n.replace("_0.1", "_0") for n in named}
    # depolarizing:0 is the noiseless model: its FGSM result is the noiseless attack's, recomputed here
    from hqcbench.evaluation.attack_table import build_attack
    from hqcbench.evaluation.attacks import art_classifier, attack_subset, predict_labels

    data = attack_subset(test, 20)
    clf = art_classifier(model, (1, 8, 8), 10, CPU)
    x_adv = build_attack("fgsm", clf, 0.3, cfg, 64).generate(data.x, data.y)
    assert free.metrics["robust_acc_fgsm_eps_0.3_noisy"] == float((predict_labels(clf, x_adv, 64) == data.y).mean())
    for name in expected - {"clean_acc_attack_subset_noisy"} | named:
        assert noisy.metrics[name] <= noisy.metrics["clean_acc_attack_subset_noisy"] + 0.05, name
    assert not noise_evaluation.noisy_robustness(*args, parse_noise("none"), cfg, CPU, 0, (1, 8, 8), 10).metrics


def test_foreign_circuits_get_a_tag_and_no_number():
    class Marked(torch.nn.Module):
        hqcbench_quantum = True

        def forward(self, x):
            return torch.tanh(x)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), Marked())
    assert noise_evaluation.not_modelled(model).startswith("not modelled")
    item = type("Item", (), {"arm": "mine", "seed": 0, "model": model})()
    splits = type("Splits", (), {"test": _test_set()})()
    found = noise_evaluation.run_all([item], splits, RunConfig(noise="depolarizing:0.1"), CPU)
    assert found["mine"].tags[names.TAG_NOISE].startswith("not modelled") and not found["mine"].metrics


def test_main_run_and_evaluate_log_noise(mlflow_store):
    from hqcbench.jobs.evaluate import evaluate_experiment
    from hqcbench.jobs.run import run_main

    cfg = RunConfig(arms="hybrid,control", epochs=1, train_limit=60, width=4, attacks="fgsm", attack_samples="10",
                    noise="depolarizing:0.02+readout:0.01", noise_sweep="0,0.05")
    run_main(cfg, progress=False)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    hybrid = runs[runs["tags.hqcbench.arm"] == "hybrid"].iloc[0]
    control = runs[runs["tags.hqcbench.arm"] == "control"].iloc[0]
    for name in ("test_acc_noisy", "test_acc_depolarizing_0", "test_acc_depolarizing_0.05",
                 "robust_acc_fgsm_eps_0.1_noisy", "clean_acc_attack_subset_noisy"):
        assert 0 <= hybrid[f"metrics.{name}"] <= 1, name
        assert f"metrics.{name}" not in control or control[f"metrics.{name}"] != control[f"metrics.{name}"]
    assert hybrid["metrics.test_acc_depolarizing_0"] == hybrid["metrics.test_acc"]  # test_acc stays noiseless
    assert hybrid["tags.hqcbench.noise"] == "depolarizing:0.02+readout:0.01"
    assert hybrid["tags.hqcbench.noise_method"] == "density, noiseless"  # the sweep's P = 0 is noiseless
    assert isinstance(hybrid["tags.hqcbench.evaluation.noise"], str)
    # a noise setting added later runs the noise evaluation alone from the logged weights
    settings = RunConfig(attacks="fgsm", attack_samples="10", noise="readout:0.5")
    assert evaluate_experiment("hqcbench-digits", settings) == 1
    after = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    hybrid = after[after["tags.hqcbench.arm"] == "hybrid"].iloc[0]
    assert hybrid["tags.hqcbench.noise"] == "readout:0.5"
    assert evaluate_experiment("hqcbench-digits", settings) == 0  # nothing missing any more


def test_evaluate_only_selects_runs_by_their_tags():
    """evaluate --only: the campaign's terms over the runs' tags; a term matching nothing is one line."""
    import pandas as pd

    from hqcbench.jobs.campaign_spec import only_terms
    from hqcbench.jobs.evaluate import _only

    runs = pd.DataFrame({"run_id": list("abcd"), "tags.hqcbench.protocol": ["paper", "fair", "tuned", "fair"],
                         "tags.hqcbench.arm": ["hybrid", "hybrid", "hybrid", "cnn"],
                         "tags.hqcbench.seed": ["0", "1", "0", "1"]})
    assert list(_only(runs, only_terms("protocol=paper,fair")).run_id) == ["a", "b", "d"]
    assert list(_only(runs, only_terms("protocol=paper,fair arm=hybrid seed=01")).run_id) == ["b"]
    with pytest.raises(UserInputError, match=r"protocol 'payper' matches no finished child run.*fair,paper,tuned"):
        _only(runs, only_terms("protocol=payper"))
    with pytest.raises(UserInputError, match="only"):
        only_terms("colour=red")


def test_noise_attacks_field_and_its_checks():
    cfg = RunConfig(attacks="fgsm,square,pgd,autoattack")
    assert cfg.noise_attack_list == ["fgsm", "pgd"]  # auto: the fgsm and pgd of attacks
    assert RunConfig(attacks="square").noise_attack_list == []
    assert RunConfig(noise_attacks="pgd, autoattack").noise_attack_list == ["pgd", "autoattack"]
    assert RunConfig(noise_attacks="none").noise_attack_list == []
    with pytest.raises(UserInputError) as err:
        RunConfig(noise_attacks="pgd,square").validate()
    assert "noise_attacks" in str(err.value) and "'square'" in str(err.value) and "autoattack" in str(err.value)


def test_noise_attacks_at_auto_keeps_the_committed_stores_noise_evaluations_current():
    """The field joined the noise fingerprint after the committed digits store was evaluated under noise
    (by evaluate with the spec's defaults): at ``auto`` its stored tags must still be the current ones,
    and naming the attacks is another evaluation."""
    import sqlite3
    from pathlib import Path

    from hqcbench.jobs.fingerprint import evaluation_fingerprint

    store = Path(__file__).resolve().parents[1] / "reports" / "digits" / "mlflow.db"
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        stored = {row[0] for row in db.execute("SELECT value FROM tags WHERE key = ?",
                                               (names.evaluation_tag("noise"),))}
    sweep = "0,0.001,0.003,0.01,0.03,0.1"
    for settings in (dict(noise="depolarizing:0.03"), dict(noise="depolarizing:0.03", noise_sweep=sweep),
                     dict(noise="depolarizing:0.01+readout:0.02", noise_sweep=sweep)):
        assert evaluation_fingerprint("noise", RunConfig(**settings)) in stored, settings
        named = RunConfig(**settings, noise_attacks="fgsm,pgd,autoattack")
        assert evaluation_fingerprint("noise", named) not in stored


def test_autoattack_under_noise(monkeypatch):
    """noise_attacks names AutoAttack: it is crafted against the noisy model and classified under its noise
    (its members' budgets cut down here: what is tested is the path, not AutoAttack's strength)."""
    from hqcbench.evaluation import attacks

    monkeypatch.setattr(attacks, "APGD_ITER", 5)
    monkeypatch.setattr(attacks, "SQUARE_MAX_ITER_STRONG", 20)
    torch.manual_seed(0)
    model = build_model("hybrid", REGISTRY["digits"], RunConfig(width=4)).eval()
    test = _test_set(30)
    cfg = RunConfig(attacks="fgsm", eps="0.3", attack_samples="12", noise_attacks="autoattack")
    found = noise_evaluation.noisy_robustness(model, test, parse_noise("depolarizing:0.05"), cfg, CPU, 0, (1, 8, 8),
                                              10)
    assert set(found.metrics) == {"clean_acc_attack_subset_noisy", "robust_acc_autoattack_eps_0.3_noisy",
                                  "robust_acc_autoattack_eps_0.3_noisy_depolarizing_0.05"}
    assert found.metrics["robust_acc_autoattack_eps_0.3_noisy"] <= found.metrics["clean_acc_attack_subset_noisy"]
