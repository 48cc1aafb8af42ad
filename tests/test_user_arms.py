"""User arms: a researcher's own model by ``module:callable``, its classical twin and its frozen variant,
resolved through the arm registry, built, checked, fingerprinted and trained through the main job."""
from __future__ import annotations

import json
import sys
import textwrap

import mlflow
import pandas as pd
import pytest
import torch

from hqcbench import arms as arm_registry
from hqcbench.cli import main
from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fingerprint
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.models.blocks import TanhLinear
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.twin import SoftmaxLinear, make_twin, quantum_submodules
from hqcbench.models.user import probe_batch
from hqcbench.report.build import write_report

MODULE = "byo_test_models"
SOURCE = textwrap.dedent('''
    import torch
    import torchquantum as tq
    from torch import nn

    from hqcbench.models.quantum import QuantumLayer


    class Circuit(tq.QuantumModule):
        """A QuantumNAT-style block: encoder, trainable layer, <Z> readout."""

        def __init__(self, n_wires):
            super().__init__()
            self.n_wires = n_wires
            self.encoder = tq.GeneralEncoder([{"input_idx": [i], "func": "ry", "wires": [i]} for i in range(n_wires)])
            self.layer = tq.RX(has_params=True, trainable=True, wires=0)
            self.measure = tq.MeasureAll(tq.PauliZ)

        def forward(self, x):
            qdev = tq.QuantumDevice(n_wires=self.n_wires, bsz=x.shape[0], device=x.device)
            self.encoder(qdev, x)
            self.layer(qdev)
            return self.measure(qdev)


    class Outer(tq.QuantumModule):
        """A quantum module holding another: only this outermost one is the quantum submodule."""

        def __init__(self, n_wires):
            super().__init__()
            self.inner = Circuit(n_wires)

        def forward(self, x):
            return self.inner(x)


    def tiny_qnn(in_shape, classes, n_qubits=3):
        c, h, w = in_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, n_qubits), QuantumLayer(n_qubits, 1),
                             nn.Linear(n_qubits, classes))


    def tiny_tq(in_shape, classes):
        c, h, w = in_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 3), Outer(3), nn.Linear(3, classes))


    class Probabilities(nn.Module):
        hqcbench_quantum = True  # a user's own quantum layer, marked

        def __init__(self, k, n):
            super().__init__()
            self.linear = nn.Linear(k, n)

        def forward(self, x):
            return torch.softmax(self.linear(x), dim=-1)


    def marked(in_shape, classes):
        c, h, w = in_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 4), Probabilities(4, 8), nn.Linear(8, classes))


    def classical(in_shape, classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], classes))


    def wrong_shape(in_shape, classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], classes + 1))


    def raises(in_shape, classes):
        raise RuntimeError("no GPU here")


    def searched(in_shape, classes, hidden=8, act="relu"):
        c, h, w = in_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU() if act == "relu" else nn.Tanh(),
                             nn.Linear(hidden, classes))


    searched.search_space = {"hidden": (4, 16), "act": ["relu", "tanh"]}


    def bad_space(in_shape, classes, hidden=8):
        return searched(in_shape, classes, hidden)


    bad_space.search_space = {"width_of_nothing": (1, 2)}
''')


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop(MODULE, None)


def _cfg(arms: str, **extra) -> RunConfig:
    cfg = RunConfig(arms=arms, epochs=1, train_limit=100, attacks="none", width=8, **extra)
    cfg.validate()
    return cfg


def test_the_registry_resolves_user_arms_and_the_aliases(user_module):
    spec = arm_registry.resolve(f"{MODULE}:tiny_qnn")
    assert spec.is_user and spec.name == f"{MODULE}:tiny_qnn" and spec.hparams == ("n_qubits",)
    assert spec.search == ("lr", "n_qubits") and len(spec.source_digest) == 16
    assert arm_registry.resolve(f"twin:{MODULE}:tiny_qnn").transform == "twin"
    assert arm_registry.canonical("twin:hybrid") == "control"
    assert arm_registry.canonical("frozen:hybrid") == "hybrid_frozen"
    assert RunConfig(arms="cnn,twin:hybrid,frozen:hybrid").arm_list == ["cnn", "control", "hybrid_frozen"]
    assert arm_registry.names() == ("cnn", "hybrid", "control", "hybrid_noent", "hybrid_frozen")  # built-ins only


@pytest.mark.parametrize("arms, words", [
    ("nosuchmodule:f", "cannot import module 'nosuchmodule'"),
    (f"{MODULE}:missing", "has no callable 'missing'"),
    ("twin:cnn", "applies to user arms and to hybrid only"),
    ("cnn,not an arm", "expected a built-in arm"),
])
def test_unresolvable_arms_are_one_line_naming_the_arm(user_module, arms, words):
    with pytest.raises(UserInputError) as err:
        RunConfig(arms=arms).validate()
    assert words in str(err.value) and "arms" in str(err.value)


