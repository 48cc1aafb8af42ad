"""Seconds per MNIST training epoch alone and beside one busy process: the thread policy on shared cores.

Each scenario is a fresh process that trains the same model (default: the paper-protocol hybrid on
``--train-limit`` MNIST images, the real ``train_one_epoch`` path) for ``--epochs`` epochs and reports
every epoch's wall time and mean torch thread count. "busy" scenarios start one process spinning on
a core (``while True: pass``, not pinned: the scheduler places it, as it would a user's other job)
a second before the training and stop it after. The thread settings compared:

* ``default``: ``threads = 0``, what a user gets (``hqcbench.threads``: the CPUs available, fewer
  while other processes hold cores);
* ``fixed N``: N torch threads whatever the load (what torch's own default does);
* ``fixed N, OMP_WAIT_POLICY=PASSIVE``: the same with OpenMP's threads sleeping at barriers instead
  of spinning (must be set before torch starts, hence a fresh process);
* ``1 thread``.

Targets (``hqcbench.threads``): beside a busy process, the default's median epoch at most 1.1x the
one-thread epoch; alone, the default no slower than ``fixed N`` (within 5 % timing noise). Prints
the table and the targets and saves them under ``benchmarks/results/`` named by hardware and versions.
Run it on an otherwise idle machine: the "alone" rows are only alone then.

    python benchmarks/contention.py --data-dir ../shared/data
    python benchmarks/contention.py --train-limit 2000 --epochs 2 --no-save      # smoke run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
IDLE_NOISE = 1.05  # "no slower" alone: within 5 % (epoch times of one run vary by a few percent)
CONTENDED_TARGET = 1.1  # default / one thread, beside a busy process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("HQCBENCH_DATA_DIR", "../shared/data"),
                    help="folder holding MNIST/raw (torchvision layout)")
    ap.add_argument("--protocol", default="paper", choices=["paper", "fair"])
    ap.add_argument("--arm", default="hybrid")
    ap.add_argument("--train-limit", type=int, default=12000,
                    help="MNIST images before the train/validation split (0: all)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per scenario and round; the median is compared")
    ap.add_argument("--repeats", type=int, default=2,
                    help="rounds over all scenarios, interleaved, so a drift in the machine's speed hits every one")
    ap.add_argument("--no-save", action="store_true", help="print only")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # JSON settings of one scenario's training process
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        ap.error("--epochs and --repeats must be >= 1")
    return args


def child(settings: dict) -> None:
    """One scenario's training: prints a JSON line with per-epoch seconds and thread counts."""
    import torch

    from hqcbench import threads
    from hqcbench.config import RunConfig
    from hqcbench.data.datasets import load_splits
    from hqcbench.models.arms import build_model
    from hqcbench.training.loop import batch_generator, train_one_epoch
    from hqcbench.training.recipes import effective_batch_size, effective_val_fraction, make_recipe

    cfg = RunConfig(dataset="mnist", protocol=settings["protocol"], epochs=settings["epochs"],
                    train_limit=settings["train_limit"])
    splits = load_splits("mnist", settings["data_dir"], 0, effective_val_fraction(cfg), cfg.train_limit)
    threads.apply_threads(settings["threads"])
    torch.manual_seed(0)
    model = build_model(settings["arm"], splits.spec, cfg)
    batch = effective_batch_size(cfg)
    steps = (len(splits.train) + batch - 1) // batch
    recipe = make_recipe(cfg.protocol, settings["arm"], model, cfg.lr, cfg.epochs, steps, "mnist", splits.spec.mean)
    seconds, counts = [], []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_one_epoch(model, splits.train, recipe, batch, torch.device("cpu"), batch_generator(0, epoch),
                        progress=False)
        seconds.append(time.perf_counter() - t0)
        counts.append(threads.epoch_threads())
    print(json.dumps({"seconds": seconds, "threads": counts, "train_images": len(splits.train)}))


def run_scenario(name: str, threads: int, busy: bool, env_extra: dict[str, str], args) -> dict:
    settings = {"protocol": args.protocol, "arm": args.arm, "epochs": args.epochs, "train_limit": args.train_limit,
                "data_dir": args.data_dir, "threads": threads}
    env = {**os.environ, **env_extra}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the scenario, not the caller's shell, sets threads
        env.pop(key, None)
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(settings)], env=env,
                             capture_output=True, text=True, check=True).stdout
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    result = json.loads(out.strip().splitlines()[-1])
    row = {"scenario": name, "busy": busy, "threads_setting": threads or "default", **result,
           "median_s": statistics.median(result["seconds"]), "first_s": result["seconds"][0]}
    print(f"  {name:42s} median {row['median_s']:6.2f} s  epochs "
          + " ".join(f"{s:.2f}" for s in result["seconds"]) + "  threads "
          + " ".join(f"{t:.2f}" for t in result["threads"]), flush=True)
    return row


