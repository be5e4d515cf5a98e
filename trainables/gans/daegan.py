"""DAE-GAN (cardiac paper): E-GAN selection + mixup discriminator + Gaussian-mixture latent +
residual / self-attention networks. The evolution loop is egan.fit_evolutionary; this module
only supplies the parts that differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torch.nn.utils.parametrizations import spectral_norm

from .base import GANConfig, LatentSampler, Report, TrainedGAN, normal_latent
from .efficient import LeCam
from .egan import DiscriminatorLoss, fit_evolutionary
from .nets import upsampling_plan

# --- Mixup discriminator loss ---


LAM_BLOCK_BATCHES = 64
"""Batches of mixup coefficients drawn per host-to-device copy."""


class LamSampler:
    """lam ~ Beta(alpha, alpha) on the generator's device, a block of batches at a time.

    torch's Beta sampler takes no generator, so numpy draws the block, seeded from the torch
    generator (one seed per block: still one seed in all, still reproducible), and one copy moves
    it to the device; each batch then slices its lams off the block without a host round trip."""

    def __init__(self, alpha: float, rng: torch.Generator, block_batches: int = LAM_BLOCK_BATCHES) -> None:
        if alpha <= 0:
            raise ValueError(f"'gan.alpha' must be > 0, got {alpha}")
        self.alpha, self.rng, self.block_batches = alpha, rng, block_batches
        self.block, self.cursor = torch.empty(0, device=rng.device), 0

    def __call__(self, n: int) -> torch.Tensor:
        if self.cursor + n > len(self.block):
            seed = int(torch.randint(0, 2**62, (), generator=self.rng, device=self.rng.device))
            lam = np.random.default_rng(seed).beta(self.alpha, self.alpha, size=n * self.block_batches)
            self.block, self.cursor = torch.as_tensor(lam, dtype=torch.float32, device=self.rng.device), 0
        self.cursor += n
        return self.block[self.cursor - n : self.cursor]


def sample_lam(n: int, alpha: float, rng: torch.Generator) -> torch.Tensor:
    """n coefficients lam ~ Beta(alpha, alpha) on rng's device (the first n a LamSampler on the
    same generator state gives)."""
    return LamSampler(alpha, rng, block_batches=1)(n)


def mixup_batch(real: torch.Tensor, fake: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_mix = lam * x + (1 - lam) * G(z) per pair; target = lam (how real the mix is)."""
    w = lam.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1)
    return w * real + (1 - w) * fake, lam.view(-1, 1)


def mixup_d_loss(alpha: float):
    """L_D = E[BCE(D(lam x + (1 - lam) G(z)), lam)], lam ~ Beta(alpha, alpha) per pair."""

    sampler: LamSampler | None = None

    def loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator,
             *cond: torch.Tensor):
        nonlocal sampler
        if sampler is None or sampler.rng is not rng:
            sampler = LamSampler(alpha, rng)
        x_mix, target = mixup_batch(real, fake, sampler(len(real)))
        return F.binary_cross_entropy_with_logits(discriminator(x_mix, *cond), target)  # a pair shares its class

    return loss


def daegan_d_loss(cfg: GANConfig) -> DiscriminatorLoss:
    """The loop's D loss: mixup, plus gan.lecam * LeCam on D's logits for the pure real and fake
    images. The mixup D never sees those otherwise, so with LeCam or ADA (whose p follows the sign
    of D on real images) it takes two more D passes per step; without them, none."""
    mixup = mixup_d_loss(cfg.alpha)
    lecam = LeCam() if cfg.lecam > 0 else None
    needs_pure = lecam is not None or cfg.ada_target > 0

    def loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator,
             *cond: torch.Tensor):
        value = mixup(discriminator, real, fake, rng, *cond)
        if not needs_pure:
            return value, None
        real_logits, fake_logits = discriminator(real, *cond), discriminator(fake, *cond)
        if lecam is not None:
            value = value + cfg.lecam * lecam(real_logits, fake_logits)
        return value, real_logits

    return loss


# --- Gaussian-mixture latent ---


