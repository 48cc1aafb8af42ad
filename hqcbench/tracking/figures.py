"""Figures logged as MLflow artifacts (matplotlib, headless)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
