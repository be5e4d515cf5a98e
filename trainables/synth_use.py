"""Ways of using synthetic images beyond mixing them in (issue 27): classifier-guided selection of
the synthetic images, and how many each class gets.

Selection (HistoGAN-style, Xue et al. 2021): a classifier trained on the training set's real
images only scores each candidate synthetic image; an image is kept when that classifier gives its
intended class a probability >= `synth.select_confidence` and ('confidence+feature') its
penultimate features lie no farther from the class's real feature centroid than the
`synth.select_distance` quantile of the class's real images' own distances to it. Candidates are
oversampled until each class's count is filled; a class still short after `synth.select_rounds`
rounds fails the trial (SelectionError), since a retry with the same seed would fail the same way.

The scoring classifier is trained here, not taken from the generative metrics: theirs is
early-stopped on the fold's validation images, so its weights were chosen by them. This one sees
the training images alone and trains the full step budget (last weights), with the trial's
classifier, augmentation and seed; `evaluate` refits get the same through `fit_pipeline`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .classifiers import fit_classifier, predict_proba
from .config import TrialConfig
from .data.augment import make_augment
from .data.datasets import ImageDataset
from .gans.filter import oversample
from .generative_metrics import features


class SelectionError(RuntimeError):
    """Too few synthetic images passed the classifier-guided selection to fill a class's count;
    the trial fails with this reason (not retried: the same seed would fail the same way)."""


@dataclass(frozen=True)
class Scorer:
    """A classifier trained on real training images only, and what selection compares against."""

    model: nn.Module
    confidence: float
    """Minimum probability of the intended class."""
    centroids: torch.Tensor | None
    """(K, D) mean penultimate features of each class's real training images; None: confidence only."""
    radii: torch.Tensor | None
    """(K,) per class, the select_distance quantile of its real images' distances to its centroid."""

    def accept(self, images: torch.Tensor, label: int) -> torch.Tensor:
        """A bool per image: kept as an image of class `label`."""
        keep = predict_proba(self.model, images)[:, label] >= self.confidence
        if self.centroids is not None:
            distance = torch.linalg.vector_norm(features(self.model, images) - self.centroids[label], dim=1)
            keep &= distance <= self.radii[label]
        return keep


def fit_scorer(cfg: TrialConfig, train: ImageDataset, seed: int) -> Scorer:
    """The selection classifier, on `train` only: no validation images, so nothing held out for
    scoring the trial ever shaped it (see the module docstring)."""
    model = fit_classifier(cfg.classifier, train.images, train.labels, None, None, train.num_classes, seed=seed,
                           augment=make_augment(cfg.augment), runtime=cfg.runtime)
    if cfg.synth.select != "confidence+feature":
        return Scorer(model, cfg.synth.select_confidence, None, None)
    real = features(model, train.images)
    centroids, radii = [], []
    for c in range(train.num_classes):
        own = real[train.labels == c]
        centroids.append(own.mean(dim=0))
        radii.append(torch.quantile(torch.linalg.vector_norm(own - centroids[-1], dim=1), cfg.synth.select_distance))
    return Scorer(model, cfg.synth.select_confidence, torch.stack(centroids), torch.stack(radii))


def select(produce, scorer: Scorer, label: int, n: int, seed: int, rounds: int) -> tuple[torch.Tensor, float, int]:
    """(n images of class `label` the scorer accepts, the share of candidates accepted, how many
    candidates were drawn), drawing candidates with
    `produce(k, seed)` (the class's sampler, filter and refiner); SelectionError when the rounds
    run out first."""
    drawn = 0

    def counted(k: int, s: int) -> torch.Tensor:
        nonlocal drawn
        drawn += k
        return produce(k, s)

    kept, rate = oversample(counted, lambda x: scorer.accept(x, label), n, seed, rounds)
    if len(kept) < n:
        raise SelectionError(
            f"synthetic selection kept {len(kept)} of the {n} images class {label} needs: {rate:.1%} of {drawn} "
            f"drawn in 'synth.select_rounds' {rounds} rounds passed; lower 'synth.select_confidence' or raise "
            "'synth.select_distance', or the generator's images are not recognised as their class"
        )
    return kept, rate, drawn
