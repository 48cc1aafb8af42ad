"""Thread policy (hqcbench.threads): the CPUs a job may use, and fewer threads while other processes
hold cores. The policy runs against a scripted load and clock; the load reader against scripted
/proc/stat readings, so the arithmetic is checked without depending on this machine's load."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from hqcbench import threads
from hqcbench.threads import ThreadGovernor


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def test_available_cpus_follow_the_affinity_mask_and_a_cgroup_quota(tmp_path, monkeypatch):
    from hqcbench.threads import available_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert available_cpus(_cgroup(tmp_path / "none")) == 4  # no cgroup files: the mask
    (tmp_path / "none").mkdir(exist_ok=True)
    assert available_cpus(_cgroup(tmp_path / "none", v2="max 100000\n")) == 4  # v2 without a quota
    (tmp_path / "v2").mkdir()
    assert available_cpus(_cgroup(tmp_path / "v2", v2="150000 100000\n")) == 1  # --cpus 1.5: one full CPU
    (tmp_path / "v1").mkdir()
    assert available_cpus(_cgroup(tmp_path / "v1", v1=("200000", "100000"))) == 2
    (tmp_path / "v1off").mkdir()
    assert available_cpus(_cgroup(tmp_path / "v1off", v1=("-1", "100000"))) == 4
    (tmp_path / "tiny").mkdir()
    assert available_cpus(_cgroup(tmp_path / "tiny", v2="20000 100000")) == 1  # never below one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})  # taskset -c 1
    assert available_cpus(tmp_path / "v1") == 1


def test_apply_threads_uses_the_request_or_the_cpus_available(monkeypatch):
    import torch

    from hqcbench import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "available_cpus", lambda root=threads.CGROUP_ROOT: 1)
        assert threads.apply_threads(0) == 1
        assert threads.apply_threads(2) == 2 and threads.adapt() == 2  # a requested count stays fixed
    finally:
        torch.set_num_threads(before)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scripted(readings):
    it = iter(readings)
    return lambda: next(it)


def test_governor_drops_a_thread_per_core_others_hold_and_comes_back():
    clock, calls = Clock(), []
    gov = ThreadGovernor(2, scripted([None, 0.05, 1.0, 0.6, 0.1]), interval_s=1.0, clock=clock,
                         set_threads=calls.append)
    assert gov.threads == 2 and calls == [2]
    seen = []
    for _ in range(4):
        clock.now += 1.0
        seen.append(gov.adapt())
    assert seen == [2, 1, 1, 2]  # idle, one core taken, still taken (our spinning left it 0.6), free again
    assert calls == [2, 1, 2]  # torch is only told when the count changes


def test_governor_reads_the_load_once_per_interval_and_reports_the_mean():
    clock, reads = Clock(), []

    def read():
        reads.append(clock.now)
        return 1.0

    gov = ThreadGovernor(2, read, interval_s=1.0, clock=clock, set_threads=lambda n: None)
    for _ in range(3):  # within the first interval: no reading, the starting count
        gov.adapt()
    clock.now = 1.0
    gov.adapt()  # reads: one core taken
    assert reads == [0.0, 1.0]
    assert gov.mean_since_last() == pytest.approx((2 * 3 + 1) / 4)
    assert gov.mean_since_last() == 1.0  # nothing since: the current count


@pytest.mark.parametrize("available,busy,expected", [(2, 0.0, 2), (2, 0.29, 2), (2, 0.31, 1), (2, 1.9, 1),
                                                     (4, 1.0, 3), (4, 1.4, 2), (4, 9.0, 1), (1, 1.0, 1)])
def test_wanted_threads(available, busy, expected):
    gov = ThreadGovernor(available, lambda: None, set_threads=lambda n: None)
    assert gov.wanted(busy) == expected


def test_others_busy_cores_subtracts_this_process(monkeypatch):
    def cpu(user, system=0.0):
        return SimpleNamespace(user=user, nice=0.0, system=system, irq=0.0, softirq=0.0, steal=0.0)

    per_cpu = [[cpu(10.0), cpu(20.0), cpu(99.0)], [cpu(11.0), cpu(21.5), cpu(500.0)]]
    own = [SimpleNamespace(user=5.0, system=0.0), SimpleNamespace(user=5.5, system=0.0)]
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(threads.psutil, "cpu_times", lambda percpu: per_cpu.pop(0))
    monkeypatch.setattr(threads.psutil, "Process", lambda: SimpleNamespace(cpu_times=lambda: own.pop(0)))
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    busy = threads.others_busy_cores([0, 1])  # CPU 2 is not ours: its load does not count
    assert busy() is None
    # CPUs 0 and 1 were busy 2.5 s in 2 s, 0.5 s of it ours: others kept 1.0 core busy
    assert busy() == pytest.approx(1.0)


def test_the_training_loop_logs_the_mean_thread_count(monkeypatch, digits):
    from hqcbench.config import RunConfig
    from hqcbench.models.arms import build_model
    from hqcbench.training.loop import fit
    from hqcbench.training.recipes import make_recipe

    clock = Clock()
    gov = ThreadGovernor(2, lambda: 1.0, interval_s=0.0, clock=clock, set_threads=lambda n: None)
    monkeypatch.setattr(threads, "_governor", gov)
    cfg = RunConfig(epochs=1, width=4)
    model = build_model("cnn", digits.spec, cfg)
    recipe = make_recipe("fair", "cnn", model, 1e-3, 1, 1, "digits", digits.spec.mean)
    result = fit(model, digits.train, digits.val, recipe, 1, 64, torch.device("cpu"), 0, progress=False)
    assert result.history[0]["torch_threads"] == 1.0  # every batch adapted to the scripted load


def _contention_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "contention.py"
    spec = importlib.util.spec_from_file_location("contention_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contention_benchmark_judges_its_targets_and_hides_the_data_path():
    bench = _contention_module()

    def row(name, seconds):
        return {"scenario": name, "seconds": seconds, "threads": [1.0] * len(seconds), "first_s": seconds[0]}

    rounds = ((row("alone, default", [1.0, 1.1]), row("alone, default", [1.2])),)
    merged = bench.merge(rounds[0])
    assert merged["seconds"] == [1.0, 1.1, 1.2] and merged["median_s"] == 1.1 and merged["rounds"] == 2
    by = {"alone, default": 1.0, "alone, fixed 2 threads": 1.0, "beside a busy process, default": 2.5,
          "beside a busy process, 1 thread": 2.0, "beside a busy process, fixed 2 threads": 6.0}
    lines = bench.targets([{"scenario": k, "median_s": v} for k, v in by.items()], 2)
    assert "1.25x (target <= 1.1x): NOT met" in lines[0] and lines[1].endswith("met") and "3.00x" in lines[2]
    assert (bench.command_line(["--data-dir", "somewhere", "--epochs", "2"])
            == "python benchmarks/contention.py --epochs 2")
