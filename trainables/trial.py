"""What one trial computes: for each fold, GAN(s) on the fold's training images only -> synthetic
images at the ratio (score-filtered, optionally refined) -> classifier on real + synthetic ->
metrics on the fold's real held-out images.

Plain PyTorch: `run_trial` takes an `on_fold` callback and imports neither Ray nor MLflow;
trainables/pipeline.py is the thin Ray Tune adapter around it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .classifiers import fit_classifier, predict_proba
from .config import EnhanceConfig, TrialConfig
from .data.augment import make_augment
from .data.datasets import DataSplits, ImageDataset
from .data.enhance import bilateral_filter, gamma_correction
from .data.folds import Fold, make_folds
from .gans import FILTERS, GANS, REFINERS, TrainedGAN, TrainedRefiner
from .generative_metrics import RealReferenceCache, generative_metrics
from .metrics import METRIC_NAMES, classification_metrics


@dataclass
class Synthetic:
    """What the generative stages of a trial produced for one training set."""

    gans: dict[int, TrainedGAN] = field(default_factory=dict)
    refiners: dict[int, TrainedRefiner] = field(default_factory=dict)
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    unrefined: torch.Tensor | None = None
    """The same images before refinement (for refined-vs-unrefined grids); None without refiner."""
    kept_fraction: dict[int, float] = field(default_factory=dict)
    """Per class: the share of sampled images the discriminator-score filter kept."""
    history: dict[str, float] = field(default_factory=dict)
    """Last reported training diagnostics of every GAN / refiner, keyed "<name>_c<class>"."""


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    val_labels: np.ndarray
    val_proba: np.ndarray
    synthetic: Synthetic
    synthetic_counts: dict[int, int]
    gen_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def gans(self) -> dict[int, TrainedGAN]:
        return self.synthetic.gans


def synthetic_counts(train: ImageDataset, ratio: float) -> dict[int, int]:
    """round(ratio * real count) synthetic images for every class."""
    return {c: int(round(ratio * n)) for c, n in enumerate(train.class_counts())}


def enhance(images: torch.Tensor, cfg: EnhanceConfig) -> torch.Tensor:
    """The skin paper's bilateral filter and gamma correction, on [-1, 1] images on the device."""
    if cfg.bilateral:
        images = bilateral_filter(images, sigma_space=cfg.sigma_space, sigma_color=cfg.sigma_color, value_range=(-1, 1))
    if cfg.gamma != 1.0:
        images = gamma_correction(images, cfg.gamma, value_range=(-1, 1))
    return images


def last_values(history: dict[str, list[float]], suffix: str) -> dict[str, float]:
    return {f"{k}_{suffix}": v[-1] for k, v in history.items() if v}


def make_synthetic(cfg: TrialConfig, train: ImageDataset, counts: dict[int, int], device: torch.device, seed: int) -> Synthetic:
    """Per class: fit a GAN on the class's training images only, sample (score-filtered), refine."""
    out = Synthetic()
    images, unrefined, labels = [], [], []
    for c, n in counts.items():
        real = train.of_class(c)
        class_seed = seed + 1000 * c
        # --- GAN on this class's fold-training images ---
        gan = GANS[cfg.gan.family](cfg.gan, real, seed=class_seed, device=device)
        out.gans[c] = gan
        out.history.update(last_values(gan.history, f"c{c}"))
        # --- Sample, keeping what the discriminator scores >= threshold ---
        if cfg.synth.filter_threshold > 0:
            fake, out.kept_fraction[c] = FILTERS["d_score"](gan, n, cfg.synth.filter_threshold, class_seed)
        else:
            fake = gan.sample(n, seed=class_seed)
        # --- Refine (SimGAN) against the same class's real images ---
        if cfg.synth.refiner != "none" and len(fake):
            refiner = REFINERS[cfg.synth.refiner](cfg.refiner, fake, real, seed=class_seed, device=device)
            out.refiners[c] = refiner
            out.history.update(last_values(refiner.history, f"c{c}"))
            unrefined.append(fake)
            fake = refiner.refine(fake)
        images.append(fake)
        labels.append(torch.full((len(fake),), c, dtype=torch.long, device=fake.device))
    out.images, out.labels = torch.cat(images), torch.cat(labels)
    out.unrefined = torch.cat(unrefined) if unrefined else None
    return out


def fit_pipeline(
    cfg: TrialConfig, train: ImageDataset, early_stop: ImageDataset, device: torch.device, seed: int
) -> tuple[nn.Module, Synthetic, dict[int, int]]:
    """Everything a trial fits on one training set: GANs (and refiners) on `train` only, then the
    classifier on real + synthetic images, early-stopped on the real `early_stop` images."""
    counts = synthetic_counts(train, cfg.synth.ratio)
    synthetic = make_synthetic(cfg, train, counts, device, seed) if sum(counts.values()) > 0 else Synthetic()
    x, y = train.images, train.labels
    if synthetic.images is not None:
        x, y = torch.cat([x, synthetic.images]), torch.cat([y, synthetic.labels])
    model = fit_classifier(
        cfg.classifier, x, y, early_stop.images, early_stop.labels, train.num_classes,
        seed=seed, augment=make_augment(cfg.augment), runtime=cfg.runtime,
    )
    return model, synthetic, counts