def merge(rows: tuple[dict, ...]) -> dict:
    """One scenario's rounds as one row: every epoch of every round, the median over all of them."""
    seconds = [s for r in rows for s in r["seconds"]]
    return {**rows[0], "seconds": seconds, "threads": [t for r in rows for t in r["threads"]],
            "median_s": statistics.median(seconds), "first_s": rows[0]["first_s"], "rounds": len(rows)}


def scenarios(cpus: int) -> list[tuple[str, int, bool, dict[str, str]]]:
    rows = []
    for busy in (False, True):
        where = "beside a busy process" if busy else "alone"
        rows += [(f"{where}, default", 0, busy, {}),
                 (f"{where}, fixed {cpus} threads", cpus, busy, {}),
                 (f"{where}, fixed {cpus}, OMP_WAIT_POLICY=PASSIVE", cpus, busy, {"OMP_WAIT_POLICY": "PASSIVE"}),
                 (f"{where}, 1 thread", 1, busy, {})]
    return rows


def targets(rows: list[dict], cpus: int) -> list[str]:
    by = {r["scenario"]: r["median_s"] for r in rows}
    busy_default, busy_one = by["beside a busy process, default"], by["beside a busy process, 1 thread"]
    idle_default, idle_fixed = by["alone, default"], by[f"alone, fixed {cpus} threads"]
    lines = [f"beside a busy process, default / 1 thread = {busy_default / busy_one:.2f}x "
             f"(target <= {CONTENDED_TARGET}x): {'met' if busy_default <= CONTENDED_TARGET * busy_one else 'NOT met'}",
             f"alone, default / fixed {cpus} threads = {idle_default / idle_fixed:.2f}x "
             f"(target <= {IDLE_NOISE}x, no slower within timing noise): "
             f"{'met' if idle_default <= IDLE_NOISE * idle_fixed else 'NOT met'}",
             f"beside a busy process, fixed {cpus} threads / 1 thread = "
             f"{by[f'beside a busy process, fixed {cpus} threads'] / busy_one:.2f}x (the collapse the default avoids)"]
    return lines


def command_line(argv: list[str]) -> str:
    """The command as run, without the data folder (a path of this machine)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--data-dir":
            skip = True
        elif not arg.startswith("--data-dir="):
            kept.append(arg)
    return " ".join(["python benchmarks/contention.py", *kept])


def render(rows: list[dict], target_lines: list[str], header: dict) -> str:
    lines = ["# Training epochs on shared cores", ""] + [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines += ["Seconds per epoch (median over every epoch of every round; each round is a fresh process per "
              "scenario, the rounds interleaved; all epochs listed) and the mean torch thread count per epoch.", "",
              "| scenario | median s/epoch | epochs (s) | threads per epoch |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['median_s']:.2f} | {' / '.join(f'{s:.2f}' for s in r['seconds'])} | "
                     f"{' / '.join(f'{t:.2f}' for t in r['threads'])} |")
    lines += ["", "Targets:", ""] + [f"- {t}" for t in target_lines]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    import torch
    from epoch_time import git_commit  # same folder

    from hqcbench.hardware import cpu_model, machine_slug
    from hqcbench.threads import available_cpus

    cpus = available_cpus()
    if cpus < 2:
        print(f"contention: {cpus} CPU available; the comparison needs at least 2", file=sys.stderr)
        return 2
    load_start = os.getloadavg()[0]
    print(f"contention: {args.protocol} {args.arm}, MNIST train_limit {args.train_limit}, {args.epochs} epochs "
          f"per scenario and round, {args.repeats} rounds, {cpus} CPUs available, load average {load_start:.2f}",
          flush=True)
    rounds = [[run_scenario(name, threads, busy, env, args) for name, threads, busy, env in scenarios(cpus)]
              for _ in range(args.repeats)]
    rows = [merge(same) for same in zip(*rounds)]
    target_lines = targets(rows, cpus)
    print("\n".join(target_lines))
    header = {"date": dt.date.today().isoformat(), "machine": f"{cpu_model()}, {cpus} CPUs available, no GPU",
              "versions": f"python {platform.python_version()}, torch {torch.__version__}",
              "model": f"{args.protocol}-protocol {args.arm}, "
                       f"{rows[0]['train_images']} MNIST training images per epoch",
              "commit": git_commit(), "command": command_line(argv if argv is not None else sys.argv[1:]),
              "load average (1 min) at start / end": f"{load_start:.2f} / {os.getloadavg()[0]:.2f}"}
    text = render(rows, target_lines, header)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stem = f"contention-{machine_slug(torch.device('cpu'))}-torch{torch.__version__.split('+')[0]}"
        (RESULTS / f"{stem}.md").write_text(text)
        (RESULTS / f"{stem}.json").write_text(json.dumps({"header": header, "rows": rows, "targets": target_lines},
                                                         indent=2))
        print(f"saved {RESULTS / stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
