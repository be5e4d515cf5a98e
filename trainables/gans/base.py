"""What every GAN family shares: its config and the trained result. The loop plumbing they share
with the classifier lives in trainables/loop.py (re-exported here for the GAN loops)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..loop import DivergedError, Report, RunningMeans, real_batches, report_due  # noqa: F401 - re-exported


@dataclass(frozen=True)
class GANConfig:
    family: str = "dcgan"
    """Registry key of the GAN family (see gantune.trainables.gans.GANS)."""
    latent_dim: int = 100
    """Length of the latent vector z."""
    lr: float = 2e-4
    """Adam learning rate of generator and discriminator (DCGAN paper: 2e-4)."""
    beta1: float = 0.5
    """Adam beta1 (DCGAN paper: 0.5)."""
    batch_size: int = 64
    """Real images per discriminator step (capped at the class size)."""
    steps: int = 300
    """Discriminator/generator update rounds per generator."""
    width: int = 64
    """Feature maps of the widest generator layer; the discriminator mirrors it."""
    gamma: float = 0.5
    """E-GAN: weight of the diversity fitness F_d against quality F_q (>= 0)."""
    alpha: float = 0.2
    """Mixup discriminator: lam ~ Beta(alpha, alpha) (> 0)."""
    mixture_components: int = 0
    """DAE-GAN: Gaussian-mixture latent with K components (means and stds fixed, drawn from the
    seed); 0 = plain N(0, I). The paper does not give K; the other families ignore it."""
    mutations: str = "minimax,heuristic,least_squares"
    """E-GAN / DAE-GAN: comma-separated generator mutations, one child each per iteration
    (names in gantune.trainables.gans.egan.MUTATIONS)."""
    d_steps: int = 1
    """E-GAN / DAE-GAN: discriminator updates per evolution iteration (n_D of Wang et al.)."""
    log_every: int = 50
    """Report the running losses every this many steps."""

    def to_dict(self) -> dict:
        return asdict(self)


class LatentSampler(Protocol):
    def __call__(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor: ...


def normal_latent(latent_dim: int) -> LatentSampler:
    def sample(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.randn(n, latent_dim, generator=generator, device=device)

    return sample


@dataclass
class TrainedGAN:
    """A trained generator with its discriminator (for score filtering) and latent sampler."""

    config: GANConfig
    generator: nn.Module
    discriminator: nn.Module
    latent: LatentSampler
    image_shape: tuple[int, int, int]
    history: dict[str, list[float]] = field(default_factory=dict)

    @torch.no_grad()
    def sample(self, n: int, seed: int, batch: int = 256) -> torch.Tensor:
        """n images in [-1, 1], (n, C, H, W), reproducible from `seed`."""
        device = next(self.generator.parameters()).device
        rng = torch.Generator(device).manual_seed(seed)
        self.generator.eval()
        chunks = [
            self.generator(self.latent(min(batch, n - i), rng, device)) for i in range(0, n, batch)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, *self.image_shape, device=device)

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's probability that each image is real, (n,)."""
        self.discriminator.eval()
        return torch.sigmoid(self.discriminator(images).reshape(len(images), -1).mean(dim=1))

    def state(self) -> dict:
        """A checkpoint: state_dicts, shapes and config; never a pickled module."""
        return {
            "config": self.config.to_dict(),
            "image_shape": list(self.image_shape),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            # A mixture latent's fixed means/stds are part of the model; N(0, I) has no state.
            "latent": self.latent.state_dict() if isinstance(self.latent, nn.Module) else {},
        }
