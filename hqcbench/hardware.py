"""What machine this is, in two forms: the CPU model for tags and headers, and a short slug for file names.

Benchmarks name their result files by hardware (timm's habit: ``quantum_layer-cpu2-amd-epyc-...``)
so results from different machines sit side by side; runs tag the CPU model. One home for both so
the names agree. Imports nothing heavier than torch: benchmark child processes use it too.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. 'AMD EPYC 7B13'), else what platform reports."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_slug(device: torch.device | str = "cpu") -> str:
    """e.g. 'cpu2-amd-epyc' or 'nvidia-h100-80gb-hbm3': lower case, dashes, at most 60 characters."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu{os.cpu_count()}-{cpu_model()}"
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|@.*", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:60]
