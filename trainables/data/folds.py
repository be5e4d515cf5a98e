"""Stratified (optionally patient-grouped) folds. A Fold owns its indices: GANs, refiners and
filters are built from `fold.train_view(...)` only, so held-out images cannot reach them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .datasets import DatasetError, ImageDataset


@dataclass(frozen=True)
class Fold:
    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray

    def __post_init__(self) -> None:
        assert not np.intersect1d(self.train_idx, self.val_idx).size, "fold leaks indices"

    def train_view(self, data: ImageDataset) -> ImageDataset:
        return data.subset(self.train_idx)

    def val_view(self, data: ImageDataset) -> ImageDataset:
        return data.subset(self.val_idx)


def make_folds(labels: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> list[Fold]:
    """k stratified folds; with `groups` (patient ids) no group is on both sides of a fold."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    if k < 2:
        raise DatasetError(f"folds must be >= 2, got {k}")
    if counts[counts > 0].min() < k:
        raise DatasetError(
            f"class {int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))} has "
            f"{int(counts[counts > 0].min())} images, fewer than the {k} folds; lower 'data.folds'"
        )
    positions = np.arange(len(labels))
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(positions, labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(positions, labels, groups)
    return [Fold(i, np.sort(tr), np.sort(va)) for i, (tr, va) in enumerate(splits)]
