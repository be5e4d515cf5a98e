"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions"),
adapted to the 28-80 px images of small medical datasets.

The paper's network, unchanged in structure:
  entry flow   conv 32 s2 -> conv 64 -> 3 residual blocks of 2 separable convs + max-pool s2
               (128, 256, 728 channels; 1x1 stride-2 convolution on the shortcut)
  middle flow  8 x (3 separable convs of 728, identity shortcut)
  exit flow    residual block (728, 1024) + max-pool s2 -> sep conv 1536 -> sep conv 2048
               -> global average pooling -> dropout 0.5 -> linear
Every convolution is followed by batch norm; separable convolutions have no nonlinearity between
the depthwise and pointwise steps (the paper found that best).

Adaptations (our choices, the paper is about 299 px ImageNet images):
- The paper halves the map 5 times (299 -> 10 px). Here the number of halvings is chosen from the
  input size so the exit map stays at >= 4 px (28 px: 3 halvings -> 4 px; 64 px: 4 -> 4 px;
  80 px: 4 -> 5 px; >= 128 px: all 5). The strides dropped are the earliest ones (stem first),
  as in CIFAR adaptations of ImageNet networks: small images lose their detail in the stem.
- A block that does not downsample skips its max-pool (a 3x3 stride-1 max-pool would only blur)
  and keeps its 1x1 shortcut convolution when the channel count changes.
- `width` multiplies every channel count (at least 8), `middle_repeats` sets the middle flow's
  depth (paper: 8), so tests and CPU searches can use a small network.
"""

from __future__ import annotations

import torch
from torch import nn

ENTRY_CHANNELS = (128, 256)
"""Output channels of the first two entry-flow blocks; the third outputs MIDDLE_CHANNELS."""
MIDDLE_CHANNELS = 728
EXIT_CHANNELS = (1024, 1536, 2048)
"""Exit block output, then the two final separable convolutions."""
DOWNSAMPLING_SITES = 5
"""Stem conv, three entry blocks, exit block: where the paper halves the map."""
MIN_EXIT_SIZE = 4
"""Smallest exit-flow map (px) the size adaptation keeps."""


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 convolution then pointwise 1x1, no bias (batch norm follows) and no
    nonlinearity in between. Parameters: cin * 9 + cin * cout."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel_size, padding=kernel_size // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def separable_bn(cin: int, cout: int) -> list[nn.Module]:
    return [SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]


class XceptionBlock(nn.Module):
    """A residual block of the entry or exit flow: [ReLU] sep conv -> BN -> ReLU -> sep conv -> BN
    [-> max-pool 3x3 s2], plus a 1x1 convolution + BN on the shortcut when the shape changes.

    `start_with_relu=False` is the first entry block, whose input already went through ReLU."""

    def __init__(self, cin: int, mid: int, cout: int, downsample: bool, start_with_relu: bool = True) -> None:
        super().__init__()
        # Not in-place: the shortcut still needs the un-activated input.
        layers: list[nn.Module] = [nn.ReLU()] if start_with_relu else []
        layers += [*separable_bn(cin, mid), nn.ReLU(), *separable_bn(mid, cout)]
        if downsample:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        stride = 2 if downsample else 1
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if downsample or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class MiddleBlock(nn.Module):
    """Middle flow: 3 x (ReLU -> sep conv -> BN) with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [nn.ReLU(), *separable_bn(channels, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def downsampling_plan(size: int) -> list[bool]:
    """Which of the 5 downsampling sites halve the map for a `size` px input (earliest dropped)."""
    halvings, s = 0, size
    while halvings < DOWNSAMPLING_SITES and -(-s // 2) >= MIN_EXIT_SIZE:
        s, halvings = -(-s // 2), halvings + 1
    return [False] * (DOWNSAMPLING_SITES - halvings) + [True] * halvings


class Xception(nn.Module):
    """Xception for (N, channels, size, size) inputs, returning logits (N, num_classes)."""

    def __init__(
        self, channels: int, num_classes: int, size: int, width: float = 1.0, middle_repeats: int = 8
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"classifier 'width' must be > 0, got {width}")
        if middle_repeats < 0:
            raise ValueError(f"classifier 'middle_repeats' must be >= 0, got {middle_repeats}")

        def w(n: int) -> int:
            return max(8, int(round(n * width)))

        stem_down, *block_down = downsampling_plan(size)
        e1, e2 = (w(c) for c in ENTRY_CHANNELS)
        mid = w(MIDDLE_CHANNELS)
        x1, x2, x3 = (w(c) for c in EXIT_CHANNELS)
        # --- Entry flow ---
        self.stem = nn.Sequential(
            nn.Conv2d(channels, w(32), 3, stride=2 if stem_down else 1, padding=1, bias=False),
            nn.BatchNorm2d(w(32)), nn.ReLU(inplace=True),
            nn.Conv2d(w(32), w(64), 3, padding=1, bias=False), nn.BatchNorm2d(w(64)), nn.ReLU(inplace=True),
        )
        self.entry = nn.Sequential(
            XceptionBlock(w(64), e1, e1, block_down[0], start_with_relu=False),
            XceptionBlock(e1, e2, e2, block_down[1]),
            XceptionBlock(e2, mid, mid, block_down[2]),
        )
        # --- Middle flow ---
        self.middle = nn.Sequential(*[MiddleBlock(mid) for _ in range(middle_repeats)])
        # --- Exit flow ---
        self.exit = nn.Sequential(
            XceptionBlock(mid, mid, x1, block_down[3]),
            *separable_bn(x1, x2), nn.ReLU(inplace=True),
            *separable_bn(x2, x3), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (N, x3)
        )
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(x3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit(self.middle(self.entry(self.stem(x))))
        return self.fc(self.dropout(x))
