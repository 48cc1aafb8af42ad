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
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from hqcbench.models.circuit import ANGLE_SCALE, cnot_ring_pairs, input_width
from hqcbench.models.quantum import QuantumLayer
from hqcbench.tracking.runs import cpu_model, library_versions

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("tq_dynamic", "tq_static", "fused", "pennylane")
EXTRA_ENGINES = ("fused_unitary", "fused_gates")  # one fused method forced: checks the auto choice
TARGETS = {(4, 2, 64): 5.0, (8, 4, 256): 2.0}  # fused speed-up over tq_dynamic
warnings.filterwarnings("ignore", category=DeprecationWarning)


# ------------------------------------------------------------------------- engines
def _tq_encode(qdev, x: torch.Tensor, n: int, encoding: str) -> None:
    """The encoding exactly as QuantumLayer's torchquantum engine does it."""
    import torchquantum.functional as tqf

    if encoding == "angle":
        angles = ANGLE_SCALE * torch.tanh(x)
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


def pennylane_layer(ref: QuantumLayer) -> nn.Module:
    """ref's circuit as a PennyLane default.qubit TorchLayer (backprop), weights copied from ref."""
    import pennylane as qml

    n, depth, encoding, ansatz = ref.n_qubits, ref.depth, ref.encoding, ref.ansatz
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(inputs, weights):
        if encoding == "angle":
            angles = ANGLE_SCALE * torch.tanh(inputs)
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


def time_config(engines: list[str], n: int, depth: int, batch: int, args, device: torch.device) -> list[dict]:
    encoding, ansatz = args.encoding, args.ansatz
    layers = {e: build(e, n, depth, encoding, ansatz, args.wires_per_block).to(device) for e in engines}
    gen = torch.Generator().manual_seed(n * 1000 + batch)
    width = input_width(n, encoding)
    x = torch.randn(batch, width, generator=gen).to(device).requires_grad_(True)
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
    fused = layers["fused"]
    ref_out = outputs.get("tq_dynamic")
    rows = []
    for e in engines:
        rows.append({
            "n_qubits": n, "depth": depth, "batch": batch, "engine": e,
            "ms": statistics.median(samples[e]) * 1e3, "calls": len(samples[e]),
            "max_abs_diff_vs_tq": (float((outputs[e] - ref_out).abs().max()) if ref_out is not None else math.nan),
            "method": fused.method_for(batch) if e == "fused" else "",
        })
    return rows


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


def memory_child(engine: str, n: int, depth: int, batch: int, args) -> dict:
    """Runs in a fresh process: peak memory of one forward + backward of one engine."""
    device = torch.device(args.device)
    layer = build(engine, n, depth, args.encoding, args.ansatz, args.wires_per_block).to(device)
    width = input_width(n, args.encoding)
    step(layer, torch.randn(2, width, device=device, requires_grad=True))  # lazy initialisation off the books
    x = torch.randn(batch, width, device=device, requires_grad=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(layer, x)
        torch.cuda.synchronize()
        return {"engine": engine, "peak_mb": (torch.cuda.max_memory_allocated() - base) / 2 ** 20,
                "how": "torch.cuda.max_memory_allocated - allocated before"}
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS (Linux >= 4.0)
        fh.write("5")
    rss0, _ = _rss_kb()
    step(layer, x)
    _, hwm = _rss_kb()
    return {"engine": engine, "peak_mb": (hwm - rss0) / 1024, "how": "VmHWM - VmRSS before, fresh process"}


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


# ------------------------------------------------------------------------- report
def machine_slug(device: torch.device) -> str:
    """e.g. 'cpu2-intel-xeon-processor' or 'nvidia-h100-80gb-hbm3': the hardware in the file name."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu{os.cpu_count()}-{cpu_model()}"
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|@.*", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:60]


def speedups(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["n_qubits"], r["depth"], r["batch"]) for r in rows})
    for key in keys:
        cell = {r["engine"]: r for r in rows if (r["n_qubits"], r["depth"], r["batch"]) == key}
        fused = cell["fused"]["ms"]
        entry = {"n_qubits": key[0], "depth": key[1], "batch": key[2], "method": cell["fused"]["method"]}
        for e in ENGINES + EXTRA_ENGINES:
            entry[f"{e}_ms"] = cell[e]["ms"] if e in cell else math.nan
            entry[f"{e}_over_fused"] = cell[e]["ms"] / fused if e in cell else math.nan
            entry[f"{e}_diff"] = cell[e]["max_abs_diff_vs_tq"] if e in cell else math.nan
        target = TARGETS.get(key)
        ratio = entry["tq_dynamic_over_fused"]
        tq_ratios = [entry[f"{e}_over_fused"] for e in ("tq_dynamic", "tq_static") if e in cell]
        if target is not None:
            entry["target"] = "n/a" if math.isnan(ratio) else f">= {target:g}x: {'met' if ratio >= target else 'MISSED'}"
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qubits", type=int, nargs="+", default=[4, 8, 10])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES + EXTRA_ENGINES,
                    help="default: the four engines; fused_unitary / fused_gates force one fused method")
    ap.add_argument("--encoding", default="angle", choices=["angle", "amplitude"])
    ap.add_argument("--ansatz", default="strong", choices=["strong", "basic"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--wires-per-block", type=int, default=4, help="TorchQuantum static mode block size")
    ap.add_argument("--block", type=int, default=5, help="timed consecutive calls per engine and round")
    ap.add_argument("--min-rounds", type=int, default=4)
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=4.0, help="timing budget per configuration")
    ap.add_argument("--mem-qubits", type=int, default=12)
    ap.add_argument("--mem-depth", type=int, default=2)
    ap.add_argument("--mem-batch", type=int, default=256)
    ap.add_argument("--mem-timeout-s", type=float, default=600)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--note", default="shared 2-core dev machine: other jobs may run beside it (see the load averages)",
                    help="a line about the machine's conditions, written into the results file")
    ap.add_argument("--memory-child", choices=ENGINES + EXTRA_ENGINES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.mem_qubits, args.mem_depth, args.mem_batch, args)))
        return 0
    device = torch.device(args.device)
    engines = [e for e in ENGINES + EXTRA_ENGINES if e in args.engines]
    notes = []
    if "pennylane" in engines and pennylane_version() is None:
        engines.remove("pennylane")
        notes.append("pennylane column skipped: PennyLane is not installed (pip install -e .[bench])")
    if "fused" not in engines:
        engines.append("fused")
    versions = library_versions()
    header = {
        "date": dt.date.today().isoformat(),
        "machine": (f"{cpu_model()}, {os.cpu_count()} logical CPUs"
                    + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU")),
        "threads": f"torch.set_num_threads({args.threads})",
        "versions": (f"python {platform.python_version()}, torch {versions['torch']}, "
                     f"torchquantum {versions['torchquantum']}, pennylane {pennylane_version() or 'absent'}"),
        "circuit": f"{args.encoding} encoding, {args.ansatz} ansatz, <Z> on every wire",
        "tq_static": f"static_on(wires_per_block={args.wires_per_block}) (capped at n_qubits)",
        "timing": (f"median over {args.min_rounds}..{args.max_rounds} interleaved rounds of {args.block} consecutive "
                   f"timed calls per engine (after one untimed call), ~{args.budget_s:g} s per configuration"),
        "memory case": f"{args.mem_qubits} qubits, depth {args.mem_depth}, batch {args.mem_batch}",
        "command": "python benchmarks/quantum_layer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f} (2-thread timings stall when other "
                                         "processes hold the cores: run on an idle machine)",
    }
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


if __name__ == "__main__":
    sys.exit(main())
