"""Generative metrics that need no downloaded weights: synthetic vs real images of one fold.

- `gen_fd_classifier`: Fréchet distance between Gaussian fits of penultimate-layer features of a
  classifier trained on the fold's real training images only. Not FID: there is no Inception
  network here, so values are comparable only within one fold's feature classifier.
- `gen_precision`, `gen_recall`, `gen_density`, `gen_coverage`: Naeem et al. 2020 ("Reliable
  fidelity and diversity metrics for generative models"), k-NN balls in the same feature space.
- `gen_memorisation_ratio`, `gen_memorisation_fraction`: in pixel space, each synthetic image's
  distance to its nearest real training image, against the same distance for the fold's real
  validation images (independent draws from the data distribution). Ratio of medians: ~1 for a
  generator that samples the distribution, -> 0 for one that copies its training images. Fraction:
  synthetic images closer than the 5th percentile of the real-validation distances (~0.05 for an
  honest generator, 1 for copies). Pixel space, because a copy is a pixel-level fact and a
  classifier's features are built to be invariant to what makes two images different.
- The three a reader reads first: `gen_fd_ratio`, the synthetic FD divided by the FD of the fold's
  real validation images against the same training images (1 = as close as fresh real images; the
  synthetic side is a random subset of the validation set's size, since FD's estimate grows as the
  sample shrinks); `gen_tstr_auc`, train on synthetic, test on real: the AUC on the fold's real
  validation images of a classifier (the trial's classifier config) trained on synthetic images
  only; `gen_memorized`, the memorisation fraction above.

Our choices where the papers are vague: the real side of FD/PRDC is the fold's training images
(what the GAN was fitted to, and more samples than the validation set for the covariance);
metrics pool all classes; distances are Euclidean.

Real-side work (feature classifier, features, mean/cov, k-NN radii, validation distances) is done
once per fold: `RealReferenceCache.get(...)` builds a `RealReference` on a miss and reuses it while
the fold's images are unchanged; the cache is an object the caller owns (no module-level state,
Ray reuses worker processes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

GEN_METRIC_NAMES = (
    "gen_fd_classifier", "gen_precision", "gen_recall", "gen_density", "gen_coverage",
    "gen_memorisation_ratio", "gen_memorisation_fraction", "gen_fd_ratio", "gen_memorized", "gen_tstr_auc",
)
GEN_HEADLINE_NAMES = ("gen_fd_ratio", "gen_tstr_auc", "gen_memorized")
"""The generative metrics the leaderboard shows."""


# --- Features ---------------------------------------------------------------------------------


def final_linear(model: nn.Module) -> nn.Linear:
    """The output layer: the last nn.Linear registered (SmallCNN head[-1], MONAI ResNet fc,
    Xception fc)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer to take features before")
    return linears[-1]


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Penultimate-layer features (N, D) float32: the input of the final linear layer, taken by a
    forward pre-hook in eval mode (dropout off, batch-norm running statistics)."""
    head = final_linear(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().flatten(1)))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured).float()


# --- Fréchet distance -------------------------------------------------------------------------


def gaussian_fit(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64."""
    x = np.asarray(feats.cpu() if isinstance(feats, torch.Tensor) else feats, dtype=np.float64)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    Tr (C1 C2)^(1/2) = Tr (C1^(1/2) C2 C1^(1/2))^(1/2): the right side is symmetric PSD, so it is
    computed with symmetric eigendecompositions, which stay real and stable when the covariances
    are singular (feature dimension above the image count, common on small folds)."""
    s1 = _psd_sqrt(cov1)
    middle = np.linalg.eigvalsh(s1 @ cov2 @ s1)
    tr_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt, 0.0))


def fd_classifier(model: nn.Module, real_images: torch.Tensor, synthetic_images: torch.Tensor) -> float:
    """Fréchet distance of synthetic vs real images in `model`'s penultimate feature space (the
    model must have been trained on the fold's real training images only)."""
    return frechet_distance(
        *gaussian_fit(features(model, real_images)), *gaussian_fit(features(model, synthetic_images))
    )


# --- Precision / recall / density / coverage (Naeem et al. 2020) ------------------------------


def _distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Euclidean distances (len(a), len(b)) in float64, in row chunks to bound memory."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return torch.cat([torch.cdist(a[i : i + chunk], b) for i in range(0, len(a), chunk)])


