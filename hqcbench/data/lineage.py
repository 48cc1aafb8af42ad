"""The splits a run trained, validated and tested on, described as MLflow datasets.

MLflow's UI fills its Dataset column, and compares runs by what they saw, from ``mlflow.log_input``.
Each split becomes a ``NumpyDataset`` named ``{dataset}-{split}`` whose source says where the images
come from (never a machine path: stores are committed and shared) and how the split was cut (seed,
validation fraction, training subset). Its digest is our own SHA-256 over every image and label:
MLflow's default numpy digest hashes only the first 10,000 values (about a dozen MNIST images), so
two different validation splits of one seed would look the same.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.numpy_dataset import NumpyDataset, from_numpy

from hqcbench import names
from hqcbench.data.datasets import ImageSet, Splits


@dataclass(frozen=True)
class SplitInput:
    """One split as MLflow logs it: the dataset, its ``log_input`` context and tags."""

    split: str  # train | val | test
    dataset: NumpyDataset
    context: str
    tags: dict[str, str]


def digest(images: ImageSet) -> str:
    """SHA-256 (first 12 hex digits) of every image and label: identical splits, identical digest."""
    sha = hashlib.sha256()
    for tensor in (images.images, images.labels):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        sha.update(str((array.dtype.str, array.shape)).encode())
        sha.update(array.tobytes())
    return sha.hexdigest()[:12]


def split_inputs(splits: Splits, seed: int, val_fraction: float, train_limit: int = 0) -> list[SplitInput]:
    """The three splits of one (dataset, seed) as MLflow datasets, train first."""
    spec = splits.spec
    same_as_test = splits.val is splits.test  # the published STL-10 procedure validates on the test split
    how = {
        "train": f"training split minus a {val_fraction:g} validation share drawn with seed {seed}"
                 + (f", from a fixed subset of {train_limit} training images" if train_limit else ""),
        "val": ("the official test split (published procedure)" if same_as_test else
                f"{val_fraction:g} of the training split, drawn with seed {seed}"),
        "test": "the dataset's own test split, the same for every seed and arm",
    }
    out = []
    for split, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        source = CodeDatasetSource({"dataset": spec.name, "origin": spec.origin or spec.name, "split": how[split]})
        dataset = from_numpy(images.images.detach().cpu().numpy(), source=source,
                             targets=images.labels.detach().cpu().numpy(),
                             name=names.input_name(spec.name, split), digest=digest(images))
        tags = {"split_seed": str(seed), "images": str(len(images))}
        out.append(SplitInput(split, dataset, names.INPUT_CONTEXTS[split], tags))
    return out
