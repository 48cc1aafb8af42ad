"""Resource measurement of the training *process* (not the machine).

``ResourceMonitor.window(kind)`` wraps one training epoch or one evaluation and fills a dict with the
design's metric names:

* ``wall_s`` (the caller logs it as ``epoch_time_s`` / ``eval_time_s``);
* ``cpu_util_cores``: CPU seconds of this process and its children / wall seconds (1.0 = one core);
* ``rss_peak_mb``: peak resident memory of the process and its children within the window;
* on CUDA: ``cuda_alloc_peak_mb``, ``cuda_reserved_peak_mb`` (torch's peak counters, reset per window);
* through NVML (``import pynvml``, package nvidia-ml-py), sampled by a background thread every
  ``interval_s``: ``nvml_proc_mem_{peak,mean}_mb`` (this process's GPU memory, from the device's
  running-process list), ``nvml_dev_mem_{peak,mean}_mb`` (device memory used, all processes),
  ``nvml_gpu_util_{mean,peak}`` (GPU utilisation in %);
* with ``paper_metrics`` (the ``paper`` protocol), for training windows only, the published
  measurements: ``paper_cpu_percent`` (the difference of two system-wide ``psutil.cpu_percent()``
  readings, one at the window's start and one at its end) and ``paper_memory_gb``
  (``psutil.virtual_memory().used`` at the end, GiB). They measure the machine, not the model; they are
  kept so a report can show what the published figures measured.

A quantity that cannot be measured is *absent* from the dict, never a made-up zero; ``tags()`` says why
(``hqcbench.nvml`` = ``"unavailable: NVMLError_LibraryNotFound"`` on a machine without a GPU driver).

Peak RSS: on Linux the kernel keeps the process's exact high-water mark (``VmHWM``) and resets it when
``5`` is written to ``/proc/self/clear_refs``; the monitor resets it at each window's start, so the
peak is exact however short the spike. Children (e.g. DataLoader workers) are sampled. Where the reset
is not allowed, the process is sampled as well (a spike shorter than ``interval_s`` can then be missed).
No library offers per-window peaks of a process tree plus NVML per-process memory, hence this module.

Size: about 480 lines, one monitor and the probes its sampling thread reads (process, children,
NVML), and the timing lock that keeps timed jobs from sharing a core; split apart, the NVML probe
would be a module used by nothing else.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import filelock
import psutil
import torch

from hqcbench import names
from hqcbench.threads import affinity

MB = 2 ** 20
GIB = 2 ** 30
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"

# ------------------------------------------------------------------------------------------ process RSS


def _read_hwm_bytes() -> int | None:
    """This process's RSS high-water mark (VmHWM) since the last reset, or None where unknown."""
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where not permitted or not Linux."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _children(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return proc.children(recursive=True)
    return []


def _children_rss(children: list[psutil.Process]) -> int:
    total = 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def _children_cpu(children: list[psutil.Process]) -> dict[int, float]:
    """pid -> user + system CPU seconds of live children."""
    out: dict[int, float] = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            out[child.pid] = t.user + t.system
    return out


# ------------------------------------------------------------------------------------------------- NVML


