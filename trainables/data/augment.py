"""Classic augmentation on the device, one batch at a time (the papers' baseline).

The cardiac papers' recipe: horizontal and vertical flips, 90/180/270 degree rotations, 0-20
degree rotations, 0-2 % translation and zoom; no noise, no crops, so texture and edges survive.
Every transform is affine, so each batch is warped once: per-sample parameters from the caller's
torch.Generator -> one (N, 2, 3) matrix each -> one `affine_grid` + `grid_sample` with reflection
padding (a rotated image gets mirrored anatomy in its corners, not black triangles the classifier
could learn as a "synthetic" cue).

`strength` in [0, 1] scales the rotation, translation and zoom ranges and the flip and quarter-turn
probabilities together, so one number tunes how much classic augmentation a trial gets.

Two policies (`AugmentConfig.policy`):
- "classic": the recipe above. Its defaults are the cardiac papers'; for ultrasound, where depth
  runs top to bottom and a lesion's orientation is anatomy, use ULTRASOUND_CLASSIC (no vertical
  flip, no quarter turns, smaller rotations: at 28 px a 20 degree bilinear rotation blurs the
  lesion boundary).
- "trivial": TrivialAugment (Mueller & Hutter, ICCV 2021): each image gets ONE op drawn uniformly
  from TRIVIAL_OPS at a magnitude uniform in [0, strength * TRIVIAL_MAX[op]] (a random sign for
  the two-sided ops). No search: the peer baseline to beat, reported up to about +10 balanced
  accuracy points on breast ultrasound. The ops suit grayscale and RGB medical images: no
  vertical flip, no quarter turns, no colour ops beyond brightness/contrast/gamma, rotations up
  to 20 degrees, mild noise. Geometric ops share the classic affine warp; translations move whole
  pixels (no interpolation blur); photometric ops are elementwise and clamp to [-1, 1]."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""(images (N, C, H, W), generator) -> augmented images of the same shape, dtype and device."""

POLICIES = ("classic", "trivial")
"""Values of AugmentConfig.policy."""


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
    vertical_flip: bool = True
    """Classic: flip top-bottom too (with flip_p, independently of left-right); false for
    ultrasound, where depth runs top to bottom."""
    policy: str = "classic"
    """'classic' (the flips, turns, rotation, shift and zoom above) or 'trivial' (TrivialAugment:
    one op from TRIVIAL_OPS per image at a random magnitude; only `strength` applies, scaling
    every op's maximum in TRIVIAL_MAX)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"augment 'policy' must be one of {list(POLICIES)}, got {self.policy!r}")
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
    if not cfg.vertical_flip:
        flips[:, 1] = False  # drawn anyway: the other draws stay the same as with vertical flips
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


ULTRASOUND_CLASSIC: dict[str, float | bool] = {
    "vertical_flip": False, "quarter_turn_p": 0.0, "max_rotation_deg": 10.0, "max_translate": 0.05,
    "max_zoom": 0.05,
}
"""Classic-policy fields for ultrasound (the research recipe sets these in its space file):
left-right flips only, no quarter turns, rotations up to 10 degrees, shifts and zooms up to 5 %."""


# --- TrivialAugment ---

TRIVIAL_OPS = (
    "identity", "rotate", "translate_x", "translate_y", "shear_x", "shear_y", "hflip",
    "brightness", "contrast", "gamma", "sharpness", "noise", "cutout",
)
"""The ops TrivialAugment draws from, uniformly; the index into this tuple is TrivialParams.op."""

TRIVIAL_MAX: dict[str, float] = {
    "identity": 0.0,
    "rotate": 20.0,  # degrees, either way
    "translate_x": 0.125, "translate_y": 0.125,  # of the image size, either way, rounded to pixels
    "shear_x": 0.3, "shear_y": 0.3,  # shear factor, either way (0.3 = 17 degrees)
    "hflip": 0.0,  # no magnitude
    "brightness": 0.3,  # added to images in [-1, 1], either way
    "contrast": 0.5,  # deviation from the image mean scaled by 1 + m, either way
    "gamma": 0.4,  # ((x + 1) / 2) ** exp(m), either way: gamma in [0.67, 1.49]
    "sharpness": 0.9,  # blend factor 1 + m with a smoothed copy: m < 0 blurs, m > 0 sharpens
    "noise": 0.1,  # standard deviation of added gaussian noise
    "cutout": 0.5,  # side of a zeroed square, as a fraction of the image side
}
"""Each op's maximum magnitude at strength 1."""

_TWO_SIDED = {
    "rotate", "translate_x", "translate_y", "shear_x", "shear_y", "brightness", "contrast", "gamma", "sharpness",
}
_GEOMETRIC = ("rotate", "translate_x", "translate_y", "shear_x", "shear_y")
_SHARPNESS_KERNEL = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13  # PIL's SMOOTH


@dataclass(frozen=True)
class TrivialParams:
    """Per-sample TrivialAugment draws, on the batch's device."""

    op: torch.Tensor
    """(N,) int64 index into TRIVIAL_OPS."""
    magnitude: torch.Tensor
    """(N,) signed magnitude of the op, in the units of TRIVIAL_MAX."""
    centre: torch.Tensor
    """(N, 2) cutout centre (x, y) in [0, 1) of the image size."""
    noise: torch.Tensor
    """(N, C, H, W) standard normal draws for the noise op."""


