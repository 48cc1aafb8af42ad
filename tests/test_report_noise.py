"""The report's device-noise section: noisy accuracy beside the noiseless one, the depolarizing sweep with
the classical arms as reference lines, and noise-trained models kept apart from the claims."""
from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.report.build import write_report
from hqcbench.report.load import load_runs
from hqcbench.report.noise import SECTION_TITLE, noise_figure_name, sweep_columns


@pytest.mark.slow
def test_the_report_shows_noise_beside_the_noiseless_numbers(mlflow_store, tmp_path):
    from hqcbench.jobs.run import run_main

    common = dict(arms="cnn,hybrid,control", epochs=1, train_limit=80, width=4, attacks="none", seeds="0,1")
    run_main(RunConfig(**common, noise="depolarizing:0.02", noise_sweep="0,0.01,0.1"), progress=False)
    run_main(RunConfig(**{**common, "arms": "hybrid"}, train_noise="depolarizing:0.02", noise="depolarizing:0.02"),
             progress=False)
    runset = load_runs("hqcbench-digits")
    # the noise-trained hybrids never supersede the noiseless ones the claims read
    assert len(runset.noise_trained) == 2 and set(runset.noise_trained.arm) == {"hybrid"}
    assert runset.arm_runs("digits", "fair", "hybrid")[f"tags.{names.TAG_TRAIN_NOISE}"].isna().all()
    assert list(sweep_columns(runset.runs)) == [0.0, 0.01, 0.1]

    write_report("hqcbench-digits", str(tmp_path / "report"), log_run=False)
    md = (tmp_path / "report" / "report.md").read_text()
    section = md.split(f"## {SECTION_TITLE}", 1)[1].split("\n## ", 1)[0]
    assert "| hybrid | depolarizing:0.02 |" in section
    assert "| hybrid, trained under depolarizing:0.02 | depolarizing:0.02 |" in section
    assert "| control |" not in section and "| CNN |" not in section  # no circuit, nothing noisy
    assert noise_figure_name("digits", "fair") in section
    assert (tmp_path / "report" / noise_figure_name("digits", "fair")).stat().st_size > 5_000
    # the difference column is the per-seed noisy - noiseless, as the runs hold them
    hybrid = runset.arm_runs("digits", "fair", "hybrid")
    mean = 100 * float((hybrid[names.METRIC_TEST_ACC_NOISY] - hybrid.test_acc).mean())
    row = next(line for line in section.splitlines() if line.startswith("| hybrid | depolarizing:0.02 |"))
    assert f"{mean:+.2f} pp" in row
    # does the deficit (or advantage) over the noiseless classical arms survive the noise? same seeds
    assert "under noise - CNN, noiseless | under noise - control, noiseless |" in section
    cnn = runset.arm_runs("digits", "fair", "cnn").set_index("seed").test_acc
    versus_cnn = 100 * float((hybrid.set_index("seed")[names.METRIC_TEST_ACC_NOISY] - cnn).mean())
    assert f"no verdict (n < 5): {versus_cnn:+.2f} pp" in row
    assert "hybrid trained under depolarizing:0.02, evaluated under it, minus the same arm trained noiseless" in section
    runs_csv = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert "trained under noise" in " ".join(runs_csv.get("left_out", pd.Series(dtype=str)).fillna("").tolist())


def test_setting_labels_read_back_the_parameter():
    from hqcbench.report.noise import setting_label

    assert setting_label("device_FakeManilaV2") == "device:FakeManilaV2"
    assert setting_label("depolarizing_0.01_readout_0.02") == "depolarizing:0.01+readout:0.02"
    assert setting_label(names.noise_setting_metric("x", "readout:0.5")[2:]) == "readout:0.5"
    ideal = "depolarizing:0.03+readout:0.01+ideal_loading"
    assert setting_label(names.noise_setting_metric("x", ideal)[2:]) == ideal
    from hqcbench.report.noise import setting_cell

    assert "idealisation" in setting_cell("depolarizing_0.03_ideal_loading")
    assert "idealisation" not in setting_cell("depolarizing_0.03")


