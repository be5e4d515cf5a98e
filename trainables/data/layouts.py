"""Where the images of a dataset are and which class each one has.

Three layouts (`discover` tells them apart):
  - a MedMNIST-style `.npz` file: handled by `load_medmnist_npz` (official splits);
  - a folder with one sub-folder per class (`root/<class>/**/<image>`), class names sorted;
  - a CSV manifest `path,label[,patient_id]` (a `.csv` file, or a folder holding `manifest.csv`);
    paths are relative to the manifest's folder, which is the dataset root.
For the last two the held-out test split is fixed once here (stratified, seeded, grouped by
patient when ids exist), since there is no official one.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..config import unsafe_name
from .datasets import MEDMNIST_CLASS_NAMES, DatasetError
from .io import SIDECAR_SUFFIXES, is_image_file, strip_image_suffix, write_image

MANIFEST_NAME = "manifest.csv"
"""A folder holding this file is read as a manifest layout, not as class folders."""
MANIFEST_COLUMNS = ("path", "label")
PATIENT_COLUMN = "patient_id"
NAME_USE = "class names become folder and file names (samples, generated images): rename the class"


@dataclass(frozen=True)
class Sample:
    path: Path
    """Absolute path of one image file (it may hold several slices)."""
    label: int
    """Index into Layout.class_names."""
    patient: str | None = None
    """Patient id from the manifest; None when the layout has none."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a dataset; the reason says what is wrong and what to do."""

    path: str
    """The file or folder concerned."""
    reason: str
    severity: str = "error"
    """"error" makes the dataset unusable as is; "warning" is reported only."""
    kind: str = "layout"
    """"layout" (structure), "unreadable" (cannot be decoded; --skip-bad may drop it), "invalid"
    (readable, but cannot be used, e.g. an empty mask) or "suspicious" (probably a mistake)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Layout:
    root: Path
    """Dataset root: the class-folder parent or the manifest's folder."""
    kind: str
    """"folders" or "manifest"."""
    samples: tuple[Sample, ...]
    class_names: tuple[str, ...]
    issues: tuple[Issue, ...] = ()
    """Structural problems found while listing files."""
    index_files: tuple[Path, ...] = ()
    """Files that define the layout besides the images (the manifest), for the cache key."""

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def patients(self) -> np.ndarray | None:
        if not self.samples or any(s.patient is None for s in self.samples):
            return None
        return np.array([s.patient for s in self.samples])


