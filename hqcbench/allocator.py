"""Keep freed memory in the process heap, so large state vectors stop costing page faults.

Why this exists. glibc serves every allocation above its mmap threshold (128 KiB, raised by glibc
itself to at most 32 MiB) with a fresh ``mmap`` and hands it back to the kernel when it is freed, so
the next tensor of that size is faulted in again, page by page. The simulator allocates state vectors
of ``batch x 2**n`` amplitudes for every gate block and backward step (at 16 qubits a batch of 256 is
128 MiB), and a 16-qubit MNIST run with attacks spent 39 % of its CPU time in the kernel.

``keep_freed_memory`` raises glibc's mmap and trim thresholds (``mallopt``) to 2 GiB: allocations up
to that size come from the heap, and freed memory stays there for the next one. The cost is resident
memory: the process keeps near its peak, plus some fragmentation. ``benchmarks/allocator.py``
measures both. Every job calls it once at start (``cli.main``); ``HQCBENCH_KEEP_FREED_MEMORY=0``
turns it off. Without glibc (macOS, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCH = "HQCBENCH_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 2 ** 31 - 1  # mallopt takes a C int: the largest allocation served from the heap (2 GiB)


def keep_freed_memory() -> bool:
    """Ask glibc to serve allocations up to 2 GiB from the heap and not to trim it. True when both
    settings took; False when switched off (``HQCBENCH_KEEP_FREED_MEMORY=0``) or where the C library
    has no working ``mallopt``."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
