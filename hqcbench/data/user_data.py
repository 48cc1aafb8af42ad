"""A researcher's own images as a dataset: ``folder:PATH`` (torchvision's ImageFolder layout) and
``npz:FILE`` (four arrays).

Why a module of its own: the built-in datasets have fixed shapes and published statistics; a user's images
have neither, so everything the suite needs from a dataset is established here, once, from the files: the
channels (grayscale or RGB), the size (resized to ``image_size``), the classes, the mean and std of the
*training* split, and a digest of the content. The digest, never the path, identifies the dataset in the
MLflow dataset and in campaign fingerprints, so a moved folder stays the same dataset; its name is the
folder's or file's stem.

Layouts:
  folder:PATH  PATH/train/<class>/<image> and PATH/test/<class>/<image>, any format PIL reads; every image
               grayscale -> 1 channel, else RGB; resized (bilinear) to image_size x image_size, or kept
               when image_size is 0 and every image has one square size
  npz:FILE     x_train, y_train, x_test, y_test; images uint8, or floats in [0, 1]; (N, H, W) grayscale,
               (N, H, W, C) or (N, C, H, W) with C in {1, 3}; labels any integers (mapped to 0..K-1)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from hqcbench.config import USER_DATASET_KINDS, dataset_name, is_user_dataset  # noqa: F401 (re-exported)
from hqcbench.errors import UserInputError

KINDS = USER_DATASET_KINDS
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


stem = dataset_name  # 'folder:/data/flowers/' -> 'flowers'; 'npz:cells.npz' -> 'cells' (config.py)


def _error(name: str, message: str, expected: str) -> UserInputError:
    return UserInputError("dataset", f"{name.partition(':')[0]} dataset {stem(name)!r}: {message}", expected)


def load_user_dataset(name: str, image_size: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images uint8 (N, C, S, S), labels int64 0..K-1."""
    kind, _, path = name.partition(":")
    if kind == "folder":
        return _load_folder(name, Path(path), image_size)
    return _load_npz(name, Path(path), image_size)


# ----------------------------------------------------------------------------- folder
def _class_files(name: str, split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise _error(name, f"no {split_dir.name}/ folder", "PATH/train/<class>/ and PATH/test/<class>/ (ImageFolder)")
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(split_dir.iterdir()) if d.is_dir()}


def _load_folder(name: str, root: Path, image_size: int):
    from PIL import Image

    if not root.is_dir():
        raise _error(name, "the folder does not exist", "folder:PATH with PATH/train/<class>/ and PATH/test/<class>/")
    train = _class_files(name, root / "train")
    classes = sorted(c for c, files in train.items() if files)
    if len(classes) < 2:
        raise _error(name, f"{len(classes)} class(es) with images in train/", "at least two class folders with images")
    test = _class_files(name, root / "test")
    extra = sorted(c for c, files in test.items() if files and c not in classes)
    if extra:
        raise _error(name, f"test/ has classes train/ lacks: {', '.join(extra)}", "test classes among train classes")
    if not any(test.get(c) for c in classes):
        raise _error(name, "no images in test/", "test/<class>/ folders with images")
    images = {split: [(Image.open(p), classes.index(c)) for c in classes for p in files.get(c, [])]
              for split, files in (("train", train), ("test", test))}
    grey = all(img.mode in ("L", "1", "I;16", "I") for split in images.values() for img, _ in split)
    sizes = {img.size for split in images.values() for img, _ in split}
    if not image_size:
        if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            raise _error(name, f"images of sizes {sorted(sizes)[:3]}...", "image_size > 0 to resize them to one size")
        image_size = next(iter(sizes))[0]

    def to_array(img) -> np.ndarray:
        img = img.convert("L" if grey else "RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return arr[None] if grey else arr.transpose(2, 0, 1)

    out = []
    for split in ("train", "test"):
        out.append(np.stack([to_array(img) for img, _ in images[split]]))
        out.append(np.asarray([label for _, label in images[split]], dtype=np.int64))
    return tuple(out)


# ----------------------------------------------------------------------------- npz
def _load_npz(name: str, path: Path, image_size: int):
    if not path.is_file():
        raise _error(name, "the file does not exist", "npz:FILE with arrays " + ", ".join(NPZ_ARRAYS))
    with np.load(path, allow_pickle=False) as data:
        missing = [a for a in NPZ_ARRAYS if a not in data.files]
        if missing:
            raise _error(name, f"no array {', '.join(missing)} (has: {', '.join(data.files) or 'none'})",
                         "arrays " + ", ".join(NPZ_ARRAYS))
        arrays = {a: data[a] for a in NPZ_ARRAYS}
    xs = [_images(name, arrays[f"x_{s}"], s) for s in ("train", "test")]
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise _error(name, f"x_train images {xs[0].shape[1:]} but x_test {xs[1].shape[1:]}", "one image shape")
    ys = [np.asarray(arrays[f"y_{s}"]).reshape(-1) for s in ("train", "test")]
    for x, y, s in zip(xs, ys, ("train", "test")):
        if len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise _error(name, f"y_{s} has {len(y)} {y.dtype} labels for {len(x)} images",
                         "one integer label per image")
    classes = np.unique(ys[0])
    if len(classes) < 2:
        raise _error(name, f"{len(classes)} class in y_train", "at least two classes")
    if not np.isin(ys[1], classes).all():
        raise _error(name, "y_test has labels y_train lacks", "test labels among the training labels")
    if image_size and xs[0].shape[-1] != image_size:
        xs = [_resize(x, image_size) for x in xs]
    y_train, y_test = (np.searchsorted(classes, y).astype(np.int64) for y in ys)
    return xs[0], y_train, xs[1], y_test


def _images(name: str, x: np.ndarray, split: str) -> np.ndarray:
    """Any accepted layout and dtype -> uint8 (N, C, H, W)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise _error(name, f"x_{split} of shape {x.shape}", "(N, H, W), (N, H, W, C) or (N, C, H, W) square images, "
                     "C in {1, 3}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1:
        return np.ascontiguousarray(np.rint(x * 255).astype(np.uint8))
    raise _error(name, f"x_{split} is {x.dtype} in [{x.min()}, {x.max()}]", "uint8, or floats in [0, 1]")


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(size, size), mode="bilinear",
                                        align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def content_digest(*arrays: np.ndarray) -> str:
    """16 hex digits over the arrays' bytes and shapes: the same images are the same dataset wherever they lie."""
    sha = hashlib.sha256()
    for a in arrays:
        sha.update(str(a.shape).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()[:16]


def display_path(name: str) -> str:
    """The dataset as a reader may see it: never a machine's absolute path."""
    return f"{name.partition(':')[0]}:{os.path.basename(name.partition(':')[2].rstrip('/')) or '?'}"
