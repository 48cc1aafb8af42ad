"""Loaders read each dataset's real on-disk format (tiny files written here), splits are seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hqcbench.data.datasets import REGISTRY, iterate_batches, load_splits, to_float
from hqcbench.errors import DataUnavailableError
from tests.dataset_files import write_cifar100, write_mnist_like, write_stl10


@pytest.fixture()
def no_checksums(monkeypatch):
    """torchvision verifies CIFAR/STL files against the real archives' md5 sums, which tiny files
    cannot match; everything else (paths, parsing) runs for real."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.stl10 as stl10

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))
    monkeypatch.setattr(stl10, "check_integrity", lambda path, md5=None: __import__("os").path.isfile(path))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_idx_files_load(tmp_path, name, folder):
    written = write_mnist_like(tmp_path, folder, n_train=50, n_test=20)
    train, test = REGISTRY[name].load(str(tmp_path))
    assert train.images.shape == (50, 1, 28, 28) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images[:, 0].numpy(), written["train"][0])
    assert np.array_equal(test.labels.numpy(), written["t10k"][1])


def test_cifar100_pickles_load(tmp_path, no_checksums):
    written = write_cifar100(tmp_path, n_train=30, n_test=10)
    train, test = REGISTRY["cifar100"].load(str(tmp_path))
    assert train.images.shape == (30, 3, 32, 32)
    assert np.array_equal(train.images.numpy(), written["train"][0])
    assert np.array_equal(test.labels.numpy(), written["test"][1])


def test_stl10_binary_loads(tmp_path, no_checksums):
    written = write_stl10(tmp_path, n_train=6, n_test=4)
    train, test = REGISTRY["stl10"].load(str(tmp_path))
    assert train.images.shape == (6, 3, 96, 96)
    assert np.array_equal(train.images.numpy(), written["train"][0])
    assert np.array_equal(test.labels.numpy(), written["test"][1])  # 1..10 on disk -> 0..9


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar100", "stl10"])
def test_missing_files_give_one_clear_error(tmp_path, name):
    with pytest.raises(DataUnavailableError) as info:
        REGISTRY[name].load(str(tmp_path))
    text = str(info.value)
    assert name in text and str(tmp_path) in text and "data_dir" in text


def test_digits_split_is_fixed_stratified_and_seeded():
    a = load_splits("digits", None, seed=0, val_fraction=0.2)
    b = load_splits("digits", None, seed=1, val_fraction=0.2)
    assert len(a.test) == 360 and torch.equal(a.test.images, b.test.images)  # same test for every seed
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified 20 %
    assert not torch.equal(a.val.labels, b.val.labels)  # validation depends on the seed
    again = load_splits("digits", None, seed=0, val_fraction=0.2)
    assert torch.equal(a.val.images, again.val.images)
    assert len(a.train) + len(a.val) == 1797 - 360
    assert float(to_float(a.train.images).max()) <= 1.0


def test_train_limit_takes_the_same_subset_for_every_seed(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=100, n_test=10)
    a = load_splits("mnist", str(tmp_path), seed=0, val_fraction=0.25, train_limit=40)
    b = load_splits("mnist", str(tmp_path), seed=3, val_fraction=0.25, train_limit=40)
    assert len(a.train) == 30 and len(a.val) == 10
    pool_a = sorted(map(bytes, torch.cat([a.train.images, a.val.images]).numpy()))
    pool_b = sorted(map(bytes, torch.cat([b.train.images, b.val.images]).numpy()))
    assert pool_a == pool_b
    assert len(a.test) == 10  # test split untouched


def test_batches_follow_the_generator_only():
    data = load_splits("digits", None, seed=0, val_fraction=0.2).train
    def order(seed):
        return torch.cat([y for _, y in iterate_batches(data, 32, True, torch.Generator().manual_seed(seed))])
    assert torch.equal(order(5), order(5)) and not torch.equal(order(5), order(6))


def test_data_folder_comes_from_the_environment_when_data_dir_is_empty(tmp_path, monkeypatch):
    written = write_mnist_like(tmp_path, "MNIST", n_train=12, n_test=6)
    monkeypatch.setenv("HQCBENCH_DATA_DIR", str(tmp_path))
    train, _ = REGISTRY["mnist"].load(None)
    assert np.array_equal(train.images[:, 0].numpy(), written["train"][0])
    monkeypatch.setenv("HQCBENCH_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataUnavailableError, match="HQCBENCH_DATA_DIR="):
        REGISTRY["mnist"].load(None)


def test_gzipped_idx_files_load_without_gunzip(tmp_path):
    """Debian's dataset-fashion-mnist ships *-ubyte.gz that torchvision's md5 check rejects: read as they are."""
    written = write_mnist_like(tmp_path, "FashionMNIST", n_train=40, n_test=10, gzipped=True)
    assert not list((tmp_path / "FashionMNIST" / "raw").glob("*-ubyte"))
    train, test = REGISTRY["fashion_mnist"].load(str(tmp_path))
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images[:, 0].numpy(), written["train"][0])
    assert np.array_equal(test.labels.numpy(), written["t10k"][1]) and test.labels.dtype == torch.int64