@dataclass
class NvmlProbe:
    """The NVML handle of the GPU we train on, or the reason there is none.

    ``status`` is the ``hqcbench.nvml`` tag: ``"sampled"``, ``"unavailable: <why>"`` (no pynvml, no
    driver library, no device), or ``"not sampled: training on cpu"`` (NVML works, but the model is on
    the CPU: the GPU's numbers would describe other work).
    """

    device_type: str
    device_index: int = 0
    nvml: Any = None  # the pynvml module, once initialised
    handle: Any = None
    status: str = ""
    gpu_name: str | None = None
    driver: str | None = None

    @classmethod
    def open(cls, device: Any) -> "NvmlProbe":
        dev_type, index = _device_type_index(device)
        probe = cls(dev_type, index)
        try:
            import pynvml  # nvidia-ml-py
        except ImportError as exc:
            probe.status = f"unavailable: {type(exc).__name__} (pip install nvidia-ml-py)"
            return probe
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            probe.status = f"unavailable: {type(exc).__name__}"
            return probe
        except Exception as exc:  # a broken driver install can raise OSError-like errors
            probe.status = f"unavailable: {type(exc).__name__}: {exc}"[:250]
            return probe
        probe.nvml = pynvml
        with contextlib.suppress(Exception):
            probe.driver = _as_str(pynvml.nvmlSystemGetDriverVersion())
        try:
            handle = _handle_for(pynvml, index)
        except Exception as exc:
            probe.status = f"unavailable: {type(exc).__name__} (no GPU {index})"
            return probe
        with contextlib.suppress(Exception):
            probe.gpu_name = _as_str(pynvml.nvmlDeviceGetName(handle))
        if dev_type != "cuda":
            probe.status = f"not sampled: training on {dev_type}"
            return probe
        probe.handle = handle
        probe.status = "sampled"
        return probe

    def tags(self) -> dict[str, str]:
        tags = {names.TAG_NVML: self.status}
        if self.gpu_name:
            tags[names.TAG_GPU_NAME] = self.gpu_name
        if self.driver:
            tags[names.TAG_GPU_DRIVER] = self.driver
        return tags

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
            self.nvml, self.handle = None, None

    # ------------------------------------------------------------------ one sample of each quantity
    def sample(self, pids: set[int]) -> dict[str, float]:
        """{'proc_mem': bytes, 'dev_mem': bytes, 'util': %}; a quantity NVML refuses is left out."""
        out: dict[str, float] = {}
        if self.handle is None:
            return out
        nv = self.nvml
        with contextlib.suppress(nv.NVMLError):
            out["dev_mem"] = float(nv.nvmlDeviceGetMemoryInfo(self.handle).used)
        with contextlib.suppress(nv.NVMLError):
            out["util"] = float(nv.nvmlDeviceGetUtilizationRates(self.handle).gpu)
        with contextlib.suppress(nv.NVMLError):
            used = [p.usedGpuMemory for p in nv.nvmlDeviceGetComputeRunningProcesses(self.handle)
                    if p.pid in pids and p.usedGpuMemory is not None]
            if used:  # not listed (another PID namespace) or no per-process figure: absent, not zero
                out["proc_mem"] = float(sum(used))
        return out


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _device_type_index(device: Any) -> tuple[str, int]:
    """'cuda:1' / torch.device / None -> ('cuda', 1); index defaults to torch's current device."""
    text = str(device) if device is not None else "cpu"
    dev_type, _, idx = text.partition(":")
    if idx:
        return dev_type, int(idx)
    if dev_type == "cuda":
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                return dev_type, torch.cuda.current_device()
    return dev_type, 0


def _handle_for(pynvml: Any, index: int) -> Any:
    """The NVML handle of torch's CUDA device ``index``: by UUID (right under CUDA_VISIBLE_DEVICES),
    else by index."""
    with contextlib.suppress(Exception):
        if torch.cuda.is_available():
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)


# ------------------------------------------------------------------------------------------ aggregation


@dataclass
class _Series:
    """Running peak and mean of one sampled quantity."""

    count: int = 0
    total: float = 0.0
    peak: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.peak = max(self.peak, value)

    @property
    def mean(self) -> float:
        return self.total / self.count


@dataclass
class _WindowSamples:
    tree_rss: _Series = field(default_factory=_Series)
    proc_mem: _Series = field(default_factory=_Series)
    dev_mem: _Series = field(default_factory=_Series)
    util: _Series = field(default_factory=_Series)


# --------------------------------------------------------------------------------------------- monitor


