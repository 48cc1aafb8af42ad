"""Forward+backward time of the quantum layer per engine, all timed in one process.

Engines, all running the same circuit from the same weights and inputs:

* ``tq_dynamic`` -- TorchQuantum 0.1.8 gate by gate (``QuantumLayer(engine="torchquantum")``);
* ``tq_static``  -- TorchQuantum's static mode: the ansatz as a ``tq.QuantumModule`` of gate modules
  with ``@tq.static_support``, switched on with ``static_on(wires_per_block=k)``; the encoding
  stays dynamic (it depends on the sample);
* ``fused``      -- the layer's default engine (``method="auto"``; the chosen method is printed);
* ``pennylane``  -- PennyLane ``default.qubit`` through ``qml.qnn.TorchLayer`` (backprop), the engine
  the published study used; optional (``pip install -e .[bench]``): skipped with a note when absent.

Each cell is the median time of one forward + backward pass (gradients for inputs and weights) over
interleaved rounds: per round, every engine runs one untimed call (its caches warm again after the
other engines ran) and then ``--block`` timed consecutive calls, so each engine is measured in its
steady state, as in a training loop, and load drifts on a shared machine hit all engines alike.
Then: speed-up of ``fused`` over each other engine; max |output difference| against ``tq_dynamic``;
peak memory per engine at 12 qubits / batch 256 (each engine in a fresh subprocess: increase of the
process's peak RSS, VmHWM after resetting it, during one forward + backward over the RSS just
before; CUDA: torch.cuda.max_memory_allocated).

Targets for ``fused``: >= 5x faster than tq_dynamic at 4 qubits / depth 2 / batch 64;
>= 2x at 8 qubits / depth 4 / batch 256; never slower than TorchQuantum at 10 qubits.

    python benchmarks/quantum_layer.py                       # full table, saved under benchmarks/results/
    python benchmarks/quantum_layer.py --qubits 4 --depths 2 --batches 64 --no-save --no-memory

``--preset scale``: 12, 16 and 20 qubits, depths 2 and 6, batches 32 and 256; engines ``fused``,
``tq_dynamic``, ``pennylane`` and ``pennylane_lightning`` (``lightning.qubit``, ``diff_method="adjoint"``,
through ``qml.qnn.TorchLayer``; it simulates the batch's samples one by one). Per cell and engine:

* a fits-in-memory guard first: each engine's estimated peak (``estimate_bytes``; the fused engine's
  is ``hqcbench.models.memory.estimate_peak_bytes``) against the smaller of ``--mem-limit-gb`` and the
  memory available; a cell that would not fit is reported as "does not fit (estimate X GB)" and not run;
* time: below ``--subprocess-qubits`` (16) the interleaved rounds above, in one process; from there on
  each engine runs in its own process under ``--cell-timeout-s``: one warm-up call, then up to
  ``--large-calls`` (3) timed calls. A call still running at the timeout is reported as "> T s" (T: how
  long it had run), and the same engine is not started again on a cell at least as large in qubits,
  depth and batch (it cannot be faster there);
* peak memory: the rise of the process's peak RSS during one forward + backward in a fresh process
  (for the large cells, the warm-up call);
* saved-for-backward bytes: what autograd keeps from one forward pass (``count_saved_bytes``:
  ``torch.autograd.graph.saved_tensors_hooks``, each distinct storage counted once, whole), for every
  engine whose circuit autograd records (not ``pennylane_lightning``: its adjoint runs in C++).

Targets of the scale preset, all from one run: (a) ``fused`` never slower than any other engine in any
cell where both ran; (b) ``fused`` >= 3x faster than ``tq_dynamic`` in every 16-qubit cell where both
ran; (c) at 16 qubits / depth 6 / batch 32, ``fused``'s saved-for-backward bytes at most a quarter of
``tq_dynamic``'s.

    python benchmarks/quantum_layer.py --preset scale      # -> benchmarks/results/quantum_layer_scale-...
    python benchmarks/quantum_layer.py --preset scale --qubits 8 --depths 2 --batches 32 --no-save
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from hqcbench.config import DEFAULT_ENCODING_SCALE
from hqcbench.hardware import machine_slug
from hqcbench.models.adjoint import choose_diff_method
from hqcbench.models.circuit import choose_method, cnot_ring_pairs, input_width, weight_shape
from hqcbench.models.memory import available_bytes, chunk_rows, estimate_peak_bytes
from hqcbench.models.quantum import QuantumLayer

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("tq_dynamic", "tq_static", "fused", "pennylane")
EXTRA_ENGINES = ("fused_unitary", "fused_gates")  # one fused method forced: checks the auto choice
LIGHTNING = "pennylane_lightning"  # lightning.qubit, adjoint differentiation (scale preset)
ALL_ENGINES = ENGINES + EXTRA_ENGINES + (LIGHTNING,)
TARGETS = {(4, 2, 64): 5.0, (8, 4, 256): 2.0}  # fused speed-up over tq_dynamic
SCALE_ENGINES = ("fused", "tq_dynamic", "pennylane", LIGHTNING)
SCALE_SPEEDUP_QUBITS, SCALE_SPEEDUP = 16, 3.0  # target (b): fused >= 3x tq_dynamic at 16 qubits
SCALE_SAVED_CELL, SCALE_SAVED_RATIO = (16, 6, 32), 0.25  # target (c): fused saved <= 1/4 of tq_dynamic's
PRESETS = {  # defaults of the options the user does not give
    "default": {"qubits": [4, 8, 10], "depths": [2, 4], "batches": [64, 256], "engines": list(ENGINES),
                "block": 5, "min_rounds": 4, "max_rounds": 20, "budget_s": 4.0},
    "scale": {"qubits": [12, 16, 20], "depths": [2, 6], "batches": [32, 256], "engines": list(SCALE_ENGINES),
              "block": 2, "min_rounds": 2, "max_rounds": 6, "budget_s": 10.0},
}
GB = 1e9
MIB = 2 ** 20
# Memory-estimate factors of the other engines, from their saved-for-backward bytes (count_saved_bytes,
# 8 qubits, depth 2 and 8, batch 4 and 32) and the peak-RSS rise of one pass (12 qubits, depth 2, batch
# 256: tq_dynamic 1173 MB, pennylane 3624 MB; docs/quantum_layer.md): TorchQuantum keeps ~0.7 complex64
# states per gate and peaks at ~1.7 (matmul inputs copied out of permuted views, backward temporaries);
# default.qubit keeps ~0.7 complex128 states per gate and peaks at ~2.6 per gate (the readout adds two
# per wire). Both rounded up: the guard must refuse what cannot fit, not predict to the MiB.
TQ_STATES_PER_GATE = 2.0  # complex64 states
PENNYLANE_STATES_PER_OP = 3.0  # complex128 states, per gate and per two wires of readout
LIGHTNING_STATES = 6  # complex128 states of one sample beside one per observable (n): adjoint, one tape at a time
LIGHTNING_FACTOR = 2.0
CHILD_HEADROOM_BYTES = int(4 * GB)  # a child's data-segment limit: the cell's memory budget plus this
warnings.filterwarnings("ignore", category=DeprecationWarning)


# ------------------------------------------------------------------------- engines
def _tq_encode(qdev, x: torch.Tensor, n: int, encoding: str) -> None:
    """The encoding exactly as QuantumLayer's torchquantum engine does it."""
    import torchquantum.functional as tqf

    if encoding == "angle":
        angles = DEFAULT_ENCODING_SCALE * torch.tanh(x)
        for w in range(n):
            tqf.ry(qdev, wires=w, params=angles[:, w])
    else:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
        qdev.set_states((x / norm).to(torch.complex64).reshape(x.shape[0], *([2] * n)))


