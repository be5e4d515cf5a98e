"""DCGAN training loop: the standard discriminator loss and the non-saturating generator loss."""

from __future__ import annotations

from dataclasses import dataclass

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
from .efficient import LeCam, data_efficient, hinge_discriminator_loss, hinge_generator_loss
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


def build_dcgan_pair(cfg: GANConfig, image_shape: tuple[int, int, int], device: torch.device, num_classes: int = 0):
    channels, size, _ = image_shape
    generator = DCGANGenerator(cfg.latent_dim, channels, size, cfg.width, num_classes).to(device)
    discriminator = DCGANDiscriminator(channels, size, cfg.width, cfg.spectral_norm, num_classes).to(device)
    return generator, discriminator


@dataclass
class DCGANLosses:
    """The D and G objectives of one configuration: BCE or hinge, plus LeCam on D."""

    cfg: GANConfig
    lecam: LeCam | None = None

    def __post_init__(self) -> None:
        if self.cfg.loss not in LOSSES:
            raise ValueError(f"'gan.loss' must be one of {sorted(LOSSES)}, got {self.cfg.loss!r}")
        if self.cfg.lecam > 0:
            self.lecam = LeCam()

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        loss = LOSSES[self.cfg.loss][0](real_logits, fake_logits)
        if self.lecam is not None:
            loss = loss + self.cfg.lecam * self.lecam(real_logits, fake_logits)
        return loss

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.cfg.loss][1](fake_logits)


LOSSES = {
    "bce": (discriminator_loss, nonsaturating_generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
}
"""gan.loss -> (D loss on (real, fake) logits, G loss on fake logits)."""


def dcgan_step(generator, discriminator, opt_g, opt_d, real: torch.Tensor, z: torch.Tensor,
               losses: DCGANLosses | None = None, labels: torch.Tensor | None = None):
    """One DCGAN update: a discriminator step, then a generator step on the same fakes (a
    conditional pair gets the real images' labels for both). Returns (loss_d, loss_g, real_logits)
    as graph-free tensors."""
    cond = () if labels is None else (labels,)
    d_loss = losses.discriminator if losses else discriminator_loss
    g_loss = losses.generator if losses else nonsaturating_generator_loss
    # --- Discriminator step ---
    fake = generator(z, *cond)
    real_logits = discriminator(real, *cond)
    loss_d = d_loss(real_logits, discriminator(fake.detach(), *cond))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # --- Generator step ---
    loss_g = g_loss(discriminator(fake, *cond))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_d.detach(), loss_g.detach(), real_logits.detach()


def fit_dcgan(
    cfg: GANConfig, images: torch.Tensor, *, seed: int, device: torch.device, report: Report | None = None,
    labels: torch.Tensor | None = None, num_classes: int = 0,
) -> TrainedGAN:
    """Train one DCGAN on `images` ((N, C, H, W) in [-1, 1], already on `device`); with
    `labels` and num_classes > 0, one class-conditional DCGAN on all of them."""
    torch.manual_seed(seed)  # network initialisation
    rng = torch.Generator(device).manual_seed(seed)
    image_shape = tuple(images.shape[1:])
    conditional = labels is not None and num_classes > 0
    generator, discriminator = build_dcgan_pair(cfg, image_shape, device, num_classes if conditional else 0)
    latent = normal_latent(cfg.latent_dim)
    opt_g, opt_d = adam(generator.parameters(), cfg), adam(discriminator.parameters(), cfg)
    trained_d, ada, ema = data_efficient(cfg, generator, discriminator, rng)
    losses = DCGANLosses(cfg)
    batches = real_batches(images, cfg.batch_size, rng, labels if conditional else None)
    means = RunningMeans()
    generator.train(), discriminator.train()
    for step in range(1, cfg.steps + 1):
        real, real_labels = next(batches) if conditional else (next(batches), None)
        z = latent(len(real), rng, device)
        loss_d, loss_g, real_logits = dcgan_step(generator, trained_d, opt_g, opt_d, real, z, losses, real_labels)
        # --- Data-efficient extras: generator EMA, adaptive augmentation probability ---
        if ema is not None:
            ema.update(generator)
        if ada is not None:
            ada.observe(real_logits)
            trained_d.p = ada.update(len(real))
        means.add(loss_d=loss_d, loss_g=loss_g)
        if report_due(step, cfg):
            flushed = means.flush(step)
            if ada is not None:
                means.history.setdefault("ada_p", []).append(ada.p)
            if report:
                report(step, flushed)
    sampler = ema.model if ema is not None else generator
    return TrainedGAN(cfg, sampler, discriminator, latent, image_shape, means.history,
                      num_classes=num_classes if conditional else 0)
