"""Resolving and loading the dataset a space names, before Ray starts; used by `gantune search`,
`gantune evaluate` and the benchmarks."""

from __future__ import annotations

from pathlib import Path


def resolve_data_path(path: str, space_file: str) -> Path:
    """A relative data path is looked up from the working directory, then from the space file's
    folder and its parent (so `spaces/x.yaml` can say `data/...` from anywhere)."""
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    space_dir = Path(space_file).resolve().parent
    for base in (Path.cwd(), space_dir, space_dir.parent):
        if (base / candidate).exists():
            return base / candidate
    return candidate


def check_data_path(space) -> Path:
    """The space's data.path resolved, or DatasetError naming the space file and key when it does
    not exist or cannot be read (also what `search --dry-run` checks)."""
    import os

    from gantune.trainables.config import TrialConfig
    from gantune.trainables.data.datasets import DatasetError

    given = TrialConfig.from_flat(space.fixed).data.path
    path = resolve_data_path(given, space.path)
    if not path.exists():
        raise DatasetError(
            f"{space.path}: 'data.path' {given!r} does not exist "
            "(looked in the working directory and next to the space file)"
        )
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise DatasetError(f"{space.path}: 'data.path' {given!r} ({path}) is not readable")
    return path


def load_data(space, skip_bad: bool):
    """Validate and load the dataset before Ray starts: (DataSplits, skipped files). A missing or
    unusable dataset raises DatasetError naming the space file or the image."""
    from gantune.trainables.config import TrialConfig

    return load_for_config(check_data_path(space), TrialConfig.from_flat(space.fixed), skip_bad, space.path)


def load_for_config(path: Path, cfg, skip_bad: bool = False, where: str | None = None):
    """(DataSplits, skipped files) of `path` as a trial with `cfg` sees it: preprocessed, checked
    against the config (data.positive_class, data.merge; a DatasetError naming `where`, the space
    file, or the path) and with data.merge applied. The one loader of search and evaluate."""
    from gantune.trainables.config import ConfigError, check_dataset_fit
    from gantune.trainables.data.check import load_dataset
    from gantune.trainables.data.datasets import DatasetError, merge_splits

    splits, skipped = load_dataset(path, cfg.preprocess, folds=cfg.data.folds, seed=cfg.data.seed, skip_bad=skip_bad)
    try:
        check_dataset_fit(cfg, splits.pool.num_classes)  # e.g. data.positive_class, only now known to fit
    except ConfigError as exc:
        raise DatasetError(f"{where or path}: {exc} ({path})") from exc
    return merge_splits(splits, cfg.data.merge), skipped
