"""In-memory image datasets: small medical sets live as one tensor on the trial's device."""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
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
        # Internal invariants: the loaders raise a DatasetError naming the file before this point.
        if self.images.ndim != 4:
            raise ValueError(f"images must be NCHW, got {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

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


def merge_classes(data: ImageDataset, groups: tuple[tuple[int, ...], ...]) -> ImageDataset:
    """The same images with class c relabelled to the index of the group holding it; a merged
    class is named after its members ("grade1+grade2")."""
    lookup = torch.empty(data.num_classes, dtype=data.labels.dtype)
    for new, group in enumerate(groups):
        lookup[list(group)] = new
    names = tuple("+".join(data.class_names[c] for c in group) for group in groups)
    return ImageDataset(data.images, lookup.to(data.labels.device)[data.labels], names, data.source)


def merge_splits(splits: DataSplits, groups: tuple[tuple[int, ...], ...] | None) -> DataSplits:
    """`data.merge` applied to the pool and the test split (the folds, official val split and
    patient groups are per image, so they stay as they are)."""
    if groups is None:
        return splits
    return dataclasses.replace(splits, pool=merge_classes(splits.pool, groups), test=merge_classes(splits.test, groups))


MEDMNIST_CLASS_NAMES = {
    "breastmnist": ("malignant", "normal_benign"),
    "retinamnist": ("grade0", "grade1", "grade2", "grade3", "grade4"),
}


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) float32 in [-1, 1]."""
    return _nchw(array) / 127.5 - 1.0


def _nchw(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()


@dataclass(frozen=True)
class PixelScale:
    """How an .npz's pixel values become [-1, 1]: x / divisor + offset, decided once for all splits
    (a division, so uint8 gives exactly uint8_to_tensor's values)."""

    divisor: float
    offset: float
    description: str
    """For `gantune data check`, e.g. 'float32 in [0, 1] -> 2x - 1'."""


def pixel_scale(path: Path, images: dict[str, np.ndarray]) -> PixelScale:
    """The one mapping to [-1, 1] that fits every split's values, or a DatasetError naming the file.
    uint8 (or whole numbers in 0..255): x / 127.5 - 1; floats in [0, 1]: 2x - 1; floats in
    [-1, 1] with negative values: as they are. Anything else (uint16 CT values, floats in
    [0, 4095], NaN) is refused rather than squashed: a wrong guess would train on garbage."""
    kinds = {k: a.dtype for k, a in images.items()}
    if len({d.kind for d in kinds.values()}) > 1:
        raise DatasetError(
            f"{path}: the splits' images have different dtypes {dict((k, str(d)) for k, d in kinds.items())}; "
            "save them alike"
        )
    dtype = next(iter(kinds.values()))
    if dtype.kind not in "uif":
        raise DatasetError(f"{path}: images must be numbers (uint8, or float in [0, 1] / [-1, 1]), got dtype {dtype}")
    values = [a for a in images.values() if a.size]
    if not values:
        raise DatasetError(f"{path}: the archive holds no images")
    if dtype.kind == "f" and not all(np.isfinite(a).all() for a in values):
        raise DatasetError(f"{path}: images hold NaN or infinite values; fix the arrays")
    lo, hi = float(min(a.min() for a in values)), float(max(a.max() for a in values))
    span = f"{dtype} values in [{lo:g}, {hi:g}]"
    whole = dtype.kind in "ui" or all(np.array_equal(a, np.round(a)) for a in values)
    if dtype == np.uint8:
        return PixelScale(127.5, -1.0, "uint8 0..255 -> x / 127.5 - 1")
    if dtype.kind == "f" and lo >= 0 and hi <= 1:
        return PixelScale(0.5, -1.0, f"{span} (read as [0, 1]) -> 2x - 1")
    if dtype.kind == "f" and lo >= -1 and hi <= 1:
        return PixelScale(1.0, 0.0, f"{span} (read as [-1, 1]) -> kept as they are")
    if whole and lo >= 0 and hi <= 255:
        return PixelScale(127.5, -1.0, f"{span}, whole numbers (read as 8-bit 0..255) -> x / 127.5 - 1")
    raise DatasetError(
        f"{path}: images are {span}, neither 8-bit (0..255) nor [0, 1] nor [-1, 1]; rescale them to one "
        "of those (e.g. uint8) or use a class-folder tree, whose images are normalised per file"
    )


def _labels(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """(N,) or (N, 1) integer labels; DatasetError naming the key for strings, fractions, negatives."""
    flat = array.reshape(-1) if array.ndim <= 1 or array.shape[1:] == (1,) else None
    if flat is None:
        raise DatasetError(
            f"{path}: '{key}' must hold one label per image, got shape {array.shape} "
            "(multi-label data is not supported)"
        )
    if flat.dtype.kind not in "uif" or (
        flat.dtype.kind == "f" and not (np.isfinite(flat).all() and np.array_equal(flat, np.round(flat)))
    ):
        raise DatasetError(f"{path}: '{key}' must hold integer class indices 0..K-1, got dtype {flat.dtype}"
                           + (f" (e.g. {flat[0]!r})" if len(flat) else ""))
    if len(flat) and flat.min() < 0:
        raise DatasetError(f"{path}: '{key}' holds negative labels (min {flat.min()}); labels must be 0..K-1")
    return flat.astype(np.int64)


def _class_names(path: Path, labels: np.ndarray) -> tuple[str, ...]:
    present = np.unique(labels)
    n = int(present.max()) + 1 if len(present) else 0
    if len(present) != n:
        missing = sorted(set(range(n)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{path}: labels are {present.tolist()[:10]}{' ...' if len(present) > 10 else ''}, but class indices "
            f"must run 0..K-1 with every class present; no image has label {shown} (labels out of range?)"
        )
    stem = path.stem.split("_")[0].lower()
    known = MEDMNIST_CLASS_NAMES.get(stem)
    return known if known and len(known) >= n else tuple(f"class{i}" for i in range(n))


NPZ_SPLITS = ("train", "val", "test")


def load_medmnist_npz(path: str | Path) -> DataSplits:
    """A MedMNIST-style .npz: the official train and val splits form the pool, test stays apart."""
    return read_medmnist_npz(path)[0]


def read_medmnist_npz(path: str | Path) -> tuple[DataSplits, PixelScale]:
    """load_medmnist_npz, and how the pixel values were mapped to [-1, 1]. Raises DatasetError
    naming the file (and the key) for anything it cannot use as is."""
    path = Path(path)
    required = [f"{s}_{k}" for s in NPZ_SPLITS for k in ("images", "labels")]
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc})") from exc
    if magic != b"PK\x03\x04":  # a .npz is a zip archive
        raise DatasetError(f"{path}: not a .npz archive (a .npz is a zip file; this one starts with {magic!r}); "
                           "save it with numpy.savez or pass a class-folder tree or a manifest .csv")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in required if k not in archive.files]
            if missing:
                raise DatasetError(f"{path}: missing MedMNIST keys {missing}; expected {required}")
            arrays = {k: archive[k] for k in required}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # truncated, corrupt, object arrays
        raise DatasetError(f"{path}: cannot read as a .npz archive ({type(exc).__name__}: {exc}); the file is "
                           "truncated or corrupt: copy or download it again") from exc
    labels = {}
    for s in NPZ_SPLITS:
        images, key = arrays[f"{s}_images"], f"{s}_labels"
        labels[s] = _labels(path, key, arrays[key])
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DatasetError(f"{path}: '{s}_images' must be (N, H, W) or (N, H, W, 1 or 3), got shape {images.shape}")
        if len(images) != len(labels[s]):
            raise DatasetError(f"{path}: '{s}_images' holds {len(images)} images but '{key}' {len(labels[s])} labels; "
                               "they must match one to one")
    shapes = {s: arrays[f"{s}_images"].shape[1:] for s in NPZ_SPLITS}
    if len(set(shapes.values())) > 1:
        raise DatasetError(f"{path}: the splits' images differ in shape {shapes}; save them at one size")
    scale = pixel_scale(path, {f"{s}_images": arrays[f"{s}_images"] for s in NPZ_SPLITS})
    names = _class_names(path, np.concatenate(list(labels.values())))

    def make(splits: tuple[str, ...]) -> ImageDataset:
        images = _nchw(np.concatenate([arrays[f"{s}_images"] for s in splits])) / scale.divisor + scale.offset
        y = np.concatenate([labels[s] for s in splits])
        return ImageDataset(images.clamp(-1.0, 1.0), torch.from_numpy(y), names, str(path))

    n_train, n_val = len(labels["train"]), len(labels["val"])
    official_val = np.arange(n_train, n_train + n_val)
    return DataSplits(pool=make(("train", "val")), test=make(("test",)), official_val=official_val), scale