class GaussianMixtureLatent(nn.Module):
    """K fixed Gaussian components with diagonal covariance; sample a component index uniformly,
    then z from it. The paper leaves the initial means/covariances open; ours (as in Ben-Yosef &
    Weinshall's static GM-GAN): means ~ U(-1, 1)^d, stds ~ U(0.5, 1)^d, drawn from `seed`.
    A module so its buffers follow .to(device) and land in the checkpoint."""

    def __init__(self, latent_dim: int, components: int, seed: int) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"'gan.mixture_components' must be >= 1 for a mixture, got {components}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("means", torch.rand(components, latent_dim, generator=g) * 2 - 1)
        self.register_buffer("stds", torch.rand(components, latent_dim, generator=g) * 0.5 + 0.5)

    def sample_with_components(self, n: int, generator: torch.Generator, device: torch.device):
        """(z (n, d), component index (n,))."""
        k = torch.randint(len(self.means), (n,), generator=generator, device=device)
        eps = torch.randn(n, self.means.shape[1], generator=generator, device=device)
        return self.means[k] + self.stds[k] * eps, k

    def forward(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return self.sample_with_components(n, generator, device)[0]


def build_latent(cfg: GANConfig, seed: int, device: torch.device) -> LatentSampler:
    """The mixture if cfg.mixture_components > 0, else N(0, I)."""
    if cfg.mixture_components > 0:
        return GaussianMixtureLatent(cfg.latent_dim, cfg.mixture_components, seed).to(device)
    return normal_latent(cfg.latent_dim)


def restore_latent(cfg: GANConfig, state: dict, device: torch.device) -> LatentSampler:
    """The latent of a checkpoint (TrainedGAN.state()["latent"]): a mixture when the state holds
    one (only DAE-GAN saves one, whatever mixture_components says for other families), else
    N(0, I)."""
    if "means" not in state:
        return normal_latent(cfg.latent_dim)
    latent = GaussianMixtureLatent(cfg.latent_dim, len(state["means"]), 0).to(device)
    latent.load_state_dict(state)
    return latent


# --- Residual + self-attention networks (paper's Table 1) ---


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + g * attention(x), g starts at 0 so the block starts as identity.
    Plain bmm + softmax as in SAGAN (no 1/sqrt(d) scaling); on CPU this is also faster than
    scaled_dot_product_attention's fallback path for these shapes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, c/8)
        k = self.key(x).flatten(2)  # (B, c/8, HW)
        v = self.value(x).flatten(2)  # (B, C, HW)
        attention = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, HW query, HW key)
        out = torch.bmm(v, attention.transpose(1, 2))  # (B, C, HW)
        return x + self.gain * out.view(b, c, h, w)


