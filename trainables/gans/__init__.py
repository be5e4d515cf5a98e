"""GAN families, selected by name from the space file through explicit registries."""

from __future__ import annotations

import torch

from .base import DivergedError, GANConfig, TrainedGAN
from .daegan import build_daegan_pair, fit_daegan, restore_latent
from .dcgan import build_dcgan_pair, fit_dcgan
from .egan import fit_egan
from .filter import sample_filtered, score_filter
from .simgan import LocalDiscriminator, Refiner, RefinerConfig, TrainedRefiner, fit_refiner

GANS = {
    "dcgan": fit_dcgan,
    "egan": fit_egan,
    "daegan": fit_daegan,
}
"""family -> fit(cfg, images, *, seed, device, report) -> TrainedGAN"""

NETWORKS = {
    "dcgan": build_dcgan_pair,
    "egan": build_dcgan_pair,
    "daegan": build_daegan_pair,
}
"""family -> build(cfg, image_shape, device) -> (generator, discriminator), to rebuild from a
checkpoint."""

REFINERS = {
    "simgan": fit_refiner,
}
"""refiner name -> fit(cfg: RefinerConfig, synthetic, real, *, seed, device, report) -> TrainedRefiner"""

FILTERS = {
    "d_score": sample_filtered,
}
"""filter name -> sample(gan, n, threshold, seed, max_rounds) -> (images, fraction kept)"""


def generator_checkpoint(
    gans: dict[int, TrainedGAN], class_names: tuple[str, ...], refiners: dict[int, TrainedRefiner] | None = None,
    filter_threshold: float = 0.0,
) -> dict:
    """All per-class GANs (and refiners) of a trial as one dict of state_dicts, never pickled
    modules, with the discriminator-score threshold its synthetic images passed (0 = none), so
    images generated later are drawn exactly as the trial drew them."""
    return {
        "class_names": list(class_names),
        "gans": {str(c): g.state() for c, g in gans.items()},
        "refiners": {str(c): r.state() for c, r in (refiners or {}).items()},
        "filter_threshold": float(filter_threshold),
    }


def restore_refiner(state: dict, device: torch.device) -> TrainedRefiner:
    cfg = RefinerConfig(**state["config"])
    channels = state["refiner"]["body.0.weight"].shape[1]  # first conv: (width, C, 3, 3)
    refiner = Refiner(channels, cfg.width).to(device)
    discriminator = LocalDiscriminator(channels, cfg.width, cfg.spectral_norm).to(device)
    refiner.load_state_dict(state["refiner"])
    discriminator.load_state_dict(state["discriminator"])
    return TrainedRefiner(cfg, refiner, discriminator)


def load_refiners(path: str, device: str | torch.device = "cpu") -> dict[int, TrainedRefiner]:
    """Rebuild per-class SimGAN refiners from `generator_checkpoint`'s file ({} when none)."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    return {
        int(label): restore_refiner(state, torch.device(device))
        for label, state in checkpoint.get("refiners", {}).items()
    }


def restore_gan(state: dict, device: torch.device) -> TrainedGAN:
    """A TrainedGAN from its `state()` (weights only): the family's networks rebuilt and loaded."""
    cfg = GANConfig(**state["config"])
    shape = tuple(state["image_shape"])
    num_classes = int(state.get("num_classes", 0))
    build = NETWORKS[cfg.family]
    generator, discriminator = build(cfg, shape, device, num_classes) if num_classes else build(cfg, shape, device)
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    latent = restore_latent(cfg, state.get("latent", {}), device)
    label = int(state.get("label", -1))
    return TrainedGAN(cfg, generator, discriminator, latent, shape, num_classes=num_classes,
                      label=None if label < 0 else label)


def load_generators(path: str, device: str | torch.device = "cpu") -> dict[int, TrainedGAN]:
    """Rebuild per-class GANs from `generator_checkpoint`'s file; weights only, no unpickling.
    A conditional GAN comes back once per class, each seen through `for_class`."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    return {int(label): restore_gan(state, torch.device(device)) for label, state in checkpoint["gans"].items()}


__all__ = [
    "GANS",
    "NETWORKS",
    "REFINERS",
    "FILTERS",
    "GANConfig",
    "TrainedGAN",
    "DivergedError",
    "RefinerConfig",
    "TrainedRefiner",
    "generator_checkpoint",
    "load_generators",
    "restore_gan",
    "load_refiners",
    "sample_filtered",
    "score_filter",
]
