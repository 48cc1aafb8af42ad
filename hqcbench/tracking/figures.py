"""Figures logged as MLflow artifacts or saved beside reports (matplotlib, headless), as palette PNGs.

Why palette PNGs: a plot has a few dozen colours, so a 256-colour PNG looks the same as matplotlib's
RGBA one at about a third of the bytes, and a committed campaign folder holds hundreds of them
(learning curves, confusion matrices and robustness curves of every model).
"""
from __future__ import annotations

import io
import posixpath
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

PALETTE_COLOURS = 256


def learning_curves(history: list[dict[str, float]], title: str):
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int, title: str):
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    size = min(12.0, 3 + 0.35 * classes)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="Blues")
    if classes <= 20:
        for i in range(classes):
            for j in range(classes):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def png_bytes(fig, dpi: float | None = None) -> bytes:
    """The figure as a 256-colour PNG. Median cut keeps the white background exactly white (the fast
    octree tints it); no dithering, which would add noise to every anti-aliased edge."""
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi)
    raw.seek(0)
    with Image.open(raw) as image:
        palette = image.convert("RGB").quantize(PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT,
                                                 dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="png", optimize=True)
    return out.getvalue()


def save_png(fig, path: Path, dpi: float | None = None) -> None:
    """Write the figure to ``path`` as a palette PNG and close it."""
    Path(path).write_bytes(png_bytes(fig, dpi))
    close(fig)


def log_png(fig, artifact_file: str, dpi: float | None = None) -> None:
    """Log the figure on the active MLflow run as ``artifact_file`` (a .png path in the run's
    artifacts, folders allowed), a palette PNG in place of ``mlflow.log_figure``'s RGBA one."""
    folder, name = posixpath.split(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        local.write_bytes(png_bytes(fig, dpi))
        mlflow.log_artifact(str(local), artifact_path=folder or None)
