"""Images a person compares in the MLflow UI: sample grids, confusion matrix, ROC curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # workers have no display
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def image_grid(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one uint8 (rows*H, columns*W[, 3]) array with 2 px gaps."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    n, c, h, w = images.shape
    rows = max(1, -(-n // columns))
    grid = np.zeros((rows * (h + 2), columns * (w + 2), c), dtype=np.uint8)
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        r, col = divmod(i, columns)
        grid[r * (h + 2) : r * (h + 2) + h, col * (w + 2) : col * (w + 2) + w] = img
    return grid[..., 0] if c == 1 else grid


def save_grid(images: torch.Tensor, path: str, columns: int = 8, min_tile: int = 96) -> None:
    """The grid as a PNG, enlarged by a whole factor (nearest neighbour, so pixels stay pixels)
    until each tile is at least min_tile px wide: a 28 px image is unreadable in the MLflow UI."""
    grid = image_grid(images, columns)
    scale = max(1, -(-min_tile // images.shape[-1]))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(grid).save(path)  # 8-bit grey or RGB, the pixels exactly as sampled


def save_confusion_matrix(labels: np.ndarray, proba: np.ndarray, class_names, path: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        labels, proba.argmax(1), labels=list(range(len(class_names))), display_labels=class_names,
        ax=ax, colorbar=False, xticks_rotation=45,
    )
    ax.set_title("Validation folds (out-of-fold)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_roc(labels: np.ndarray, proba: np.ndarray, class_names, path: str, positive_class: int) -> None:
    """The ROC curve of the positive class (data.positive_class: sensitivity is its recall) for a
    binary task; one-vs-rest per class for more classes."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    classes = range(len(class_names)) if len(class_names) > 2 else [positive_class]
    for c in classes:
        if 0 < (labels == c).sum() < len(labels):
            RocCurveDisplay.from_predictions(labels == c, proba[:, c], name=str(class_names[c]), ax=ax)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    if len(class_names) == 2:  # sklearn labels the axes "(Positive label: 1)", its boolean y_true's True
        ax.set_xlabel("False positive rate (1 - specificity)")
        ax.set_ylabel(f"True positive rate (sensitivity, {class_names[positive_class]})")
    positive = f" of {class_names[positive_class]} (positive class)" if len(class_names) == 2 else ", one vs rest"
    ax.set_title(f"ROC{positive}\nvalidation folds (out-of-fold)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_egan_plot(gans: dict, class_names, path: str) -> None:
    """E-GAN diagnostics per class: which mutation was selected (share per report) and the mean
    quality / diversity fitness of the selected children."""
    fig, axes = plt.subplots(len(gans), 2, figsize=(9, 3 * len(gans)), squeeze=False)
    for row, (label, gan) in zip(axes, gans.items()):
        shares = {k.removeprefix("egan_share_"): v for k, v in gan.history.items() if k.startswith("egan_share_")}
        steps = range(1, 1 + max((len(v) for v in shares.values()), default=0))
        if shares:
            row[0].stackplot(steps, *shares.values(), labels=list(shares))
            row[0].legend(loc="upper right", fontsize=7)
        row[0].set_title(f"{class_names[label]}: selected mutation share")
        row[0].set_xlabel("report")
        for key in ("egan_fq", "egan_fd"):
            if key in gan.history:
                row[1].plot(range(1, len(gan.history[key]) + 1), gan.history[key], label=key.removeprefix("egan_"))
        row[1].set_title(f"{class_names[label]}: fitness of the selected child")
        row[1].set_xlabel("report")
        row[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
