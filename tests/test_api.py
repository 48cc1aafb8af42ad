"""hqcbench.benchmark: the main job from Python returns one row per (arm, seed) and the parent run id."""
from __future__ import annotations

import mlflow
import pytest

import hqcbench
from hqcbench.errors import UserInputError


@pytest.mark.slow
def test_benchmark_returns_a_row_per_arm_and_seed_and_the_parent(mlflow_store):
    frame, parent = hqcbench.benchmark(arms=["cnn", "hybrid"], dataset="digits", seeds=[0, 1], epochs=1,
                                       train_limit=120, attacks="none", width=8, progress=False)
    assert sorted(zip(frame.arm, frame.seed)) == [("cnn", 0), ("cnn", 1), ("hybrid", 0), ("hybrid", 1)]
    assert {"run_id", "test_acc", "params_total", "params_quantum"} <= set(frame.columns)
    row = mlflow.get_run(parent)
    assert row.data.tags["hqcbench.kind"] == "main"
    hybrid, cnn = (frame[frame.arm == arm].sort_values("seed").test_acc.to_numpy() for arm in ("hybrid", "cnn"))
    assert row.data.metrics["test_acc_hybrid_minus_cnn"] == pytest.approx((hybrid - cnn).mean())


def test_a_bad_field_is_one_clear_error():
    with pytest.raises(UserInputError, match="epochs"):
        hqcbench.benchmark(arms=["cnn"], epochs=0)
