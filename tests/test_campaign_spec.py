"""Campaign specs and fingerprints: what identifies a training, what a spec expands to, clear errors."""
from __future__ import annotations

import pytest

from hqcbench.config import RunConfig
from hqcbench.errors import UserInputError
from hqcbench.jobs.campaign_spec import check_only, parse_spec, select
from hqcbench.jobs.fingerprint import evaluation_fingerprint, training_fields, training_fingerprint

SPEC = """
name = "tiny"
threads = 1

[defaults]
attack_samples = "50"
epochs = 3

[[blocks]]
name = "fair"
datasets = ["digits"]
protocols = ["fair"]
arms = ["cnn", "hybrid"]
seeds = [0, 1]
patience = 2
"""

TUNED = """
[[blocks]]
name = "tuned"
datasets = ["digits"]
protocols = ["tuned"]
arms = ["cnn", "control"]
seeds = [3]
[blocks.tune]
n_trials = 2
"""


def write(tmp_path, text=SPEC):
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return path


def test_spec_expands_the_cross_product_with_block_and_default_fields(tmp_path):
    spec = parse_spec(write(tmp_path))
    assert spec.name == "tiny" and spec.threads == 1 and spec.store == tmp_path.resolve()
    cells = [(t.arm, t.seed) for t in spec.trainings]
    assert cells == [("cnn", 0), ("hybrid", 0), ("cnn", 1), ("hybrid", 1)]
    cfg = spec.trainings[0].cfg
    assert (cfg.epochs, cfg.patience, cfg.attack_samples, cfg.threads, cfg.arms, cfg.seeds) == (
        3, 2, "50", 1, "cnn", "0")
    assert len({t.fingerprint for t in spec.trainings}) == 4
    assert [t.label() for t in select(spec.trainings, "arm=hybrid seed=1")] == ["fair/digits/fair/hybrid/seed1"]


@pytest.mark.parametrize("text,parameter", [
    (SPEC.replace("patience = 2", "patiense = 2"), "spec blocks.fair.patiense"),
    (SPEC.replace("patience = 2", 'data_dir = "/somewhere"'), "spec blocks.fair.data_dir"),
    (SPEC.replace('arms = ["cnn", "hybrid"]', 'arms = ["cnn", "quantum"]'), "arms"),
    (SPEC.replace('name = "tiny"', ""), "spec name"),
    (SPEC.replace("seeds = [0, 1]", "seeds = []"), "spec blocks.fair.seeds"),
    (SPEC + "\n[[blocks]]\nname='again'\ndatasets=['digits']\nprotocols=['fair']\narms=['cnn']\nseeds=[0]\n"
            "patience = 2\n", "spec blocks.again"),
])
def test_bad_specs_give_one_clear_error_naming_the_key(tmp_path, text, parameter):
    with pytest.raises(UserInputError) as info:
        parse_spec(write(tmp_path, text))
    assert info.value.parameter == parameter


def test_bad_only_term_is_one_clear_error(tmp_path):
    spec = parse_spec(write(tmp_path))
    with pytest.raises(UserInputError, match="only"):
        select(spec.trainings, "colour=red")


@pytest.mark.parametrize("only,message", [
    ("seed=abc", "seed 'abc' is not an integer"),
    ("seed=0,x1", "seed 'x1' is not an integer"),
    ("seed=7", "seed '7' is not in the spec campaign.toml (allowed: seed=0,1)"),
    ("arm=quantum", "arm 'quantum' is not in the spec campaign.toml (allowed: arm=cnn,hybrid)"),
    ("dataset=mnist", "dataset 'mnist' is not in the spec campaign.toml (allowed: dataset=digits)"),
    ("protocol=paper", "protocol 'paper' is not in the spec campaign.toml (allowed: protocol=fair)"),
    ("block=fiar", "block 'fiar' is not in the spec campaign.toml (allowed: block=fair)"),
    ("seed=", "bad term 'seed='"),
])
def test_only_naming_what_the_spec_lacks_is_one_clear_error(tmp_path, only, message):
    """A filter that matches nothing would answer "nothing missing": a typo must fail instead."""
    spec = parse_spec(write(tmp_path))
    with pytest.raises(UserInputError) as info:
        check_only(spec, only)
    assert info.value.parameter == "only" and message in str(info.value)


def test_only_accepts_what_the_spec_has(tmp_path):
    spec = parse_spec(write(tmp_path))
    check_only(spec, "block=fair datasets=digits protocol=fair arms=cnn,hybrid seeds=0,01")
    assert [t.label() for t in select(spec.trainings, "seed=01 arm=cnn")] == ["fair/digits/fair/cnn/seed1"]


def test_only_knows_the_tuned_blocks_before_their_cells_exist(tmp_path):
    spec = parse_spec(write(tmp_path, SPEC + TUNED))
    assert not any(t.cfg.protocol == "tuned" for t in spec.trainings)
    check_only(spec, "block=tuned protocol=tuned arm=control seed=3")
    with pytest.raises(UserInputError, match="seed '4'"):
        check_only(spec, "block=tuned seed=4")


def test_campaign_rejects_a_bad_only_with_exit_code_2_before_opening_the_store(tmp_path, capsys):
    from hqcbench.cli import main

    spec = write(tmp_path)
    assert main(["campaign", str(spec), "--only", "seed=abc", "--progress", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hqcbench: error: only: seed 'abc' is not an integer (allowed: integer seeds, e.g. seed=0,1)"]
    assert not (tmp_path / "mlflow.db").exists()


def test_fingerprint_ignores_evaluation_fields_and_fields_at_their_baseline():
    base = RunConfig(dataset="digits", epochs=3)
    fp, fields = training_fingerprint(base, "hybrid", 0)
    assert fields == {"dataset": "digits", "protocol": "fair", "arm": "hybrid", "seed": 0, "epochs": 3}
    same = base.replace(attacks="fgsm,pgd,square", eps="0.1,0.2", attack_samples="all", threads=2, device="cpu")
    assert training_fingerprint(same, "hybrid", 0)[0] == fp
    assert training_fingerprint(base.replace(lr=1e-3), "hybrid", 0)[0] != fp
    assert training_fingerprint(base, "hybrid", 1)[0] != fp
    assert evaluation_fingerprint("robustness", same) != evaluation_fingerprint("robustness", base)


def test_fingerprint_drops_what_the_protocol_or_arm_ignores():
    paper = RunConfig(dataset="mnist", protocol="paper", epochs=50)
    assert training_fingerprint(paper.replace(lr=0.1, width=8, batch_size=7), "cnn", 0)[0] == \
        training_fingerprint(paper, "cnn", 0)[0]
    fair = RunConfig()
    assert training_fingerprint(fair.replace(depth=5, ansatz="basic", n_qubits=7), "cnn", 0)[0] == \
        training_fingerprint(fair, "cnn", 0)[0]
    assert "depth" not in training_fields(fair.replace(depth=5), "control", 0)
    assert training_fields(fair.replace(n_qubits=7), "control", 0)["n_qubits"] == 7
