"""Resource monitor: NVML path with a fake pynvml, CUDA path with fake torch.cuda counters, the CPU/RSS
path in a fresh subprocess, the no-NVML path, the published (paper) measurements, and the logging."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import mlflow
import psutil
import pytest
import torch

from hqcbench import names, resources
from hqcbench.resources import MB, ResourceMonitor, run_summary

# --------------------------------------------------------------------------------------- fake pynvml


class FakeNvml(types.ModuleType):
    """Stands in for nvidia-ml-py: scripted per-call values, a log of what it returned."""

    def __init__(self, dev_mem_mb=(), util=(), proc_mem_mb=(), init_error: str | None = None,
                 util_error: str | None = None):
        super().__init__("pynvml")

        class NVMLError(Exception):
            pass

        self.NVMLError = NVMLError
        self.NVMLError_LibraryNotFound = type("NVMLError_LibraryNotFound", (NVMLError,), {})
        self.NVMLError_NotSupported = type("NVMLError_NotSupported", (NVMLError,), {})
        self.init_error, self.util_error = init_error, util_error
        self.scripts = {"dev": list(dev_mem_mb), "util": list(util), "proc": list(proc_mem_mb)}
        self.returned: dict[str, list[float]] = {"dev": [], "util": [], "proc": []}
        self.init_calls = self.shutdown_calls = 0

    def _next(self, key: str) -> float:
        script = self.scripts[key]
        value = script.pop(0) if len(script) > 1 else script[0]
        self.returned[key].append(value)
        return value

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error:
            raise getattr(self, self.init_error)()

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self):
        return "999.12"

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU 80GB"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=int(self._next("dev") * MB), total=80 * 1024 * MB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.util_error:
            raise getattr(self, self.util_error)()
        return types.SimpleNamespace(gpu=self._next("util"), memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        ours = int(self._next("proc") * MB)
        return [types.SimpleNamespace(pid=1, usedGpuMemory=5000 * MB),  # another process: not ours
                types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=ours),
                types.SimpleNamespace(pid=2, usedGpuMemory=None)]


@pytest.fixture()
def fake_nvml(monkeypatch):
    def install(**kwargs) -> FakeNvml:
        fake = FakeNvml(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake
    return install


def _wait_for_samples(fake: FakeNvml, key: str, n: int, timeout_s: float = 10.0) -> None:
    """Keep the window open until the background thread has taken n samples (scripts exhausted)."""
    import time

    deadline = time.monotonic() + timeout_s
    while len(fake.returned[key]) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(fake.returned[key]) >= n, "the sampler thread did not sample"


def test_nvml_peaks_and_means_equal_the_sampled_values(fake_nvml):
    fake = fake_nvml(dev_mem_mb=[1000, 3000, 2000, 1500], util=[10, 90, 50, 30], proc_mem_mb=[400, 700, 600, 500])
    monitor = ResourceMonitor("cuda", interval_s=0.005)
    with monitor.window("train") as res:
        _wait_for_samples(fake, "dev", 6)  # start sample + >= 5 thread samples
    assert res["nvml_dev_mem_peak_mb"] == pytest.approx(3000)
    assert res["nvml_proc_mem_peak_mb"] == pytest.approx(700)  # pid 1's 5000 MB is someone else's
    assert res["nvml_gpu_util_peak"] == pytest.approx(90)
    for key, metric in (("dev", "nvml_dev_mem_mean_mb"), ("proc", "nvml_proc_mem_mean_mb"),
                        ("util", "nvml_gpu_util_mean")):
        values = fake.returned[key]
        assert res[metric] == pytest.approx(sum(values) / len(values))
    assert res["nvml_gpu_util_mean"] < 90  # a mean, not the peak
    tags = monitor.tags()
    assert tags["hqcbench.nvml"] == "sampled"
    assert tags["hqcbench.gpu_name"] == "Fake GPU 80GB" and tags["hqcbench.gpu_driver"] == "999.12"
    assert names.TAG_NVML_PROC not in tags
    monitor.close()
    assert fake.shutdown_calls == 1


def test_nvml_windows_are_independent(fake_nvml):
    """A peak in one window must not leak into the next."""
    fake_nvml(dev_mem_mb=[8000, 100], util=[100, 5], proc_mem_mb=[900, 50])
    monitor = ResourceMonitor("cuda:0", interval_s=60)  # no thread samples: start and end only
    with monitor.window("train") as first:
        pass
    with monitor.window("eval") as second:
        pass
    assert first["nvml_dev_mem_peak_mb"] == pytest.approx(8000)
    assert second["nvml_dev_mem_peak_mb"] == pytest.approx(100)
    assert second["nvml_proc_mem_peak_mb"] == pytest.approx(50)
    assert second["nvml_gpu_util_mean"] == pytest.approx(5)


def test_nvml_quantity_refused_is_absent_not_zero(fake_nvml):
    fake_nvml(dev_mem_mb=[1234], util=[0], proc_mem_mb=[10], util_error="NVMLError_NotSupported")
    monitor = ResourceMonitor("cuda", interval_s=60)
    with monitor.window("train") as res:
        pass
    assert res["nvml_dev_mem_peak_mb"] == pytest.approx(1234)
    assert not any(k.startswith("nvml_gpu_util") for k in res)


def test_nvml_process_not_listed_gives_tag_not_zero(fake_nvml, monkeypatch):
    fake = fake_nvml(dev_mem_mb=[1000], util=[20], proc_mem_mb=[10])
    monkeypatch.setattr(fake, "nvmlDeviceGetComputeRunningProcesses",
                        lambda handle: [types.SimpleNamespace(pid=1, usedGpuMemory=5000 * MB)])
    monitor = ResourceMonitor("cuda", interval_s=60)
    with monitor.window("train") as res:
        pass
    assert "nvml_dev_mem_peak_mb" in res and not any(k.startswith("nvml_proc") for k in res)
    assert monitor.tags()[names.TAG_NVML_PROC].startswith("absent:")


def test_no_nvml_library_metrics_absent_and_reason_tag(fake_nvml):
    fake_nvml(init_error="NVMLError_LibraryNotFound")
    monitor = ResourceMonitor("cuda", interval_s=0.01)
    with monitor.window("train") as res:
        pass
    assert not any(k.startswith("nvml_") for k in res)
    assert monitor.tags()["hqcbench.nvml"] == "unavailable: NVMLError_LibraryNotFound"
    assert {"wall_s", "cpu_util_cores", "rss_peak_mb"} <= set(res)


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    monitor = ResourceMonitor("cuda")
    with monitor.window("train") as res:
        pass
    assert not any(k.startswith("nvml_") for k in res)
    assert monitor.tags()["hqcbench.nvml"].startswith("unavailable: ModuleNotFoundError")


def test_real_nvml_on_this_machine_never_fakes_zeros():
    """With the real nvidia-ml-py: no GPU -> reason tag and no metrics; a GPU -> real values."""
    monitor = ResourceMonitor("cuda" if torch.cuda.is_available() else "cpu")
    with monitor.window("train") as res:
        pass
    status = monitor.tags()["hqcbench.nvml"]
    if status == "sampled":
        assert res["nvml_dev_mem_peak_mb"] > 0
    else:
        assert status.startswith(("unavailable: ", "not sampled: "))
        assert not any(k.startswith("nvml_") for k in res)


def test_nvml_not_sampled_when_training_on_cpu(fake_nvml):
    fake = fake_nvml(dev_mem_mb=[1000], util=[20], proc_mem_mb=[10])
    monitor = ResourceMonitor("cpu", interval_s=0.01)
    with monitor.window("train") as res:
        pass
    assert not any(k.startswith("nvml_") for k in res)
    assert monitor.tags()["hqcbench.nvml"] == "not sampled: training on cpu"
    assert monitor.tags()["hqcbench.gpu_name"] == "Fake GPU 80GB"
    assert fake.returned["dev"] == []


# ------------------------------------------------------------------------------------ CUDA (faked)


class FakeCuda:
    """torch.cuda's peak counters: the peak since the last reset, as the allocator keeps it."""

    def __init__(self):
        self.resets = 0
        self.alloc_peak = self.reserved_peak = 0

    def allocate(self, mb: int):
        self.alloc_peak = max(self.alloc_peak, mb * MB)
        self.reserved_peak = max(self.reserved_peak, (mb + 32) * MB)

    def reset(self, device=None):
        self.resets += 1
        self.alloc_peak = self.reserved_peak = 0


