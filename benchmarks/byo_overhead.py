"""What hqcbench adds to a user model's training epoch: its training path against a bare PyTorch loop.

The same user model (default: ``examples/quantum_layer_block.py``, a conv stack around hqcbench's
``QuantumLayer``) is trained for one epoch at a time two ways, interleaved round by round so a drift in the
machine's speed hits both:

* ``hqcbench``: the arm as the main job builds it (``models.arms.build_model``: the factory's model behind
  the dataset's normalisation) and trains it (``training.loop.train_one_epoch`` with the fair recipe:
  its batch preparation, channels-last layout, thread governor, loss and accuracy bookkeeping);
* ``bare``: the factory's model with the normalisation written inline, the same AdamW, the same batches
  (``iterate_batches`` with the same generator), ``loss.backward(); optimizer.step()`` and nothing else.

Training epochs only (no validation, no evaluation, no MLflow), the same torch threads (fixed), the
same seeds. Target: hqcbench's median epoch at most 5 % slower than the bare loop's. Prints the table and
saves it under ``benchmarks/results/`` named by hardware and versions. Run it on an otherwise idle machine.

    python benchmarks/byo_overhead.py --data-dir ../shared/data
    python benchmarks/byo_overhead.py --dataset digits --rounds 3 --no-save     # offline smoke run
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET = 1.05  # hqcbench / bare, median epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("HQCBENCH_DATA_DIR", "../shared/data"),
                    help="folder holding MNIST/raw (torchvision layout)")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    ap.add_argument("--arm", default="quantum_layer_block:model", help="a user arm, module:callable (examples/ is "
                    "on the path)")
    ap.add_argument("--train-limit", type=int, default=20000, help="training images before the validation split")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds, one epoch per path each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, fixed for both paths")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be >= 3 (medians of interleaved rounds)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "examples"))
    from hqcbench import arms as arm_registry
    from hqcbench import threads
    from hqcbench.config import RunConfig
    from hqcbench.data.datasets import iterate_batches, load_splits, to_float
    from hqcbench.hardware import cpu_model, machine_slug
    from hqcbench.models.arms import build_model
    from hqcbench.training.loop import batch_generator, train_one_epoch
    from hqcbench.training.recipes import make_recipe

    cfg = RunConfig(dataset=args.dataset, arms=args.arm, epochs=args.rounds, batch_size=args.batch_size,
                    train_limit=args.train_limit if args.dataset == "mnist" else 0, threads=args.threads)
    cfg.validate()
    arm = cfg.arm_list[0]
    splits = load_splits(args.dataset, args.data_dir if args.dataset == "mnist" else None, 0, cfg.val_fraction,
                         cfg.train_limit)
    threads.apply_threads(args.threads)
    steps = (len(splits.train) + args.batch_size - 1) // args.batch_size

    torch.manual_seed(0)
    ours = build_model(arm, splits.spec, cfg)
    recipe = make_recipe("fair", arm, ours, cfg.lr, args.rounds, steps, args.dataset, splits.spec.mean)
    torch.manual_seed(0)
    factory = arm_registry.get(arm).resolve_factory()
    spec = splits.spec
    bare = factory((spec.channels, spec.size, spec.size), spec.classes, **cfg.hparams_for(arm))
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=cfg.lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def bare_epoch(epoch: int) -> None:
        bare.train()
        for images, labels in iterate_batches(splits.train, args.batch_size, True, batch_generator(0, epoch)):
            x = (to_float(images) - mean) / std
            bare_opt.zero_grad(set_to_none=True)
            loss_fn(bare(x), labels).backward()
            bare_opt.step()

    times: dict[str, list[float]] = {"hqcbench": [], "bare": []}
    for epoch in range(1, args.rounds + 1):
        order = ("hqcbench", "bare") if epoch % 2 else ("bare", "hqcbench")  # neither always goes first
        for path in order:
            start = time.perf_counter()
            if path == "hqcbench":
                train_one_epoch(ours, splits.train, recipe, args.batch_size, torch.device("cpu"),
                                batch_generator(0, epoch), progress=False)
            else:
                bare_epoch(epoch)
            times[path].append(time.perf_counter() - start)
        print(f"round {epoch}: hqcbench {times['hqcbench'][-1]:.2f} s, bare {times['bare'][-1]:.2f} s", flush=True)

    med = {path: statistics.median(values) for path, values in times.items()}
    ratio = med["hqcbench"] / med["bare"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    lines = [
        f"# BYO overhead: {arm} on {args.dataset} ({len(splits.train)} training images, batch {args.batch_size})",
        "",
        f"- machine: {cpu_model()} ({os.cpu_count()} CPUs), torch {torch.__version__}, {args.threads} torch thread(s)",
        f"- date: {dt.date.today().isoformat()}; {args.rounds} interleaved rounds, one epoch per path each",
        f"- command: python benchmarks/byo_overhead.py --dataset {args.dataset} --arm {args.arm} "
        f"--train-limit {args.train_limit} --rounds {args.rounds} --threads {args.threads}",
        "",
        "| path | median s / epoch | epochs (s) |",
        "|---|---|---|",
        *[f"| {path} | {med[path]:.3f} | {' / '.join(f'{t:.2f}' for t in times[path])} |" for path in times],
        "",
        f"hqcbench / bare: {ratio:.3f}x (target <= {TARGET:g}x): {verdict}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"byo_overhead-{args.dataset}-{machine_slug()}-torch{torch.__version__.split('+')[0]}.md"
        path.write_text(text)
        print(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