def is_npz(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".npz"


def discover(path: str | Path, mask_suffix: str = "_mask") -> Layout:
    """A folder of class folders, a manifest .csv, or a folder with manifest.csv -> Layout.
    Raises DatasetError only when `path` itself is unusable; other problems become issues."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: dataset not found; pass a class-folder tree, a manifest .csv or a .npz")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return manifest_layout(path)
        raise DatasetError(f"{path}: not a dataset; pass a class-folder tree, a manifest .csv or a .npz")
    if (path / MANIFEST_NAME).is_file():
        return manifest_layout(path / MANIFEST_NAME)
    return folder_layout(path, mask_suffix)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _is_mask(p: Path, mask_suffix: str) -> bool:
    return bool(mask_suffix) and strip_image_suffix(p.name).endswith(mask_suffix)


def folder_layout(root: Path, mask_suffix: str = "_mask") -> Layout:
    """root/<class>/**/<image>: every visible sub-folder is a class; masks and header sidecars
    (.raw of .mhd) are not images; other files are listed as warnings and ignored."""
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    issues = [
        Issue(str(p), "file at the dataset root is ignored; put images in one folder per class", "warning")
        for p in sorted(root.iterdir())
        if p.is_file() and _visible(p)
    ]
    samples: list[Sample] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p))
        images = [p for p in files if is_image_file(p) and not _is_mask(p, mask_suffix)]
        for p in files:
            if not is_image_file(p) and not p.name.lower().endswith(SIDECAR_SUFFIXES):
                issues.append(Issue(str(p), "not an image file (unknown extension); ignored", "warning", "suspicious"))
        if problem := unsafe_name(class_dir.name):
            issues.append(Issue(str(class_dir), f"class folder name {class_dir.name!r} {problem}; {NAME_USE}"))
        if not images:
            issues.append(Issue(str(class_dir), "class folder holds no images; add images or remove the folder"))
        samples += [Sample(p.resolve(), label) for p in images]
    if len(class_dirs) < 2:
        issues.append(Issue(
            str(root),
            f"found {len(class_dirs)} class folder(s); a classifier needs >= 2: put each class's "
            f"images in root/<class name>/, or list them in {MANIFEST_NAME}",
        ))  # fmt: skip
    return Layout(root.resolve(), "folders", tuple(samples), tuple(p.name for p in class_dirs), tuple(issues))


def _inside(root: Path, relative: str) -> Path | None:
    """root / relative, normalised without following symlinks; None when it leaves root."""
    candidate = Path(os.path.normpath(root / relative))
    try:
        candidate.relative_to(root)
    except ValueError:
        return None
    return candidate


def manifest_layout(csv_path: Path) -> Layout:
    """Rows `path,label[,patient_id]`; class names are the sorted distinct labels that have files."""
    csv_path = Path(csv_path).absolute()
    root = Path(os.path.normpath(csv_path.parent))
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read the manifest ({exc})") from exc
    if header is not None and not any(c.strip() for c in header):
        # DictReader takes an empty first line as a header without columns (every row then
        # lands under the key None).
        raise DatasetError(f"{csv_path}:1: the first line is empty; the header 'path,label[,{PATIENT_COLUMN}]' "
                           "must be the first line: delete the blank line(s) above it")
    columns = tuple(c.strip() for c in header or ())
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if not rows or missing:
        raise DatasetError(
            f"{csv_path}: a manifest needs a header 'path,label[,{PATIENT_COLUMN}]' and one row per "
            f"image; {'no rows' if not rows else f'missing columns {missing}'}"
        )
    has_patients = PATIENT_COLUMN in columns
    issues: list[Issue] = []
    found: list[tuple[Path, str, str | None]] = []
    seen: set[Path] = set()
    rows_per_label: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        where = f"{csv_path}:{line}"
        label, rel = row["label"], row["path"]
        if not label or not rel:
            issues.append(Issue(where, "empty 'path' or 'label'; fill both or delete the row"))
            continue
        if problem := unsafe_name(label):
            issues.append(Issue(where, f"label {label!r} {problem}; {NAME_USE}"))
            continue
        rows_per_label[label] = rows_per_label.get(label, 0) + 1
        patient = row.get(PATIENT_COLUMN) or None
        if has_patients and patient is None:
            issues.append(Issue(where, f"empty '{PATIENT_COLUMN}'; fill it for every row or drop the column"))
            continue
        path = _inside(root, rel)
        if path is None:
            issues.append(
                Issue(where, f"path '{rel}' is outside the dataset root {root}; move the file under it or fix the path")
            )
        elif not path.is_file():
            issues.append(
                Issue(where, f"path '{rel}' (label '{label}') matches no file; fix the path or delete the row")
            )
        elif path in seen:
            issues.append(Issue(where, f"path '{rel}' is listed twice; keep one row per image"))
        else:
            seen.add(path)
            found.append((path, label, patient))
    names = tuple(sorted({label for _, label, _ in found}))
    for label, n in sorted(rows_per_label.items()):
        if label not in names:
            issues.append(
                Issue(
                    str(csv_path),
                    f"label '{label}' matches no file (all {n} of its rows point to missing or rejected paths)",
                )
            )
    if len(names) < 2:
        issues.append(Issue(str(csv_path), f"{len(names)} label(s) with files; a classifier needs >= 2"))
    index = {name: i for i, name in enumerate(names)}
    samples = tuple(Sample(p, index[label], patient) for p, label, patient in found)
    return Layout(root, "manifest", samples, names, tuple(issues), (csv_path,))


def split_test(
    labels: np.ndarray, groups: np.ndarray | None, seed: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, test indices), both sorted: one fold of a stratified (and patient-grouped
    when `groups` is given) k-fold with k = round(1 / fraction), so the test split is stratified
    and no patient is on both sides. Deterministic in (labels, groups, seed)."""
    if not 0 < fraction < 1:
        raise DatasetError(f"test fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    positions = np.arange(len(labels))
    k = max(2, round(1 / fraction))
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer than k members; check_dataset reports small classes
        warnings.simplefilter("ignore", UserWarning)
        try:
            if groups is None:
                pool, test = next(StratifiedKFold(k, shuffle=True, random_state=seed).split(positions, labels))
            else:
                splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                pool, test = next(splitter.split(positions, labels, groups))
        except ValueError as exc:
            raise DatasetError(f"cannot split off a {fraction:.0%} test set: {exc}; add images or patients") from exc
    return np.sort(pool), np.sort(test)


def export_medmnist_to_folders(
    npz_path: str | Path,
    out_dir: str | Path,
    per_class: int = 40,
    seed: int = 0,
    suffix: str = ".mha",
    spacing: tuple[float, float] = (1.0, 1.0),
) -> Path:
    """Write `per_class` images per class of a MedMNIST .npz's train split as one image file per
    image under out_dir/<class name>/ (a class-folder tree for tests and demos). Returns out_dir."""
    arrays = np.load(npz_path)
    images, labels = arrays["train_images"], arrays["train_labels"].reshape(-1)
    stem = Path(npz_path).stem.split("_")[0].lower()
    names = MEDMNIST_CLASS_NAMES.get(stem) or tuple(f"class{i}" for i in range(int(labels.max()) + 1))
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for label, name in enumerate(names):
        members = np.flatnonzero(labels == label)
        chosen = np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))
        for i in chosen:
            write_image(out_dir / name / f"{stem}_{i:05d}{suffix}", images[i], spacing, rgb=images.ndim == 4)
    return out_dir