class ResourceMonitor:
    """Measures this process around training epochs and evaluations (see the module docstring).

    ``device``: where the model trains ("cpu", "cuda", "cuda:1" or a torch.device); CUDA and NVML
    metrics are taken only for a CUDA device. ``interval_s``: background sampling interval (children's
    RSS, NVML). ``paper_metrics``: add the published system-wide measurements to training windows.
    """

    def __init__(self, device: Any = "cpu", interval_s: float = 0.1, paper_metrics: bool = False):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.paper_metrics = paper_metrics
        self.proc = psutil.Process(os.getpid())
        self.device_type, self.device_index = _device_type_index(device)
        self.nvml = NvmlProbe.open(device)
        self._hwm_ok: bool | None = None  # unknown until the first window
        self._proc_mem_seen = False
        self._windows_sampled = 0

    # ------------------------------------------------------------------ public
    def tags(self) -> dict[str, str]:
        """Why NVML metrics are (absent or) present, GPU name and driver, how the RSS peak was taken."""
        tags = self.nvml.tags()
        if self.nvml.handle is not None and self._windows_sampled and not self._proc_mem_seen:
            tags[names.TAG_NVML_PROC] = (f"absent: pid {os.getpid()} never in the device's compute-process list "
                                   "(other PID namespace, or no per-process figure)")
        if self._hwm_ok is not None:
            tags[names.TAG_RSS_METHOD] = ("exact: VmHWM reset per window, children sampled" if self._hwm_ok
                                    else f"sampled every {self.interval_s:g} s")
        return tags

    def close(self) -> None:
        """Release NVML (its handle and shutdown); the monitor takes no more windows after this."""
        self.nvml.close()

    def __enter__(self) -> "ResourceMonitor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def window(self, kind: str) -> Iterator[dict[str, float]]:
        """Measure the enclosed block; the yielded dict is filled when the block ends."""
        metrics: dict[str, float] = {}
        paper = self.paper_metrics and kind == "train"
        cuda = self._cuda_start()
        if paper:
            sys_cpu_before = psutil.cpu_percent()  # as published: non-blocking, "since the last call"
        self._hwm_ok = _reset_hwm()
        samples = _WindowSamples()
        own_pids = {self.proc.pid}
        children0 = _children(self.proc)
        cpu_children0 = _children_cpu(children0)
        self._sample(samples, children0, own_pids)
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(self.interval_s):
                self._sample(samples, _children(self.proc), own_pids)

        thread = threading.Thread(target=run, name="hqcbench-resources", daemon=True)
        cpu0 = self.proc.cpu_times()
        t0 = time.perf_counter()
        thread.start()
        try:
            yield metrics
        finally:
            if cuda is not None:
                cuda.synchronize(self._torch_device())  # queued kernels belong to this window
            wall = time.perf_counter() - t0
            cpu1 = self.proc.cpu_times()
            stop.set()
            thread.join()
            children1 = _children(self.proc)
            self._sample(samples, children1, own_pids)
            if paper:
                sys_cpu_after = psutil.cpu_percent()
                metrics["paper_cpu_percent"] = sys_cpu_after - sys_cpu_before
                metrics["paper_memory_gb"] = psutil.virtual_memory().used / GIB
            metrics["wall_s"] = wall
            cpu_s = self._cpu_seconds(cpu0, cpu1, cpu_children0, _children_cpu(children1))
            metrics["cpu_util_cores"] = cpu_s / wall if wall > 0 else 0.0
            metrics["rss_peak_mb"] = self._rss_peak(samples) / MB
            if cuda is not None:
                dev = self._torch_device()
                metrics["cuda_alloc_peak_mb"] = cuda.max_memory_allocated(dev) / MB
                metrics["cuda_reserved_peak_mb"] = cuda.max_memory_reserved(dev) / MB
            self._nvml_metrics(samples, metrics)

    # ------------------------------------------------------------------ internals
    def _torch_device(self):
        return torch.device(self.device_type, self.device_index)

    def _cuda_start(self):
        """torch.cuda with peak counters reset, or None when not training on an available GPU."""
        if self.device_type != "cuda":
            return None
        if not torch.cuda.is_available():
            return None
        torch.cuda.synchronize(self._torch_device())
        torch.cuda.reset_peak_memory_stats(self._torch_device())
        return torch.cuda

    def _sample(self, samples: _WindowSamples, children: list[psutil.Process], own_pids: set[int]) -> None:
        """One sample of tree RSS and NVML (called from the sampler thread and at the window's ends)."""
        with contextlib.suppress(psutil.Error):
            samples.tree_rss.add(float(self.proc.memory_info().rss + _children_rss(children)))
        if self.nvml.handle is None:
            return
        values = self.nvml.sample(own_pids | {c.pid for c in children})
        for key in ("proc_mem", "dev_mem", "util"):
            if key in values:
                getattr(samples, key).add(values[key])

    @staticmethod
    def _cpu_seconds(cpu0, cpu1, children0: dict[int, float], children1: dict[int, float]) -> float:
        """Own CPU seconds + children reaped in the window (the kernel adds them to ours) + children
        alive at the end (their CPU seconds minus those at the start)."""
        own = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        reaped = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        live = sum(max(0.0, secs - children0.get(pid, 0.0)) for pid, secs in children1.items())
        return own + reaped + live

    def _rss_peak(self, samples: _WindowSamples) -> float:
        peak = samples.tree_rss.peak if samples.tree_rss.count else 0.0
        if self._hwm_ok:
            hwm = _read_hwm_bytes()
            if hwm is not None:  # exact own peak; the tree samples add the children
                peak = max(peak, float(hwm))
        return peak

    def _nvml_metrics(self, samples: _WindowSamples, metrics: dict[str, float]) -> None:
        if self.nvml.handle is None:
            return
        self._windows_sampled += 1
        if samples.proc_mem.count:
            self._proc_mem_seen = True
            metrics["nvml_proc_mem_peak_mb"] = samples.proc_mem.peak / MB
            metrics["nvml_proc_mem_mean_mb"] = samples.proc_mem.mean / MB
        if samples.dev_mem.count:
            metrics["nvml_dev_mem_peak_mb"] = samples.dev_mem.peak / MB
            metrics["nvml_dev_mem_mean_mb"] = samples.dev_mem.mean / MB
        if samples.util.count:
            metrics["nvml_gpu_util_mean"] = samples.util.mean
            metrics["nvml_gpu_util_peak"] = samples.util.peak