def sample_trivial(shape: torch.Size, cfg: AugmentConfig, g: torch.Generator, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> TrivialParams:
    """One op and magnitude per image; always the same draws in the same order for a shape, so a
    seeded generator reproduces a batch whatever the strength."""
    n = shape[0]
    s = cfg.strength if cfg.enabled else 0.0
    op = torch.randint(len(TRIVIAL_OPS), (n,), generator=g, device=device)
    u = torch.rand(n, generator=g, device=device)
    sign = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
    centre = torch.rand(n, 2, generator=g, device=device)
    noise = torch.randn(shape, generator=g, device=device, dtype=dtype)
    top = torch.tensor([TRIVIAL_MAX[o] for o in TRIVIAL_OPS], device=device)[op]
    two_sided = torch.tensor([o in _TWO_SIDED for o in TRIVIAL_OPS], device=device)[op]
    magnitude = u * s * top * torch.where(two_sided, sign, torch.ones_like(sign))
    if s == 0:
        op = torch.zeros_like(op)  # strength 0 is the identity, flips included (hflip has no magnitude)
    return TrivialParams(op=op, magnitude=magnitude, centre=centre, noise=noise)


def trivial_theta(p: TrivialParams, size: int) -> torch.Tensor:
    """(N, 2, 3) affine_grid matrices of the geometric ops (identity for the others), in the
    classic convention: content rotated by +m degrees, shifted by +m of the image size (rounded to
    whole pixels, so the warp samples pixel centres exactly), sheared x' = x + m * y (shear_x) or
    y' = y + m * x (shear_y) in normalised coordinates."""
    def where(name: str) -> torch.Tensor:
        return torch.where(p.op == TRIVIAL_OPS.index(name), p.magnitude, torch.zeros_like(p.magnitude))

    n, ones = len(p.op), torch.ones_like(p.magnitude)
    pixels = torch.stack([torch.round(where("translate_x") * size), torch.round(where("translate_y") * size)], 1)
    rot_shift = affine_theta(AffineParams(
        hflip=ones, vflip=ones, quarter_turns=torch.zeros(n, dtype=torch.long, device=p.op.device),
        angle=torch.deg2rad(where("rotate")), zoom=ones, shift=pixels * 2 / size,
    ))
    # Sampling inverts the shear: output (x', y') reads input (x' - m y', y') for shear_x.
    unshear = torch.stack([torch.stack([ones, -where("shear_x")], -1), torch.stack([-where("shear_y"), ones], -1)], -2)
    return torch.cat([rot_shift[:, :, :2] @ unshear, rot_shift[:, :, 2:]], dim=2)


def apply_trivial(images: torch.Tensor, p: TrivialParams) -> torch.Tensor:
    """Apply each image's op (N, C, H, W) -> same shape, dtype and device. Images whose op is not
    geometric are never resampled, so identity is exact."""
    _, c, h, w = images.shape
    op = p.op
    m = p.magnitude.to(images.dtype)[:, None, None, None]  # (N, 1, 1, 1)

    def chosen(name: str) -> torch.Tensor:
        return (op == TRIVIAL_OPS.index(name))[:, None, None, None]

    out = images
    # --- Geometric: one warp for every image whose op is geometric ---
    geo = torch.isin(op, torch.tensor([TRIVIAL_OPS.index(o) for o in _GEOMETRIC], device=op.device))
    if bool(geo.any()):
        out = images.clone()
        out[geo] = apply_affine(images[geo], trivial_theta(p, w)[geo])
    out = torch.where(chosen("hflip"), images.flip(-1), out)
    # --- Photometric, elementwise on images in [-1, 1] ---
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    unit = ((images + 1) / 2).clamp(0, 1)
    kernel = _SHARPNESS_KERNEL.to(images)[None, None].expand(c, 1, 3, 3)
    smooth = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    photometric = {
        "brightness": images + m,
        "contrast": mean + (1 + m) * (images - mean),
        "gamma": 2 * unit ** torch.exp(m) - 1,
        "sharpness": smooth + (1 + m) * (images - smooth),
        "noise": images + m * p.noise.to(images.dtype),
    }
    for name, value in photometric.items():
        out = torch.where(chosen(name), value.clamp(-1, 1), out)
    # Cutout: a square of side round(m * size) around the centre pixel, set to 0 (mid-grey).
    side = torch.round(p.magnitude * w)[:, None, None]  # (N, 1, 1)
    cx, cy = (p.centre[:, 0] * w).floor()[:, None, None], (p.centre[:, 1] * h).floor()[:, None, None]
    rows = torch.arange(h, device=op.device)[None, :, None]
    cols = torch.arange(w, device=op.device)[None, None, :]
    lo_x, lo_y = cx - torch.div(side, 2, rounding_mode="floor"), cy - torch.div(side, 2, rounding_mode="floor")
    hole = (cols >= lo_x) & (cols < lo_x + side) & (rows >= lo_y) & (rows < lo_y + side)  # (N, H, W)
    return torch.where(chosen("cutout") & hole[:, None], torch.zeros((), dtype=images.dtype, device=images.device), out)


def trivial_batch(images: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """TrivialAugment of one batch (N, C, H, W); same shape, dtype and device."""
    return apply_trivial(images, sample_trivial(images.shape, cfg, g, images.device, images.dtype))


def make_augment(cfg: AugmentConfig) -> Augment | None:
    """The callable for fit_classifier(..., augment=...) of cfg.policy, or None when augmentation
    is off."""
    if not cfg.active:
        return None
    batch = trivial_batch if cfg.policy == "trivial" else augment_batch

    def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return batch(images, g, cfg)

    return augment
