"""Resource measurement of the training process (not the machine): wall time, CPU, RSS.

``ResourceMonitor.window(kind)`` wraps one training epoch or one evaluation and fills a dict of
metrics named as in the design's MLflow table.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator

import psutil


def _tree_rss_bytes(proc: psutil.Process) -> int:
    """RSS of the process and its children (DataLoader workers, if any)."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


class ResourceMonitor:
    """Samples this process's RSS in a background thread while a window is open."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.proc = psutil.Process(os.getpid())

    @contextlib.contextmanager
    def window(self, kind: str) -> Iterator[dict[str, float]]:
        metrics: dict[str, float] = {}
        stop = threading.Event()
        peak = [_tree_rss_bytes(self.proc)]

        def sample() -> None:
            while not stop.wait(self.interval_s):
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], _tree_rss_bytes(self.proc))

        thread = threading.Thread(target=sample, daemon=True)
        cpu0 = self.proc.cpu_times()
        t0 = time.perf_counter()
        thread.start()
        try:
            yield metrics
        finally:
            wall = time.perf_counter() - t0
            stop.set()
            thread.join()
            cpu1 = self.proc.cpu_times()
            peak[0] = max(peak[0], _tree_rss_bytes(self.proc))
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            metrics["wall_s"] = wall
            metrics["cpu_util_cores"] = cpu / wall if wall > 0 else 0.0
            metrics["rss_peak_mb"] = peak[0] / 2 ** 20