def knn_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point (N,)."""
    if not 1 <= k < len(points):
        raise ValueError(f"PRDC 'k' must be in [1, {len(points) - 1}] for {len(points)} points, got {k}")
    # Column 0 of the sorted distances is the point itself (distance 0).
    return _distances(points, points).kthvalue(k + 1, dim=1).values


def prdc(
    real: torch.Tensor, fake: torch.Tensor, k: int = 5, real_radii: torch.Tensor | None = None
) -> dict[str, float]:
    """Precision, recall, density and coverage of fake (M, D) against real (N, D) features.

    precision: fraction of fakes inside some real k-NN ball; recall: fraction of reals inside some
    fake k-NN ball; density: mean number of real balls holding each fake, / k; coverage: fraction
    of real balls holding at least one fake. Balls are open (distance < radius), as in the
    authors' code."""
    if real_radii is None:
        real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    d = _distances(real, fake)  # (N, M)
    in_real_ball = d < real_radii[:, None]  # fake j inside real i's ball
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float((d < fake_radii[None, :]).any(dim=1).double().mean()),
        "density": float(in_real_ball.double().sum(dim=0).mean() / k),
        "coverage": float((d.min(dim=1).values < real_radii).double().mean()),
    }


# --- Memorisation -----------------------------------------------------------------------------


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Distance of each query image to its nearest reference image (pixel space, flattened)."""
    return _distances(queries, references).min(dim=1).values


def memorisation_from_distances(
    synthetic_distances: torch.Tensor, val_distances: torch.Tensor, quantile: float = 0.05
) -> dict[str, float]:
    """ratio = median nearest-train distance of synthetic / that of real validation images;
    fraction = share of synthetic images nearer to a training image than the `quantile` of the
    real-validation distances."""
    val_median = float(val_distances.median())
    threshold = float(torch.quantile(val_distances.double(), quantile))
    return {
        "ratio": float(synthetic_distances.median()) / val_median if val_median > 0 else float("nan"),
        "fraction": float((synthetic_distances < threshold).double().mean()),
    }


def memorisation(
    synthetic: torch.Tensor, real_train: torch.Tensor, real_val: torch.Tensor, quantile: float = 0.05
) -> dict[str, float]:
    """Memorisation of synthetic images (M, C, H, W) with respect to the real training images,
    calibrated by the real validation images (see memorisation_from_distances)."""
    return memorisation_from_distances(
        nearest_distances(synthetic, real_train), nearest_distances(real_val, real_train), quantile
    )


# --- Per-fold real reference and the flat metrics -----------------------------------------------


@dataclass(frozen=True)
class GenMetricsConfig:
    k: int = 5
    """Neighbours of the k-NN balls for PRDC (Naeem et al. recommend 5)."""
    memorisation_quantile: float = 0.05
    """Quantile of the real-validation nearest-train distances that counts as 'too close'."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"generative metrics 'k' must be >= 1, got {self.k}")
        if not 0 < self.memorisation_quantile < 1:
            raise ValueError(
                f"generative metrics 'memorisation_quantile' must be in (0, 1), got {self.memorisation_quantile}"
            )


@dataclass(frozen=True)
class RealReference:
    """Everything about one fold's real images that the generative metrics reuse."""

    fold_index: int
    fingerprint: str
    """Hash of the fold's real images; a cache hit requires the same images."""
    model: nn.Module
    """Feature classifier trained on the fold's real training images only."""
    features: torch.Tensor
    """(N, D) penultimate features of the real training images."""
    mean: np.ndarray
    cov: np.ndarray
    radii: torch.Tensor
    """(N,) k-NN radii of the real features."""
    train_images: torch.Tensor
    """(N, C, H, W) real training images, for the nearest-neighbour distances."""
    val_distances: torch.Tensor
    """(V,) nearest-real-training-image distance of each real validation image."""
    val_fd: float = float("nan")
    """FD of the real validation images' features against the training images' fit: the floor
    `gen_fd_ratio` divides by."""
    val_count: int = 0
    """Real validation images: the synthetic FD of `gen_fd_ratio` is taken on this many."""
    cfg: GenMetricsConfig = field(default_factory=GenMetricsConfig)


def fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_real_reference(
    model: nn.Module,
    fold_index: int,
    real_train: torch.Tensor,
    real_val: torch.Tensor,
    cfg: GenMetricsConfig = GenMetricsConfig(),
) -> RealReference:
    feats = features(model, real_train)
    mean, cov = gaussian_fit(feats)
    val_fd = frechet_distance(mean, cov, *gaussian_fit(features(model, real_val)))
    return RealReference(
        fold_index=fold_index,
        fingerprint=fingerprint(real_train, real_val),
        model=model,
        features=feats,
        mean=mean,
        cov=cov,
        radii=knn_radii(feats, cfg.k),
        train_images=real_train,
        val_distances=nearest_distances(real_val, real_train),
        val_fd=val_fd,
        val_count=len(real_val),
        cfg=cfg,
    )


class RealReferenceCache:
    """Real-side statistics per fold index, rebuilt only when the fold's images change."""

    def __init__(self) -> None:
        self._refs: dict[int, RealReference] = {}
        self.builds = 0
        """How many references were built (a test and a log line can check the cache works)."""

    def get(
        self,
        fold_index: int,
        real_train: torch.Tensor,
        real_val: torch.Tensor,
        build_model: Callable[[], nn.Module],
        cfg: GenMetricsConfig = GenMetricsConfig(),
    ) -> RealReference:
        """The fold's reference; `build_model()` (train the feature classifier on `real_train`)
        runs only on a miss."""
        ref = self._refs.get(fold_index)
        if ref is None or ref.cfg != cfg or ref.fingerprint != fingerprint(real_train, real_val):
            ref = build_real_reference(build_model(), fold_index, real_train, real_val, cfg)
            self._refs[fold_index] = ref
            self.builds += 1
        return ref


def fd_ratio(ref: RealReference, fake_features: torch.Tensor, seed: int = 0) -> float:
    """FD of `ref.val_count` synthetic features (a seeded random subset; all when fewer) against
    the training fit, divided by the real validation images' FD (`ref.val_fd`)."""
    n = min(len(fake_features), ref.val_count)
    if n < 2 or not ref.val_fd > 0:
        return float("nan")
    pick = torch.randperm(len(fake_features), generator=torch.Generator().manual_seed(seed))[:n]
    return frechet_distance(ref.mean, ref.cov, *gaussian_fit(fake_features[pick.to(fake_features.device)])) / ref.val_fd


def tstr_auc(fit: Callable[[torch.Tensor, torch.Tensor], nn.Module],
             predict: Callable[[nn.Module, torch.Tensor], torch.Tensor], synthetic: torch.Tensor,
             synthetic_labels: torch.Tensor, val_images: torch.Tensor, val_labels: torch.Tensor,
             num_classes: int, positive: int) -> float:
    """Train on synthetic, test on real: `fit(synthetic, labels)` -> a classifier whose AUC on the
    real validation images is returned; NaN when the synthetic images miss a class (synth.classes
    'minority'), since a classifier that never saw a class cannot rank it."""
    from .metrics import classification_metrics

    if len(torch.unique(synthetic_labels)) < num_classes:
        return float("nan")
    proba = predict(fit(synthetic, synthetic_labels), val_images).cpu().numpy()
    return classification_metrics(val_labels.cpu().numpy(), proba, positive=positive)["auc"]


def generative_metrics(ref: RealReference, synthetic: torch.Tensor) -> dict[str, float]:
    """Synthetic images (M, C, H, W) of the fold against its real reference -> the flat floats
    named in GEN_METRIC_NAMES but gen_tstr_auc (which trains a classifier: `tstr_auc`)."""
    fake = features(ref.model, synthetic)
    pr = prdc(ref.features, fake, ref.cfg.k, real_radii=ref.radii)
    mem = memorisation_from_distances(
        nearest_distances(synthetic, ref.train_images), ref.val_distances, ref.cfg.memorisation_quantile
    )
    return {
        "gen_fd_classifier": frechet_distance(ref.mean, ref.cov, *gaussian_fit(fake)),
        "gen_precision": pr["precision"],
        "gen_recall": pr["recall"],
        "gen_density": pr["density"],
        "gen_coverage": pr["coverage"],
        "gen_memorisation_ratio": mem["ratio"],
        "gen_memorisation_fraction": mem["fraction"],
        "gen_fd_ratio": fd_ratio(ref, fake),
        "gen_memorized": mem["fraction"],
    }