def tq_static_layer(ref: QuantumLayer, wires_per_block: int) -> nn.Module:
    """ref's circuit as TorchQuantum modules, the ansatz in static mode (weights copied from ref)."""
    import torchquantum as tq

    class Ansatz(tq.QuantumModule):
        def __init__(self):
            super().__init__()
            self.n_wires = ref.n_qubits
            self.ops = tq.QuantumModuleList()
            w = ref.weights.detach()
            for layer in range(ref.depth):
                for wire in range(ref.n_qubits):
                    if ref.ansatz == "strong":
                        self.ops.append(tq.RY(has_params=True, trainable=True, wires=[wire],
                                              init_params=float(w[layer, wire, 0])))
                        self.ops.append(tq.RZ(has_params=True, trainable=True, wires=[wire],
                                              init_params=float(w[layer, wire, 1])))
                    else:
                        self.ops.append(tq.RX(has_params=True, trainable=True, wires=[wire],
                                              init_params=float(w[layer, wire, 0])))
                for control, target in cnot_ring_pairs(ref.n_qubits):
                    self.ops.append(tq.CNOT(wires=[control, target]))

        @tq.static_support
        def forward(self, qdev):
            self.q_device = qdev
            for op in self.ops:
                op(qdev)

    class StaticLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ansatz = Ansatz()
            self.ansatz.static_on(wires_per_block=min(wires_per_block, ref.n_qubits))
            self.measure = tq.MeasureAll(tq.PauliZ)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            qdev = tq.QuantumDevice(n_wires=ref.n_qubits, bsz=x.shape[0], device=x.device)
            _tq_encode(qdev, x, ref.n_qubits, ref.encoding)
            self.ansatz(qdev)
            return self.measure(qdev).reshape(-1, ref.n_qubits)

    return StaticLayer()


def pennylane_layer(ref: QuantumLayer, device_name: str = "default.qubit", diff_method: str = "backprop") -> nn.Module:
    """ref's circuit as a PennyLane TorchLayer, weights copied from ref: ``default.qubit`` with backprop
    (``pennylane``), or ``lightning.qubit`` with the adjoint method (``pennylane_lightning``; it does not
    broadcast, so PennyLane splits a batch into one circuit per sample)."""
    import pennylane as qml

    n, depth, encoding, ansatz = ref.n_qubits, ref.depth, ref.encoding, ref.ansatz
    dev = qml.device(device_name, wires=n)

    @qml.qnode(dev, interface="torch", diff_method=diff_method)
    def circuit(inputs, weights):
        if encoding == "angle":
            angles = DEFAULT_ENCODING_SCALE * torch.tanh(inputs)
            for w in range(n):
                qml.RY(angles[..., w], wires=w)
        else:
            qml.AmplitudeEmbedding(inputs, wires=range(n), normalize=True)
        for layer in range(depth):
            for w in range(n):
                if ansatz == "strong":
                    qml.RY(weights[layer, w, 0], wires=w)
                    qml.RZ(weights[layer, w, 1], wires=w)
                else:
                    qml.RX(weights[layer, w, 0], wires=w)
            for control, target in cnot_ring_pairs(n):
                qml.CNOT(wires=[control, target])
        return [qml.expval(qml.PauliZ(w)) for w in range(n)]

    layer = qml.qnn.TorchLayer(circuit, {"weights": tuple(ref.weights.shape)})
    with torch.no_grad():
        layer.weights.copy_(ref.weights)
    return layer


def pennylane_version() -> str | None:
    try:
        import pennylane

        return pennylane.__version__
    except ImportError:
        return None


def lightning_version() -> str | None:
    """pennylane-lightning's version, or None when it (or PennyLane) cannot be imported."""
    if pennylane_version() is None:  # lightning.qubit is a PennyLane device
        return None
    try:
        importlib.import_module("pennylane_lightning.lightning_qubit")  # the compiled device loads
        return metadata.version("pennylane_lightning")
    except (ImportError, metadata.PackageNotFoundError):
        return None


def missing_engines(engines: list[str]) -> dict[str, str]:
    """Optional engines that cannot run here, with the note printed for each."""
    missing = {}
    if "pennylane" in engines and pennylane_version() is None:
        missing["pennylane"] = "pennylane column skipped: PennyLane is not installed (pip install -e .[bench])"
    if LIGHTNING in engines and lightning_version() is None:
        missing[LIGHTNING] = (f"{LIGHTNING} column skipped: pennylane-lightning is not installed "
                              "(pip install -e .[bench])")
    return missing


def build(engine: str, n: int, depth: int, encoding: str, ansatz: str, wires_per_block: int) -> nn.Module:
    ref = QuantumLayer(n, depth, encoding, ansatz, engine="fused", seed=1234)
    if engine == "fused":
        return ref
    if engine in EXTRA_ENGINES:
        return QuantumLayer(n, depth, encoding, ansatz, engine="fused", seed=1234, method=engine.split("_")[1])
    if engine == "tq_dynamic":
        layer = QuantumLayer(n, depth, encoding, ansatz, engine="torchquantum", seed=1234)
        torch.testing.assert_close(layer.weights, ref.weights)
        return layer
    if engine == "tq_static":
        return tq_static_layer(ref, wires_per_block)
    if engine == LIGHTNING:
        return pennylane_layer(ref, "lightning.qubit", "adjoint")
    return pennylane_layer(ref)


