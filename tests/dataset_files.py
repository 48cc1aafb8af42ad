"""Writers for tiny dataset files in each dataset's real on-disk format (used by the loader tests)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 (magic 0x00000803): big-endian count, rows, cols, then uint8 pixels."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 0x0803, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1 (magic 0x00000801): big-endian count, then uint8 labels."""
    path.write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str, n_train: int, n_test: int, seed: int = 0, gzipped: bool = False) -> dict:
    """torchvision layout: <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (+ .gz: gzipped,
    as Debian's dataset-fashion-mnist ships them)."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        if gzipped:
            for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
                (raw / f"{stem}.gz").write_bytes(gzip.compress((raw / stem).read_bytes()))
                (raw / stem).unlink()
        out[prefix] = (images, labels)
    return out


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """The python version: <root>/cifar-100-python/{train,test,meta} pickles, rows of 3072 uint8 (CHW)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        fine = rng.integers(0, 100, size=n).tolist()
        entry = {"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                 "filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch"}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
        out[name] = (data.reshape(n, 3, 32, 32), np.array(fine))
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)],
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, fh)
    return out


def write_stl10(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """The binary version: <root>/stl10_binary/{train,test}_{X,y}.bin; X is N x 3 x 96 x 96 uint8 stored
    column-major per channel (torchvision transposes H and W back); y holds labels 1..10."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{name}_X.bin")
        (labels + 1).tofile(folder / f"{name}_y.bin")
        out[name] = (images, labels)
    # the real archive also holds the unlabeled split; torchvision checks it is there
    rng.integers(0, 256, size=(2, 3, 96, 96), dtype=np.uint8).tofile(folder / "unlabeled_X.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    return out