class GeneratorBlock(nn.Module):
    """BN-ReLU-conv3x3-(2x nearest up)-BN-ReLU-conv3x3 plus a (1x1-projected, upsampled) skip.
    conv1 runs before the upsampling (BigGAN upsamples first): at the output side it would cost
    4x the multiply-adds, and G's last block dominates an iteration's CPU time."""

    def __init__(self, c_in: int, c_out: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _up(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up else x

    def forward(self, x):
        h = self._up(self.conv1(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self._up(self.skip(x))


class DiscriminatorBlock(nn.Module):
    """LReLU-(avg pool 2)-conv3x3-LReLU-conv3x3 plus a (pooled, 1x1-projected) skip. Pooling
    first keeps both convolutions at the lower resolution (4x fewer multiply-adds on CPU; D's
    first, plain conv already sees full resolution). No normalisation, so mixed images are judged
    one by one."""

    def __init__(self, c_in: int, c_out: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def _down(self, x):
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x):
        h = self.conv2(F.leaky_relu(self.conv1(self._down(F.leaky_relu(x, 0.2))), 0.2))
        return h + self.skip(self._down(x))


@dataclass(frozen=True)
class ResidualPlan:
    """Layout of Table 1's networks for one image size. Table 1 has 4 residual blocks in G and D
    (more when an image needs more than 4 stride-2 stages), attention after G's second block and
    after D's first. Our adaptation to 28-80 px on CPU: blocks that do not change the side run at
    the coarsest side (G: first; D: last), where convolutions are cheapest, and attention, which
    costs O((HW)^2), sits where the side is size / 2^ceil(stages/2) (14 px at 28, 16 at 64, 20 at
    80), after the G block and the D block that reach that side (at 64/80 px that is G's second
    block as in Table 1 and D's second, one later than Table 1)."""

    start: int
    """Side of G's first and D's last feature map."""
    g_up: tuple[bool, ...]
    """Per generator block: upsample x2?"""
    g_channels: tuple[int, ...]
    """Generator channels before the first block and after each block (wide -> narrow)."""
    g_attention_after: int
    """Generator block index followed by self-attention."""
    d_down: tuple[bool, ...]
    """Per discriminator block: downsample x2?"""
    d_channels: tuple[int, ...]
    """Discriminator channels after the first conv and after each block (narrow -> wide)."""
    d_attention_after: int
    """Discriminator block index followed by self-attention."""


def residual_plan(size: int, width: int) -> ResidualPlan:
    start, stages = upsampling_plan(size)
    blocks = max(4, stages)
    g_up = tuple(i >= blocks - stages for i in range(blocks))
    g_channels = [width]
    for up in g_up:
        g_channels.append(max(g_channels[-1] // 2, 16) if up else g_channels[-1])
    attention_side = size // 2 ** ((stages + 1) // 2)
    g_sides = [start * 2 ** sum(g_up[: i + 1]) for i in range(blocks)]
    d_down = tuple(i < stages for i in range(blocks))
    d_channels = [max(width // 2**stages, 16)]
    for down in d_down:
        d_channels.append(min(d_channels[-1] * 2, width) if down else d_channels[-1])
    d_sides = [size // 2 ** sum(d_down[: i + 1]) for i in range(blocks)]
    return ResidualPlan(
        start,
        g_up,
        tuple(g_channels),
        g_sides.index(attention_side),
        d_down,
        tuple(d_channels),
        d_sides.index(attention_side),
    )


class ResidualSAGenerator(nn.Module):
    """z -> fully connected -> (C0, s0, s0) -> residual blocks with self-attention -> BN-ReLU ->
    conv3x3 -> tanh."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        plan = residual_plan(size, width)
        self.start, widths = plan.start, plan.g_channels
        # Class-conditional: a learned class embedding concatenated to z, as in the DCGAN generator.
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        self.project = nn.Linear(latent_dim * (2 if num_classes else 1), widths[0] * self.start**2)
        layers: list[nn.Module] = []
        for i, up in enumerate(plan.g_up):
            layers.append(GeneratorBlock(widths[i], widths[i + 1], up))
            if i == plan.g_attention_after:
                layers.append(SelfAttention(widths[i + 1]))
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.body(self.project(z).view(len(z), -1, self.start, self.start))


class ResidualSADiscriminator(nn.Module):
    """Image -> conv3x3 -> residual blocks with self-attention -> LReLU -> fully connected logit.

    num_classes > 0: a projection discriminator (Miyato & Koyama 2018), logit += <embed(y), sum h>
    over the last feature map h. spectral: every convolution, linear layer and the embedding
    spectrally normalised (the D has no normalisation layer to drop)."""

    def __init__(self, channels: int, size: int, width: int = 64, spectral: bool = False,
                 num_classes: int = 0) -> None:
        super().__init__()
        plan = residual_plan(size, width)
        widths = plan.d_channels
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, 1, 1)]
        for i, down in enumerate(plan.d_down):
            layers.append(DiscriminatorBlock(widths[i], widths[i + 1], down))
            if i == plan.d_attention_after:
                layers.append(SelfAttention(widths[i + 1]))
        layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1] * plan.start**2, 1)
        self.embed = nn.Embedding(num_classes, widths[-1]) if num_classes else None
        if spectral:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    spectral_norm(module)

    def forward(self, x, labels=None):
        h = self.body(x)
        logit = self.head(h.flatten(1))  # (B, 1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1, keepdim=True)
        return logit


def build_daegan_pair(cfg: GANConfig, image_shape: tuple[int, int, int], device: torch.device, num_classes: int = 0):
    channels, size, _ = image_shape
    generator = ResidualSAGenerator(cfg.latent_dim, channels, size, cfg.width, num_classes).to(device)
    discriminator = ResidualSADiscriminator(channels, size, cfg.width, cfg.spectral_norm, num_classes).to(device)
    return generator, discriminator


def fit_daegan(
    cfg: GANConfig, images: torch.Tensor, *, seed: int, device: torch.device, report: Report | None = None,
    labels: torch.Tensor | None = None, num_classes: int = 0,
) -> TrainedGAN:
    """DAE-GAN: the E-GAN loop with the mixup D loss (plus LeCam), the mixture latent and
    residual/SA nets (class-conditional with labels). The fitness keeps the standard L_D inside
    F_d (algorithms.md), not the mixup loss."""
    return fit_evolutionary(
        cfg,
        images,
        seed=seed,
        device=device,
        report=report,
        build=build_daegan_pair,
        d_loss=daegan_d_loss(cfg),
        latent=build_latent(cfg, seed, device),
        labels=labels,
        num_classes=num_classes,
    )
