"""In-memory image datasets: small medical sets live as one tensor on the trial's device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class ImageDataset:
    """Images scaled to [-1, 1] as (N, C, H, W) float32, with integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        assert self.images.ndim == 4, f"images must be NCHW, got {tuple(self.images.shape)}"
        assert len(self.images) == len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, indices: np.ndarray) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.labels.device)
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names, self.source)

    def of_class(self, label: int) -> torch.Tensor:
        return self.images[self.labels == label]

    def to(self, device: torch.device | str) -> ImageDataset:
        return ImageDataset(self.images.to(device), self.labels.to(device), self.class_names, self.source)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()


@dataclass(frozen=True)
class DataSplits:
    """The pool that folds are drawn from, and the test split nothing may touch before evaluate."""

    pool: ImageDataset
    test: ImageDataset
    groups: np.ndarray | None = None
    """Patient (or source-file) id per pool image for grouped folds; None = independent images."""
    test_files: tuple[str, ...] = ()
    """Files of the held-out test split when it was drawn here (not MedMNIST's official split)."""
    official_val: np.ndarray | None = None
    """Pool indices of MedMNIST's official val split (the pool is train then val); None for
    datasets without one. `evaluate` early-stops its refits on it."""


MEDMNIST_CLASS_NAMES = {
    "breastmnist": ("malignant", "normal_benign"),
    "retinamnist": ("grade0", "grade1", "grade2", "grade3", "grade4"),
}


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1]."""
    if array.ndim == 3:
        array = array[..., None]
    images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
    return images / 127.5 - 1.0


def _class_names(path: Path, labels: np.ndarray) -> tuple[str, ...]:
    stem = path.stem.split("_")[0].lower()
    known = MEDMNIST_CLASS_NAMES.get(stem)
    n = int(labels.max()) + 1
    return known if known and len(known) >= n else tuple(f"class{i}" for i in range(n))


def load_medmnist_npz(path: str | Path) -> DataSplits:
    """A MedMNIST-style .npz: the official train and val splits form the pool, test stays apart."""
    path = Path(path)
    required = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read as a .npz archive ({exc})") from exc
    missing = [k for k in required if k not in arrays.files]
    if missing:
        raise DatasetError(f"{path}: missing MedMNIST keys {missing}; expected {required}")
    labels = {s: arrays[f"{s}_labels"].reshape(-1).astype(np.int64) for s in ("train", "val", "test")}
    names = _class_names(path, np.concatenate(list(labels.values())))

    def make(splits: tuple[str, ...]) -> ImageDataset:
        images = np.concatenate([arrays[f"{s}_images"] for s in splits])
        y = np.concatenate([labels[s] for s in splits])
        return ImageDataset(uint8_to_tensor(images), torch.from_numpy(y), names, str(path))

    n_train, n_val = len(labels["train"]), len(labels["val"])
    return DataSplits(pool=make(("train", "val")), test=make(("test",)), official_val=np.arange(n_train, n_train + n_val))