# ------------------------------------------------------------------------- timing
def step(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One forward + backward (inputs and weights); returns the detached output."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    out = layer(x)
    out.sum().backward()
    return out.detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cell_input(n: int, batch: int, encoding: str, device: torch.device) -> torch.Tensor:
    """The cell's inputs, the same in every process (seeded by the cell)."""
    gen = torch.Generator().manual_seed(n * 1000 + batch)
    return torch.randn(batch, input_width(n, encoding), generator=gen).to(device).requires_grad_(True)


def time_config(engines: list[str], n: int, depth: int, batch: int, args, device: torch.device) -> list[dict]:
    rows, _ = time_engines(engines, n, depth, batch, args, device)
    return rows


def time_engines(engines: list[str], n: int, depth: int, batch: int, args,
                 device: torch.device) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Interleaved rounds in this process: one row per engine, and each engine's output."""
    encoding, ansatz = args.encoding, args.ansatz
    layers = {e: build(e, n, depth, encoding, ansatz, args.wires_per_block).to(device) for e in engines}
    x = cell_input(n, batch, encoding, device)
    outputs, first = {}, {}
    for e, layer in layers.items():  # warm-up (static mode builds its graph on the first call)
        for _ in range(2):
            outputs[e] = step(layer, x)
        sync(device)
        t0 = time.perf_counter()
        step(layer, x)
        sync(device)
        first[e] = time.perf_counter() - t0
    per_round = (args.block + 1) * max(sum(first.values()), 1e-9)
    rounds = int(min(args.max_rounds, max(args.min_rounds, args.budget_s / per_round)))
    samples: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(rounds):
        for e, layer in layers.items():
            step(layer, x)  # untimed: warms this engine's caches again
            for _ in range(args.block):
                sync(device)
                t0 = time.perf_counter()
                step(layer, x)
                sync(device)
                samples[e].append(time.perf_counter() - t0)
    fused = layers.get("fused")
    ref_out = outputs.get("tq_dynamic")
    rows = []
    for e in engines:
        rows.append({
            "n_qubits": n, "depth": depth, "batch": batch, "engine": e,
            "ms": statistics.median(samples[e]) * 1e3, "ms_min": min(samples[e]) * 1e3, "calls": len(samples[e]),
            "max_abs_diff_vs_tq": (float((outputs[e] - ref_out).abs().max()) if ref_out is not None else math.nan),
            "method": fused.method_for(batch) if e == "fused" else "",
        })
    return rows, outputs


# ------------------------------------------------------------------------- memory
def _rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS since the last reset) of this process, kB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def peak_of_step(layer: nn.Module, x: torch.Tensor, device: torch.device) -> dict:
    """One forward + backward: its peak memory (rise of peak RSS over the RSS before; CUDA: allocator
    peak over what was allocated before), its seconds and its output."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = step(layer, x)
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2 ** 20, "s": time.perf_counter() - t0,
                "out": out, "how": "torch.cuda.max_memory_allocated - allocated before"}
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS (Linux >= 4.0)
        fh.write("5")
    rss0, _ = _rss_kb()
    t0 = time.perf_counter()
    out = step(layer, x)
    seconds = time.perf_counter() - t0
    _, hwm = _rss_kb()
    return {"peak_mb": (hwm - rss0) / 1024, "s": seconds, "out": out, "how": "VmHWM - VmRSS before, fresh process"}


def memory_child(engine: str, n: int, depth: int, batch: int, args) -> dict:
    """Runs in a fresh process: peak memory of one forward + backward of one engine."""
    device = torch.device(args.device)
    layer = build(engine, n, depth, args.encoding, args.ansatz, args.wires_per_block).to(device)
    width = input_width(n, args.encoding)
    step(layer, torch.randn(2, width, device=device, requires_grad=True))  # lazy initialisation off the books
    x = torch.randn(batch, width, device=device, requires_grad=True)
    peak = peak_of_step(layer, x, device)
    return {"engine": engine, "peak_mb": peak["peak_mb"], "how": peak["how"]}


def measure_memory(engines: list[str], args) -> list[dict]:
    rows = []
    for engine in engines:
        cmd = [sys.executable, __file__, "--memory-child", engine, "--threads", str(args.threads),
               "--encoding", args.encoding, "--ansatz", args.ansatz, "--device", args.device,
               "--wires-per-block", str(args.wires_per_block),
               "--mem-qubits", str(args.mem_qubits), "--mem-depth", str(args.mem_depth),
               "--mem-batch", str(args.mem_batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.mem_timeout_s)
        if proc.returncode != 0:
            rows.append({"engine": engine, "peak_mb": math.nan, "how": f"failed: {proc.stderr.strip()[-200:]}"})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ------------------------------------------------------------------------- saved for backward
def count_saved_bytes(fn) -> tuple[object, int]:
    """fn()'s result and the bytes autograd saves for the backward pass while fn runs.

    Every tensor packed by ``torch.autograd.graph.saved_tensors_hooks`` is counted by its storage,
    whole (a saved view keeps all of its storage alive), and each distinct storage once: a tensor
    saved twice (x * x) or two views of one buffer count one storage. Storages are told apart by
    device and data pointer, and held until the count ends, so a freed address cannot come back as
    a "new" storage. Tensors without a plain storage count numel x element size.
    """
    storages: dict[tuple, object] = {}
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            key = (t.device.type, t.device.index, ptr) if ptr else ("no-address", id(storage))
            nbytes = storage.nbytes()
        except (RuntimeError, NotImplementedError, TypeError):  # no plain storage (sparse, wrapper subclasses)
            storage, key, nbytes = t, ("tensor", id(t)), t.numel() * t.element_size()
        if key not in storages:
            storages[key] = storage
            total[0] += nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    storages.clear()
    return out, total[0]


def autograd_records(engine: str) -> bool:
    """Whether autograd records the engine's circuit (lightning's adjoint runs in C++: nothing to count)."""
    return engine != LIGHTNING


# ------------------------------------------------------------------------- fits-in-memory guard
def n_gates(n: int, depth: int, encoding: str, ansatz: str) -> int:
    """Gates of the circuit: the encoding (one RY per wire, or one state preparation) and, per layer,
    the rotations and the CNOT ring."""
    per_layer = n * (2 if ansatz == "strong" else 1) + len(cnot_ring_pairs(n))
    return (n if encoding == "angle" else 1) + depth * per_layer


def estimate_bytes(engine: str, n: int, depth: int, batch: int, encoding: str = "angle",
                   ansatz: str = "strong") -> int:
    """Estimated peak bytes of one forward + backward of ``engine`` (the guard; errs high).

    fused: the layer's own estimate (``memory.estimate_peak_bytes``, the method ``auto`` picks; the
    forced ``unitary`` method adds its 2**n x 2**n matrices). TorchQuantum keeps every gate's output
    for autograd: gates x batch x 2**n complex64 x ``TQ_STATES_PER_GATE``. PennyLane ``default.qubit``
    (backprop, complex128): the same per gate and per two wires of readout, x ``PENNYLANE_STATES_PER_OP``.
    lightning (adjoint, one sample at a time): the state, one per observable and a few more, complex128.
    """
    dim, width = 2 ** n, input_width(n, encoding)
    if engine.startswith("fused"):
        method = "backprop" if engine == "fused_unitary" else "auto"
        peak = estimate_peak_bytes(n, depth, batch, method, torch.float32, encoding, ansatz, True, "fused")
        if engine == "fused_unitary":
            peak += 3 * 2 * depth * 4 ** n * 8
        return int(peak)
    gates = n_gates(n, depth, encoding, ansatz)
    if engine in ("tq_dynamic", "tq_static"):
        return int(gates * batch * dim * 8 * TQ_STATES_PER_GATE + dim * (20 * n + 16))
    if engine == "pennylane":
        return int((gates + 2 * n) * batch * dim * 16 * PENNYLANE_STATES_PER_OP)
    if engine == LIGHTNING:
        params = width + math.prod(weight_shape(n, depth, ansatz))
        return int((n + LIGHTNING_STATES) * dim * 16 * LIGHTNING_FACTOR + batch * (width + n * params) * 8)
    raise ValueError(f"estimate_bytes: unknown engine {engine!r}")


def memory_budget(limit_gb: float, device: torch.device) -> int:
    """Bytes one cell may take: the smaller of --mem-limit-gb and the memory available on the device."""
    return int(min(limit_gb * GB, available_bytes(device)))


def fits_message(engine: str, n: int, depth: int, batch: int, budget: int, encoding: str = "angle",
                 ansatz: str = "strong") -> tuple[int, str | None]:
    """(estimate, None) when the cell fits in ``budget`` bytes, else (estimate, "does not fit (estimate X GB)")."""
    estimate = estimate_bytes(engine, n, depth, batch, encoding, ansatz)
    if estimate <= budget:
        return estimate, None
    return estimate, f"does not fit (estimate {estimate / GB:.1f} GB)"


# ------------------------------------------------------------------------- one cell in a subprocess
def cell_child(engine: str, n: int, depth: int, batch: int, args) -> None:
    """Runs in a fresh process; prints one JSON line per phase as it completes (what a timeout cuts
    short is still read): ready, first (the warm-up call: peak memory, time, output), saved (bytes
    saved for backward by one forward pass), then one line per timed call. Starts no timed call that
    would end after the parent's deadline at the last call's pace."""
    def emit(**fields) -> None:
        print(json.dumps(fields), flush=True)

    device = torch.device(args.device)
    layer = build(engine, n, depth, args.encoding, args.ansatz, args.wires_per_block).to(device)
    width = input_width(n, args.encoding)
    step(layer, torch.randn(2, width, device=device, requires_grad=True))  # lazy initialisation off the books
    x = cell_input(n, batch, args.encoding, device)
    emit(phase="ready", t=time.time())
    first = peak_of_step(layer, x, device)
    emit(phase="first", s=first["s"], peak_mb=first["peak_mb"], how=first["how"],
         out=first["out"].double().cpu().tolist())
    if args.cell_saved and autograd_records(engine):
        _, saved = count_saved_bytes(lambda: layer(x))  # the graph is dropped with the output
        emit(phase="saved", bytes=saved)
    last = first["s"]
    for _ in range(args.cell_calls):
        if args.cell_deadline and time.time() + 1.2 * last > args.cell_deadline:
            emit(phase="stop", why="the next call would end after the timeout")
            break
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step(layer, x)
        sync(device)
        last = time.perf_counter() - t0
        emit(phase="call", s=last, cpu_s=time.process_time() - c0)  # CPU time: shows contention (wall >> cpu/threads)


def _data_limit(nbytes: int):
    """preexec_fn: caps the child's data segment, so an estimate that erred low ends in an allocation
    error in the child instead of the system's out-of-memory killer."""
    def apply() -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard),
                                                  hard))
    return apply


