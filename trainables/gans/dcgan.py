"""DCGAN training loop: the standard discriminator loss and the non-saturating generator loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import (
    GANConfig,
    Report,
    RunningMeans,
    TrainedGAN,
    normal_latent,
    real_batches,
    report_due,
)
from .nets import DCGANDiscriminator, DCGANGenerator


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = -E[log D(x)] - E[log(1 - D(G(z)))], on logits for stability."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[log D(G(z))] (the usual DCGAN generator objective)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def adam(params, cfg: GANConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, 0.999))


def build_dcgan_pair(cfg: GANConfig, image_shape: tuple[int, int, int], device: torch.device):
    channels, size, _ = image_shape
    generator = DCGANGenerator(cfg.latent_dim, channels, size, cfg.width).to(device)
    discriminator = DCGANDiscriminator(channels, size, cfg.width).to(device)
    return generator, discriminator


def dcgan_step(generator, discriminator, opt_g, opt_d, real: torch.Tensor, z: torch.Tensor):
    """One DCGAN update: a discriminator step, then a generator step on the same fakes.
    Returns (loss_d, loss_g) as graph-free tensors."""
    # --- Discriminator step ---
    fake = generator(z)
    loss_d = discriminator_loss(discriminator(real), discriminator(fake.detach()))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # --- Generator step ---
    loss_g = nonsaturating_generator_loss(discriminator(fake))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_d.detach(), loss_g.detach()


def fit_dcgan(
    cfg: GANConfig, images: torch.Tensor, *, seed: int, device: torch.device, report: Report | None = None
) -> TrainedGAN:
    """Train one DCGAN on `images` ((N, C, H, W) in [-1, 1], already on `device`)."""
    torch.manual_seed(seed)  # network initialisation
    rng = torch.Generator(device).manual_seed(seed)
    image_shape = tuple(images.shape[1:])
    generator, discriminator = build_dcgan_pair(cfg, image_shape, device)
    latent = normal_latent(cfg.latent_dim)
    opt_g, opt_d = adam(generator.parameters(), cfg), adam(discriminator.parameters(), cfg)
    batches = real_batches(images, cfg.batch_size, rng)
    means = RunningMeans()
    generator.train(), discriminator.train()
    for step in range(1, cfg.steps + 1):
        real = next(batches)
        loss_d, loss_g = dcgan_step(generator, discriminator, opt_g, opt_d, real, latent(len(real), rng, device))
        means.add(loss_d=loss_d, loss_g=loss_g)
        if report_due(step, cfg):
            flushed = means.flush(step)
            if report:
                report(step, flushed)
    return TrainedGAN(cfg, generator, discriminator, latent, image_shape, means.history)
