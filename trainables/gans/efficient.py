"""Data-efficient GAN training, shared by every family: DiffAugment (with an ADA-style adaptive
probability), an EMA generator, LeCam regularisation and the hinge loss.

At a few hundred images per class the discriminator memorises the training set and stops telling
the generator anything useful; augmenting everything D sees (real and fake, in the D and the G
step) is the best-replicated remedy (Zhao et al. 2020: FID roughly halved at 100-1k images).
Images are (N, C, H, W) in [-1, 1] on the device; every random draw comes from the caller's
torch.Generator, so a seed reproduces the run."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# --- DiffAugment (Zhao et al. 2020, DiffAugment_pytorch.py), differentiable in the images ---


def brightness(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """x + b, b ~ U[-0.5, 0.5) per image."""
    return x + (torch.rand(len(x), 1, 1, 1, generator=rng, device=x.device, dtype=x.dtype) - 0.5)


def contrast(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(x - mean) * c + mean, c ~ U[0.5, 1.5) per image, mean over each image's pixels and channels.
    (DiffAugment's saturation op averages over channels, a no-op on grayscale, so it is left out.)"""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = torch.rand(len(x), 1, 1, 1, generator=rng, device=x.device, dtype=x.dtype) + 0.5
    return (x - mean) * c + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels, up to ratio * side per axis, zero padded (0 = mid-grey)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=rng, device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=rng, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output pixel
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (n, 1, h, w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    shifted = x.flatten(2).gather(2, flat).view_as(x)
    return shifted * inside


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio * side per image at a random centre (clipped at the borders)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch) & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


DIFF_AUGMENT_OPS = {
    "brightness": brightness,
    "contrast": contrast,
    "translation": translation,
    "cutout": cutout,
}
"""op name -> (images, generator) -> images; `gan.diffaugment` lists them comma-separated,
applied in the order given."""


def parse_policy(policy: str) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' -> () (off)."""
    names = tuple(n.strip() for n in policy.split(",") if n.strip())
    unknown = [n for n in names if n not in DIFF_AUGMENT_OPS]
    if unknown:
        raise ValueError(f"'gan.diffaugment' ops must be among {sorted(DIFF_AUGMENT_OPS)}, got {unknown}")
    return names


def diff_augment(x: torch.Tensor, ops: tuple[str, ...], rng: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Every op on every image (p = 1, DiffAugment), or on each image with probability p (ADA)."""
    if not ops or p <= 0:
        return x
    out = x
    for name in ops:
        out = DIFF_AUGMENT_OPS[name](out, rng)
    if p >= 1:
        return out
    keep = torch.rand(len(x), 1, 1, 1, generator=rng, device=x.device) < p
    return torch.where(keep, out, x)


class AugmentedDiscriminator(nn.Module):
    """D(T(x)): what the training loops call instead of D, so real and fake images are augmented
    the same way in the discriminator and the generator step of every family. The plain D (no T)
    is what the score filter and the checkpoint keep.

    `p` is the augmentation probability: 1 for DiffAugment; adapted by `AdaptiveP` for ADA."""

    def __init__(self, discriminator: nn.Module, ops: tuple[str, ...], rng: torch.Generator, p: float = 1.0) -> None:
        super().__init__()
        self.inner, self.ops, self.rng, self.p = discriminator, ops, rng, p

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.inner(diff_augment(x, self.ops, self.rng, self.p), *args)


class AdaptiveP:
    """ADA's controller (Karras et al. 2020): every `interval` D steps, move p by
    sign(r_t - target) * batch * interval / speed_images, r_t = E[sign(D(real))] since the last
    move. r_t near 1 means D is sure about every real image, i.e. overfitting."""

    def __init__(self, target: float, speed_images: int = 20_000, interval: int = 4) -> None:
        self.target, self.speed, self.interval = target, speed_images, interval
        self.p, self.signs, self.count, self.steps = 0.0, None, 0, 0

    def observe(self, real_logits: torch.Tensor) -> None:
        s = torch.sign(real_logits.detach()).sum()  # stays on the device; read every `interval` steps
        self.signs = s if self.signs is None else self.signs + s
        self.count += real_logits.numel()
        self.steps += 1

    def update(self, batch: int) -> float:
        if self.steps >= self.interval and self.count:
            r_t = float(self.signs) / self.count
            step = batch * self.interval / self.speed
            self.p = min(1.0, max(0.0, self.p + (step if r_t > self.target else -step)))
            self.signs, self.count, self.steps = None, 0, 0
        return self.p


# --- EMA generator ---


class GeneratorEMA:
    """An exponential moving average of the generator's weights, used for sampling and kept in the
    checkpoint: G_ema <- beta * G_ema + (1 - beta) * G after every generator step; BatchNorm
    running statistics are copied (as StyleGAN2-ADA does with buffers)."""

    def __init__(self, generator: nn.Module, beta: float) -> None:
        self.beta = beta
        self.model = copy.deepcopy(generator).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module) -> None:
        for ema, p in zip(self.model.parameters(), generator.parameters()):
            ema.lerp_(p.detach(), 1.0 - self.beta)
        for ema, b in zip(self.model.buffers(), generator.buffers()):
            ema.copy_(b)


# --- Losses and regularisers ---


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake_logits.mean()


class LeCam:
    """LeCam regularisation (Tseng et al. 2021): R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2],
    a_real / a_fake EMAs (decay 0.99) of D's mean outputs; keeps D's predictions from drifting
    apart when it starts to memorise. Added to the D loss with a weight (paper: 0.3)."""

    def __init__(self, decay: float = 0.99) -> None:
        self.decay = decay
        self.ema_real: torch.Tensor | None = None
        self.ema_fake: torch.Tensor | None = None

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real_mean, fake_mean = real_logits.detach().mean(), fake_logits.detach().mean()
        if self.ema_real is None:
            self.ema_real, self.ema_fake = real_mean, fake_mean
        else:
            self.ema_real = self.decay * self.ema_real + (1 - self.decay) * real_mean
            self.ema_fake = self.decay * self.ema_fake + (1 - self.decay) * fake_mean
        return F.relu(real_logits - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake_logits).pow(2).mean()


def data_efficient(cfg, generator: nn.Module, discriminator: nn.Module, rng: torch.Generator):
    """(the D a loop trains through, ADA controller or None, generator EMA or None) for a GANConfig:
    D wrapped in DiffAugment when gan.diffaugment names ops (p = 1, or adapted from 0 toward
    gan.ada_target), and an EMA of G when gan.ema > 0."""
    ops = parse_policy(cfg.diffaugment)
    ada = AdaptiveP(cfg.ada_target) if ops and cfg.ada_target > 0 else None
    trained_d = AugmentedDiscriminator(discriminator, ops, rng, p=0.0 if ada else 1.0) if ops else discriminator
    ema = GeneratorEMA(generator, cfg.ema) if cfg.ema > 0 else None
    return trained_d, ada, ema
