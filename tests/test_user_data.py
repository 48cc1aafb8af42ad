"""User datasets: folder:PATH (ImageFolder layout) and npz:FILE, written here in their real on-disk formats,
read back exactly, identified by content (not path), refused with one line when malformed, and trained on
through the main job."""
from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
from PIL import Image

from hqcbench.cli import main
from hqcbench.config import RunConfig
from hqcbench.data.datasets import dataset_spec, load_splits
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fingerprint

RNG = np.random.default_rng(0)


def write_folder(root, classes=("cat", "dog", "owl"), per_class=12, size=8, mode="L", test_per_class=4):
    """PATH/train/<class>/*.png and PATH/test/<class>/*.png; returns {split: (images, labels)} as written."""
    written = {}
    for split, count in (("train", per_class), ("test", test_per_class)):
        images, labels = [], []
        for label, name in enumerate(sorted(classes)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                shape = (size, size) if mode == "L" else (size, size, 3)
                pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{k:03d}.png")
                images.append(pixels[None] if mode == "L" else pixels.transpose(2, 0, 1))
                labels.append(label)
        written[split] = (np.stack(images), np.asarray(labels))
    return written


def test_a_folder_round_trips(tmp_path):
    written = write_folder(tmp_path / "pets")
    spec = dataset_spec(f"folder:{tmp_path / 'pets'}")
    assert (spec.name, spec.channels, spec.size, spec.classes) == ("pets", 1, 8, 3)
    train, test = spec.load(None)
    assert np.array_equal(train.images.numpy(), written["train"][0])
    assert np.array_equal(test.labels.numpy(), written["test"][1])
    expected_mean = written["train"][0].astype(np.float64).mean() / 255
    assert spec.mean[0] == pytest.approx(expected_mean, rel=1e-5)  # from the training split only
    assert "pets" in spec.origin and str(tmp_path) not in spec.origin  # the content digest, never the path


def test_rgb_images_resized_to_image_size(tmp_path):
    write_folder(tmp_path / "rgb", mode="RGB", size=10)
    spec = dataset_spec(f"folder:{tmp_path / 'rgb'}", image_size=6)
    assert (spec.channels, spec.size) == (3, 6)
    assert tuple(spec.load(None)[0].images.shape[1:]) == (3, 6, 6)


def test_a_moved_folder_is_the_same_dataset(tmp_path):
    write_folder(tmp_path / "a" / "pets")
    shutil.copytree(tmp_path / "a" / "pets", tmp_path / "b" / "pets")
    first, moved = (dataset_spec(f"folder:{tmp_path / d / 'pets'}") for d in ("a", "b"))
    assert first.digest == moved.digest
    fingerprints = [training_fingerprint(RunConfig(dataset=f"folder:{tmp_path / d / 'pets'}", arms="cnn"), "cnn", 0)[0]
                    for d in ("a", "b")]
    assert fingerprints[0] == fingerprints[1]
    (tmp_path / "a" / "pets" / "train" / "cat" / "000.png").unlink()  # edited content: another dataset
    assert dataset_spec(f"folder:{tmp_path / 'a' / 'pets'}", image_size=8).digest != first.digest


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float"])
def test_npz_layouts(tmp_path, layout):
    images = RNG.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    labels = np.repeat([3, 7, 9], 10)  # any integers: mapped to 0..K-1
    x = {"nhw": images, "nhwc": images[..., None], "nchw": images[:, None], "float": images / 255.0}[layout]
    np.savez(tmp_path / "cells.npz", x_train=x[:24], y_train=labels[:24], x_test=x[24:], y_test=labels[24:])
    spec = dataset_spec(f"npz:{tmp_path / 'cells.npz'}")
    assert (spec.name, spec.channels, spec.size, spec.classes) == ("cells", 1, 8, 3)
    train, test = spec.load(None)
    assert np.array_equal(train.images.numpy()[:, 0], images[:24])
    assert test.labels.tolist() == [2] * 6  # label 9 -> class 2


@pytest.mark.parametrize("make, words", [
    (lambda root: (root / "empty" / "train").mkdir(parents=True) or "folder:" + str(root / "empty"),
     "0 class(es) with images in train/"),
    (lambda root: write_folder(root / "one", classes=("only",)) and "folder:" + str(root / "one"),
     "1 class(es) with images in train/"),
    (lambda root: np.savez(root / "bad.npz", x_train=np.zeros((2, 4, 4))) or "npz:" + str(root / "bad.npz"),
     "no array y_train, x_test, y_test"),
])
def test_malformed_datasets_are_one_line_naming_them(tmp_path, make, words):
    name = make(tmp_path)
    with pytest.raises(UserInputError) as err:
        dataset_spec(name)
    assert words in str(err.value) and str(err.value).startswith("dataset:")
    assert str(tmp_path) not in str(err.value)  # named by its stem


def test_the_main_job_exits_2_on_a_malformed_folder(tmp_path, mlflow_store, capsys):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert main(["run", "--dataset", f"folder:{tmp_path / 'empty'}", "--epochs", "1"]) == 2
    assert "0 class(es) with images in train/" in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True).empty  # refused before any run opened


def test_splits_of_a_user_dataset_are_seeded_like_the_built_in_ones(tmp_path):
    write_folder(tmp_path / "pets")
    a, b = (load_splits(f"folder:{tmp_path / 'pets'}", None, 0, 0.25) for _ in range(2))
    assert np.array_equal(a.val.labels.numpy(), b.val.labels.numpy()) and len(a.val) == 9
    assert len(a.test) == 12


@pytest.mark.slow
def test_a_folder_dataset_through_the_main_job(tmp_path, mlflow_store):
    write_folder(tmp_path / "pets", per_class=20)
    assert main(["run", "--dataset", f"folder:{tmp_path / 'pets'}", "--arms", "cnn,hybrid", "--epochs", "1",
                 "--attacks", "fgsm", "--attack_samples", "12", "--width", "8"]) == 0
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    assert set(runs["tags.hqcbench.dataset"]) == {"pets"}  # the stem, never the path
    experiment = mlflow.get_experiment(runs.experiment_id.iloc[0])
    assert experiment.name == "hqcbench-pets"
    assert runs["metrics.test_acc"].notna().all() and runs["metrics.robust_acc_fgsm_eps_0.1"].notna().all()
