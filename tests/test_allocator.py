"""With keep_freed_memory, re-allocating a large tensor stops costing page faults once the heap has
grown to fit it; without it, glibc maps and unmaps the tensor every time."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hqcbench import allocator

# In a fresh process (mallopt is process-wide and cannot be undone): allocate, write and free a 64 MiB
# tensor; after WARMUP rounds (the heap grows, its freed chunks coalesce), count minor page faults
# over ROUNDS more.
PROBE = """
import json, resource, sys, torch
from hqcbench.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def touch():
    x = torch.ones(16 * 2 ** 20)
    del x
for _ in range(10):
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
ROUNDS = 5
PAGES_PER_ROUND = 64 * 2 ** 20 // 4096


def probe(mode: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_heap_removes_the_page_faults_of_reallocating_a_large_tensor():
    plain, kept = probe("plain"), probe("keep")
    assert plain["faults"] > 0.8 * ROUNDS * PAGES_PER_ROUND  # every round faults the whole tensor in again
    assert kept["kept"] is True
    assert kept["faults"] < 0.2 * PAGES_PER_ROUND


def test_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(allocator.ENV_SWITCH, "0")
    assert allocator.keep_freed_memory() is False
    assert probe("keep", {allocator.ENV_SWITCH: "0"})["kept"] is False
