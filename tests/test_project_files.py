"""MLproject, CLI, README, docs/tuning.md and conda.yaml agree with the single source of truth (hqcbench/config.py)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from hqcbench.cli import build_parser
from hqcbench.config import FIELD_DEFAULTS, FIELD_TYPES, TUNE_DEFAULTS, TUNE_TYPES, TuneConfig, markdown_parameter_table

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_TYPES = {int: "int", float: "float", str: "string"}


def mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())


def test_mlproject_main_parameters_match_run_config():
    main = mlproject()["entry_points"]["main"]
    params = main["parameters"]
    assert list(params) == list(FIELD_DEFAULTS)
    for name, spec in params.items():
        assert spec["type"] == MLFLOW_TYPES[FIELD_TYPES[name]], name
        assert spec["default"] == FIELD_DEFAULTS[name] or str(spec["default"]) == str(FIELD_DEFAULTS[name]), name
    assert params["data_dir"]["type"] == "string"  # a path type would be resolved before our validation
    command = main["command"]
    assert command.startswith("python -m hqcbench run")
    for name in params:
        assert f"--{name} {{{name}}}" in command, name


def test_cli_run_flags_are_the_mlproject_parameters():
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    flags = [a.option_strings[0][2:] for a in run._actions if a.option_strings and a.option_strings[0] != "-h"]
    assert flags == list(mlproject()["entry_points"]["main"]["parameters"])


def test_every_entry_point_command_calls_the_cli_with_its_parameter_names():
    for name, entry in mlproject()["entry_points"].items():
        command = entry["command"]
        assert command.startswith("python -m hqcbench "), name
        for param in entry.get("parameters", {}):
            assert f"--{param} {{{param}}}" in command, (name, param)


def test_readme_parameter_table_matches_config():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- params:start -->")[1].split("<!-- params:end -->")[0].strip()
    assert block == markdown_parameter_table()


def test_mlproject_tune_parameters_match_tune_config():
    tune = mlproject()["entry_points"]["tune"]
    params = tune["parameters"]
    assert list(params) == list(TUNE_DEFAULTS)
    for name, spec in params.items():
        assert spec["type"] == MLFLOW_TYPES[TUNE_TYPES[name]], name
        assert str(spec["default"]) == str(TUNE_DEFAULTS[name]), name
    assert params["data_dir"]["type"] == "string"


def test_cli_tune_flags_are_the_mlproject_parameters():
    parser = build_parser()
    tune = parser._subparsers._group_actions[0].choices["tune"]
    flags = [a.option_strings[0][2:] for a in tune._actions if a.option_strings and a.option_strings[0] != "-h"]
    assert flags == list(mlproject()["entry_points"]["tune"]["parameters"])


def test_tuning_doc_parameter_table_matches_tune_config():
    text = (ROOT / "docs" / "tuning.md").read_text()
    block = text.split("<!-- tune-params:start -->")[1].split("<!-- tune-params:end -->")[0].strip()
    assert block == markdown_parameter_table(TuneConfig)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(==|>=)\s*(.+)$", line)
        if match:
            pins[match.group(1).lower()] = match.group(2) + match.group(3).strip()
    return pins


def test_conda_yaml_lists_every_pip_pin_with_the_same_version():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {}
    for line in pip_section:
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(==|>=)\s*(.+)$", line)
        if match:
            conda_pins[match.group(1).lower()] = match.group(2) + match.group(3).strip()
    wanted = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-nodeps.txt")}
    assert wanted, "no pins found"
    missing = {k: v for k, v in wanted.items() if conda_pins.get(k) != v}
    assert not missing, f"conda.yaml lacks or differs on: {missing}"


def test_readme_has_exactly_the_two_setup_commands_ci_runs():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- install-and-run -->") == 1 and text.count("<!-- test -->") == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command install-and-run" in ci and "readme_command test" in ci


def test_license_file_matches_the_declared_licence():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
