"""The tuned protocol in a campaign: equal-budget studies per arm, then the best configurations retrained."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.errors import UserInputError
from hqcbench.jobs.campaign import run_campaign, write_campaign_report
from hqcbench.jobs.campaign_spec import parse_spec
from hqcbench.jobs.fingerprint import training_fingerprint
from hqcbench.jobs.store import absolute_paths
from hqcbench.report import tuning as report_tuning

TUNED = """
name = "tiny"
threads = 1

[defaults]
attacks = "fgsm"
attack_samples = "30"
epochs = 2

[[blocks]]
name = "tuned"
datasets = ["digits"]
protocols = ["tuned"]
arms = ["cnn", "hybrid", "control"]
seeds = [0, 1]

[blocks.tune]
n_trials = 3
width_max = 8
qubits_max = 3
depth_max = 2
"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.toml"
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------------------------------- the spec
@pytest.mark.parametrize("text, key", [
    (TUNED.split("[blocks.tune]")[0], "spec blocks.tuned.tune"),
    (TUNED.replace('protocols = ["tuned"]', 'protocols = ["fair"]'), "spec blocks.tuned.tune"),
    (TUNED.replace("n_trials = 3", "n_trials = 3\nbogus = 1"), "spec blocks.tuned.tune.bogus"),
    (TUNED.replace("n_trials = 3", "n_trials = 0"), "spec blocks.tuned.tune"),
    (TUNED.replace("depth_max = 2", "depth_max = 2\ndepth_min = 3"), "spec blocks.tuned.tune"),
])
def test_bad_tune_tables_give_one_clear_error(tmp_path, text, key):
    with pytest.raises(UserInputError) as err:
        parse_spec(write(tmp_path, text))
    assert err.value.parameter == key


def test_a_tuned_block_becomes_studies_not_trainings_until_they_are_complete(tmp_path):
    spec = parse_spec(write(tmp_path, TUNED))
    assert spec.trainings == ()
    (tuning,) = spec.tunings
    assert (tuning.dataset, tuning.arms, tuning.seeds, tuning.n_trials) == ("digits", ("cnn", "hybrid", "control"),
                                                                            (0, 1), 3)
    tcfg = tuning.tune_config("sqlite:///optuna.db", spec.name)
    assert tcfg.epochs == 2 and tcfg.width_max == 8 and tcfg.protocol == "fair" and tcfg.trial_seed == 0


def test_the_tuned_protocol_trains_with_the_fair_recipe_but_its_own_fingerprint():
    fair = RunConfig(dataset="digits", protocol="fair", arms="hybrid", width=8)
    tuned = fair.replace(protocol="tuned")
    assert tuned.validate() is not None
    assert training_fingerprint(fair, "hybrid", 0)[0] != training_fingerprint(tuned, "hybrid", 0)[0]
    assert training_fingerprint(tuned, "hybrid", 0)[1]["width"] == 8


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tuned_campaign(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned")
    spec = write(folder, TUNED)
    dry = run_campaign(str(spec), dry_run=True, progress=False)
    assert len(dry.tunings) == 1 and len(dry.after_tuning) == 6 and not dry.trainings
    assert not (folder / "optuna.db").exists()  # a dry run writes nothing
    run_campaign(str(spec), progress=False)
    return folder, spec


def _studies(folder: Path) -> dict[str, optuna.Study]:
    url = f"sqlite:///{folder / 'optuna.db'}"
    return {s.study_name.rsplit("-", 1)[1]: optuna.load_study(study_name=s.study_name, storage=url)
            for s in optuna.get_all_study_summaries(url)}


def _runs(folder: Path) -> pd.DataFrame:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    return pd.DataFrame([{"status": r.info.status, **{f"tags.{k}": v for k, v in r.data.tags.items()},
                          **{f"params.{k}": v for k, v in r.data.params.items()}}
                         for r in client.search_runs([exp.experiment_id], max_results=1000)])


@pytest.mark.slow
def test_every_arm_gets_the_same_budget_and_its_best_configuration_is_retrained(tuned_campaign):
    folder, _ = tuned_campaign
    studies = _studies(folder)
    assert set(studies) == {"cnn", "hybrid", "control"}
    for study in studies.values():
        finished = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(study.get_trials()) == len(finished) == 3  # exactly the budget, nothing left running
    runs = _runs(folder)
    kind = runs[f"tags.{names.TAG_KIND}"]
    assert (kind == "trial").sum() == 9
    cells = runs[kind == "child"]
    assert len(cells) == 6 and set(cells.status) == {"FINISHED"}
    assert set(cells[f"tags.{names.TAG_PROTOCOL}"]) == {"tuned"}
    for _, row in cells.iterrows():
        best = studies[row[f"tags.{names.TAG_ARM}"]].best_trial.params
        for key, value in best.items():
            assert row[f"params.{key}"] == str(value), (row[f"tags.{names.TAG_ARM}"], key)
        fields = json.loads(row[f"tags.{names.TAG_TRAINING_FIELDS}"])
        assert fields["protocol"] == "tuned"
    assert absolute_paths(folder / "mlflow.db") == []  # trial runs too: no script path of this machine


@pytest.mark.slow
def test_a_complete_tuned_campaign_has_nothing_missing_and_runs_no_more_trials(tuned_campaign, capsys):
    folder, spec = tuned_campaign
    before = {arm: len(s.get_trials()) for arm, s in _studies(folder).items()}
    todo = run_campaign(str(spec), progress=False)
    assert todo.empty and "nothing missing" in capsys.readouterr().out
    assert {arm: len(s.get_trials()) for arm, s in _studies(folder).items()} == before


@pytest.mark.slow
def test_the_report_has_a_tuned_column_and_prints_budgets_and_search_spaces(tuned_campaign):
    folder, spec = tuned_campaign
    report = write_campaign_report(str(spec))
    text = report.read_text()
    assert "The tuned protocol: budgets and search spaces" in text
    assert "3 trials per arm (the same budget for every arm)" in text
    claims = pd.read_csv(folder / "claims.csv")
    assert claims["tuned_cnn_n"].max() == 2  # the tuned hybrid - cnn comparison has both seeds
    table = pd.read_csv(folder / "tuning.csv")
    assert sorted(table.arm) == ["cnn", "control", "hybrid"] and set(table.trials) == {3}
    summaries = {s.arm: s for s in report_tuning.load_studies(folder / "optuna.db")}
    assert "depth 1-2" in summaries["hybrid"].space and "depth" not in summaries["cnn"].space
    assert summaries["cnn"].best_so_far == sorted(summaries["cnn"].best_so_far)  # best so far never falls