def test_arm_params_must_be_named_by_the_factory(user_module):
    cfg = _cfg(f"{MODULE}:tiny_qnn", arm_params=f'{{"{MODULE}:tiny_qnn": {{"n_qubits": 2}}}}')
    assert cfg.hparams_for(f"{MODULE}:tiny_qnn") == {"n_qubits": 2}
    with pytest.raises(UserInputError, match="its factory names no layers"):
        _cfg(f"{MODULE}:tiny_qnn", arm_params=f'{{"{MODULE}:tiny_qnn": {{"layers": 2}}}}')
    with pytest.raises(UserInputError, match="arm_params"):
        _cfg(f"{MODULE}:tiny_qnn", arm_params="{not json")


@pytest.mark.parametrize("factory, words", [
    ("raises", "its factory raised RuntimeError: no GPU here"),
    ("wrong_shape", "returned (2, 11) for a batch of 2"),
])
def test_bad_models_are_refused_before_training(user_module, factory, words):
    cfg = _cfg(f"{MODULE}:{factory}")
    with pytest.raises(UserInputError, match="arms") as err:
        build_model(f"{MODULE}:{factory}", REGISTRY["digits"], cfg)
    assert words in str(err.value) and f"{MODULE}:{factory}" in str(err.value)


def test_twin_of_a_classical_model_is_refused(user_module):
    with pytest.raises(UserInputError, match="has no quantum submodule"):
        build_model(f"twin:{MODULE}:classical", REGISTRY["digits"], _cfg(f"twin:{MODULE}:classical"))


def test_the_generic_twin_of_the_hybrid_is_the_control():
    """Applied to the built-in hybrid, the generic construction finds the control's architecture and size."""
    cfg, spec = _cfg("hybrid,control"), REGISTRY["digits"]
    torch.manual_seed(0)
    hybrid = build_model("hybrid", spec, cfg)
    control = build_model("control", spec, cfg)
    swaps = make_twin(hybrid.body, probe_batch(spec.channels, spec.size), "hybrid")
    assert [s.kind for s in swaps] == ["QuantumLayer"] and swaps[0].output == "expectation"
    assert count_parameters(hybrid)["params_total"] == count_parameters(control)["params_total"]
    assert [type(m).__name__ for m in hybrid.modules()] == [type(m).__name__ for m in control.modules()]
    twin_layer = next(m for m in hybrid.modules() if isinstance(m, TanhLinear))
    control_layer = next(m for m in control.modules() if isinstance(m, TanhLinear))
    assert twin_layer.linear.weight.shape == control_layer.linear.weight.shape


def test_detection_finds_exactly_the_outermost_quantum_modules(user_module):
    cfg, spec = _cfg(f"{MODULE}:tiny_tq"), REGISTRY["digits"]
    model = build_model(f"{MODULE}:tiny_tq", spec, cfg)
    found = quantum_submodules(model)
    assert [path for path, _ in found] == ["body.2"]  # Outer, not Outer.inner nor its gates
    assert count_parameters(model)["params_quantum"] == 1  # the RX angle, a foreign circuit's parameter
    twin = build_model(f"twin:{MODULE}:tiny_tq", spec, _cfg(f"twin:{MODULE}:tiny_tq"))
    assert quantum_submodules(twin) == [] and isinstance(twin.body[2], TanhLinear)
    assert twin.swaps[0].in_width == 3 and twin.swaps[0].out_width == 3


def test_a_marked_layer_with_probability_outputs_gets_a_softmax_twin(user_module):
    twin = build_model(f"twin:{MODULE}:marked", REGISTRY["digits"], _cfg(f"twin:{MODULE}:marked"))
    assert isinstance(twin.body[2], SoftmaxLinear) and twin.swaps[0].output == "probabilities"


def test_frozen_keeps_the_circuit_at_its_seeded_initialisation(user_module):
    model = build_model(f"frozen:{MODULE}:tiny_qnn", REGISTRY["digits"], _cfg(f"frozen:{MODULE}:tiny_qnn"))
    layer = next(m for m in model.modules() if isinstance(m, QuantumLayer))
    assert not layer.weights.requires_grad
    counts = count_parameters(model)
    assert counts["params_total"] - counts["params_trainable"] == counts["params_quantum"] > 0


