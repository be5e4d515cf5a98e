"""DCGAN generator and discriminator (Radford et al.) for square images of 28, 64, 80... px."""

from __future__ import annotations

from torch import nn


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
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent) -> project to (width, s0, s0) -> stride-2 transposed convs -> tanh image."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        start, stages = upsampling_plan(size)
        widths = [max(width // 2**i, 16) for i in range(stages)]  # wide -> narrow
        self.project = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, widths[0], start, 1, 0, bias=False),  # (B, w0, s0, s0)
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

    def forward(self, z):
        return self.body(self.project(z[:, :, None, None]))


class DCGANDiscriminator(nn.Module):
    """Image -> stride-2 convs with BatchNorm and LeakyReLU(0.2) -> one logit; no pooling, no
    dense layers."""

    def __init__(self, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        start, stages = upsampling_plan(size)
        widths = [max(width // 2**i, 16) for i in range(stages)][::-1]  # narrow -> wide
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for i in range(1, stages):
            layers += [
                nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, start, 1, 0))  # (B, 1, 1, 1) logit
        self.body = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, x):
        return self.body(x).flatten(1)  # (B, 1)
