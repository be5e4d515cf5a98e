"""GAN families, selected by name from the space file through this explicit registry."""

from .base import DivergedError, GANConfig, TrainedGAN
from .dcgan import fit_dcgan

GANS = {
    "dcgan": fit_dcgan,
}
"""family name -> fit(cfg, images, *, seed, device, report) -> TrainedGAN"""

__all__ = ["GANS", "GANConfig", "TrainedGAN", "DivergedError"]
