"""The skin paper's enhancement: an edge-preserving bilateral filter and gamma correction
O = I^(1/G), in torch on the images' device, batched. The one implementation: `EnhanceConfig` (the
space file's `enhance` section) and `enhance()`, which every trial and `gantune evaluate` apply to
its [-1, 1] images on the device (so its values can be searched)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EnhanceConfig:
    """Applied to every image at the start of each trial, so unlike the `preprocess` section
    (applied once when the files are read, then cached) its values can be searched."""

    bilateral: bool = False
    """Skin paper: an edge-preserving bilateral filter on every image before anything else."""
    sigma_space: float = 1.5
    """Bilateral filter: spatial sigma in pixels (> 0)."""
    sigma_color: float = 0.1
    """Bilateral filter: intensity sigma as a fraction of the value range (> 0)."""
    gamma: float = 1.0
    """Skin paper: gamma correction O = I^(1/gamma) on [0, 1] intensities (paper: 1.5); 1 = off (> 0)."""


def enhance(images: torch.Tensor, cfg: EnhanceConfig) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] (the ImageDataset convention) -> the same after the optional
    bilateral filter, then gamma correction."""
    if cfg.bilateral:
        images = bilateral_filter(images, sigma_space=cfg.sigma_space, sigma_color=cfg.sigma_color, value_range=(-1, 1))
    if cfg.gamma != 1.0:
        images = gamma_correction(images, cfg.gamma, value_range=(-1, 1))
    return images


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    return lo, hi


def bilateral_filter(
    images: torch.Tensor,
    *,
    sigma_space: float = 1.5,
    sigma_color: float = 0.1,
    radius: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    chunk: int = 64,
) -> torch.Tensor:
    """Bilateral filter of (N, C, H, W) images.

    Each output pixel is the average of its (2r+1)^2 neighbours weighted by
    exp(-d^2 / (2 sigma_space^2)) * exp(-||I_p - I_q||^2 / (2 sigma_color^2)):
    - sigma_space: spatial Gaussian sigma in pixels (larger = smoother);
    - sigma_color: intensity Gaussian sigma as a fraction of the value range (0.1 = a tenth of
      [0, 1], or of [-1, 1]); neighbours across an edge much higher than this barely count, which
      is what preserves edges (sigma_color -> inf gives a Gaussian blur);
    - radius: neighbourhood radius r in pixels; default ceil(2 sigma_space), at most H-1 and W-1;
    - value_range: the images' (low, high), (0, 1) or (-1, 1);
    - chunk: images filtered at once (memory is chunk * C * (2r+1)^2 * H * W floats).
    The intensity distance is taken over all channels together, so colour images get one weight
    per neighbour and no colour fringes. Borders are reflected.
    """
    if images.dim() != 4:
        raise ValueError(f"bilateral_filter expects (N, C, H, W), got shape {tuple(images.shape)}")
    if not (sigma_space > 0 and sigma_color > 0):
        raise ValueError(f"sigma_space and sigma_color must be > 0, got {sigma_space}, {sigma_color}")
    lo, hi = _check_range(value_range)
    _, _, h, w = images.shape
    r = math.ceil(2 * sigma_space) if radius is None else int(radius)
    r = max(min(r, h - 1, w - 1), 0)
    k = 2 * r + 1
    offsets = torch.arange(-r, r + 1, device=images.device, dtype=images.dtype)
    dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2  # (k, k), unfold's row-major order
    spatial = torch.exp(-dist2 / (2 * sigma_space**2)).reshape(1, k * k, 1, 1)
    color_scale = 2 * (sigma_color * (hi - lo)) ** 2
    out = [
        _bilateral_chunk(images[i : i + chunk], r, k, spatial, color_scale) for i in range(0, len(images), chunk)
    ]
    return torch.cat(out) if out else images.clone()


def _bilateral_chunk(x: torch.Tensor, r: int, k: int, spatial: torch.Tensor, color_scale: float) -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (r, r, r, r), mode="reflect") if r else x
    patches = F.unfold(padded, k).view(n, c, k * k, h, w)  # (N, C, k*k, H, W) neighbours
    diff2 = (patches - x[:, :, None]).pow(2).sum(dim=1, keepdim=True)  # (N, 1, k*k, H, W)
    weights = spatial[:, None] * torch.exp(-diff2 / color_scale)
    return (weights * patches).sum(dim=2) / weights.sum(dim=2)


def gamma_correction(
    images: torch.Tensor, gamma: float = 1.5, value_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """O = I^(1/gamma) on intensities mapped to [0, 1] (skin paper: gamma = 1.5 brightens the
    mid-tones); [-1, 1] images (value_range=(-1, 1)) are mapped to [0, 1] and back. Values outside
    the range are clipped first (a fractional power of a negative number is undefined)."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    lo, hi = _check_range(value_range)
    unit = ((images - lo) / (hi - lo)).clamp(0.0, 1.0)
    return unit.pow(1.0 / gamma) * (hi - lo) + lo
