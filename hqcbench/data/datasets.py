"""Dataset registry and splits.

Every dataset is held in memory as one tensor of images (N, C, H, W) -- uint8 for the image
datasets, float32 in [0, 1] for scikit-learn's digits -- plus int64 labels. Batches are sliced
from that tensor and augmented batch-wise (see ``hqcbench.data.augment``); no per-image PIL pipeline,
which dominated the published implementation's epoch time.

Images reach the model in [0, 1]. Normalisation (the dataset mean/std below) is the model's first
layer, so adversarial attacks operate in pixel space.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from hqcbench.data import user_data
from hqcbench.errors import DataUnavailableError, UserInputError

DEFAULT_DATA_DIR = "data"  # relative to the working directory
DATA_DIR_ENV = "HQCBENCH_DATA_DIR"  # a data folder for every job when data_dir is empty
SUBSET_SEED = 12345  # train_limit picks the same images for every seed and arm
DIGITS_TEST_SEED = 0  # digits ships no split: a fixed stratified 20 % test hold-out


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W; uint8 in 0..255 or float in [0, 1]) and labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the suite needs to know about a dataset."""

    name: str
    channels: int
    size: int
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[str | None], tuple[ImageSet, ImageSet]]  # data_dir -> (train, test)
    how_to_get: str
    origin: str = ""  # where the images come from, without any machine path (MLflow dataset source)
    digest: str = ""  # user datasets: the content digest that identifies them (their path never does)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


# ----------------------------------------------------------------------------- loaders
def _load_digits(_: str | None) -> tuple[ImageSet, ImageSet]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=DIGITS_TEST_SEED)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return (ImageSet(x[idx_train], y[idx_train]), ImageSet(x[idx_test], y[idx_test]))


def _torchvision_root(data_dir: str | None) -> tuple[str, bool]:
    """(root, download): with data_dir, or else $HQCBENCH_DATA_DIR, we read what is there; without
    either we download to ./data. One variable names the data folder for every job and script."""
    if data_dir:
        return data_dir, False
    if os.environ.get(DATA_DIR_ENV):
        return os.environ[DATA_DIR_ENV], False
    return os.path.abspath(DEFAULT_DATA_DIR), True


def _open_torchvision(name: str, factory: Callable[..., Any], data_dir: str | None, **kwargs) -> Any:
    root, download = _torchvision_root(data_dir)
    try:
        return factory(root=root, download=download, **kwargs)
    except Exception as exc:  # torchvision raises RuntimeError (missing) or URLError/OSError (offline)
        spec = REGISTRY[name]
        where = (f"data_dir={root!r}" if data_dir else f"{DATA_DIR_ENV}={root!r}" if not download
                 else f"the download folder {root!r}")
        reason = "files not found" if not download else f"download failed ({type(exc).__name__})"
        raise DataUnavailableError(
            f"dataset {name!r}: {reason} in {where}. {spec.how_to_get}") from exc


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or gzipped) of unsigned bytes -> array of its declared shape.

    Hand-written because torchvision reads only uncompressed files it extracted from its own
    downloads, checked against their md5 sums; Debian's gzipped Fashion-MNIST files hold the same
    images but are not byte-identical archives, so torchvision rejects them.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte; the low byte is the number of dimensions
        raise DataUnavailableError(f"{path.name}: not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _gzipped_idx(root: str, folder: str) -> tuple[ImageSet, ImageSet] | None:
    """(train, test) from ``<root>/<folder>/raw/*-ubyte.gz`` when only the gzipped files are there."""
    raw = Path(root) / folder / "raw"
    stems = [f"{p}-{kind}" for p in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if any((raw / s).is_file() for s in stems) or not all((raw / f"{s}.gz").is_file() for s in stems):
        return None
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")
        parts.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return parts[0], parts[1]


def _load_mnist_like(name: str, cls_name: str) -> Callable[[str | None], tuple[ImageSet, ImageSet]]:
    def load(data_dir: str | None) -> tuple[ImageSet, ImageSet]:
        import torchvision.datasets as tvd  # torchvision's dataset classes import slowly: only when loading

        root, download = _torchvision_root(data_dir)
        if not download:
            gzipped = _gzipped_idx(root, cls_name)
            if gzipped is not None:
                return gzipped
        factory = getattr(tvd, cls_name)
        parts = []
        for train in (True, False):
            ds = _open_torchvision(name, factory, data_dir, train=train)
            parts.append(ImageSet(ds.data.unsqueeze(1).contiguous(), ds.targets.long()))
        return parts[0], parts[1]
    return load


def _load_cifar100(data_dir: str | None) -> tuple[ImageSet, ImageSet]:
    import torchvision.datasets as tvd

    parts = []
    for train in (True, False):
        ds = _open_torchvision("cifar100", tvd.CIFAR100, data_dir, train=train)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        parts.append(ImageSet(images, torch.as_tensor(ds.targets, dtype=torch.long)))
    return parts[0], parts[1]


def _load_stl10(data_dir: str | None) -> tuple[ImageSet, ImageSet]:
    import torchvision.datasets as tvd

    parts = []
    for split in ("train", "test"):
        ds = _open_torchvision("stl10", tvd.STL10, data_dir, split=split)
        parts.append(ImageSet(torch.from_numpy(np.ascontiguousarray(ds.data)),
                              torch.as_tensor(ds.labels, dtype=torch.long)))
    return parts[0], parts[1]


REGISTRY: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("digits", 1, 8, 10, (0.3053,), (0.3804,), _load_digits,
                          "It ships with scikit-learn; reinstall scikit-learn.",
                          origin="scikit-learn sklearn.datasets.load_digits (bundled)"),
    "mnist": DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,), _load_mnist_like("mnist", "MNIST"),
                         "Put the IDX files in <data_dir>/MNIST/raw/ (train-images-idx3-ubyte, ...) "
                         "or run once online without data_dir.",
                         origin="MNIST IDX files in <data_dir>/MNIST/raw (torchvision layout)"),
    "fashion_mnist": DatasetSpec("fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,),
                                 _load_mnist_like("fashion_mnist", "FashionMNIST"),
                                 "Put the IDX files, plain or gzipped, in <data_dir>/FashionMNIST/raw/ (Debian: "
                                 "apt-get install dataset-fashion-mnist, then copy its *-ubyte.gz files there) "
                                 "or run once online.",
                                 origin="Fashion-MNIST IDX files in <data_dir>/FashionMNIST/raw (torchvision layout)"),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            _load_cifar100,
                            "Put the extracted python version in <data_dir>/cifar-100-python/ (train, test, meta) "
                            "or run once online without data_dir.",
                            origin="CIFAR-100 python version in <data_dir>/cifar-100-python (torchvision layout)"),
    "stl10": DatasetSpec("stl10", 3, 96, 10, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), _load_stl10,
                         "Put the binary version in <data_dir>/stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, "
                         "test_y.bin) or run once online without data_dir.",
                         origin="STL-10 binary version in <data_dir>/stl10_binary (torchvision layout)"),
}


