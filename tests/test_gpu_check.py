"""benchmarks/gpu_check.sh stops at once, with exit code 2 and "no CUDA device", where there is no GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_without_cuda_exits_2_and_says_why(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this checks the same path on a GPU machine too
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device" in done.stderr
    assert "== gpu_check" not in done.stdout  # no step started
