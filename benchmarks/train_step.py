"""One training step of the hybrid arm vs the control arm (and cnn), all timed in one process.

A step is what ``hqcbench.training.loop.train_one_epoch`` does per batch: ``prepare_batch`` (uint8 -> float,
channels-last), zero_grad, forward, cross-entropy, backward, optimiser step -- on models from
``hqcbench.models.arms.build_model`` with the fair protocol's recipe (``hqcbench.training.recipes.make_recipe``),
MNIST shapes (batch 64 of 1x28x28 uint8 images, 10 classes; pixel values do not change the cost, so
the batch is synthetic and fixed), a 4-qubit / depth-2 circuit. Rows: cnn, control, hybrid with the
default ``fused`` engine, and hybrid with the ``torchquantum`` engine for context.

Target: hybrid step <= 1.5x the control arm's step.

    python benchmarks/train_step.py                  # prints the table, saves it under benchmarks/results/
    python benchmarks/train_step.py --threads 1 --no-save
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.hardware import cpu_model, machine_slug
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.tracking.runs import library_versions
from hqcbench.training.loop import prepare_batch, prepare_model
from hqcbench.training.recipes import make_recipe

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 1.5  # hybrid step / control step
warnings.filterwarnings("ignore", category=DeprecationWarning)


def make_arm(label: str, args) -> tuple[nn.Module, object]:
    """(model, recipe) for a row label: cnn | control | hybrid | hybrid-torchquantum."""
    arm, _, engine = label.partition("-")
    cfg = RunConfig(dataset="mnist", protocol="fair", arms=arm, n_qubits=args.n_qubits, depth=args.depth,
                    encoding=args.encoding, ansatz=args.ansatz, engine=engine or "fused",
                    batch_size=args.batch_size).validate()
    spec = REGISTRY["mnist"]
    torch.manual_seed(0)
    model = prepare_model(build_model(arm, spec, cfg).to(args.device))
    recipe = make_recipe("fair", arm, model, cfg.lr, cfg.epochs, 1, "mnist", spec.mean)
    return model, recipe


def train_step(model: nn.Module, recipe, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    """The body of train_one_epoch's loop for one batch; returns the loss."""
    x = prepare_batch(images, device, recipe.augment, None)
    recipe.optimizer.zero_grad(set_to_none=True)
    loss = recipe.criterion(model(x), labels)
    loss.backward()
    if recipe.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    recipe.optimizer.step()
    return float(loss.detach())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", nargs="+", default=["cnn", "control", "hybrid", "hybrid-torchquantum"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-qubits", type=int, default=4)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--encoding", default="angle", choices=["angle", "amplitude"])
    ap.add_argument("--ansatz", default="strong", choices=["strong", "basic"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=60, help="interleaved rounds (every arm once per round)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--note", default="shared 2-core dev machine: other jobs may run beside it (see the load averages)",
                    help="a line about the machine's conditions, written into the results file")
    args = ap.parse_args(argv)
    if "control" not in args.arms or not any(a.startswith("hybrid") for a in args.arms):
        ap.error("--arms needs control and a hybrid row")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
    arms = {label: make_arm(label, args) for label in args.arms}
    load_before = os.getloadavg()
    for model, recipe in arms.values():
        model.train()
        for _ in range(args.warmup):
            train_step(model, recipe, images, labels, device)
    samples: dict[str, list[float]] = {label: [] for label in arms}
    for _ in range(args.rounds):
        for label, (model, recipe) in arms.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            train_step(model, recipe, images, labels, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            samples[label].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    ms = {label: statistics.median(v) * 1e3 for label, v in samples.items()}
    versions = library_versions()
    header = {
        "machine": (f"{cpu_model()}, {os.cpu_count()} logical CPUs"
                    + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU")),
        "threads": f"torch.set_num_threads({args.threads})",
        "versions": (f"python {platform.python_version()}, torch {versions['torch']}, "
                     f"torchquantum {versions['torchquantum']}"),
        "step": (f"fair protocol, MNIST shapes, batch {args.batch_size}, {args.n_qubits} qubits / depth {args.depth}, "
                 f"{args.encoding} encoding, {args.ansatz} ansatz; median of {args.rounds} interleaved rounds"),
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "command": "python benchmarks/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
    }
    control = ms["control"]
    lines = [f"# One training step per arm ({dt.date.today().isoformat()})", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| arm | ms per step (median) | p90 ms | / control | params |", "|---|---|---|---|---|"]
    for label, (model, _) in arms.items():
        p90 = statistics.quantiles(samples[label], n=10)[-1] * 1e3
        lines.append(f"| {label} | {ms[label]:.2f} | {p90:.2f} | {ms[label] / control:.2f}x | "
                     f"{count_parameters(model)['params_total']:,} |")
    hybrid_ms = ms["hybrid"] if "hybrid" in ms else min(v for k, v in ms.items() if k.startswith("hybrid"))
    ratio = hybrid_ms / control
    lines += ["", f"Target: hybrid (fused) step <= {TARGET:g}x control: {ratio:.2f}x -> "
              f"{'met' if ratio <= TARGET else 'MISSED'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"train_step-{machine_slug(device)}-torch{versions['torch']}"
        (RESULTS / f"{stem}.md").write_text(text)
        rows = ["arm,ms_median,ms_p90,over_control"] + [
            f"{label},{ms[label]:.4f},{statistics.quantiles(samples[label], n=10)[-1] * 1e3:.4f},"
            f"{ms[label] / control:.4f}"
            for label in arms]
        (RESULTS / f"{stem}.csv").write_text("\n".join(rows) + "\n")
        print(f"saved {RESULTS / stem}.md and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
