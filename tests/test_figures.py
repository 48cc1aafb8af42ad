"""Figures are saved and logged as palette PNGs: the same picture in fewer bytes, white kept white."""
from __future__ import annotations

import io

import mlflow
import numpy as np
from PIL import Image

from hqcbench.tracking import figures


def _confusion():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    predictions = np.where(rng.random(1000) < 0.8, labels, rng.integers(0, 10, 1000))
    return figures.confusion_matrix(labels, predictions, 10, "confusion")


def test_png_is_a_palette_image_close_to_matplotlibs_at_a_fraction_of_the_bytes():
    fig = _confusion()
    raw = io.BytesIO()
    fig.savefig(raw, format="png")
    palette_png = figures.png_bytes(fig)
    figures.close(fig)
    original = np.asarray(Image.open(io.BytesIO(raw.getvalue())).convert("RGB")).astype(int)
    with Image.open(io.BytesIO(palette_png)) as image:
        assert image.mode == "P"
        quantized = np.asarray(image.convert("RGB")).astype(int)
    assert quantized.shape == original.shape
    assert quantized[0, 0].tolist() == [255, 255, 255]  # the background stays white
    assert np.abs(quantized - original).mean() < 1.0  # per channel, out of 255
    assert len(palette_png) < 0.6 * len(raw.getvalue())


def test_save_png_writes_the_file(tmp_path):
    path = tmp_path / "curves.png"
    history = [dict(train_loss=1 / (i + 1), val_loss=1.2 / (i + 1), train_acc=i / 10, val_acc=i / 11)
               for i in range(10)]
    figures.save_png(figures.learning_curves(history, "curves"), path, dpi=80)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size[0] > 100


def test_log_png_logs_the_artifact_under_its_folder(mlflow_store, tmp_path):
    with mlflow.start_run() as run:
        figures.log_png(_confusion(), "robustness/curve.png")
        figures.log_png(_confusion(), "top.png")
    client = mlflow.MlflowClient()
    assert [f.path for f in client.list_artifacts(run.info.run_id, "robustness")] == ["robustness/curve.png"]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="top.png", dst_path=str(tmp_path))
    with Image.open(local) as image:
        assert image.mode == "P"
