"""Classic augmentation on the device, one batch at a time (the papers' baseline).

The cardiac papers' recipe: horizontal and vertical flips, 90/180/270 degree rotations, 0-20
degree rotations, 0-2 % translation and zoom; no noise, no crops, so texture and edges survive.
Every transform is affine, so each batch is warped once: per-sample parameters from the caller's
torch.Generator -> one (N, 2, 3) matrix each -> one `affine_grid` + `grid_sample` with reflection
padding (a rotated image gets mirrored anatomy in its corners, not black triangles the classifier
could learn as a "synthetic" cue).

`strength` in [0, 1] scales the rotation, translation and zoom ranges and the flip and quarter-turn
probabilities together, so one number tunes how much classic augmentation a trial gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""(images (N, C, H, W), generator) -> augmented images of the same shape, dtype and device."""


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    """The classic-augmentation toggle; off by default, so a trial config that embeds this section
    stays real-only unless it asks for augmentation."""
    strength: float = 1.0
    """In [0, 1]: scales every range and probability below (0 = identity, 1 = the values below)."""
    flip_p: float = 0.5
    """Probability of a horizontal flip, and independently of a vertical flip, at strength 1."""
    quarter_turn_p: float = 0.5
    """Probability of a 90, 180 or 270 degree rotation (each equally likely) at strength 1."""
    max_rotation_deg: float = 20.0
    """Small rotations are uniform in [-max, max] degrees at strength 1 (papers: 0-20)."""
    max_translate: float = 0.02
    """Shifts are uniform in [-max, max] of the image size, per axis, at strength 1 (papers: 2 %)."""
    max_zoom: float = 0.02
    """Zoom factors are uniform in [1 - max, 1 + max] at strength 1 (papers: 2 %)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"augment 'strength' must be in [0, 1], got {self.strength}")
        for key in ("flip_p", "quarter_turn_p"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"augment '{key}' must be in [0, 1], got {getattr(self, key)}")
        for key in ("max_rotation_deg", "max_translate", "max_zoom"):
            if getattr(self, key) < 0:
                raise ValueError(f"augment '{key}' must be >= 0, got {getattr(self, key)}")
        if self.max_zoom >= 1:
            raise ValueError(f"augment 'max_zoom' must be < 1, got {self.max_zoom}")

    @property
    def active(self) -> bool:
        return self.enabled and self.strength > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AffineParams:
    """Per-sample transform parameters, each (N,) on the batch's device."""

    hflip: torch.Tensor
    """+1 or -1: -1 mirrors left-right."""
    vflip: torch.Tensor
    """+1 or -1: -1 mirrors top-bottom."""
    quarter_turns: torch.Tensor
    """0..3 counter-clockwise quarter turns (int64), as torch.rot90(k=...) on dims (H, W)."""
    angle: torch.Tensor
    """Small rotation in radians."""
    zoom: torch.Tensor
    """Zoom factor (> 1 enlarges the content)."""
    shift: torch.Tensor
    """(N, 2) shift of the content in normalised coordinates (x, y); 2.0 = one image size."""


def _uniform(n: int, half_range: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device) * 2 - 1) * half_range


def sample_params(n: int, cfg: AugmentConfig, g: torch.Generator, device: torch.device) -> AffineParams:
    """Draw every sample's parameters; always the same draws in the same order for a given n, so
    a seeded generator reproduces a batch whatever the strength."""
    s = cfg.strength if cfg.enabled else 0.0
    flips = torch.rand(n, 2, generator=g, device=device) < cfg.flip_p * s
    turn = torch.rand(n, generator=g, device=device) < cfg.quarter_turn_p * s
    k = torch.randint(1, 4, (n,), generator=g, device=device)
    return AffineParams(
        hflip=1.0 - 2.0 * flips[:, 0].float(),
        vflip=1.0 - 2.0 * flips[:, 1].float(),
        quarter_turns=torch.where(turn, k, torch.zeros_like(k)),
        angle=torch.deg2rad(_uniform(n, cfg.max_rotation_deg * s, g, device)),
        zoom=1.0 + _uniform(n, cfg.max_zoom * s, g, device),
        shift=torch.stack([_uniform(n, 2 * cfg.max_translate * s, g, device) for _ in range(2)], dim=1),
    )


def _rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (N, 2, 2)


def affine_theta(p: AffineParams) -> torch.Tensor:
    """(N, 2, 3) matrices for affine_grid: output pixel (x, y) samples input at theta @ (x, y, 1).

    theta maps output to input coordinates, so it is the inverse of the transform applied to the
    content: content rotated by +a samples at rotation(-a), zoomed by z samples at 1/z, shifted by
    t samples at -t. Flips are their own inverse."""
    # Quarter turns exactly, from integer tables, so 90 degrees is not cos(pi/2) = 6e-17.
    cos_q = torch.tensor([1.0, 0.0, -1.0, 0.0], device=p.angle.device)[p.quarter_turns]
    sin_q = torch.tensor([0.0, 1.0, 0.0, -1.0], device=p.angle.device)[p.quarter_turns]
    # torch.rot90 turns from the H axis towards W, which is clockwise in (x, y) coordinates with y
    # pointing down: sampling at rotation(+q) inverts it.
    quarter = _rotation(cos_q, sin_q)
    small = _rotation(torch.cos(-p.angle), torch.sin(-p.angle))
    flip = torch.diag_embed(torch.stack([p.hflip, p.vflip], dim=1))
    linear = flip @ quarter @ small / p.zoom[:, None, None]  # (N, 2, 2)
    offset = -(linear @ p.shift[:, :, None])  # (N, 2, 1): shift the content after the linear part
    return torch.cat([linear, offset], dim=2)


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp (N, C, H, W) images by (N, 2, 3) matrices: bilinear, reflection padding.

    Normalised coordinates span [-1, 1] on both axes, so rotations are true rotations only for
    square images (every dataset here is resized to size x size)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(images: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Classic augmentation of one batch (N, C, H, W); same shape, dtype and device."""
    params = sample_params(len(images), cfg, g, images.device)
    return apply_affine(images, affine_theta(params))


def make_augment(cfg: AugmentConfig) -> Augment | None:
    """The callable for fit_classifier(..., augment=...), or None when augmentation is off."""
    if not cfg.active:
        return None

    def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return augment_batch(images, g, cfg)

    return augment
