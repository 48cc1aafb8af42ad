"""Seconds per 1000 MNIST test images of each attack on each arm: what an evaluation will cost.

What it measures: the wall time of each attack exactly as ``hqcbench.evaluation`` runs it (ART,
pixel space, the project's budgets: FGSM, PGD ``--pgd-steps``, Square with 300 queries, AutoAttack's
set (whose Square has 5000: a run with autoattack gives the masking check's Square 5000 queries as
well, about the autoattack row's Square share), BPDA-PGD, the gradient diagnostic, the PGD
convergence runs on their 200 images) on ``--images`` fixed test images at one eps, scaled to 1000
images. The models are trained for one
epoch on ``--train-limit`` training images (seconds, not a benchmark of training): accurate enough
that most images are attacked, far from the robustness of a fully trained model. AutoAttack,
Square and the restarts only attack images every earlier step failed on, so on a model that resists
longer their cost grows towards the number for a model that resists everything; PGD and FGSM cost
the same whatever the model. Square's and APGD's cost per iteration is mostly fixed overhead on a
small set, so the scaled figure of a tiny run (``--images 20``) overstates them. Prints one row per
(arm, attack), after each arm's clean accuracy on the attacked images.

    python benchmarks/attack_time.py --data-dir ../shared/data                 # paper arms, 200 images
    python benchmarks/attack_time.py --images 20 --attacks fgsm,pgd            # smoke run
    python benchmarks/attack_time.py --protocol fair --arms cnn,hybrid --images 500

``--from-report reports/mnist`` prints instead what the campaign's own evaluation measured on its fully
trained models (each child run's ``attack_time_s_*``, the attacked-image count from its spec), per
protocol, arm and attack as the median over seeds, scaled to 1000 images; then the evaluation's total
and what the full test set would cost, and saves the table under ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from hqcbench.config import RunConfig
from hqcbench.data.datasets import load_splits, to_float
from hqcbench.evaluation import worst_case
from hqcbench.evaluation.attack_table import build_attack
from hqcbench.evaluation.attacks import (
    art_classifier,
    attack_batch_size,
    attack_subset,
    inputs_only,
    predict_labels,
    seeded_numpy,
)
from hqcbench.evaluation.masking import BoundCheck
from hqcbench.models.arms import build_model

ATTACKS = ("fgsm", "pgd", "square", "autoattack", "bpda", "zero_grad", "pgd_convergence")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("HQCBENCH_DATA_DIR", "../shared/data"),
                    help="folder holding MNIST/raw (torchvision layout)")
    ap.add_argument("--protocol", default="paper", help="fair or paper (architectures)")
    ap.add_argument("--arms", default="cnn,hybrid,control", help="comma-separated arms")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    ap.add_argument("--images", type=int, default=200, help="test images attacked (results scaled to 1000)")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--train-limit", type=int, default=2000, help="training images of the one training epoch")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--from-report", default="",
                    help="a report folder (with campaign.toml, runs.csv): its measured times")
    ap.add_argument("--no-save", action="store_true", help="with --from-report: print only")
    return ap.parse_args(argv)


def quick_model(arm: str, splits, cfg: RunConfig) -> nn.Module:
    """One epoch of Adam on the (limited) training split: a model that gets most test images right."""
    torch.manual_seed(0)
    model = build_model(arm, splits.spec, cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = to_float(splits.train.images), splits.train.labels
    model.train()
    for idx in torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).split(64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def time_attack(name: str, model: nn.Module, data, cfg: RunConfig, shape: tuple[int, ...], classes: int
                ) -> tuple[float, float | None]:
    """(seconds, robust accuracy or None) of one attack on ``data``, as the evaluation runs it."""
    device, batch, bounds = torch.device("cpu"), attack_batch_size(data.x), BoundCheck()
    clf = art_classifier(model, shape, classes, device)
    clean_wrong = predict_labels(clf, data.x, batch) != data.y
    t0 = time.perf_counter()
    if name == "bpda":
        _, fooled, _ = worst_case.run_bpda(model, clf, data, shape, classes, device, cfg, batch, bounds)
        acc = 1.0 - float((fooled[cfg.eps_list[0]] | clean_wrong).mean()) if fooled else None
    elif name == "zero_grad":
        worst_case.gradient_diagnostic(model, data, shape, classes, device, cfg.eps_list[0], batch, clean_wrong)
        acc = None
    elif name == "pgd_convergence":
        conv, _ = worst_case.pgd_convergence(clf, data, cfg.eps_list[0], cfg, batch, bounds)
        acc = conv.restarts[max(conv.restarts)]
    else:
        with seeded_numpy(0):
            x_adv = build_attack(name, clf, cfg.eps_list[0], cfg, batch).generate(data.x, data.y)
        acc = 1.0 - float(((predict_labels(clf, x_adv, batch) != data.y) | clean_wrong).mean())
    return time.perf_counter() - t0, acc


REPORT_ATTACKS = ("fgsm", "pgd", "autoattack", "bpda", "zero_grad", "pgd_convergence", "pgd_paper")


def from_report(folder: Path, save: bool) -> str:
    """The table of ``--from-report`` (module docstring), as markdown."""
    import pandas as pd

    from hqcbench.hardware import machine_slug
    from hqcbench.jobs.campaign_spec import parse_spec
    from hqcbench.jobs.campaign_tuning import resolve

    spec, _, _ = resolve(parse_spec(folder / "campaign.toml"))  # with the tuned blocks' cells
    images = {t.fingerprint: t.cfg.attack_sample_count for t in spec.trainings}
    runs = pd.read_csv(folder / "runs.csv")
    runs = runs[runs.fingerprint.isin(images) & runs.left_out.isna()].copy()
    runs["images"] = runs.fingerprint.map(images)
    if "pgd_convergence_images" not in runs:
        runs["pgd_convergence_images"] = float("nan")
    test_size = 10000  # MNIST's test split: what attacking every test image would take
    lines = [f"# Attack cost per 1000 images: the {spec.name} campaign's evaluation", "",
             f"- source: `{folder.name}/runs.csv` (each child run's `attack_time_s_*`, logged by the evaluation), "
             f"`{folder.name}/campaign.toml` (attacked images)",
             f"- machine: {machine_slug(torch.device('cpu'))}, one torch thread per evaluation (the spec's threads)",
             "- seconds per 1000 images = median over seeds of attack_time_s x 1000 / images attacked "
             "(pgd_convergence: its images; pgd_paper: the validation subset of the same size)", "",
             "| protocol | arm | models | " + " | ".join(REPORT_ATTACKS) + " | whole evaluation (s, median) |",
             "|---|---|---|" + "---|" * (len(REPORT_ATTACKS) + 1)]
    total_s, full_s = 0.0, 0.0
    for (protocol, arm), group in runs.groupby(["protocol", "arm"], sort=True):
        cells = []
        for attack in REPORT_ATTACKS:
            column = f"attack_time_s_{attack}"
            if column not in group or group[column].isna().all():
                cells.append("-")
                continue
            used = group.pgd_convergence_images if attack == "pgd_convergence" else group.images
            cells.append(f"{(group[column] * 1000 / used).median():.0f}")
        whole = group.robustness_time_s
        fixed = group.get("attack_time_s_pgd_convergence", pd.Series(0.0, index=group.index)).fillna(0.0)
        total_s += float(whole.sum())
        full_s += float(((whole - fixed) * test_size / group.images + fixed).sum())
        lines.append(f"| {protocol} | {arm} | {len(group)} | " + " | ".join(cells) + f" | {whole.median():.0f} |")
    lines += ["", f"Whole evaluation of the {len(runs)} models (robustness_time_s summed): {total_s / 3600:.2f} "
              f"core-hours at the images attacked; scaled to all {test_size} test images: {full_s / 3600:.1f} "
              "core-hours (the convergence runs would not grow: they use 200 images)."]
    text = "\n".join(lines) + "\n"
    if save:
        name = f"attack_time-{spec.name}-campaign-{machine_slug(torch.device('cpu'))}.md"
        out = Path(__file__).resolve().parent / "results" / name
        out.write_text(text)
        print(f"saved {out.name}")
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_report:
        print(from_report(Path(args.from_report), not args.no_save))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"attack_time: unknown attacks {unknown} (known: {', '.join(ATTACKS)})")
    # without autoattack: Square's 300 queries; the autoattack row gets its own configuration
    cfg = RunConfig(dataset="mnist", protocol=args.protocol, attacks="fgsm,pgd,square", eps=f"{args.eps:g}",
                    pgd_steps=args.pgd_steps, train_limit=args.train_limit)
    splits = load_splits("mnist", args.data_dir, 0, 0.2, args.train_limit)
    data = attack_subset(splits.test, args.images)
    shape, classes = (splits.spec.channels, splits.spec.size, splits.spec.size), splits.spec.classes
    print(f"MNIST, protocol {args.protocol}, {len(data)} test images, eps {args.eps:g}, "
          f"{torch.get_num_threads()} torch threads; models: 1 epoch on {args.train_limit} training images")
    print(f"{'arm':<9} {'attack':<16} {'seconds':>9} {'s/1000 img':>11} {'robust acc':>10}")
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        model = quick_model(arm, splits, cfg)
        clf = art_classifier(model, shape, classes, torch.device("cpu"))
        clean = float((predict_labels(clf, data.x, attack_batch_size(data.x)) == data.y).mean())
        print(f"{arm:<9} {'(clean)':<16} {'':>9} {'':>11} {clean:10.3f}")
        with inputs_only([model]):
            for name in attacks:
                run_cfg = cfg.replace(attacks="fgsm,pgd,square,autoattack") if name == "autoattack" else cfg
                seconds, acc = time_attack(name, model, data, run_cfg, shape, classes)
                used = min(worst_case.CONVERGENCE_IMAGES, len(data)) if name == "pgd_convergence" else len(data)
                per_1000 = seconds * 1000 / max(1, used)
                acc_text = f"{acc:10.3f}" if acc is not None else f"{'-':>10}"
                print(f"{arm:<9} {name:<16} {seconds:9.2f} {per_1000:11.1f} {acc_text}", flush=True)


if __name__ == "__main__":
    main()
