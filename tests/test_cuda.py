"""CUDA paths on a real GPU (marker ``cuda``; benchmarks/gpu_check.sh runs them with skips as failures).

On a machine without CUDA they skip, unless HQCBENCH_REQUIRE_CUDA=1 says a GPU must be there (then
they fail): a GPU check that silently skipped everything would report success for nothing.
"""
from __future__ import annotations

import os

import pytest
import torch

from hqcbench.arms import names as arm_names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import load_splits, to_float
from hqcbench.models.arms import build_model
from hqcbench.resources import ResourceMonitor

pytestmark = pytest.mark.cuda


@pytest.fixture()
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        if os.environ.get("HQCBENCH_REQUIRE_CUDA") == "1":
            pytest.fail("HQCBENCH_REQUIRE_CUDA=1 but torch.cuda.is_available() is False")
        pytest.skip("needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)")
    return torch.device("cuda")


@pytest.mark.parametrize("arm", arm_names())
def test_every_arm_trains_a_step_on_cuda_and_matches_cpu(cuda, arm):
    splits = load_splits("digits", None, seed=0, val_fraction=0.2)
    cfg = RunConfig(width=8)
    torch.manual_seed(0)
    cpu_model = build_model(arm, splits.spec, cfg)
    gpu_model = build_model(arm, splits.spec, cfg)
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to(cuda)
    x, y = to_float(splits.train.images[:32]), splits.train.labels[:32]
    cpu_model.eval(), gpu_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(gpu_model(x.to(cuda)).cpu(), cpu_model(x), rtol=1e-4, atol=1e-4)
    gpu_model.train()
    loss = torch.nn.functional.cross_entropy(gpu_model(x.to(cuda)), y.to(cuda))
    loss.backward()
    grads = [p.grad for p in gpu_model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.is_cuda and torch.isfinite(g).all() for g in grads)


def test_resource_monitor_reads_real_cuda_peaks(cuda):
    with ResourceMonitor("cuda", interval_s=0.01) as monitor:
        with monitor.window("train") as window:
            block = torch.empty(64 * 2**20, dtype=torch.uint8, device=cuda)  # 64 MiB
            del block
    assert window["cuda_alloc_peak_mb"] >= 64