def score(model: nn.Module, data: ImageDataset, positive: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """(metrics, labels, probabilities) of a classifier on real images."""
    proba = predict_proba(model, data.images).cpu().numpy()
    labels = data.labels.cpu().numpy()
    return classification_metrics(labels, proba, positive=positive), labels, proba


def fold_seed(cfg: TrialConfig, fold: Fold) -> int:
    return cfg.seed + 7919 * fold.index


def run_fold(
    cfg: TrialConfig, pool: ImageDataset, fold: Fold, device: torch.device, references: RealReferenceCache | None = None
) -> FoldResult:
    train, val = fold.train_view(pool), fold.val_view(pool)  # the only views this fold may use
    seed = fold_seed(cfg, fold)
    model, synthetic, counts = fit_pipeline(cfg, train, val, device, seed)
    metrics, labels, proba = score(model, val, cfg.data.positive_class)
    result = FoldResult(fold.index, metrics, labels, proba, synthetic, counts)
    if references is not None and synthetic.images is not None:
        result.gen_metrics = fold_generative_metrics(cfg, references, fold.index, train, val, synthetic.images, seed)
    return result


def fold_generative_metrics(cfg, references, fold_index, train, val, synthetic_images, seed) -> dict[str, float]:
    """Synthetic vs real in the feature space of a classifier trained on the fold's real images only."""

    def real_only_classifier() -> nn.Module:
        return fit_classifier(cfg.classifier, train.images, train.labels, val.images, val.labels, train.num_classes, seed=seed)

    reference = references.get(fold_index, train.images, val.images, real_only_classifier)
    return generative_metrics(reference, synthetic_images)


def trial_folds(cfg: TrialConfig, data: DataSplits) -> list[Fold]:
    """k stratified folds per repeat, repeat r split with seed data.seed + r; fold indices run on
    over the repeats (r * k + i), so fold metrics, seeds and cached references never collide."""
    labels, k = data.pool.labels.cpu().numpy(), cfg.data.folds
    return [
        replace(fold, index=r * k + fold.index)
        for r in range(cfg.data.repeats)
        for fold in make_folds(labels, k, cfg.data.seed + r, groups=data_groups(data))
    ]


def run_trial(
    cfg: TrialConfig, data: DataSplits, device: torch.device, on_fold: Callable[[FoldResult], None] | None = None,
    skip_folds: int = 0,
) -> dict[str, float]:
    """The folds in order, from fold `skip_folds` on (a restored trial has the earlier ones);
    returns the mean metrics over the folds it ran as val_* keys."""
    pool = data.pool.to(device)
    pool = ImageDataset(enhance(pool.images, cfg.enhance), pool.labels, pool.class_names, pool.source)
    references = RealReferenceCache() if cfg.synth.gen_metrics else None
    results = []
    for fold in trial_folds(cfg, data)[skip_folds:]:
        result = run_fold(cfg, pool, fold, device, references)
        results.append(result)
        if on_fold:
            on_fold(result)
    return mean_metrics(results)


def data_groups(data: DataSplits):
    return getattr(data, "groups", None)


def mean_metrics(results: list[FoldResult]) -> dict[str, float]:
    """Means over the folds so far, and each classification metric's worst fold
    (`val_auc_min_fold`...; all are higher-is-better): a mean can hide one collapsed fold."""
    means = {f"val_{m}": float(np.nanmean([r.metrics[m] for r in results])) for m in METRIC_NAMES}
    means.update({f"val_{m}_min_fold": float(np.nanmin([r.metrics[m] for r in results])) for m in METRIC_NAMES})
    with_gen = [r.gen_metrics for r in results if r.gen_metrics]
    for key in with_gen[0] if with_gen else ():
        means[key] = float(np.nanmean([g[key] for g in with_gen]))
    return means


FOLDS_JSON, FOLDS_NPZ = "folds.json", "folds.npz"


def save_fold_results(results: list[FoldResult], directory: str) -> None:
    """What a restored trial needs of its finished folds (metrics and out-of-fold predictions;
    not the GANs, whose generator is already logged), as JSON + npz: small, and no pickles."""
    folds = [{"fold": r.fold, "metrics": r.metrics, "gen_metrics": r.gen_metrics,
              "synthetic_counts": {str(c): n for c, n in r.synthetic_counts.items()}} for r in results]
    Path(directory, FOLDS_JSON).write_text(json.dumps({"folds": folds}))
    arrays = {f"{kind}_{i}": a for i, r in enumerate(results) for kind, a in (("labels", r.val_labels), ("proba", r.val_proba))}
    np.savez(Path(directory, FOLDS_NPZ), **arrays)


def load_fold_results(directory: str) -> list[FoldResult]:
    folds = json.loads(Path(directory, FOLDS_JSON).read_text())["folds"]
    with np.load(Path(directory, FOLDS_NPZ), allow_pickle=False) as arrays:
        return [
            FoldResult(f["fold"], f["metrics"], arrays[f"labels_{i}"], arrays[f"proba_{i}"], Synthetic(),
                       {int(c): n for c, n in f["synthetic_counts"].items()}, f["gen_metrics"])
            for i, f in enumerate(folds)
        ]


def fold_metrics(result: FoldResult) -> dict[str, float]:
    return {f"fold{result.fold}_val_{m}": v for m, v in result.metrics.items()}