def test_the_fingerprint_follows_the_model_source(user_module):
    cfg = _cfg(f"{MODULE}:tiny_qnn")
    first, fields = training_fingerprint(cfg, f"{MODULE}:tiny_qnn", 0)
    assert fields["arm_source"] == arm_registry.get(f"{MODULE}:tiny_qnn").source_digest
    assert fields["arm_params"] == {"n_qubits": 4}  # the RunConfig field its signature names
    other = _cfg(f"{MODULE}:tiny_qnn", arm_params=f'{{"{MODULE}:tiny_qnn": {{"n_qubits": 2}}}}')
    assert training_fingerprint(other, f"{MODULE}:tiny_qnn", 0)[0] != first
    edited = arm_registry._source_digest(lambda: None)  # another file: another digest
    assert edited != fields["arm_source"]


@pytest.mark.slow
def test_a_user_arm_and_its_twin_run_through_the_main_job(user_module, mlflow_store, capsys):
    arm, twin = f"{MODULE}:tiny_qnn", f"twin:{MODULE}:tiny_qnn"
    code = main(["run", "--arms", f"cnn,{arm},{twin}", "--epochs", "1", "--train_limit", "120", "--seeds", "0",
                 "--attacks", "fgsm", "--attack_samples", "20", "--width", "8"])
    assert code == 0
    assert f"{arm} - {twin}:" in capsys.readouterr().out
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    by_arm = {r["tags.hqcbench.arm"]: r for _, r in runs.iterrows()}
    assert set(by_arm) == {"cnn", arm, twin}  # the arm string is the tag, unchanged
    assert by_arm[arm]["metrics.params_quantum"] > 0 and by_arm[twin]["metrics.params_quantum"] == 0
    assert by_arm[arm]["metrics.robust_acc_fgsm_eps_0.1"] >= 0  # attacks in pixel space, as for any arm
    swaps = mlflow.artifacts.load_text(f"runs:/{by_arm[twin]['run_id']}/twin_swaps.txt")
    assert "2: QuantumLayer(4 -> 4" in swaps and "Linear + tanh" in swaps  # n_qubits: the RunConfig field it names
    parent = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'main'").iloc[0]
    assert f"metrics.test_acc_{arm}_minus_{twin}" in parent.index
    # the report judges the user's model against the run's classical arms and its twin, as the hybrid is judged
    report = write_report("hqcbench-digits", str(user_module / "report"), log_run=False)
    md = (user_module / "report" / "report.md").read_text()
    assert "## Your models against their classical twins" in md
    assert f"| {arm} - {twin} (its classical twin: what the circuit adds) |" in md
    assert f"| {arm} - CNN (a classical arm of the run) |" in md
    rows = pd.read_csv(user_module / "report" / "user_models.csv")
    twin_acc = rows[(rows.compared_with == twin) & (rows.quantity == "accuracy")].iloc[0]
    assert twin_acc["mean"] == pytest.approx(100 * (by_arm[arm]["metrics.test_acc"] - by_arm[twin]["metrics.test_acc"]))
    assert any(p.name == "user_models.csv" for p in report.files)


@pytest.mark.slow
def test_a_logged_user_model_loads_in_another_process_and_directory(user_module, mlflow_store, tmp_path_factory):
    """Its module's source travels with the model: a process elsewhere, without the module on its path, loads
    it with mlflow.pyfunc.load_model and gets the same logits as hqcbench's own loader."""
    arm = f"{MODULE}:tiny_qnn"
    assert main(["run", "--arms", arm, "--epochs", "1", "--train_limit", "60", "--seeds", "0", "--attacks", "none",
                 "--width", "8"]) == 0
    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'").iloc[0]
    from hqcbench.jobs.checkpoints import load_weights, logged_model
    model, _, build = load_weights(run.run_id)
    assert build["user_code"] == [f"{MODULE}.py"]
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    script = ("import sys, numpy as np, mlflow\n"
              f"assert not any('{user_module}' in p for p in sys.path)\n"
              f"m = mlflow.pyfunc.load_model('models:/{logged_model(run.run_id).model_id}')\n"
              "np.save('out.npy', m.predict(np.load('x.npy')))\n")
    import os
    import subprocess

    import numpy as np
    np.save(elsewhere / "x.npy", x.numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.allclose(np.load(elsewhere / "out.npy"), expected, atol=1e-5)


def test_the_hardware_bill_of_several_layers_is_unknown_not_made_up():
    from torch import nn

    from hqcbench.evaluation.hardware_cost import unknown_reason
    two = nn.Sequential(nn.Linear(4, 2), QuantumLayer(2, 1), QuantumLayer(2, 1))
    assert unknown_reason(two).startswith("unknown: 2 quantum layers")
    assert unknown_reason(nn.Sequential(nn.Linear(4, 2), QuantumLayer(2, 1))) == ""


def test_a_factory_declares_its_own_search_space(user_module):
    """Tuning draws the learning rate and what the factory declares; the point reaches the factory
    through arm_params (and so the training fingerprint)."""
    import optuna

    from hqcbench.config import TuneConfig
    from hqcbench.jobs import tune_space

    arm = f"{MODULE}:searched"
    spec = arm_registry.resolve(arm)
    assert spec.search == ("lr", "hidden", "act")
    tcfg = TuneConfig(arms=arm).validate()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [tune_space.suggest(study.ask(), arm, tcfg) for _ in range(20)]
    assert all(4 <= p["hidden"] <= 16 and p["act"] in ("relu", "tanh") for p in drawn)
    assert {p["act"] for p in drawn} == {"relu", "tanh"}
    fields = tune_space.config_fields(arm, {"lr": 0.01, "hidden": 5, "act": "tanh"})
    cfg = _cfg(arm).replace(**fields)
    cfg.validate()
    assert cfg.lr == 0.01 and cfg.hparams_for(arm) == {"hidden": 5, "act": "tanh"}
    model = build_model(arm, REGISTRY["digits"], cfg)
    assert any(isinstance(m, torch.nn.Linear) and m.out_features == 5 for m in model.modules())
    assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())
    other = tune_space.config_fields(arm, {"lr": 0.01, "hidden": 6, "act": "tanh"})
    assert training_fingerprint(cfg, arm, 0)[0] != training_fingerprint(_cfg(arm).replace(**other), arm, 0)[0]


