"""Forward + backward of the quantum layer with glibc's default heap and with freed memory kept.

Each (setting, cell) runs in a fresh process (the allocator setting is process-wide): a few timed
forward + backward passes of the fused layer, with the kernel (system) CPU time, the minor page
faults per call and the process's peak RSS. ``kept`` is what every hqcbench job now uses
(``hqcbench.allocator``); ``plain`` is glibc's default. Prints a table and saves it under
``benchmarks/results/`` named by hardware and versions. Run it on an idle machine.

    python benchmarks/allocator.py
    python benchmarks/allocator.py --cells 12:2:64 --calls 3 --no-save      # smoke run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CHILD = """
import json, resource, sys, time, torch
from hqcbench.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "kept" else False
from hqcbench.models.quantum import QuantumLayer
n, depth, batch, calls, threads = map(int, sys.argv[2:7])
torch.set_num_threads(threads)
layer = QuantumLayer(n_qubits=n, depth=depth)
x = torch.randn(batch, n, requires_grad=True)
layer(x).sum().backward()  # warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(calls):
    layer(x).sum().backward()
wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"kept": kept, "s": wall / calls, "user_s": (r1.ru_utime - r0.ru_utime) / calls,
                  "sys_s": (r1.ru_stime - r0.ru_stime) / calls, "faults": (r1.ru_minflt - r0.ru_minflt) / calls,
                  "peak_mib": r1.ru_maxrss / 1024}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=["12:2:256", "14:2:64", "16:2:32", "16:2:256"],
                    help="qubits:depth:batch per cell")
    ap.add_argument("--calls", type=int, default=5, help="timed calls per cell and setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-save", action="store_true")
    return ap.parse_args(argv)


def run_child(setting: str, n: int, depth: int, batch: int, calls: int, threads: int) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", CHILD, setting, str(n), str(depth), str(batch), str(calls),
                          str(threads)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch  # noqa: F401  (versions only)

    from hqcbench.hardware import cpu_model, machine_slug

    rows = []
    for cell in args.cells:
        n, depth, batch = (int(v) for v in cell.split(":"))
        for setting in ("plain", "kept"):  # glibc's default first, then hqcbench's
            r = run_child(setting, n, depth, batch, args.calls, args.threads)
            rows.append({"n": n, "depth": depth, "batch": batch, "setting": setting, **r})
            print(f"{n:>2} qubits depth {depth} batch {batch:>3} {setting:>5}: {r['s']:.3f} s/call, "
                  f"sys {r['sys_s']:.3f} s, {r['faults']:.0f} faults/call, peak {r['peak_mib']:.0f} MiB", flush=True)
    lines = [f"# Quantum layer: glibc's default heap against freed memory kept ({dt.date.today().isoformat()})", "",
             f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
             f"{args.threads} threads; {args.calls} timed calls per cell after one warm-up, "
             "each setting in a fresh process",
             ("- command: python benchmarks/allocator.py "
              + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
             f"- load average (1 min) at end: {os.getloadavg()[0]:.2f}", "",
             "| qubits | depth | batch | plain s/call | kept s/call | speed-up | plain sys s | kept sys s | "
             "plain faults/call | kept faults/call | plain peak MiB | kept peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(0, len(rows), 2):
        p, k = rows[i], rows[i + 1]
        lines.append(f"| {p['n']} | {p['depth']} | {p['batch']} | {p['s']:.3f} | {k['s']:.3f} | "
                     f"{p['s'] / k['s']:.2f}x | "
                     f"{p['sys_s']:.3f} | {k['sys_s']:.3f} | {p['faults']:.0f} | {k['faults']:.0f} | "
                     f"{p['peak_mib']:.0f} | {k['peak_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"allocator-{machine_slug('cpu')}-torch{torch.__version__.split('+')[0]}.md"
        out.write_text(text)
        print(f"saved {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
