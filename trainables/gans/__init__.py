"""GAN families, selected by name from the space file through explicit registries."""

from __future__ import annotations

import torch

from .base import DivergedError, GANConfig, TrainedGAN, normal_latent
from .dcgan import build_dcgan_pair, fit_dcgan

GANS = {
    "dcgan": fit_dcgan,
}
"""family -> fit(cfg, images, *, seed, device, report) -> TrainedGAN"""

NETWORKS = {
    "dcgan": build_dcgan_pair,
}
"""family -> build(cfg, image_shape, device) -> (generator, discriminator), to rebuild from a
checkpoint."""


def generator_checkpoint(gans: dict[int, TrainedGAN], class_names: tuple[str, ...]) -> dict:
    """All per-class GANs of a trial as one dict of state_dicts (never pickled modules)."""
    return {"class_names": list(class_names), "gans": {str(c): g.state() for c, g in gans.items()}}


def load_generators(path: str, device: str | torch.device = "cpu") -> dict[int, TrainedGAN]:
    """Rebuild per-class GANs from `generator_checkpoint`'s file; weights only, no unpickling."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    loaded = {}
    for label, state in checkpoint["gans"].items():
        cfg = GANConfig(**state["config"])
        shape = tuple(state["image_shape"])
        generator, discriminator = NETWORKS[cfg.family](cfg, shape, torch.device(device))
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        loaded[int(label)] = TrainedGAN(cfg, generator, discriminator, normal_latent(cfg.latent_dim), shape)
    return loaded


__all__ = ["GANS", "NETWORKS", "GANConfig", "TrainedGAN", "DivergedError", "generator_checkpoint", "load_generators"]
