"""Discriminator-score filter (eye paper): keep a synthetic image only if the GAN's own
discriminator gives it a probability of being real >= a threshold (0.76 there)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .base import TrainedGAN


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"'synth.filter_threshold' must be in [0, 1], got {threshold}")  # the space key


def score_filter(gan: TrainedGAN, images: torch.Tensor, threshold: float) -> tuple[torch.Tensor, float]:
    """(images with D(x) >= threshold, in their order; fraction kept)."""
    check_threshold(threshold)
    if len(images) == 0:
        return images, 0.0
    keep = gan.score(images) >= threshold
    return images[keep.to(images.device)], float(keep.float().mean())


def sample_filtered(
    gan: TrainedGAN, n: int, threshold: float, seed: int, max_rounds: int = 10
) -> tuple[torch.Tensor, float]:
    """Draw, score and keep until n images pass or max_rounds rounds are done (`oversample`).
    Returns (at most n kept images, fraction of all drawn images that passed)."""
    check_threshold(threshold)
    if n <= 0:
        return torch.empty(0, *gan.image_shape), 1.0
    return oversample(lambda k, s: gan.sample(k, seed=s), lambda x: gan.score(x) >= threshold, n, seed, max_rounds)


def oversample(
    sample: Callable[[int, int], torch.Tensor], keep: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int,
    max_rounds: int = 10,
) -> tuple[torch.Tensor, float]:
    """Draw `sample(k, latent_seed)`, keep what `keep` marks (a bool per image), until n are kept
    or max_rounds rounds are done. Returns (at most n kept images in draw order, fraction of all
    drawn images kept). Deterministic given `seed`: each round's latent seed comes from one numpy
    generator. Round 1 draws n; later rounds draw what is missing divided by the pass rate so far
    (at least 5 % assumed, at most 10 n per round)."""
    if max_rounds < 1:
        raise ValueError(f"'filter.max_rounds' must be >= 1, got {max_rounds}")
    round_seeds = np.random.default_rng(seed)
    kept: list[torch.Tensor] = []
    n_kept = drawn = passed = 0
    draw = n
    for _ in range(max_rounds):
        images = sample(draw, int(round_seeds.integers(2**62)))
        good = images[keep(images).to(images.device)]
        drawn, passed = drawn + draw, passed + len(good)
        kept.append(good[: n - n_kept])
        n_kept += len(kept[-1])
        if n_kept >= n:
            break
        rate = max(passed / drawn, 0.05)
        draw = min(math.ceil((n - n_kept) / rate), 10 * n)
    return torch.cat(kept), passed / drawn