def test_a_search_space_naming_what_the_factory_does_not_take_is_refused(user_module):
    with pytest.raises(UserInputError, match=r"search_space names 'width_of_nothing'.*does not take"):
        _cfg(f"{MODULE}:bad_space")


def test_campaign_specs_take_user_arms_their_params_table_and_only(user_module):
    """A block with user arms and a table of their hyperparameters: each cell gets only its arm's entry
    (a twin its base model's), and --only selects by the arm string."""
    from hqcbench.jobs.campaign_spec import check_only, parse_spec, select

    arm, twin = f"{MODULE}:tiny_qnn", f"twin:{MODULE}:tiny_qnn"
    spec_file = user_module / "campaign.toml"
    spec_file.write_text(textwrap.dedent(f"""
        name = "mine"
        [[blocks]]
        name = "fair"
        datasets = ["digits"]
        protocols = ["fair"]
        arms = ["cnn", "{arm}", "{twin}"]
        seeds = [0, 1]
        epochs = 1
        [blocks.arm_params."{arm}"]
        n_qubits = 2
    """))
    spec = parse_spec(spec_file)
    cells = {(t.arm, t.seed): t for t in spec.trainings}
    assert len(cells) == 6
    assert cells[("cnn", 0)].cfg.arm_params == ""
    assert cells[(arm, 0)].cfg.hparams_for(arm) == {"n_qubits": 2}
    assert cells[(twin, 0)].cfg.hparams_for(twin) == {"n_qubits": 2}  # the twin of the same model
    assert cells[(twin, 0)].fields["arm_params"] == {"n_qubits": 2}
    chosen = select(spec.trainings, f"arm={twin} seed=1")
    assert [(t.arm, t.seed) for t in chosen] == [(twin, 1)]
    with pytest.raises(UserInputError, match=r"arm 'twin:nope:f' is not in the spec"):
        check_only(spec, "arm=twin:nope:f")
    unchanged = {t.fingerprint for t in spec.trainings if t.arm == "cnn"}
    spec_file.write_text(spec_file.read_text().replace("n_qubits = 2", "n_qubits = 3"))
    again = parse_spec(spec_file)
    assert {t.fingerprint for t in again.trainings if t.arm == "cnn"} == unchanged  # another arm's params
    assert {t.fingerprint for t in again.trainings if t.arm == arm}.isdisjoint(
        {t.fingerprint for t in spec.trainings if t.arm == arm})


@pytest.mark.slow
def test_a_user_arm_is_tuned_with_the_same_budget(user_module, mlflow_store):
    """tune with a user arm beside the CNN: both studies get n_trials, the user arm's trials draw its
    declared hyperparameters, and the retrained model is built with the study's best."""
    import optuna

    arm = f"{MODULE}:searched"
    storage = f"sqlite:///{user_module / 'optuna.db'}"
    code = main(["tune", "--arms", f"cnn,{arm}", "--n_trials", "2", "--epochs", "1", "--train_limit", "150",
                 "--seeds", "0", "--attacks", "none", "--storage", storage, "--study_name", "byo"])
    assert code == 0
    study = optuna.load_study(study_name=f"byo-{arm}", storage=storage)
    assert len(study.trials) == 2 and all({"lr", "hidden", "act"} == set(t.params) for t in study.trials)
    children = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    mine = children[children["tags.hqcbench.arm"] == arm].iloc[0]
    best = study.best_params
    assert json.loads(mine["params.arm_params"])[arm] == {"hidden": best["hidden"], "act": best["act"]}