def test_a_report_without_noise_says_so(mlflow_store, tmp_path):
    from hqcbench.jobs.run import run_main

    run_main(RunConfig(arms="cnn", epochs=1, train_limit=60, width=4, attacks="none"), progress=False)
    write_report("hqcbench-digits", str(tmp_path / "r"), log_run=False)
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"## {SECTION_TITLE}\n\nNot measured here" in md
    assert mlflow.search_runs(search_all_experiments=True).shape[0] >= 1


def test_robustness_under_noise_is_the_worst_case_over_the_attacks_run_under_it():
    """Per circuit arm, setting and eps: the lowest of the attacks run under that noise, beside the same
    attacks' noiseless worst case and each classical arm's; an attack missing on a run leaves no partial
    worst case for it."""
    from hqcbench.report.noise import TRAINED_NOISELESS, robust_noise_table
    from hqcbench.report.sources import Sources

    seeds = range(5)
    hybrid = pd.DataFrame({
        "run_id": [f"h{s}" for s in seeds], "seed": list(seeds), "arm": "hybrid", "trained": TRAINED_NOISELESS,
        "robust_acc_fgsm_eps_0.1": [0.50, 0.52, 0.54, 0.56, 0.58],
        "robust_acc_pgd_eps_0.1": [0.40, 0.42, 0.44, 0.46, 0.48],
        "robust_acc_autoattack_eps_0.1": [0.10, 0.12, 0.14, 0.16, 0.18],
        "robust_acc_fgsm_eps_0.1_noisy_device_FakeManilaV2": [0.45, 0.47, 0.49, 0.51, 0.53],
        "robust_acc_pgd_eps_0.1_noisy_device_FakeManilaV2": [0.35, 0.37, 0.39, 0.41, 0.43],
        "robust_acc_autoattack_eps_0.1_noisy_device_FakeManilaV2": [0.05, 0.08, 0.09, 0.12, None],
    })
    cnn = pd.DataFrame({"run_id": [f"c{s}" for s in seeds], "seed": list(seeds), "arm": "cnn",
                        "robust_acc_fgsm_eps_0.1": [0.30] * 5, "robust_acc_pgd_eps_0.1": [0.02] * 5,
                        "robust_acc_autoattack_eps_0.1": [0.0] * 5})
    header, rows = robust_noise_table(hybrid, Sources(runset=None), cnn)  # type: ignore[arg-type]
    assert header[-1] == "under noise - CNN, noiseless"
    assert len(rows) == 1
    text = [str(getattr(cell, "text", cell)) for cell in rows[0]]
    assert text[:4] == ["hybrid", "device:FakeManilaV2", "0.1", "autoattack, fgsm, pgd"]
    # seeds 0-3 have every attack under noise: AutoAttack is their worst case, 0.05/0.08/0.09/0.12 vs 0.10-0.16
    assert text[4].startswith("13.00") and text[5].startswith("8.50")
    assert "-4.50 pp" in text[6] and "+8.50 pp" in text[7]


def test_the_sweep_figure_takes_a_depolarizing_setting_as_a_point_of_the_sweep():
    """A run evaluated under noise=depolarizing:P alone measured the sweep's quantity at P: the figure's
    points include it (one value per run, the sweep's own where a run has both); other settings do not."""
    from hqcbench.report.noise import TRAINED_NOISELESS, _sweep_points

    runs = pd.DataFrame({
        "run_id": ["a", "b"], "seed": [0, 1], "arm": "hybrid", "trained": TRAINED_NOISELESS,
        "test_acc_depolarizing_0.001": [0.98, 0.97],
        "test_acc_noisy_depolarizing_0.03": [0.10, 0.11],
        "test_acc_depolarizing_0.03": [0.12, None],
        "test_acc_noisy_depolarizing_0.03_ideal_loading": [0.97, 0.97],
        "test_acc_noisy_device_FakeManilaV2": [0.9, 0.9],
    })
    points = _sweep_points(runs)["hybrid"]
    assert points == {0.001: [0.98, 0.97], 0.03: [0.12, 0.11]}
