"""The machine slug that names benchmark result files, and the CPU model it is built from."""
from __future__ import annotations

import os

import pytest
import torch

from hqcbench import hardware


@pytest.mark.parametrize("model, expected", [
    ("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "intel-xeon-platinum-8481c"),
    ("AMD EPYC 7B13 64-Core Processor", "amd-epyc-7b13-64-core-processor"),
    ("AMD EPYC", "amd-epyc"),
])
def test_cpu_slug_names_the_core_count_and_the_model_without_marks_or_clock(monkeypatch, model, expected):
    monkeypatch.setattr(hardware, "cpu_model", lambda: model)
    assert hardware.machine_slug("cpu") == f"cpu{os.cpu_count()}-{expected}"


def test_cuda_slug_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert hardware.machine_slug(torch.device("cuda", 0)) == "nvidia-h100-80gb-hbm3"


def test_slug_is_at_most_60_characters(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_model", lambda: "x" * 200)
    assert len(hardware.machine_slug()) == 60


def test_cpu_model_reads_a_name():
    assert hardware.cpu_model().strip()