def run_cell_child(engine: str, n: int, depth: int, batch: int, args, calls: int, saved: bool,
                   budget: int) -> dict:
    """cell_child in a fresh process under --cell-timeout-s; what it reported, as a result row's fields."""
    import tempfile

    timeout = args.cell_timeout_s
    start = time.time()
    cmd = [sys.executable, __file__, "--cell-child", engine, "--cell", str(n), str(depth), str(batch),
           "--cell-calls", str(calls), "--cell-deadline", repr(start + timeout), "--threads", str(args.threads),
           "--encoding", args.encoding, "--ansatz", args.ansatz, "--device", args.device,
           "--wires-per-block", str(args.wires_per_block)] + ([] if saved else ["--no-saved"])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))  # lightning's OpenMP threads, as torch's
    limit = _data_limit(budget + CHILD_HEADROOM_BYTES) if args.device == "cpu" and sys.platform == "linux" else None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, preexec_fn=limit)
        try:
            rc = proc.wait(timeout=max(timeout - (time.time() - start), 0.01))
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, timed_out = None, True
        killed_at = time.time()
        out.seek(0)
        err.seek(0)
        lines, stderr = out.read().splitlines(), err.read()
    phases: dict[str, dict] = {}
    calls_s: list[float] = []
    cpu_s: list[float] = []
    for line in lines:
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec.get("phase") == "call":
            calls_s.append(rec["s"])
            cpu_s.append(rec["cpu_s"])
        else:
            phases[rec.get("phase", "")] = rec
    res: dict = {}
    if "first" in phases:
        first = phases["first"]
        res.update(peak_mib=first["peak_mb"], first_call_s=first["s"], out=first["out"], how=first["how"])
    if "saved" in phases:
        res["saved_mib"] = phases["saved"]["bytes"] / MIB
    if calls_s:
        res.update(status="ok", ms=statistics.median(calls_s) * 1e3, ms_min=min(calls_s) * 1e3, calls=len(calls_s),
                   cpu_ms=statistics.median(cpu_s) * 1e3)
    elif "first" in phases and calls:  # only the warm-up call fitted in the time: its time, flagged
        s = phases["first"]["s"]
        res.update(status="ok", ms=s * 1e3, ms_min=s * 1e3, calls=0, note="first call only")
    elif "first" in phases:
        res.update(status="ok")  # memory / saved bytes only (calls=0 asked)
    if timed_out and not calls_s and "first" not in phases:
        ready = phases.get("ready", {}).get("t")
        res.update(status="timeout", lower_s=(killed_at - ready) if ready else None,
                   note=f"timeout after {timeout:g} s" + ("" if ready else " (before the first call)"))
    elif rc not in (0, None) or ("first" not in phases and not timed_out):
        tail = stderr.strip().splitlines()[-1:] or [f"exit code {rc}"]
        oom = any(k in stderr for k in ("can't allocate memory", "MemoryError", "std::bad_alloc", "out of memory"))
        res.update(status="failed", note=("ran out of memory under its limit" if oom else tail[0][-200:]))
    return res


