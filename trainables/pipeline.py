"""One trial: for each fold, GAN(s) on the fold's training images only -> synthetic images at the
ratio -> classifier on real + synthetic -> metrics on the fold's real held-out images.

`run_trial` is plain PyTorch with an `on_fold` callback; `trainable` is the thin Ray Tune adapter
that also owns the trial's MLflow run (through trainables/tracking.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .classifiers import fit_classifier, predict_proba
from .config import TrialConfig
from .data.datasets import DataSplits, ImageDataset
from .data.folds import Fold, make_folds
from .gans import GANS, TrainedGAN
from .metrics import METRIC_NAMES, classification_metrics


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    val_labels: np.ndarray
    val_proba: np.ndarray
    gans: dict[int, TrainedGAN]
    synthetic_counts: dict[int, int]
    gan_history: dict[str, list[float]] = field(default_factory=dict)


def synthesize(gans: dict[int, TrainedGAN], counts: dict[int, int], seed: int):
    """Per-class synthetic images and labels, concatenated: ((M, C, H, W), (M,))."""
    images, labels = [], []
    for label, gan in gans.items():
        batch = gan.sample(counts[label], seed=seed + label)
        images.append(batch)
        labels.append(torch.full((len(batch),), label, dtype=torch.long, device=batch.device))
    return torch.cat(images), torch.cat(labels)


def synthetic_counts(train: ImageDataset, ratio: float) -> dict[int, int]:
    """round(ratio * real count) synthetic images for every class."""
    return {c: int(round(ratio * n)) for c, n in enumerate(train.class_counts())}


def fit_class_gans(cfg: TrialConfig, train: ImageDataset, device: torch.device, seed: int) -> dict[int, TrainedGAN]:
    """One GAN per class (the papers' way), each trained on that class's fold-training images."""
    fit = GANS[cfg.gan.family]
    return {
        c: fit(cfg.gan, train.of_class(c), seed=seed + 1000 * c, device=device)
        for c in range(train.num_classes)
    }


def run_fold(cfg: TrialConfig, pool: ImageDataset, fold: Fold, device: torch.device) -> FoldResult:
    train, val = fold.train_view(pool), fold.val_view(pool)  # the only views this fold may use
    seed = cfg.seed + 7919 * fold.index
    # --- GANs on the fold's training images only ---
    counts = synthetic_counts(train, cfg.synth.ratio)
    gans = fit_class_gans(cfg, train, device, seed) if sum(counts.values()) > 0 else {}
    # --- Mix synthetic images in at the ratio ---
    x, y = train.images, train.labels
    if gans:
        synth_x, synth_y = synthesize(gans, counts, seed)
        x, y = torch.cat([x, synth_x]), torch.cat([y, synth_y])
    # --- Classifier on real + synthetic, early-stopped on the fold's real validation images ---
    model = fit_classifier(cfg.classifier, x, y, val.images, val.labels, pool.num_classes, seed=seed)
    proba = predict_proba(model, val.images).cpu().numpy()
    labels = val.labels.cpu().numpy()
    metrics = classification_metrics(labels, proba, positive=cfg.data.positive_class)
    return FoldResult(fold.index, metrics, labels, proba, gans, counts)


def run_trial(
    cfg: TrialConfig, data: DataSplits, device: torch.device, on_fold: Callable[[FoldResult], None] | None = None
) -> dict[str, float]:
    """All folds in order; returns the mean metrics over folds as val_* keys."""
    pool = data.pool.to(device)
    folds = make_folds(pool.labels.cpu().numpy(), cfg.data.folds, cfg.data.seed, groups=data_groups(data))
    results = []
    for fold in folds:
        result = run_fold(cfg, pool, fold, device)
        results.append(result)
        if on_fold:
            on_fold(result)
    return mean_metrics(results)


def data_groups(data: DataSplits):
    return getattr(data, "groups", None)


def mean_metrics(results: list[FoldResult]) -> dict[str, float]:
    return {f"val_{m}": float(np.nanmean([r.metrics[m] for r in results])) for m in METRIC_NAMES}


def fold_metrics(result: FoldResult) -> dict[str, float]:
    return {f"fold{result.fold}_val_{m}": v for m, v in result.metrics.items()}


# --- Ray Tune adapter -------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySettings:
    """Constants of one search, shipped to every trial through tune.with_parameters."""

    fixed: dict
    """The space file's fixed values, flat ("gan.steps": 300, ...)."""
    data: DataSplits
    """The dataset, loaded and validated once on the driver."""
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    seed: int = 0
    cpus_per_trial: float = 1.0


def trainable(config: dict, settings: StudySettings) -> None:
    """Ray Tune function trainable: one tune.report per finished fold (running mean), so ASHA can
    stop a poor configuration after one or two folds."""
    from ray import tune

    from . import tracking

    torch.set_num_threads(max(1, int(settings.cpus_per_trial)))
    cfg = TrialConfig.from_flat({**settings.fixed, **config}, seed=settings.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trial_id = tune.get_context().get_trial_id()
    run = tracking.TrialRun.open(settings, trial_id, params=config, cfg=cfg)
    results: list[FoldResult] = []

    def on_fold(result: FoldResult) -> None:
        results.append(result)
        means = mean_metrics(results)
        run.log_fold(result, results, means)
        if len(results) == cfg.data.folds:
            run.finish()  # before the last report: the scheduler may stop the trial at any report
        tune.report({**means, **fold_metrics(result), "folds_done": len(results)})

    try:
        run_trial(cfg, settings.data, device, on_fold)
    except Exception as exc:
        run.fail(exc)
        raise
