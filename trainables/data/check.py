"""`gantune data check PATH` and the loader the search calls: one pass that reads every file,
preprocesses it (cached), and lists every problem with the file it concerns and what to do.

`check_dataset` reports; `load_dataset` returns DataSplits or raises DatasetError with the same
messages. Both share `_analyse`, so the search refuses exactly the datasets the check refuses, and
a check run warms the cache the search then reads.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import cache
from .datasets import DataSplits, DatasetError, ImageDataset, PixelScale, read_medmnist_npz
from .folds import make_folds
from .io import UnreadableImageError
from .layouts import Issue, Layout, discover, is_npz, split_test
from .preprocess import PreprocessConfig, finish, mask_path_for, preprocess_npz_images, read_and_preprocess

TEST_FRACTION = 0.2
"""Share of files (or patients) held out as the test split of non-MedMNIST datasets."""


@dataclass(frozen=True)
class FileRecord:
    """What reading one file gave."""

    path: str
    size: tuple[int, ...] = ()
    """(x, y[, z]) voxels, SimpleITK order; empty when unreadable."""
    spacing: tuple[float, ...] = ()
    """mm, same order as size."""
    channels: int = 0
    slices: int = 0
    """2D images this file contributed."""
    error: str = ""
    """Why the file cannot be used; empty when it can."""
    kind: str = ""
    """Issue kind of the error: "unreadable" or "invalid"."""
    constant: bool = False
    """Some slice has a single intensity (probably blank)."""
    pixel_type: str = ""
    """SimpleITK's name of the stored pixel type, e.g. '8-bit unsigned integer'."""


@dataclass(frozen=True)
class Scan:
    """Every file's record, and the usable slices stacked: images (M, C, S, S) in [-1, 1] with
    slice_file (M,) the index of the file each slice came from."""

    records: tuple[FileRecord, ...]
    images: torch.Tensor
    slice_file: torch.Tensor