# ------------------------------------------------------------------------- report
def speedups(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["n_qubits"], r["depth"], r["batch"]) for r in rows})
    for key in keys:
        cell = {r["engine"]: r for r in rows if (r["n_qubits"], r["depth"], r["batch"]) == key}
        fused = cell["fused"]["ms"]
        entry = {"n_qubits": key[0], "depth": key[1], "batch": key[2], "method": cell["fused"]["method"]}
        for e in ENGINES + EXTRA_ENGINES + ((LIGHTNING,) if LIGHTNING in cell else ()):
            entry[f"{e}_ms"] = cell[e]["ms"] if e in cell else math.nan
            entry[f"{e}_over_fused"] = cell[e]["ms"] / fused if e in cell else math.nan
            entry[f"{e}_diff"] = cell[e]["max_abs_diff_vs_tq"] if e in cell else math.nan
        target = TARGETS.get(key)
        ratio = entry["tq_dynamic_over_fused"]
        tq_ratios = [entry[f"{e}_over_fused"] for e in ("tq_dynamic", "tq_static") if e in cell]
        if target is not None:
            verdict = "met" if ratio >= target else "MISSED"
            entry["target"] = "n/a" if math.isnan(ratio) else f">= {target:g}x: {verdict}"
        elif key[0] >= 10:  # never slower than TorchQuantum (either mode)
            entry["target"] = "n/a" if not tq_ratios else f">= 1x: {'met' if min(tq_ratios) >= 1 else 'MISSED'}"
        else:
            entry["target"] = ""
        out.append(entry)
    return out


def fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(table: list[dict], memory: list[dict], header: dict, engines: list[str]) -> str:
    lines = [f"# Quantum layer: forward+backward per engine ({header['date']})", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "date"]
    lines += ["", "Milliseconds per forward + backward (median), speed-up = engine ms / fused ms, "
              "diff = max |output - tq_dynamic output|.", ""]
    cols = ["n", "depth", "batch"] + [f"{e} ms" for e in engines] + ["fused method"]
    cols += [f"{e} / fused" for e in engines if e != "fused"] + [f"{e} diff" for e in engines if e != "tq_dynamic"]
    cols += ["target (tq_dynamic / fused)"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = [str(r["n_qubits"]), str(r["depth"]), str(r["batch"])]
        cells += [fmt(r[f"{e}_ms"], ".2f") for e in engines] + [r["method"]]
        cells += [fmt(r[f"{e}_over_fused"], ".2f") + "x" for e in engines if e != "fused"]
        cells += [fmt(r[f"{e}_diff"], ".1e") for e in engines if e != "tq_dynamic"]
        cells += [r["target"]]
        lines.append("| " + " | ".join(cells) + " |")
    if memory:
        lines += ["", f"Peak memory of one forward + backward at {header['memory case']} "
                  f"({memory[0]['how']}):", "", "| engine | peak MB |", "|---|---|"]
        lines += [f"| {m['engine']} | {fmt(m['peak_mb'], '.1f')} |" for m in memory]
        failed = [m for m in memory if str(m["how"]).startswith("failed")]
        lines += [f"\n{m['engine']}: {m['how']}" for m in failed]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- scale preset
def fused_plan(n: int, depth: int, batch: int) -> str:
    """The fused engine's method and differentiation for one chunk of ``batch`` (as ``auto`` picks them)."""
    rows = min(batch, chunk_rows(n))
    return f"{choose_method(n, depth, rows)}, {choose_diff_method(n, depth, rows)}"


def _dominates(done: tuple[int, int, int], cell: tuple[int, int, int]) -> bool:
    """cell is at least as large as done in qubits, depth and batch (an engine is no faster there)."""
    return all(c >= d for c, d in zip(cell, done))


def run_scale(engines: list[str], args, device: torch.device) -> list[dict]:
    """Every cell of the scale preset: one result row per (cell, engine), printed as it completes."""
    results: list[dict] = []
    timed_out: dict[str, list[tuple[tuple[int, int, int], float | None]]] = {}  # engine -> (cell, lower bound)
    for n in sorted(args.qubits):
        for depth in sorted(args.depths):
            for batch in sorted(args.batches):
                key = (n, depth, batch)
                budget = memory_budget(args.mem_limit_gb, device)  # what is available now
                cell, runnable = {}, []
                for e in engines:
                    estimate, message = fits_message(e, n, depth, batch, budget, args.encoding, args.ansatz)
                    row = {"n_qubits": n, "depth": depth, "batch": batch, "engine": e, "status": "",
                           "ms": math.nan, "ms_min": math.nan, "cpu_ms": math.nan, "calls": 0,
                           "first_call_s": math.nan, "lower_s": None, "peak_mib": math.nan, "saved_mib": math.nan,
                           "estimate_gb": estimate / GB, "plan": fused_plan(n, depth, batch) if e == "fused" else "",
                           "max_abs_diff_vs_fused": math.nan, "note": ""}
                    cell[e] = row
                    smaller = [(done, lower) for done, lower in timed_out.get(e, []) if _dominates(done, key)]
                    if message:
                        row.update(status="nofit", note=message)
                    elif smaller:
                        (n0, d0, b0), lower = smaller[0]
                        row.update(status="skipped", lower_s=lower,
                                   note=f"not started: timed out at n={n0} d={d0} B={b0}")
                    else:
                        runnable.append(e)
                outputs: dict[str, torch.Tensor] = {}
                if n >= args.subprocess_qubits:
                    for e in runnable:
                        res = run_cell_child(e, n, depth, batch, args, args.large_calls, True, budget)
                        if "out" in res:
                            outputs[e] = torch.tensor(res.pop("out"), dtype=torch.float64)
                        res.pop("how", None)
                        cell[e].update(res)
                        if cell[e]["status"] == "timeout":
                            timed_out.setdefault(e, []).append((key, cell[e]["lower_s"]))
                elif runnable:
                    rows, outs = time_engines(runnable, n, depth, batch, args, device)
                    for r in rows:
                        cell[r["engine"]].update(status="ok", ms=r["ms"], ms_min=r["ms_min"], calls=r["calls"])
                    outputs = {e: o.double().cpu() for e, o in outs.items()}
                    x = cell_input(n, batch, args.encoding, device)
                    for e in runnable:
                        if autograd_records(e):
                            layer = build(e, n, depth, args.encoding, args.ansatz, args.wires_per_block).to(device)
                            _, saved = count_saved_bytes(lambda: layer(x))
                            cell[e]["saved_mib"] = saved / MIB
                    if not args.no_memory:
                        for e in runnable:
                            res = run_cell_child(e, n, depth, batch, args, 0, False, budget)
                            if res.get("status") in ("timeout", "failed"):
                                cell[e]["note"] = f"memory: {res['note']}"
                            cell[e]["peak_mib"] = res.get("peak_mib", math.nan)
                if "fused" in outputs:
                    for e, out in outputs.items():
                        cell[e]["max_abs_diff_vs_fused"] = float((out - outputs["fused"]).abs().max())
                print(f"[n={n} d={depth} B={batch}] " + "  ".join(cell_line(e, r) for e, r in cell.items()), flush=True)
                results += cell.values()
    return results


def cell_line(engine: str, r: dict) -> str:
    """One engine's result in the progress line: time, and what else was measured."""
    extra = [f"cpu {ms_text(r['cpu_ms'])} ms" if not math.isnan(r["cpu_ms"]) else "",
             f"peak {r['peak_mib']:.0f} MiB" if not math.isnan(r["peak_mib"]) else "",
             f"saved {mib_text(r['saved_mib'])} MiB" if not math.isnan(r["saved_mib"]) else ""]
    extra = [e for e in extra if e]
    return f"{engine}={time_text(r)}" + (f" ({', '.join(extra)})" if extra else "")


def mib_text(mib: float) -> str:
    return fmt(mib, ".3f" if mib < 1 else ".1f")


def ms_text(ms: float) -> str:
    return fmt(ms, ".2f" if ms < 10 else ".1f" if ms < 1000 else ".0f")


def time_text(r: dict) -> str:
    """A result row's time cell: ms, "> T s" (timed out, or not started after timing out on a smaller
    cell), "does not fit (estimate X GB)", or "failed"."""
    if r["status"] == "ok" and not math.isnan(r["ms"]):
        return ms_text(r["ms"]) + (" (first call)" if r["calls"] == 0 else "")
    if r["status"] in ("timeout", "skipped"):
        return f"> {r['lower_s']:.0f} s" if r["lower_s"] is not None else "timeout"
    if r["status"] == "nofit":
        return r["note"]
    return r["status"] or "n/a"


def _time_bound(r: dict) -> tuple[float, bool] | None:
    """(ms, exact): the engine's time, or a lower bound for a timeout; None when it did not run."""
    if r["status"] == "ok" and not math.isnan(r["ms"]):
        return r["ms"], True
    if r["status"] in ("timeout", "skipped") and r["lower_s"]:
        return r["lower_s"] * 1e3, False
    return None


def _why(r: dict) -> str:
    return r["note"] or r["status"] or "not run"


def _cell_name(r: dict) -> str:
    return f"{r['n_qubits']}/{r['depth']}/{r['batch']}"


def scale_targets(results: list[dict], engines: list[str]) -> list[str]:
    """The three targets, each "met", "NOT met" or "not measured", with the numbers behind it."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in results:
        cells.setdefault((r["n_qubits"], r["depth"], r["batch"]), {})[r["engine"]] = r
    lines = []

    # (a) fused never slower than any other engine that ran
    slower, margins, undecided = [], [], []
    for key, cell in sorted(cells.items()):
        f = cell.get("fused")
        fb = _time_bound(f) if f else None
        if fb is None or not fb[1]:
            continue
        for e, r in cell.items():
            ob = _time_bound(r) if e != "fused" else None
            if ob is None:
                continue
            ratio = ob[0] / fb[0]
            where = f"{e} {time_text(r)} vs fused {ms_text(fb[0])} ms at {_cell_name(r)}"
            if ob[1] and ratio < 1:
                slower.append(where)
            elif not ob[1] and ratio < 1:
                undecided.append(where)
            else:
                margins.append((ratio, ob[1], where))
    label = "(a) fused never slower than any other engine in any cell that ran"
    if slower:
        lines.append(f"{label}: NOT met: slower in " + "; ".join(slower))
    elif not margins:
        why = "; ".join(undecided) if undecided else "no cell where fused and another engine both ran"
        lines.append(f"{label}: not measured ({why})")
    else:
        ratio, exact, where = min(margins)
        lines.append(f"{label}: met ({len(margins)} comparisons; closest: {where}, {'' if exact else '> '}{ratio:.2f}x)"
                     + (f"; undecided: {'; '.join(undecided)}" if undecided else ""))

    # (b) >= 3x over tq_dynamic at 16 qubits
    label = f"(b) fused >= {SCALE_SPEEDUP:g}x faster than tq_dynamic at {SCALE_SPEEDUP_QUBITS} qubits"
    ratios, missing, failing = [], [], []
    for key, cell in sorted(cells.items()):
        if key[0] != SCALE_SPEEDUP_QUBITS:
            continue
        f, t = cell.get("fused"), cell.get("tq_dynamic")
        if f is None or t is None:
            who = "tq_dynamic not among the engines" if t is None else "fused not run"
            missing.append(f"{'/'.join(map(str, key))}: {who}")
            continue
        fb, tb = _time_bound(f), _time_bound(t)
        if fb is None or not fb[1] or tb is None:
            who = f"fused {_why(f)}" if fb is None or not fb[1] else f"tq_dynamic {_why(t)}"
            missing.append(f"{_cell_name(f)}: {who}")
            continue
        ratio = tb[0] / fb[0]
        text = f"{_cell_name(f)}: {'' if tb[1] else '> '}{ratio:.1f}x ({time_text(t)} vs {ms_text(fb[0])} ms)"
        if ratio >= SCALE_SPEEDUP:
            ratios.append(text)
        elif tb[1]:
            failing.append(text)
        else:
            missing.append(text + " (timeout: undecided)")
    tail = f"; not run: {'; '.join(missing)}" if missing else ""
    if failing:
        met = f"; met: {'; '.join(ratios)}" if ratios else ""
        lines.append(f"{label}: NOT met: {'; '.join(failing)}{met}{tail}")
    elif ratios:
        lines.append(f"{label}: met: {'; '.join(ratios)}{tail}")
    else:
        why = "; ".join(missing) if missing else f"no {SCALE_SPEEDUP_QUBITS}-qubit cell in this run"
        lines.append(f"{label}: not measured ({why})")

    # (c) saved-for-backward bytes at 16 / 6 / 32
    n, depth, batch = SCALE_SAVED_CELL
    label = (f"(c) fused saved-for-backward bytes <= {SCALE_SAVED_RATIO:g} x tq_dynamic's at "
             f"{n} qubits / depth {depth} / batch {batch}")
    cell = cells.get(SCALE_SAVED_CELL)
    if cell is None:
        lines.append(f"{label}: not measured (cell not in this run)")
    elif "fused" not in cell or "tq_dynamic" not in cell:
        lines.append(f"{label}: not measured ({'tq_dynamic' if 'fused' in cell else 'fused'} not among the engines)")
    else:
        f, t = cell["fused"], cell["tq_dynamic"]
        if math.isnan(f["saved_mib"]) or not t["saved_mib"] > 0:
            who = f if math.isnan(f["saved_mib"]) else t
            lines.append(f"{label}: not measured ({who['engine']}: {_why(who)})")
        else:
            ratio = f["saved_mib"] / t["saved_mib"]
            verdict = "met" if ratio <= SCALE_SAVED_RATIO else "NOT met"
            lines.append(f"{label}: {verdict} (fused {mib_text(f['saved_mib'])} MiB, tq_dynamic "
                         f"{mib_text(t['saved_mib'])} MiB: "
                         f"{ratio:.3f}x)")
    return lines


def render_scale(results: list[dict], targets: list[str], header: dict, engines: list[str]) -> str:
    lines = [f"# Quantum layer at scale: forward+backward per engine ({header['date']})", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "date"]
    cells: dict[tuple, dict[str, dict]] = {}
    for r in results:
        cells.setdefault((r["n_qubits"], r["depth"], r["batch"]), {})[r["engine"]] = r
    others = [e for e in engines if e != "fused"]

    lines += ["", "## Time", "", "Milliseconds per forward + backward (median of the timed calls); "
              "speed-up = engine ms / fused ms (\">\": the engine timed out, a lower bound); "
              "diff = max |output - fused output| (float64).", ""]
    cols = ["n", "depth", "batch"] + [f"{e} ms" for e in engines] + ["fused method, diff"]
    cols += [f"{e} / fused" for e in others] + [f"{e} diff" for e in others]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, cell in sorted(cells.items()):
        f = cell.get("fused")
        fb = _time_bound(f) if f else None
        row = [str(k) for k in key] + [time_text(cell[e]) for e in engines] + [f["plan"] if f else ""]
        for e in others:
            ob = _time_bound(cell[e])
            row.append("n/a" if ob is None or fb is None or not fb[1]
                       else f"{'' if ob[1] else '> '}{ob[0] / fb[0]:.2f}x")
        row += [fmt(cell[e]["max_abs_diff_vs_fused"], ".1e") for e in others]
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Memory", "", "Peak: rise of the process's peak RSS during one forward + backward in a fresh "
              "process (VmHWM after resetting it, over the RSS before), MiB; estimate: the guard's, GB. Saved: bytes "
              "autograd keeps for the backward pass after one forward (saved_tensors_hooks, distinct storages), MiB "
              f"({LIGHTNING}: n/a, its adjoint runs outside autograd).", ""]
    cols = ["n", "depth", "batch"] + [f"{e} peak MiB (estimate GB)" for e in engines]
    cols += [f"{e} saved MiB" for e in engines if autograd_records(e)]
    if "fused" in engines and "tq_dynamic" in engines:
        cols.append("fused / tq_dynamic saved")
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, cell in sorted(cells.items()):
        row = [str(k) for k in key]
        for e in engines:
            r = cell[e]
            not_run = r["status"] in ("nofit", "skipped") or (r["status"] == "timeout" and math.isnan(r["peak_mib"]))
            peak = "not run" if not_run else fmt(r["peak_mib"], ".0f")
            row.append(f"{peak} ({r['estimate_gb']:.2f})")
        row += [mib_text(cell[e]["saved_mib"]) for e in engines if autograd_records(e)]
        if "fused" in engines and "tq_dynamic" in engines:
            tq_saved = cell["tq_dynamic"]["saved_mib"]
            row.append(fmt(cell["fused"]["saved_mib"] / tq_saved, ".3f") if tq_saved > 0 else "n/a")
        lines.append("| " + " | ".join(row) + " |")

    notes = [f"- {r['engine']} at {_cell_name(r)}: {r['note']}" for r in results
             if r["note"] and r["status"] != "nofit"]
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets]
    return "\n".join(lines) + "\n"


SCALE_CSV = ("n_qubits", "depth", "batch", "engine", "status", "ms", "ms_min", "cpu_ms", "calls", "first_call_s",
             "lower_s", "peak_mib", "saved_mib", "estimate_gb", "plan", "max_abs_diff_vs_fused", "note")


def scale_csv(results: list[dict]) -> str:
    def cell(v) -> str:
        text = "" if v is None else str(v)
        return f'"{text}"' if "," in text else text

    return "\n".join([",".join(SCALE_CSV)] + [",".join(cell(r.get(c)) for c in SCALE_CSV) for r in results]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default", choices=list(PRESETS),
                    help="default: 4-10 qubits, four engines; scale: 12-20 qubits, memory guard, peak and saved bytes")
    ap.add_argument("--qubits", type=int, nargs="+", help="default: the preset's (4 8 10; scale: 12 16 20)")
    ap.add_argument("--depths", type=int, nargs="+", help="default: the preset's (2 4; scale: 2 6)")
    ap.add_argument("--batches", type=int, nargs="+", help="default: the preset's (64 256; scale: 32 256)")
    ap.add_argument("--engines", nargs="+", choices=ALL_ENGINES,
                    help="default: the preset's (tq_dynamic tq_static fused pennylane; scale: fused tq_dynamic "
                         "pennylane pennylane_lightning); fused_unitary / fused_gates force one fused method")
    ap.add_argument("--encoding", default="angle", choices=["angle", "amplitude"])
    ap.add_argument("--ansatz", default="strong", choices=["strong", "basic"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--wires-per-block", type=int, default=4, help="TorchQuantum static mode block size")
    ap.add_argument("--block", type=int, help="timed consecutive calls per engine and round (default 5; scale: 2)")
    ap.add_argument("--min-rounds", type=int, help="default 4; scale: 2")
    ap.add_argument("--max-rounds", type=int, help="default 20; scale: 6")
    ap.add_argument("--budget-s", type=float, help="timing budget per configuration (default 4; scale: 10)")
    ap.add_argument("--mem-qubits", type=int, default=12)
    ap.add_argument("--mem-depth", type=int, default=2)
    ap.add_argument("--mem-batch", type=int, default=256)
    ap.add_argument("--mem-timeout-s", type=float, default=600)
    ap.add_argument("--mem-limit-gb", type=float, default=20.0,
                    help="scale: a cell runs only where its estimated peak is below this and the memory available")
    ap.add_argument("--cell-timeout-s", type=float, default=300.0,
                    help="scale: seconds an engine's process may take on one cell (large cells; memory children)")
    ap.add_argument("--subprocess-qubits", type=int, default=16,
                    help="scale: from this many qubits each engine runs alone in a process under --cell-timeout-s")
    ap.add_argument("--large-calls", type=int, default=3, help="scale: timed calls after the warm-up in those cells")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--note", default="shared 2-core dev machine: other jobs may run beside it (see the load averages)",
                    help="a line about the machine's conditions, written into the results file")
    ap.add_argument("--memory-child", choices=ALL_ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--cell-child", choices=ALL_ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--cell", type=int, nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--cell-calls", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cell-deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--no-saved", dest="cell_saved", action="store_false", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def base_header(args, device: torch.device, versions: dict, argv: list[str] | None) -> dict:
    from hqcbench.hardware import cpu_model

    return {
        "date": dt.date.today().isoformat(),
        "machine": (f"{cpu_model()}, {os.cpu_count()} logical CPUs"
                    + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU")),
        "threads": f"torch.set_num_threads({args.threads})",
        "versions": (f"python {platform.python_version()}, torch {versions['torch']}, "
                     f"torchquantum {versions['torchquantum']}, pennylane {pennylane_version() or 'absent'}"
                     + (f", pennylane-lightning {lightning_version() or 'absent'}" if args.preset == "scale" else "")),
        "circuit": f"{args.encoding} encoding, {args.ansatz} ansatz, <Z> on every wire",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.mem_qubits, args.mem_depth, args.mem_batch, args)))
        return 0
    if args.cell_child:
        cell_child(args.cell_child, *args.cell, args)
        return 0
    from hqcbench.tracking.runs import library_versions

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # lightning's OpenMP, read when it loads
    device = torch.device(args.device)
    if args.preset == "scale":
        return main_scale(args, device, argv)
    engines = [e for e in ALL_ENGINES if e in args.engines]
    missing = missing_engines(engines)
    notes = list(missing.values())
    engines = [e for e in engines if e not in missing]
    if "fused" not in engines:
        engines.append("fused")
    versions = library_versions()
    header = base_header(args, device, versions, argv)
    header.update({
        "tq_static": f"static_on(wires_per_block={args.wires_per_block}) (capped at n_qubits)",
        "timing": (f"median over {args.min_rounds}..{args.max_rounds} interleaved rounds of {args.block} consecutive "
                   f"timed calls per engine (after one untimed call), ~{args.budget_s:g} s per configuration"),
        "memory case": f"{args.mem_qubits} qubits, depth {args.mem_depth}, batch {args.mem_batch}",
        "command": "python benchmarks/quantum_layer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f} (2-thread timings stall when other "
                                         "processes hold the cores: run on an idle machine)",
    })
    if notes:
        header["notes"] = "; ".join(notes)
    print("\n".join(f"{k}: {v}" for k, v in header.items()), flush=True)

    rows = []
    for n in args.qubits:
        for depth in args.depths:
            for batch in args.batches:
                cell = time_config(engines, n, depth, batch, args, device)
                rows += cell
                print("  ".join(f"{r['engine']}={r['ms']:.2f}ms" for r in cell), f"[n={n} d={depth} B={batch}]",
                      flush=True)
    header["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    table = speedups(rows)
    memory = [] if args.no_memory else measure_memory(engines, args)
    text = render(table, memory, header, engines)
    print()
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"quantum_layer-{machine_slug(device)}-torch{versions['torch']}"
        (RESULTS / f"{stem}.md").write_text(text)
        csv_cols = list(table[0].keys())
        csv = [",".join(csv_cols)] + [",".join(str(r[c]) for c in csv_cols) for r in table]
        (RESULTS / f"{stem}.csv").write_text("\n".join(csv) + "\n")
        print(f"saved {RESULTS / stem}.md and .csv")
    return 0


def main_scale(args, device: torch.device, argv: list[str] | None) -> int:
    from hqcbench.tracking.runs import library_versions

    engines = list(dict.fromkeys(["fused"] + [e for e in args.engines if e != "fused"]))
    missing = missing_engines(engines)
    for note in missing.values():
        print(f"note: {note}", flush=True)
    engines = [e for e in engines if e not in missing]
    versions = library_versions()
    budget = memory_budget(args.mem_limit_gb, device)
    header = base_header(args, device, versions, argv)
    header.update({
        "engines": (", ".join(engines) + ("; skipped: " + "; ".join(missing.values()) if missing else "")
                    + (f"; {LIGHTNING}: lightning.qubit, diff_method=adjoint, complex128 (its default), one circuit "
                       "per sample" if LIGHTNING in engines else "")
                    + ("; pennylane: default.qubit, backprop, complex128" if "pennylane" in engines else "")),
        "timing": (f"below {args.subprocess_qubits} qubits: median over {args.min_rounds}..{args.max_rounds} "
                   f"interleaved rounds of {args.block} timed calls per engine in one process (~{args.budget_s:g} s "
                   f"per cell); from {args.subprocess_qubits} qubits: each engine in a fresh process, 1 warm-up "
                   f"call then up to {args.large_calls} timed calls, within --cell-timeout-s {args.cell_timeout_s:g}"),
        "memory guard": (f"a cell runs where the engine's estimated peak is at most {budget / GB:.1f} GB (the "
                         f"smaller of --mem-limit-gb {args.mem_limit_gb:g} and {available_bytes(device) / GB:.1f} GB "
                         "available)"),
        "command": "python benchmarks/quantum_layer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f} (run on an idle machine)",
    })
    print("\n".join(f"{k}: {v}" for k, v in header.items()), flush=True)
    started = time.perf_counter()
    results = run_scale(engines, args, device)
    header["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    header["wall time"] = f"{time.perf_counter() - started:.0f} s"
    targets = scale_targets(results, engines)
    text = render_scale(results, targets, header, engines)
    print()
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"quantum_layer_scale-{machine_slug(device)}-torch{versions['torch']}"
        (RESULTS / f"{stem}.md").write_text(text)
        (RESULTS / f"{stem}.csv").write_text(scale_csv(results))
        print(f"saved {RESULTS / stem}.md and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
