"""How many torch threads a job uses: the CPUs it may really use, fewer while other processes take some.

Why this exists. torch's CPU kernels run on an OpenMP pool whose threads spin-wait at every barrier.
On a 2-core machine where another process holds one core, two spinning torch threads fight it for
that core and an MNIST epoch of the paper hybrid took 2-4x as long as with one thread
(benchmarks/contention.py). Setting ``OMP_WAIT_POLICY=PASSIVE`` helps less than one thread does and
must be set before torch starts; ``OMP_NUM_THREADS=1`` is a workaround a user must know about and
wastes the second core on an idle machine. So, with ``threads = 0`` (the default):

* the job starts with the CPUs available to it (``available_cpus``: affinity mask, capped by a cgroup
  CPU quota, which torch's own default ignores);
* while it trains, ``adapt()`` (called once per batch, cheap) reads every ``CHECK_INTERVAL_S`` how
  busy the job's CPUs were with *other* processes (``/proc/stat`` through psutil, minus this
  process's own CPU time) and uses the CPUs left: one fewer thread per core another process keeps
  busy, never below one; back up when they leave.

A requested count (``threads = N``, as campaigns pin it so epoch times compare) is fixed: ``adapt``
then does nothing. The count in use is logged per epoch (``torch_threads``, its mean over the
epoch's batches).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
CHECK_INTERVAL_S = 0.25  # short enough that a contended epoch pays for at most a fraction of a second
# Another process counts as holding a core once it keeps one busy more than this share of the time;
# below it (a logger waking up, a shell) a second thread still pays.
BUSY_SHARE = 0.3


def _cgroup_quota_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs a cgroup CPU quota allows (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``); None without a quota. Containers limited with ``--cpus`` see every
    host core in their affinity mask, so a thread count from the mask alone oversubscribes them."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def affinity() -> list[int]:
    """The CPUs this process may run on (``taskset``)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may really use: its affinity mask (``taskset``), capped by a cgroup quota
    (rounded down, at least 1). torch's default thread count follows the mask but not the quota."""
    cpus = len(affinity())
    quota = _cgroup_quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def others_busy_cores(cpus: list[int]) -> Callable[[], float | None]:
    """A reader of how many of ``cpus`` other processes kept busy since its previous call (in cores,
    e.g. 1.0 = one core fully), from the CPUs' busy time minus this process's own CPU time; None on
    the first call or where /proc/stat cannot be read."""
    proc = psutil.Process()
    last: dict[str, float] = {}

    def busy() -> float | None:
        try:
            per_cpu = psutil.cpu_times(percpu=True)
            own = proc.cpu_times()
        except (OSError, psutil.Error):
            return None
        now = time.monotonic()
        total = sum(per_cpu[c].user + per_cpu[c].nice + per_cpu[c].system + getattr(per_cpu[c], "irq", 0.0)
                    + getattr(per_cpu[c], "softirq", 0.0) + getattr(per_cpu[c], "steal", 0.0)
                    for c in cpus if c < len(per_cpu))
        mine = own.user + own.system
        previous = dict(last)
        last.update(t=now, total=total, mine=mine)
        if not previous or now - previous["t"] <= 0:
            return None
        return max(0.0, (total - previous["total"] - (mine - previous["mine"])) / (now - previous["t"]))

    return busy


@dataclass
class ThreadGovernor:
    """Adaptive intra-op thread count (module docstring). ``read_busy`` and ``clock`` are injectable
    so the policy is tested with a scripted load."""

    available: int
    read_busy: Callable[[], float | None]
    interval_s: float = CHECK_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    set_threads: Callable[[int], None] = torch.set_num_threads
    threads: int = 0
    _next_check: float = 0.0
    _sum: int = 0  # thread counts summed over the adapt calls since mean_since_last, and their number
    _calls: int = 0

    def __post_init__(self) -> None:
        self.threads = self.available
        self.set_threads(self.threads)
        self.read_busy()  # the first reading only starts the interval
        self._next_check = self.clock() + self.interval_s

    def wanted(self, busy: float) -> int:
        """Threads for ``busy`` cores taken by others: one fewer per core held more than ``BUSY_SHARE``."""
        taken = math.ceil(busy - BUSY_SHARE) if busy > BUSY_SHARE else 0
        return max(1, min(self.available, self.available - taken))

    def adapt(self) -> int:
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.interval_s
            busy = self.read_busy()
            if busy is not None:
                wanted = self.wanted(busy)
                if wanted != self.threads:
                    self.threads = wanted
                    self.set_threads(wanted)
        self._sum += self.threads
        self._calls += 1
        return self.threads

    def mean_since_last(self) -> float:
        """Mean thread count over the ``adapt`` calls since the previous call of this method."""
        mean = self._sum / self._calls if self._calls else float(self.threads)
        self._sum, self._calls = 0, 0
        return mean


_governor: ThreadGovernor | None = None


def apply_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads: ``requested`` (fixed), or with 0 the CPUs available, adapted to
    other processes' load while training (``adapt``). Returns the count in use now."""
    global _governor
    if requested:
        _governor = None
        torch.set_num_threads(requested)
    else:
        cpus = available_cpus()
        _governor = ThreadGovernor(cpus, others_busy_cores(affinity())) if cpus > 1 else None
        if _governor is None:
            torch.set_num_threads(cpus)
    return torch.get_num_threads()


def adapt() -> int:
    """Once per training batch: the thread count to use now (unchanged when it is fixed)."""
    return _governor.adapt() if _governor is not None else torch.get_num_threads()


def epoch_threads() -> float:
    """The mean thread count over the batches since the previous call (the per-epoch ``torch_threads``)."""
    return _governor.mean_since_last() if _governor is not None else float(torch.get_num_threads())