@dataclass(frozen=True)
class DatasetReport:
    path: str
    layout: str
    """"folders", "manifest" or "medmnist"."""
    class_names: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    """Usable 2D images per class (pool + test)."""
    pool_counts: tuple[int, ...] = ()
    """Of which in the pool that folds are drawn from."""
    files: int = 0
    """Usable files."""
    volumes: int = 0
    """Usable files that are 3D volumes (sliced by the 'slice' rule)."""
    patients: int | None = None
    """Distinct patient ids, None when the layout has none."""
    image_sizes: dict[str, int] = field(default_factory=dict)
    """'WxH' or 'WxHxD' -> number of files."""
    spacings: dict[str, int] = field(default_factory=dict)
    """'0.5x0.5' (mm, x by y) -> number of files."""
    channels: dict[int, int] = field(default_factory=dict)
    """Channels per pixel -> number of files."""
    output_shape: tuple[int, ...] = ()
    """(C, H, W) of the tensors the search trains on."""
    folds: int = 5
    issues: tuple[Issue, ...] = ()
    test_files: tuple[str, ...] = ()
    """The held-out test files (empty for MedMNIST, whose test split is official)."""
    pixels: str = ""
    """How the stored pixel values became the [-1, 1] tensors, e.g. 'float32 in [0, 1] -> 2x - 1'."""

    @property
    def usable(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def imbalance_ratio(self) -> float:
        """Largest class count / smallest (inf when a class is empty)."""
        if not self.counts:
            return float("nan")
        return max(self.counts) / min(self.counts) if min(self.counts) > 0 else float("inf")


# --- Reading every file (cached) ----------------------------------------------------------------


def _read_all(layout: Layout, cfg: PreprocessConfig) -> tuple[list[FileRecord], list[list[torch.Tensor]]]:
    records, tensors = [], []
    for sample in layout.samples:
        try:
            slices, info = read_and_preprocess(sample.path, cfg)
        except DatasetError as exc:
            kind = "unreadable" if isinstance(exc, UnreadableImageError) else "invalid"
            records.append(FileRecord(str(sample.path), error=str(exc), kind=kind))
            tensors.append([])
            continue
        if not all(bool(torch.isfinite(s).all()) for s in slices):  # NaN/inf survive normalisation as NaN
            why = f"{sample.path}: holds NaN or infinite pixel values ({info.pixel_type}); fix or remove the file"
            records.append(FileRecord(str(sample.path), error=why, kind="invalid"))
            tensors.append([])
            continue
        constant = any(bool(s.max() == s.min()) for s in slices)
        records.append(
            FileRecord(
                str(sample.path),
                info.size,
                info.spacing,
                info.channels,
                len(slices),
                constant=constant,
                pixel_type=info.pixel_type,
            )
        )
        tensors.append(slices)
    return records, tensors


def _reject_odd_shapes(records: list[FileRecord], tensors: list[list[torch.Tensor]]) -> None:
    """Slices must stack: the most common (C, H, W) wins, files with another become invalid."""
    shapes = Counter(tuple(t.shape) for ts in tensors for t in ts)
    if len(shapes) <= 1:
        return
    common = shapes.most_common(1)[0][0]
    for i, ts in enumerate(tensors):
        odd = next((tuple(t.shape) for t in ts if tuple(t.shape) != common), None)
        if odd is None:
            continue
        if odd[0] != common[0]:
            why = (f"has {odd[0]} channel(s) but most images have {common[0]} (mixed channel counts); "
                   f"convert every image to {'grayscale' if common[0] == 1 else 'RGB'} or remove this one")
        else:
            why = (f"is {odd[1]}x{odd[2]} after cropping but most images are {common[1]}x{common[2]}; "
                   "set 'preprocess.size' so every image is resized to one size")
        records[i] = dataclasses.replace(records[i], error=f"{records[i].path}: {why}", kind="invalid")
        tensors[i] = []


def scan(layout: Layout, cfg: PreprocessConfig, *, use_cache: bool = True) -> Scan:
    """Read and preprocess every file of the layout, or load the result from the cache."""
    inputs = [s.path for s in layout.samples] + list(layout.index_files)
    if cfg.crop == "mask":
        inputs += [mask_path_for(s.path, cfg) for s in layout.samples]
    key = cache.cache_key(inputs, cfg)
    entry = cache.load(key) if use_cache else None
    if entry is not None:
        records = tuple(FileRecord(**r) for r in entry["meta"]["records"])
        return Scan(records, entry["images"], entry["slice_file"])
    records, tensors = _read_all(layout, cfg)
    _reject_odd_shapes(records, tensors)
    stacked = [t for ts in tensors for t in ts]
    images = finish(torch.stack(stacked)) if stacked else torch.zeros(0, 1, 1, 1)
    slice_file = torch.tensor([i for i, ts in enumerate(tensors) for _ in ts], dtype=torch.long)
    if use_cache:
        meta = {"records": [dataclasses.asdict(r) for r in records]}
        try:
            cache.save(key, {"images": images, "slice_file": slice_file, "meta": meta})
        except OSError as exc:  # a file where the folder should be, no permission, disk full
            raise DatasetError(
                f"{cache.cache_dir()}: the preprocessing cache cannot be written ({type(exc).__name__}: {exc}); "
                f"set {cache.CACHE_ENV} to a writable folder"
            ) from exc
    return Scan(tuple(records), images, slice_file)


# --- One analysis for the check and the loader --------------------------------------------------


@dataclass(frozen=True)
class _Analysis:
    report: DatasetReport
    layout: Layout
    scan: Scan
    pool_files: np.ndarray
    """Indices into layout.samples."""
    test_files: np.ndarray


def _file_issues(records: tuple[FileRecord, ...], skip_bad: bool) -> list[Issue]:
    issues = []
    for r in records:
        if r.error:
            skipped = skip_bad and r.kind == "unreadable"
            reason = r.error.removeprefix(f"{r.path}: ") + (" [skipped: --skip-bad]" if skipped else "")
            issues.append(Issue(r.path, reason, "warning" if skipped else "error", r.kind))
        elif r.constant:
            issues.append(
                Issue(r.path, "every pixel has the same value (blank image?); check the file", "warning", "suspicious")
            )
    return issues


def _fold_issues(
    root: str, names: tuple[str, ...], labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int
) -> list[Issue]:
    """Every class needs >= `folds` pool images (and patients); make_folds has the last word."""
    counts = np.bincount(labels, minlength=len(names))
    issues = [
        Issue(root, f"class '{name}' has {n} image(s) in the training pool (after holding out the test "
                    f"split), fewer than the {folds} folds; add images or lower the number of folds")
        for name, n in zip(names, counts)
        if n < folds
    ]  # fmt: skip
    if not issues and len(labels):
        try:
            make_folds(labels, folds, seed, groups=groups)
        except (DatasetError, ValueError) as exc:
            issues.append(
                Issue(root, f"cannot make {folds} folds: {exc}; add patients/images or lower the number of folds")
            )
    return issues


def _summary(records: list[FileRecord]) -> dict[str, dict]:
    fmt = lambda values: "x".join(f"{v:g}" for v in values)  # noqa: E731
    return {
        "image_sizes": dict(Counter(fmt(r.size) for r in records)),
        "spacings": dict(Counter(fmt(r.spacing[:2]) for r in records)),
        "channels": dict(Counter(r.channels for r in records)),
    }


def _pool_groups(layout: Layout, files: np.ndarray) -> np.ndarray | None:
    """Group ids per pool slice: the patient, else the file when files give several slices (so
    slices of one volume never sit on both sides of a fold), else None."""
    patients = layout.patients
    if patients is not None:
        return patients[files]
    if np.bincount(files).max(initial=0) > 1:
        return np.array([str(layout.samples[f].path) for f in files])
    return None


def _analyse(path: Path, cfg: PreprocessConfig, folds: int, seed: int, skip_bad: bool, use_cache: bool) -> _Analysis:
    layout = discover(path, cfg.mask_suffix)
    scan_ = scan(layout, cfg, use_cache=use_cache)
    ok = np.array([not r.error for r in scan_.records], dtype=bool)
    usable = np.flatnonzero(ok)
    labels = layout.labels
    patients = layout.patients
    issues = list(layout.issues) + _file_issues(scan_.records, skip_bad)
    pool_files = test_files = np.zeros(0, dtype=np.int64)
    if len(usable) and not any(i.kind == "layout" and i.severity == "error" for i in issues):
        try:
            p, t = split_test(labels[usable], None if patients is None else patients[usable], seed, TEST_FRACTION)
            pool_files, test_files = usable[p], usable[t]
        except DatasetError as exc:
            issues.append(Issue(str(layout.root), str(exc)))
    slice_file = scan_.slice_file.numpy()
    in_pool = np.isin(slice_file, pool_files)
    pool_slices = slice_file[in_pool]
    if len(pool_files):
        issues += _fold_issues(
            str(layout.root), layout.class_names, labels[pool_slices], _pool_groups(layout, pool_slices), folds, seed
        )
    slice_labels = labels[slice_file] if len(slice_file) else np.zeros(0, dtype=np.int64)
    good = [r for r in scan_.records if not r.error]
    report = DatasetReport(
        path=str(path),
        layout=layout.kind,
        class_names=layout.class_names,
        counts=tuple(np.bincount(slice_labels, minlength=len(layout.class_names)).tolist()),
        pool_counts=tuple(np.bincount(labels[pool_slices], minlength=len(layout.class_names)).tolist()),
        files=len(good),
        volumes=sum(1 for r in good if len(r.size) == 3 and r.size[2] > 1),
        patients=None if patients is None else len(set(patients[usable].tolist())),
        output_shape=tuple(scan_.images.shape[1:]) if len(scan_.images) else (),
        folds=folds,
        issues=tuple(issues),
        test_files=tuple(str(layout.samples[i].path) for i in test_files),
        pixels=_pixels(good, cfg),
        **_summary(good),
    )
    return _Analysis(report, layout, scan_, pool_files, test_files)


# --- MedMNIST .npz ------------------------------------------------------------------------------


def _pixels(records: list[FileRecord], cfg: PreprocessConfig) -> str:
    kinds = ", ".join(f"{k} ({n})" for k, n in Counter(r.pixel_type for r in records).most_common())
    return f"{kinds} -> per image {cfg.normalize} to [0, 1], then 2x - 1" if records else ""


def _npz_report(
    path: Path, splits: DataSplits | None, error: str, folds: int, seed: int, pixels: str = ""
) -> DatasetReport:
    if splits is None:
        return DatasetReport(
            str(path), "medmnist", folds=folds, issues=(Issue(str(path), error.removeprefix(f"{path}: ")),)
        )
    pool, test = splits.pool, splits.test
    labels = pool.labels.numpy()
    counts = [a + b for a, b in zip(pool.class_counts(), test.class_counts())]
    shape = tuple(pool.images.shape[1:])
    n = len(pool) + len(test)
    return DatasetReport(
        path=str(path),
        layout="medmnist",
        class_names=pool.class_names,
        counts=tuple(counts),
        pool_counts=tuple(pool.class_counts()),
        files=1,
        image_sizes={f"{shape[2]}x{shape[1]}": n},
        channels={shape[0]: n},
        output_shape=shape,
        folds=folds,
        issues=tuple(_fold_issues(str(path), pool.class_names, labels, None, folds, seed)),
        pixels=pixels,
    )


def _load_npz(path: Path, cfg: PreprocessConfig) -> tuple[DataSplits, PixelScale]:
    splits, scale = read_medmnist_npz(path)

    def prep(d: ImageDataset) -> ImageDataset:
        return ImageDataset(preprocess_npz_images(d.images, cfg), d.labels, d.class_names, d.source)

    return DataSplits(pool=prep(splits.pool), test=prep(splits.test), official_val=splits.official_val), scale


# --- Public entry points ------------------------------------------------------------------------


def check_dataset(
    path: str | Path,
    cfg: PreprocessConfig | None = None,
    folds: int = 5,
    *,
    seed: int = 0,
    skip_bad: bool = False,
    use_cache: bool = True,
) -> DatasetReport:
    """Summarise a dataset and list every problem; `report.usable` says whether the search can
    use it as is (with `skip_bad`, unreadable files are listed as skipped instead)."""
    cfg = cfg or PreprocessConfig()
    path = Path(path)
    if is_npz(path):
        try:
            splits, scale = _load_npz(path, cfg)
            return _npz_report(path, splits, "", folds, seed, scale.description)
        except DatasetError as exc:
            return _npz_report(path, None, str(exc), folds, seed)
    try:
        return _analyse(path, cfg, folds, seed, skip_bad, use_cache).report
    except DatasetError as exc:
        return DatasetReport(
            str(path), "unknown", folds=folds, issues=(Issue(str(path), str(exc).removeprefix(f"{path}: ")),)
        )


def _refuse(report: DatasetReport) -> DatasetError:
    errors = report.errors
    shown = "\n".join(f"  - {e}" for e in errors[:10])
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    hint = " (unreadable files can be left out with --skip-bad)" if any(e.kind == "unreadable" for e in errors) else ""
    return DatasetError(
        f"{report.path}: the dataset cannot be used as is ({len(errors)} problem(s)){hint}:\n{shown}{more}\n"
        f"Run `gantune data check {report.path}` for the full report."
    )


def load_dataset(
    path: str | Path,
    preprocess_cfg: PreprocessConfig | None = None,
    *,
    folds: int,
    seed: int,
    skip_bad: bool = False,
    use_cache: bool = True,
) -> tuple[DataSplits, list[str]]:
    """The dataset as DataSplits (pool + fixed test split, pool patient groups, test file list)
    and the files skipped as unreadable. `seed` fixes the test split of non-MedMNIST datasets:
    pass the study's data seed so every trial and every later evaluation sees the same split.
    Raises DatasetError naming each file and what to do when the dataset is unusable."""
    cfg = preprocess_cfg or PreprocessConfig()
    path = Path(path)
    if is_npz(path):
        splits, _ = _load_npz(path, cfg)
        report = _npz_report(path, splits, "", folds, seed)
        if not report.usable:
            raise _refuse(report)
        return splits, []
    analysis = _analyse(path, cfg, folds, seed, skip_bad, use_cache)
    if not analysis.report.usable:
        raise _refuse(analysis.report)
    layout, scan_ = analysis.layout, analysis.scan
    slice_file = scan_.slice_file.numpy()
    labels = torch.from_numpy(layout.labels[slice_file])

    def part(files: np.ndarray) -> tuple[ImageDataset, np.ndarray]:
        idx = np.flatnonzero(np.isin(slice_file, files))
        data = ImageDataset(scan_.images[idx], labels[idx], layout.class_names, str(path))
        return data, slice_file[idx]

    pool, pool_slices = part(analysis.pool_files)
    test, _ = part(analysis.test_files)
    skipped = [r.path for r in scan_.records if r.error and r.kind == "unreadable"]
    splits = DataSplits(
        pool=pool,
        test=test,
        groups=_pool_groups(layout, pool_slices),
        test_files=analysis.report.test_files,
    )
    return splits, skipped


# --- Terminal -----------------------------------------------------------------------------------


def _histogram(counter: dict, unit: str = "") -> str:
    items = sorted(counter.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k}{unit} ({v})" for k, v in items) or "-"


def format_report(report: DatasetReport) -> str:
    """A few aligned lines for the terminal; problems last, errors first."""
    classes = ", ".join(f"{n} {c}" for n, c in zip(report.class_names, report.counts)) or "-"
    lines = [
        f"Dataset {report.path} ({report.layout})",
        f"  classes    {len(report.class_names)}: {classes}  (imbalance {report.imbalance_ratio:.2f})",
        f"  images     {sum(report.counts)} from {report.files} file(s)"
        + (f", {report.volumes} 3D volume(s)" if report.volumes else "")
        + f"; pool {sum(report.pool_counts)}, test {sum(report.counts) - sum(report.pool_counts)}",
        f"  patients   {report.patients if report.patients is not None else '-'}",
        f"  sizes      {_histogram(report.image_sizes)}",
        f"  spacings   {_histogram(report.spacings, ' mm')}",
        f"  channels   {_histogram(report.channels)}",
        f"  pixels     {report.pixels or '-'}",
        f"  tensors    {'x'.join(map(str, report.output_shape)) or '-'} per image, {report.folds} folds",
    ]
    issues = sorted(report.issues, key=lambda i: i.severity != "error")
    if issues:
        lines.append(f"  problems   {len(report.errors)} error(s), {len(issues) - len(report.errors)} warning(s):")
        lines += [f"    {i.severity.upper() if i.severity == 'error' else i.severity:7} {i}" for i in issues]
    verdict = "usable" if report.usable else "NOT usable as is: fix the errors above"
    if not report.usable and any(i.kind == "unreadable" for i in report.errors):
        verdict += " (or pass --skip-bad to leave unreadable files out)"
    lines.append(f"  => {verdict}")
    return "\n".join(lines)


def data_check_main(args: argparse.Namespace) -> int:
    """`gantune data check PATH [--folds K] [--skip-bad]`: print the report; 0 usable, 1 not.
    Optional attributes: `seed` (test split, default 0), `preprocess` (a PreprocessConfig),
    `footer` (report -> extra lines printed after a usable report's, e.g. the test split's power)."""
    cfg = getattr(args, "preprocess", None) or PreprocessConfig()
    report = check_dataset(args.path, cfg, folds=args.folds, seed=getattr(args, "seed", 0), skip_bad=args.skip_bad)
    print(format_report(report))
    footer = getattr(args, "footer", None)
    if footer is not None and report.usable:
        print(footer(report))
    return 0 if report.usable else 1
