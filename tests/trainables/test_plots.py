"""Sample grids: every image in its tile, exactly, and large enough to judge in the MLflow UI."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from gantune.trainables.plots import image_grid, save_grid


def test_grid_places_each_image_in_its_tile():
    images = torch.linspace(-1, 1, 10 * 1 * 4 * 4).reshape(10, 1, 4, 4)
    grid = image_grid(images, columns=4)
    assert grid.shape == (3 * 6, 4 * 6) and grid.dtype == np.uint8  # 3 rows, 2 px gaps
    expected = np.round((images.numpy() + 1) * 127.5).astype(np.uint8)
    r, c = divmod(9, 4)
    np.testing.assert_array_equal(grid[r * 6 : r * 6 + 4, c * 6 : c * 6 + 4], expected[9, 0])
    assert grid[r * 6 : r * 6 + 4, (c + 1) * 6 :].max() == 0  # an empty tile stays black


def test_saved_grid_enlarges_small_images_by_a_whole_factor(tmp_path):
    images = torch.rand(16, 1, 28, 28) * 2 - 1
    path = tmp_path / "grid.png"
    save_grid(images, str(path))
    saved = np.asarray(Image.open(path).convert("L"))
    assert saved.shape == (2 * 30 * 4, 8 * 30 * 4)  # ceil(96 / 28) = 4
    np.testing.assert_array_equal(saved[::4, ::4], image_grid(images))
    big = torch.zeros(2, 3, 128, 128)
    save_grid(big, str(path))
    assert np.asarray(Image.open(path)).shape[:2] == (130, 8 * 130)  # already large: not enlarged


def test_binary_roc_is_the_positive_class_curve(tmp_path, monkeypatch):
    """BreastMNIST's positive class is 0 (malignant): its curve, not the last class's."""
    from gantune.trainables import plots

    drawn = []
    real = plots.RocCurveDisplay.from_predictions

    def record(y_true, y_score, name, ax):
        drawn.append((name, np.asarray(y_true).copy(), np.asarray(y_score).copy()))
        return real(y_true, y_score, name=name, ax=ax)

    monkeypatch.setattr(plots.RocCurveDisplay, "from_predictions", record)
    labels = np.array([0, 0, 1, 1, 0, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    plots.save_roc(labels, proba, ("malignant", "normal_benign"), str(tmp_path / "roc.png"), positive_class=0)
    assert [name for name, _, _ in drawn] == ["malignant"]
    np.testing.assert_array_equal(drawn[0][1], labels == 0)
    np.testing.assert_array_equal(drawn[0][2], proba[:, 0])
    assert (tmp_path / "roc.png").stat().st_size > 0
