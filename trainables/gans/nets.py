"""DCGAN generator and discriminator (Radford et al.) for square images of 28, 64, 80... px."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def upsampling_plan(size: int) -> tuple[int, int]:
    """(start size, number of stride-2 stages): the most stages leaving a start side >= 4.
    28 -> (7, 2), 64 -> (4, 4), 80 -> (5, 4)."""
    stages = 0
    while size % 2 ** (stages + 1) == 0 and size // 2 ** (stages + 1) >= 4:
        stages += 1
    if stages == 0:
        raise ValueError(f"image size {size} must be divisible by 2 with a side >= 4 left")
    return size // 2**stages, stages


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolutions and N(1, 0.02) BatchNorm scales, as in the DCGAN paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent) -> project to (width, s0, s0) -> stride-2 transposed convs -> tanh image.

    Class-conditional (num_classes > 0): a learned class embedding is concatenated to z (cGAN), so
    one generator shares what the classes have in common."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        start, stages = upsampling_plan(size)
        widths = [max(width // 2**i, 16) for i in range(stages)]  # wide -> narrow
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        z_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Sequential(
            nn.ConvTranspose2d(z_dim, widths[0], start, 1, 0, bias=False),  # (B, w0, s0, s0)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for i in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1, bias=False),
                nn.BatchNorm2d(widths[i + 1]),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[stages - 1], channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z, labels=None):
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.body(self.project(z[:, :, None, None]))


class DCGANDiscriminator(nn.Module):
    """Image -> stride-2 convs with BatchNorm and LeakyReLU(0.2) -> one logit; no pooling, no
    dense layers.

    spectral_norm: every conv spectrally normalised and no BatchNorm (Miyato et al. 2018), which
    bounds D's Lipschitz constant, the usual companion of the hinge loss.
    num_classes > 0: a projection discriminator (Miyato & Koyama 2018), logit = f(h) + <embed(y), sum h>."""

    def __init__(self, channels: int, size: int, width: int = 64, spectral: bool = False, num_classes: int = 0) -> None:
        super().__init__()
        start, stages = upsampling_plan(size)
        widths = [max(width // 2**i, 16) for i in range(stages)][::-1]  # narrow -> wide

        def sn(module: nn.Module) -> nn.Module:
            if not spectral:
                return module  # initialised with the rest below, in the same order as ever
            # Initialise before wrapping: a parametrised weight is recomputed, so init on it is lost.
            module.apply(init_dcgan_weights)
            return spectral_norm(module)

        layers: list[nn.Module] = [sn(nn.Conv2d(channels, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for i in range(1, stages):
            layers += [sn(nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=spectral))]
            layers += [] if spectral else [nn.BatchNorm2d(widths[i])]
            layers += [nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)  # (B, w, s0, s0)
        self.head = sn(nn.Conv2d(widths[-1], 1, start, 1, 0))  # (B, 1, 1, 1) logit
        self.embed = sn(nn.Embedding(num_classes, widths[-1])) if num_classes else None
        if not spectral:
            self.apply(init_dcgan_weights)

    def forward(self, x, labels=None):
        h = self.features(x)
        logit = self.head(h).flatten(1)  # (B, 1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1, keepdim=True)
        return logit