# ------------------------------------------------------------------------------------------ run level

# per-epoch metric -> (run-level name, how): peaks take the max, times the median, rates the mean
RUN_LEVEL: dict[str, tuple[str, str]] = {
    "epoch_time_s": ("epoch_time_s_median", "median"),
    "eval_time_s": ("eval_time_s_median", "median"),
    "cpu_util_cores": ("cpu_util_cores_mean", "mean"),
    "rss_peak_mb": ("rss_peak_mb_max", "max"),
    "cuda_alloc_peak_mb": ("cuda_alloc_peak_mb_max", "max"),
    "cuda_reserved_peak_mb": ("cuda_reserved_peak_mb_max", "max"),
    "nvml_proc_mem_peak_mb": ("nvml_proc_mem_peak_mb_max", "max"),
    "nvml_dev_mem_peak_mb": ("nvml_dev_mem_peak_mb_max", "max"),
    "nvml_gpu_util_mean": ("nvml_gpu_util_run_mean", "mean"),
}


def run_summary(history: list[dict[str, float]]) -> dict[str, float]:
    """Run-level resource metrics from the per-epoch ones; a metric no epoch has stays absent."""
    out: dict[str, float] = {}
    for name, (run_name, how) in RUN_LEVEL.items():
        values = [h[name] for h in history if name in h]
        if not values:
            continue
        if how == "median":
            out[run_name] = float(statistics.median(values))
        elif how == "mean":
            out[run_name] = float(statistics.fmean(values))
        else:
            out[run_name] = float(max(values))
    return out


def hardware_tags(device: Any) -> dict[str, str]:
    """GPU name, driver and NVML status for ``device`` (for tracking.system_tags)."""
    probe = NvmlProbe.open(device)
    try:
        tags = probe.tags()
    finally:
        probe.close()
    with contextlib.suppress(Exception):
        dev_type, index = _device_type_index(device)
        if dev_type == "cuda" and torch.cuda.is_available():
            tags[names.TAG_GPU_NAME] = torch.cuda.get_device_name(index)
            tags[names.TAG_CUDA_RUNTIME] = str(torch.version.cuda)
    tags[names.TAG_CPU_COUNT_PHYSICAL] = str(psutil.cpu_count(logical=False))
    with contextlib.suppress(Exception):
        tags[names.TAG_TORCH_THREADS] = str(torch.get_num_threads())
    return tags


TIMING_LOCK_ENV = "HQCBENCH_TIMING_LOCK"  # base path of the timing locks; default under the user's cache


def timing_lock_base() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hqcbench" / "timing.lock"
    return Path(os.environ.get(TIMING_LOCK_ENV) or default)


@contextlib.contextmanager
def timing_lock(announce=print) -> Iterator[list[int]]:
    """Hold one lock per CPU this process may run on (``<base>.cpu<N>``), so timed jobs that share a
    core wait for each other, while jobs pinned to different cores (``taskset``) run side by side.
    Locks are taken in CPU order (no deadlock) and released by the OS if the process dies."""
    cpus = affinity()
    base = timing_lock_base()
    base.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for cpu in cpus:
            lock = filelock.FileLock(f"{base}.cpu{cpu}")
            try:
                stack.enter_context(lock.acquire(timeout=0))
            except filelock.Timeout:
                announce(f"waiting for the timing lock of CPU {cpu} ({lock.lock_file}): another timed job runs there")
                stack.enter_context(lock.acquire())
        yield cpus
