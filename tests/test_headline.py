"""What the ``run`` command prints last: the parent row's differences and the command that opens the runs."""
from __future__ import annotations

from hqcbench.jobs.evaluate import TrainedArm
from hqcbench.jobs.headline import Difference, differences, headline_lines, ui_command
from hqcbench.report.stats import t_interval


def trained(accs: dict[tuple[str, int], float]) -> list[TrainedArm]:
    return [TrainedArm(arm, seed, f"run-{arm}-{seed}", None, {"test_acc": acc}) for (arm, seed), acc in accs.items()]


def test_three_seeds_give_the_t_interval_in_percentage_points():
    diffs = differences(trained({("cnn", 0): 0.90, ("cnn", 1): 0.91, ("cnn", 2): 0.92,
                                 ("hybrid", 0): 0.91, ("hybrid", 1): 0.91, ("hybrid", 2): 0.935}))
    (line,) = headline_lines(diffs)
    interval = t_interval([0.01, 0.0, 0.015]).scaled(100)
    assert line == (f"  hybrid - cnn: {interval.mean:+.2f} pp [{interval.low:+.2f}, {interval.high:+.2f}] "
                    f"(95 % t-interval, 3 seeds)")
    assert line.startswith("  hybrid - cnn: +0.83 pp [-")


def test_one_seed_says_there_is_no_interval():
    lines = headline_lines(differences(trained({("cnn", 0): 0.9, ("hybrid", 0): 0.9052, ("control", 0): 0.89})))
    assert lines == ["  hybrid - cnn: +0.52 pp (one seed, no interval)",
                     "  control - cnn: -1.00 pp (one seed, no interval)",
                     "  hybrid - control: +1.52 pp (one seed, no interval)"]


def test_a_single_arm_prints_no_difference():
    assert headline_lines(differences(trained({("hybrid", 0): 0.9, ("hybrid", 1): 0.8}))) == []
    assert headline_lines([]) == []


def test_negative_means_and_interval_ends_keep_their_sign():
    (line,) = headline_lines([Difference("hybrid", "cnn", t_interval([-0.02, -0.01]))])
    assert line.startswith("  hybrid - cnn: -1.50 pp [") and line.endswith("(95 % t-interval, 2 seeds)")


def test_sqlite_store_gives_the_mlflow_ui_command_with_the_uri_as_given():
    assert ui_command("sqlite:///mlflow.db", "1", "abc") == "mlflow ui --backend-store-uri sqlite:///mlflow.db"
    assert ui_command("sqlite:////data/runs/mlflow.db", "1", "abc") == \
        "mlflow ui --backend-store-uri sqlite:////data/runs/mlflow.db"


def test_a_path_with_a_space_is_quoted_for_the_shell():
    assert ui_command("sqlite:///my runs/mlflow.db", "1", "abc") == \
        "mlflow ui --backend-store-uri 'sqlite:///my runs/mlflow.db'"


def test_tracking_server_gives_the_parent_run_page():
    assert ui_command("http://127.0.0.1:5000", "7", "abc123") == "http://127.0.0.1:5000/#/experiments/7/runs/abc123"
    assert ui_command("https://mlflow.example.org/", "7", "abc123") == \
        "https://mlflow.example.org/#/experiments/7/runs/abc123"


def test_file_store_gives_the_mlflow_ui_command():
    assert ui_command("file:///data/mlruns", "0", "abc") == "mlflow ui --backend-store-uri file:///data/mlruns"
    assert ui_command("mlruns", "0", "abc") == "mlflow ui --backend-store-uri mlruns"


def test_a_password_in_the_uri_is_never_printed():
    command = ui_command("postgresql://bench:secret@db.example.org:5432/mlflow", "1", "abc")
    assert command == "mlflow ui --backend-store-uri 'postgresql://bench:***@db.example.org:5432/mlflow'"
    assert "secret" not in ui_command("https://bench:secret@mlflow.example.org", "1", "abc")