def test_cuda_peaks_reset_per_window(monkeypatch, fake_nvml):
    fake_nvml(init_error="NVMLError_LibraryNotFound")
    cuda = FakeCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", cuda.reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: cuda.alloc_peak)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: cuda.reserved_peak)
    monitor = ResourceMonitor("cuda")
    cuda.allocate(5000)  # before the window: must not count
    with monitor.window("train") as first:
        cuda.allocate(300)
    with monitor.window("eval") as second:
        cuda.allocate(100)
    assert cuda.resets == 2
    assert first["cuda_alloc_peak_mb"] == pytest.approx(300) and first["cuda_reserved_peak_mb"] == pytest.approx(332)
    assert second["cuda_alloc_peak_mb"] == pytest.approx(100)


def test_no_cuda_metrics_on_cpu():
    monitor = ResourceMonitor("cpu")
    with monitor.window("train") as res:
        pass
    assert not any(k.startswith("cuda_") for k in res)


# --------------------------------------------------------------------------- CPU and RSS, subprocess

_CPU_SCRIPT = textwrap.dedent("""
    import json, subprocess, sys, time
    import numpy as np
    from hqcbench import names, resources
    from hqcbench.resources import MB, ResourceMonitor

    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    out = {}
    mon = ResourceMonitor("cpu", interval_s=0.02)
    with mon.window("train") as res:
        c0, t0 = time.process_time(), time.perf_counter()
        busy(1.0)
        out["busy_ref"] = (time.process_time() - c0) / (time.perf_counter() - t0)
    out["busy"] = res
    with mon.window("train") as res:
        time.sleep(0.8)
    out["sleep"] = res

    def alloc_window(mon, hold_s):
        rss0 = mon.proc.memory_info().rss / MB
        with mon.window("train") as res:
            block = np.ones(200 * MB // 8)  # ones: every page touched
            time.sleep(hold_s)
            del block  # freed inside the window: only the peak remembers it
        return {"rss_before_mb": rss0, "rss_after_mb": mon.proc.memory_info().rss / MB, **res}

    out["alloc_exact"] = alloc_window(mon, 0.0)
    out["exact_method"] = mon.tags().get(names.TAG_RSS_METHOD)
    resources._reset_hwm = lambda: False  # as where /proc/self/clear_refs may not be written
    out["alloc_sampled"] = alloc_window(mon, 0.3)
    out["sampled_method"] = mon.tags().get(names.TAG_RSS_METHOD)

    child_code = "import time, numpy as np; a = np.ones(150 * 2**20 // 8); e = time.perf_counter() + 0.8\\n" \\
                 "while time.perf_counter() < e: pass\\n" \\
                 "print(time.process_time())"
    rss0 = mon.proc.memory_info().rss / MB
    with mon.window("train") as res:
        child = subprocess.run([sys.executable, "-c", child_code], check=True, capture_output=True, text=True)
    out["child"] = {"rss_before_mb": rss0, "child_cpu_s": float(child.stdout.split()[-1]), **res}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def cpu_result() -> dict:
    """One fresh interpreter for the CPU/RSS cases: this test process's own history can't hide a peak."""
    proc = subprocess.run([sys.executable, "-c", _CPU_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_busy_loop_uses_about_one_core(cpu_result):
    busy = cpu_result["busy"]
    # the reference is the interpreter's own process_time over the same loop: on an idle machine both
    # are ~1.0; on a shared one both drop together
    assert busy["cpu_util_cores"] == pytest.approx(cpu_result["busy_ref"], abs=0.1)
    assert 0.25 < busy["cpu_util_cores"] < 1.2  # one thread: never much above one core
    if cpu_result["busy_ref"] > 0.85:  # the scheduler let the loop run (not a saturated shared machine)
        assert busy["cpu_util_cores"] > 0.8
    assert busy["wall_s"] == pytest.approx(1.0, abs=0.3)


def test_sleep_uses_almost_no_cpu(cpu_result):
    # the monitor's own sampling thread (every 0.1 s: children, RSS) is the only work in the window;
    # measured 0.02-0.11 cores on a 2-core VM, against ~1.0 for the busy window above
    assert cpu_result["sleep"]["cpu_util_cores"] < 0.2
    assert cpu_result["sleep"]["wall_s"] == pytest.approx(0.8, abs=0.3)


@pytest.mark.parametrize("case", ["alloc_exact", "alloc_sampled"])
def test_touching_200_mb_raises_window_peak(cpu_result, case):
    res = cpu_result[case]
    assert res["rss_peak_mb"] - res["rss_before_mb"] >= 200 * 0.98
    assert res["rss_after_mb"] < res["rss_before_mb"] + 100  # freed: the end RSS alone would miss it


def test_rss_method_tag(cpu_result):
    assert cpu_result["exact_method"].startswith("exact")
    assert cpu_result["sampled_method"].startswith("sampled")


def test_children_count_in_rss_and_cpu(cpu_result):
    child = cpu_result["child"]
    assert child["rss_peak_mb"] - child["rss_before_mb"] >= 150 * 0.9
    # the parent only waits: the window's CPU seconds are (at least) the child's own, as it reported them
    assert child["cpu_util_cores"] * child["wall_s"] >= 0.9 * child["child_cpu_s"]
    assert child["child_cpu_s"] > 0.3


# --------------------------------------------------------------------------------- paper measurements


def test_paper_cpu_percent_is_difference_of_two_system_readings(monkeypatch):
    readings = iter([30.0, 75.5])
    monkeypatch.setattr(psutil, "cpu_percent", lambda *a, **k: next(readings))
    monitor = ResourceMonitor("cpu", paper_metrics=True)
    with monitor.window("train") as res:
        pass
    assert res["paper_cpu_percent"] == pytest.approx(45.5)
    assert res["paper_memory_gb"] == pytest.approx(psutil.virtual_memory().used / 2 ** 30, abs=0.5)


def test_paper_metrics_only_when_asked_and_only_for_training():
    monitor = ResourceMonitor("cpu", paper_metrics=True)
    with monitor.window("eval") as res:
        pass
    assert "paper_cpu_percent" not in res and "paper_memory_gb" not in res
    with ResourceMonitor("cpu").window("train") as res:
        pass
    assert "paper_cpu_percent" not in res


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="interval_s"):
        ResourceMonitor("cpu", interval_s=0)


# --------------------------------------------------------------------------------- run level, logging


def test_run_summary():
    history = [{"epoch_time_s": 3.0, "eval_time_s": 1.0, "cpu_util_cores": 1.0, "rss_peak_mb": 500.0,
                "nvml_gpu_util_mean": 40.0, "nvml_dev_mem_peak_mb": 900.0},
               {"epoch_time_s": 1.0, "eval_time_s": 2.0, "cpu_util_cores": 2.0, "rss_peak_mb": 700.0,
                "nvml_gpu_util_mean": 60.0, "nvml_dev_mem_peak_mb": 800.0},
               {"epoch_time_s": 2.0, "eval_time_s": 3.0, "cpu_util_cores": 1.5, "rss_peak_mb": 600.0}]
    out = run_summary(history)
    assert out == {"epoch_time_s_median": 2.0, "eval_time_s_median": 2.0, "cpu_util_cores_mean": 1.5,
                   "rss_peak_mb_max": 700.0, "nvml_gpu_util_run_mean": 50.0, "nvml_dev_mem_peak_mb_max": 900.0}


def test_fit_reports_resource_metrics_per_epoch(fake_nvml):
    from torch import nn

    from hqcbench.data.datasets import ImageSet
    from hqcbench.training.loop import fit
    from hqcbench.training.recipes import Recipe

    fake_nvml(dev_mem_mb=[2048], util=[75], proc_mem_mb=[512])
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(64, 1, 8, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    recipe = Recipe(torch.optim.SGD(model.parameters(), lr=0.1), None, False, nn.CrossEntropyLoss())
    seen = []
    fit(model, data, data, recipe, 2, 16, torch.device("cpu"), 0,
        ResourceMonitor("cuda", interval_s=0.01, paper_metrics=True),
        on_epoch=lambda epoch, metrics, m: seen.append(metrics), progress=False)
    assert len(seen) == 2
    for metrics in seen:
        assert metrics["nvml_dev_mem_peak_mb"] == pytest.approx(2048)
        assert metrics["nvml_gpu_util_mean"] == pytest.approx(75)
        assert metrics["rss_peak_mb"] > 0 and metrics["epoch_time_s"] > 0
        assert "paper_cpu_percent" in metrics and "paper_memory_gb" in metrics
        assert "wall_s" not in metrics


def test_main_run_logs_resource_metrics_and_tags(mlflow_store):
    from hqcbench.config import RunConfig
    from hqcbench.jobs.run import run_main

    cfg = RunConfig(dataset="digits", arms="cnn", epochs=2, train_limit=200, attacks="none", device="cpu")
    trained = run_main(cfg, progress=False)
    run = mlflow.get_run(trained[0].run_id)
    metrics, tags = run.data.metrics, run.data.tags
    for name in ("epoch_time_s_median", "eval_time_s_median", "cpu_util_cores_mean", "rss_peak_mb_max",
                 "params_total", "params_quantum"):
        assert name in metrics, name
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "rss_peak_mb")
    assert [m.step for m in history] == [1, 2]
    assert metrics["rss_peak_mb_max"] == pytest.approx(max(m.value for m in history))
    for tag in ("hqcbench.nvml", "hqcbench.cpu_model", "hqcbench.cpu_count", "version.torch",
                "version.torchquantum", "version.mlflow", "version.adversarial-robustness-toolbox"):
        assert tag in tags, tag
    if tags["hqcbench.nvml"] != "sampled":
        assert not any(k.startswith("nvml_") for k in metrics)


def test_timing_lock_is_per_cpu_and_waits_for_a_holder(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("HQCBENCH_TIMING_LOCK", str(tmp_path / "timing.lock"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 0})
    said: list[str] = []
    with resources.timing_lock(announce=said.append) as cpus:
        assert cpus == [0, 1] and sorted(p.name for p in tmp_path.iterdir()) == ["timing.lock.cpu0", "timing.lock.cpu1"]
        done = threading.Event()

        def other() -> None:  # a second job on CPU 1 only: it must wait until the first releases
            monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
            with resources.timing_lock(announce=said.append):
                done.set()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.5)
        assert not done.is_set() and any("CPU 1" in line for line in said)
    thread.join(timeout=5)
    assert done.is_set()