_USER_SPECS: dict[tuple[str, int], DatasetSpec] = {}


def dataset_spec(name: str, image_size: int = 0) -> DatasetSpec:
    """A built-in dataset's spec, or a user dataset's (``folder:PATH``, ``npz:FILE``; data/user_data.py), read
    once per process: channels, size, classes, the training split's mean and std, the content digest."""
    if name in REGISTRY:
        return REGISTRY[name]
    if not user_data.is_user_dataset(name):
        raise UserInputError("dataset", f"unknown dataset {name!r}",
                             "|".join(REGISTRY) + ", folder:PATH or npz:FILE")
    key = (name, int(image_size))
    if key not in _USER_SPECS:
        x_train, y_train, x_test, y_test = user_data.load_user_dataset(name, image_size)
        train = ImageSet(torch.from_numpy(x_train), torch.from_numpy(y_train))
        test = ImageSet(torch.from_numpy(x_test), torch.from_numpy(y_test))
        pixels = to_float(train.images)
        mean = tuple(float(v) for v in pixels.mean(dim=(0, 2, 3)))
        std = tuple(max(float(v), 1e-6) for v in pixels.std(dim=(0, 2, 3)))
        digest = user_data.content_digest(x_train, y_train, x_test, y_test)
        stem = user_data.stem(name)
        _USER_SPECS[key] = DatasetSpec(stem, x_train.shape[1], x_train.shape[2], int(y_train.max()) + 1, mean, std,
                                       lambda _: (train, test), "", origin=f"{user_data.display_path(name)} "
                                       f"(content digest {digest})", digest=digest)
    return _USER_SPECS[key]


# ----------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    spec: DatasetSpec
    note: str = ""


def load_splits(dataset: str, data_dir: str | None, seed: int, val_fraction: float,
                train_limit: int = 0, test_as_val: bool = False,
                cache: dict | None = None, image_size: int = 0) -> Splits:
    """Train/val/test for one seed.

    The validation split is carved from the training split with ``seed``; the test split is the
    dataset's own (digits: a fixed stratified 20 %), identical for every seed and arm.
    ``train_limit`` first takes a fixed subset of the training split (same for every seed).
    ``test_as_val`` reproduces the published STL-10 procedure (paper protocol only): the official
    test split also serves as validation.
    """
    spec = dataset_spec(dataset, image_size)
    key = (dataset, data_dir, image_size)
    if cache is not None and key in cache:
        full_train, test = cache[key]
    else:
        full_train, test = spec.load(data_dir)
        if cache is not None:
            cache[key] = (full_train, test)
    note = ""
    pool = full_train
    if train_limit and train_limit < len(full_train):
        gen = torch.Generator().manual_seed(SUBSET_SEED)
        pool = full_train.subset(torch.randperm(len(full_train), generator=gen)[:train_limit])
        note = f"train_limit={train_limit}: using {train_limit} of {len(full_train)} training images"
    if test_as_val:
        return Splits(pool, test, test, spec, note)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=gen)
    n_val = max(1, int(round(val_fraction * len(pool))))
    return Splits(pool.subset(order[n_val:]), pool.subset(order[:n_val]), test, spec, note)


def iterate_batches(data: ImageSet, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) slices; the order depends only on ``generator`` (same for every arm)."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield data.images[idx], data.labels[idx]
