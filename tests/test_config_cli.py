"""Bad input: exit code 2, one line naming the parameter and its allowed values, no run left looking good."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hqcbench.config import (
    FIELD_META,
    FIELD_TYPES,
    TUNE_META,
    TUNE_SHARED,
    TUNE_TYPES,
    RunConfig,
    TuneConfig,
    field_defaults,
)
from hqcbench.errors import UserInputError


@pytest.mark.parametrize("changes,parameter", [
    ({"dataset": "imagenet"}, "dataset"),
    ({"arms": "cnn,quantum"}, "arms"),
    ({"n_qubits": 21}, "n_qubits"),
    ({"n_qubits": 0}, "n_qubits"),
    ({"depth": 0}, "depth"),
    ({"epochs": 0}, "epochs"),
    ({"seeds": "0,x"}, "seeds"),
    ({"seeds": "-1"}, "seeds"),
    ({"seeds": "1,1"}, "seeds"),
    ({"encoding": "basis"}, "encoding"),
    ({"ansatz": "deep"}, "ansatz"),
    ({"device": "tpu"}, "device"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"data_dir": "/nonexistent/hqcbench"}, "data_dir"),
    ({"protocol": "paper"}, "protocol"),  # paper exists for mnist, cifar100 and stl10 only
    ({"attacks": "fgsm,cw"}, "attacks"),
    ({"eps": "0.1,abc"}, "eps"),
    ({"attack_samples": "many"}, "attack_samples"),
    ({"shots": "0"}, "shots"),
])
def test_validation_names_the_parameter(changes, parameter):
    with pytest.raises(UserInputError) as info:
        RunConfig(**changes).validate()
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}:") and "allowed" in str(info.value)


def test_defaults_are_valid():
    RunConfig().validate()
    RunConfig(dataset="mnist", protocol="paper").validate()


def test_tune_config_takes_its_shared_fields_from_run_config():
    """Same type and allowed values; only protocol is narrower, and tuning has its own defaults/help text."""
    assert set(TUNE_SHARED) == {"dataset", "protocol", "arms", "epochs", "batch_size", "seeds", "engine", "data_dir",
                                "val_fraction", "train_limit", "device", "attacks"}
    run_defaults, tune_defaults = field_defaults(RunConfig), field_defaults(TuneConfig)
    for name in TUNE_SHARED:
        assert TUNE_TYPES[name] is FIELD_TYPES[name], name
        if name != "protocol":
            assert TUNE_META[name]["allowed"] == FIELD_META[name]["allowed"], name
        if name not in ("arms", "epochs"):
            assert tune_defaults[name] == run_defaults[name], name
    assert TUNE_META["protocol"]["allowed"] == "fair"
    assert (tune_defaults["arms"], tune_defaults["epochs"]) == ("hybrid", 5)
    TuneConfig().validate()


@pytest.mark.parametrize("changes,parameter", [
    ({"dataset": "imagenet"}, "dataset"),
    ({"protocol": "paper", "dataset": "mnist"}, "protocol"),
    ({"seeds": "1,1"}, "seeds"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"device": "tpu"}, "device"),
    ({"attacks": "cw"}, "attacks"),
])
def test_tune_config_checks_shared_fields_like_run_config(changes, parameter):
    with pytest.raises(UserInputError) as info:
        TuneConfig(**changes).validate()
    assert info.value.parameter == parameter and info.value.allowed == TUNE_META[parameter]["allowed"]


def test_tune_config_conversion_error_shows_tune_allowed_values():
    with pytest.raises(UserInputError) as info:
        TuneConfig.from_strings({"n_trials": "many"})
    assert info.value.parameter == "n_trials" and info.value.allowed == TUNE_META["n_trials"]["allowed"]


def test_unreadable_data_dir_is_rejected(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    try:
        if os.access(locked, os.R_OK | os.X_OK):  # root reads anything: use a file instead
            locked = tmp_path / "a_file"
            locked.write_text("x")
        with pytest.raises(UserInputError, match="data_dir"):
            RunConfig(data_dir=str(locked)).validate()
    finally:
        (tmp_path / "locked").chmod(0o700)


def run_cli(*args: str, env_extra: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "hqcbench", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args,parameter", [
    (["--dataset", "imagenet"], "dataset"),
    (["--epochs", "1.5"], "epochs"),
    (["--n_qubits", "40"], "n_qubits"),
    (["--seeds", "a,b"], "seeds"),
])
def test_cli_bad_input_exits_2_with_one_line(mlflow_store, args, parameter):
    result = run_cli("run", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"hqcbench: error: {parameter}:") and "allowed" in lines[0]


def test_cli_missing_dataset_files_exit_2_and_mark_the_run_failed(mlflow_store, tmp_path):
    import mlflow

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("run", "--dataset", "mnist", "--data_dir", str(empty), "--epochs", "1")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("hqcbench: error")]
    assert len(lines) == 1 and "mnist" in lines[0] and str(empty) in lines[0]
    assert "Traceback" not in result.stderr
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FAILED"
    assert "mnist" in runs.iloc[0]["tags.hqcbench.error"]
