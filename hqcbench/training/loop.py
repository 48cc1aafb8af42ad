"""Fit and evaluate loops. No MLflow calls here: ``fit`` reports each epoch to a callback."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from hqcbench import arms as arm_registry
from hqcbench import threads
from hqcbench.data.datasets import ImageSet, iterate_batches, to_float
from hqcbench.resources import ResourceMonitor
from hqcbench.training import seeding
from hqcbench.training.recipes import Recipe


@dataclass
class EvalResult:
    loss: float
    acc: float
    predictions: torch.Tensor  # (N,) predicted class
    correct: torch.Tensor  # (N,) bool, per example (for bootstrap intervals)


@dataclass
class FitResult:
    best_val_acc: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False  # validation loss plateaued before the epoch budget ran out

    @property
    def epochs_run(self) -> int:
        return len(self.history)


# A validation loss counts as improved when it falls below the best so far by more than this
# (relative): float noise between equal-quality epochs must not reset the patience counter.
PLATEAU_REL_TOL = 1e-4


def batch_generator(seed: int, epoch: int) -> torch.Generator:
    """Batch order depends on (seed, epoch) only: every arm of one seed sees the same batches."""
    return seeding.batch_order(seed, epoch)


# Convolutions, batch norm and max-pool of these small CNNs run ~1.3-1.5x faster per batch on CPU in
# channels-last (NHWC) layout (oneDNN's NHWC max-pool alone is ~10x faster than its NCHW path), measured
# on the paper MNIST arms (benchmarks/epoch_time.py). Values are the same up to float rounding.
CHANNELS_LAST = True


def uses_channels_last(model: nn.Module) -> bool:
    """hqcbench's own arms train channels-last (measured faster above); a user's model keeps the layout its
    author chose: converting a small user model cost ~4 % of its epoch (benchmarks/byo_overhead.py)."""
    arm = getattr(model, "arm", None)
    if not CHANNELS_LAST or arm is None:
        return CHANNELS_LAST
    try:
        return not arm_registry.get(arm).is_user
    except KeyError:
        return True


def prepare_model(model: nn.Module) -> nn.Module:
    """Put 4-d weights in channels-last layout (in place: same Parameter objects, so optimisers stay valid)."""
    if uses_channels_last(model):
        model.to(memory_format=torch.channels_last)
    return model


def prepare_batch(images: torch.Tensor, device: torch.device, augment=None,
                  generator: torch.Generator | None = None, channels_last: bool = True) -> torch.Tensor:
    """uint8/float batch -> float in [0, 1] on ``device``, augmented, in the layout the model expects.

    The batch moves to the device before conversion and augmentation (a GPU then does both, and
    uint8 transfers 4x fewer bytes); the random parameters still come from the CPU ``generator``.
    """
    x = to_float(images.to(device, non_blocking=True))
    if augment is not None and augment.active:
        x = augment(x, generator)
    if CHANNELS_LAST and channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, batch_size: int, device: torch.device,
             criterion: nn.Module | None = None, augment=None, generator: torch.Generator | None = None,
             ) -> EvalResult:
    model.eval()
    prepare_model(model)
    nhwc = uses_channels_last(model)
    criterion = criterion or nn.CrossEntropyLoss()
    total_loss, preds = 0.0, []
    for images, labels in iterate_batches(data, max(batch_size, 256), shuffle=False):
        x, y = prepare_batch(images, device, augment, generator, nhwc), labels.to(device)
        logits = model(x)
        total_loss += criterion(logits, y).item() * len(y)
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    correct = pred == data.labels
    n = max(1, len(data))
    return EvalResult(total_loss / n, correct.float().mean().item() if len(data) else 0.0, pred, correct)


def train_one_epoch(model: nn.Module, data: ImageSet, recipe: Recipe, batch_size: int, device: torch.device,
                    generator: torch.Generator, progress: bool = True, desc: str = "") -> tuple[float, float]:
    model.train()
    prepare_model(model)
    nhwc = uses_channels_last(model)
    total_loss, total_correct, seen = 0.0, 0, 0
    n_batches = (len(data) + batch_size - 1) // batch_size
    batches = iterate_batches(data, batch_size, shuffle=True, generator=generator)
    show = progress and n_batches >= 50  # a bar per epoch is noise for tiny datasets
    for images, labels in tqdm(batches, total=n_batches, desc=desc, leave=False, disable=not show):
        threads.adapt()  # fewer torch threads while other processes hold cores (hqcbench.threads)
        x, y = prepare_batch(images, device, recipe.augment, generator, nhwc), labels.to(device, non_blocking=True)
        recipe.optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = recipe.criterion(logits, y)
        loss.backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        recipe.optimizer.step()
        if recipe.scheduler is not None and recipe.step_per_batch:
            recipe.scheduler.step()
        total_loss += loss.item() * len(y)
        total_correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    if recipe.scheduler is not None and not recipe.step_per_batch:
        recipe.scheduler.step()
    return total_loss / max(1, seen), total_correct / max(1, seen)


EpochCallback = Callable[[int, dict[str, float], nn.Module], None]


def fit(model: nn.Module, train: ImageSet, val: ImageSet, recipe: Recipe, epochs: int, batch_size: int,
        device: torch.device, seed: int, monitor: ResourceMonitor | None = None,
        on_epoch: EpochCallback | None = None, progress: bool = True, desc: str = "",
        patience: int = 0) -> FitResult:
    """Train for ``epochs``; keep (and load back at the end) the weights of the best validation epoch.

    ``patience`` > 0 stops early once the validation loss has not improved (``PLATEAU_REL_TOL``) for
    that many epochs: "trained to a plateau" with ``epochs`` as the cap. Selection is unchanged (best
    validation accuracy), and the schedule stays the one built for ``epochs``.
    ``on_epoch(epoch, metrics, model)`` receives the design's per-epoch metric names; the caller logs.
    """
    with contextlib.ExitStack() as stack:
        if monitor is None:  # a caller that measures nothing else: a monitor for this fit only
            monitor = stack.enter_context(ResourceMonitor(device))
        return _fit(model, train, val, recipe, epochs, batch_size, device, seed, monitor, on_epoch, progress, desc,
                    patience)


def _fit(model: nn.Module, train: ImageSet, val: ImageSet, recipe: Recipe, epochs: int, batch_size: int,
         device: torch.device, seed: int, monitor: ResourceMonitor, on_epoch: EpochCallback | None,
         progress: bool, desc: str, patience: int) -> FitResult:
    best_acc, best_epoch, best_state = -1.0, 0, None
    best_loss, since_improved, stopped_early = float("inf"), 0, False
    history: list[dict[str, float]] = []
    epoch_bar = tqdm(range(1, epochs + 1), desc=desc or "epochs", leave=False, disable=not progress)
    for epoch in epoch_bar:
        with monitor.window("train") as train_res:
            train_loss, train_acc = train_one_epoch(model, train, recipe, batch_size, device,
                                                    batch_generator(seed, epoch), progress, f"{desc} ep{epoch}")
        val_gen = seeding.validation_augmentation(seed, epoch)
        with monitor.window("eval") as eval_res:
            val_res = evaluate(model, val, batch_size, device, recipe.criterion,
                               recipe.augment if recipe.augment_val else None, val_gen)
        metrics = {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_res.loss, "val_acc": val_res.acc,
                   "epoch_time_s": train_res["wall_s"], "eval_time_s": eval_res["wall_s"],
                   "samples_per_s": len(train) / train_res["wall_s"] if train_res["wall_s"] > 0 else 0.0,
                   "lr": recipe.optimizer.param_groups[0]["lr"], "torch_threads": threads.epoch_threads()}
        metrics.update({k: v for k, v in train_res.items() if k != "wall_s"})
        history.append(metrics)
        if val_res.acc > best_acc:
            best_acc, best_epoch = val_res.acc, epoch
            best_state = copy.deepcopy(model.state_dict())
        epoch_bar.set_postfix(val_acc=f"{val_res.acc:.3f}", best=f"{best_acc:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics, model)
        if val_res.loss < best_loss * (1.0 - PLATEAU_REL_TOL):  # cross-entropy is >= 0; inf at the start
            best_loss, since_improved = val_res.loss, 0
        else:
            since_improved += 1
        if patience and since_improved >= patience and epoch < epochs:
            stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_acc, best_epoch, history, stopped_early)
