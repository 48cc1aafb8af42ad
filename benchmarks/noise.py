"""The noise engine against Qiskit Aer, and its trajectories against the noiseless layer.

Part 1: <Z> of 256 images under ``device:NAME`` (hqcbench's density matrix, batched) against Qiskit
Aer's density-matrix simulator doing the same work (``NoiseModel.from_backend``, one bound transpiled
circuit per image, each qubit's confusion matrix applied to its <Z>): wall time, speed-up and the
largest difference of any <Z>. Part 2: the trajectory method's time per trajectory and image under
``depolarizing:0.01`` against the noiseless layer's time per image, up to 16 qubits. One thread for
torch and for Aer. Prints the tables and saves them under ``benchmarks/results/`` named by the machine.

    python benchmarks/noise.py
    python benchmarks/noise.py --images 16 --devices FakeManilaV2 --widths 4 --no-save      # smoke run
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--devices", nargs="+", default=["FakeManilaV2:4", "FakeNairobiV2:7"],
                    help="NAME:QUBITS (the circuit's width on that device)")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--widths", nargs="+", type=int, default=[4, 8, 12, 16], help="qubits of the trajectory part")
    ap.add_argument("--trajectories", type=int, default=16, help="K per image in the trajectory part")
    ap.add_argument("--traj-images", type=int, default=8, help="images in the trajectory part")
    ap.add_argument("--no-save", action="store_true")
    return ap.parse_args(argv)


def aer_expvals(layer, x, device: str) -> tuple[np.ndarray, float]:
    """Aer's <Z> per image (confusion applied) and its wall time: one bound circuit per image."""
    from qiskit_aer import AerSimulator

    from hqcbench.models import noise_device
    from hqcbench.models.noise_circuit import layer_ops, parameter_values

    model = noise_device.noise_model(device)
    params = parameter_values(layer, x).detach().double().numpy()
    tqc = noise_device.transpile_circuit(layer_ops(layer), layer.n_qubits, params.shape[1], device)
    layout = tqc.layout.final_index_layout()
    sim = AerSimulator(method="density_matrix", noise_model=model, max_parallel_threads=1,
                       max_parallel_experiments=1)
    t0 = time.perf_counter()
    circuits = []
    for row in params:
        qc = tqc.assign_parameters({p: row[p.index] for p in tqc.parameters})
        qc.save_density_matrix()
        circuits.append(qc)
    result = sim.run(circuits, optimization_level=0).result()
    out = []
    for i in range(len(circuits)):
        diag = np.real(np.diag(np.asarray(result.data(i)["density_matrix"])))
        index = np.arange(diag.size)
        z = []
        for phys in layout:
            ideal = float(np.sum(diag * (1 - 2 * ((index >> phys) & 1))))
            confusion = np.asarray(model._local_readout_errors[(phys,)].probabilities)
            z.append((1 + ideal) * confusion[0, 0] + (1 - ideal) * confusion[1, 0] - 1)
        out.append(z)
    return np.asarray(out), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from hqcbench.hardware import cpu_model, machine_slug
    from hqcbench.models import noise, noise_device
    from hqcbench.models.noise_spec import parse_noise
    from hqcbench.models.quantum import QuantumLayer

    torch.set_num_threads(1)
    lines = [f"# Noise engine: device noise against Qiskit Aer, trajectories against the noiseless layer "
             f"({dt.date.today().isoformat()})", "",
             f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, 1 thread; "
             "Aer 1 thread",
             ("- command: python benchmarks/noise.py " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
             "", f"## Device noise, {args.images} images, angle encoding, strong ansatz, depth {args.depth}, "
             "complex128 in both", "",
             "| device | qubits | transpiled: active qubits, 1q / 2q gates | hqcbench density s | Aer density s | "
             "speed-up | max abs diff of <Z> |", "|---|---|---|---|---|---|---|"]
    for item in args.devices:
        device, width = item.split(":")
        layer = QuantumLayer(int(width), args.depth, seed=0).double()
        x = torch.randn(args.images, int(width), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        spec = parse_noise(f"device:{device}")
        noise.noisy_expvals(layer, x[:2], spec, method="density")  # transpile once (cached) outside the timing
        t0 = time.perf_counter()
        with torch.no_grad():
            ours = noise.noisy_expvals(layer, x, spec, method="density").values.numpy()
        t_ours = time.perf_counter() - t0
        ref, t_aer = aer_expvals(layer, x, device)
        m = noise_device.device_program(layer, device).metrics()
        row = (f"| {device} | {width} | {m['noise_qubits']:.0f}, {m['noise_gates_1q']:.0f} / {m['noise_gates_2q']:.0f}"
               f" | {t_ours:.3f} | {t_aer:.3f} | {t_aer / t_ours:.1f}x | {np.abs(ours - ref).max():.1e} |")
        lines.append(row)
        print(row, flush=True)
    lines += ["", f"## Trajectories (depolarizing:0.01, K = {args.trajectories}, {args.traj_images} images, "
              f"depth {args.depth}) against the noiseless layer", "",
              "| qubits | noiseless s per image | trajectories s per trajectory and image | ratio |",
              "|---|---|---|---|"]
    for n in args.widths:
        layer = QuantumLayer(n, args.depth, seed=0)
        x = torch.randn(args.traj_images, n, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            layer(x)
            t0 = time.perf_counter()
            for _ in range(3):
                layer(x)
            clean = (time.perf_counter() - t0) / 3 / args.traj_images
            t0 = time.perf_counter()
            noise.noisy_expvals(layer, x, parse_noise("depolarizing:0.01"), method="trajectories",
                                trajectories=args.trajectories)
            per = (time.perf_counter() - t0) / (args.traj_images * args.trajectories)
        row = f"| {n} | {clean:.2e} | {per:.2e} | {per / clean:.0f}x |"
        lines.append(row)
        print(row, flush=True)
    lines.insert(4, f"- load average (1 min) at end: {os.getloadavg()[0]:.2f} (other processes share the machine: "
                    "both sides of a row ran in the same minute)")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"noise-{machine_slug('cpu')}-torch{torch.__version__.split('+')[0]}.md"
        out.write_text(text)
        print(f"saved {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
