"""From a file on disk to a (C, S, S) float tensor: resample to a common spacing, crop a region of
interest, resize, normalise intensities. The cardiac papers: resample, crop, normalise, 80x80x1.
The skin paper's bilateral filter and gamma correction are not here: they are the `enhance`
section (enhance.py), applied per trial so they can be searched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DatasetError
from .io import ImageInfo, Slice, SliceRule, read_image, strip_image_suffix, to_slices

CROPS = ("none", "center", "mask")
NORMALISATIONS = ("minmax", "zscore", "percentile")


@dataclass(frozen=True)
class PreprocessConfig:
    """How image files become tensors. Every field changes the cache key."""

    size: int | None = None
    """Output height = width in pixels (80 in the cardiac papers, 64 in the skin paper). None keeps
    the size after cropping, which must then be the same for every image; .npz arrays are resized
    only when this is set. >= 4, or null."""
    slice: SliceRule = "middle"
    """3D volumes: "middle", "all" (every z slice; slices of one file stay in one fold), or a z
    index. 2D files ignore it."""
    target_spacing: float | None = None
    """In-plane pixel spacing in mm to resample to (e.g. 1.4); None keeps each file's pixel grid. > 0, or null."""
    crop: str = "center"
    """Region of interest: "none" (whole image, aspect ratio not kept by the resize), "center"
    (a centred square) or "mask" (the square around the bounding box of the non-zero pixels of
    `<name><mask_suffix>.<ext>` next to each image)."""
    crop_size: int | None = None
    """"center": side of the square in pixels after resampling; None = crop_fraction of the
    shorter side. Clamped to the image. >= 1, or null."""
    crop_fraction: float = 1.0
    """"center" without crop_size: side = this fraction (0, 1] of the image's shorter side."""
    mask_suffix: str = "_mask"
    """Files whose name (without extension) ends with this are masks, never training images."""
    mask_margin: int = 0
    """"mask": pixels added on each side of the mask's bounding box (after resampling); >= 0."""
    normalize: str = "minmax"
    """Per-image intensity scaling to [0, 1]: "minmax", "zscore" (clipped at +-zscore_clip
    standard deviations) or "percentile" (clipped to [clip_low, clip_high] percentiles, then
    min-max). Not applied to MedMNIST .npz arrays, which are already 8-bit."""
    zscore_clip: float = 3.0
    """"zscore": standard deviations mapped to the ends of the range (> 0)."""
    clip_low: float = 0.5
    """"percentile": lower percentile in [0, 100)."""
    clip_high: float = 99.5
    """"percentile": upper percentile in (clip_low, 100]."""

    def __post_init__(self) -> None:
        # Single-field ranges (size >= 4, crop_fraction in (0, 1], ...) are checked with every
        # other section's in trainables.config.FIELD_RANGES; here only what a range cannot say.
        def bad(name: str, why: str) -> DatasetError:
            return DatasetError(f"'preprocess.{name}' {why}, got {getattr(self, name)!r}")

        if not (self.slice in ("middle", "all") or type(self.slice) is int):
            raise bad("slice", "must be 'middle', 'all' or an integer index")
        if self.crop not in CROPS:
            raise bad("crop", f"must be one of {CROPS}")
        if self.normalize not in NORMALISATIONS:
            raise bad("normalize", f"must be one of {NORMALISATIONS}")
        if not self.clip_low < self.clip_high:
            raise bad("clip_high", f"must be > clip_low ({self.clip_low})")


# --- Masks -------------------------------------------------------------------------------------


def is_mask_file(path: str | Path, cfg: PreprocessConfig) -> bool:
    return bool(cfg.mask_suffix) and strip_image_suffix(Path(path).name).endswith(cfg.mask_suffix)


def mask_path_for(image_path: str | Path, cfg: PreprocessConfig) -> Path:
    """'x.mha' -> 'x_mask.mha' beside it (any image extension when that one does not exist)."""
    image_path = Path(image_path)
    base = strip_image_suffix(image_path.name)
    same_ext = image_path.with_name(base + cfg.mask_suffix + image_path.name[len(base) :])
    if same_ext.exists():
        return same_ext
    others = sorted(image_path.parent.glob(f"{base}{cfg.mask_suffix}.*"))
    return others[0] if others else same_ext


# --- Geometry: resample, crop, resize (all on (C, H, W) float tensors) ---------------------------


def resampled_shape(shape_hw: tuple[int, int], spacing_xy: tuple[float, float], target: float) -> tuple[int, int]:
    """Rows scale by the y spacing, columns by the x spacing (spacing is (x, y), shape is (H, W))."""
    h, w = shape_hw
    return max(1, round(h * spacing_xy[1] / target)), max(1, round(w * spacing_xy[0] / target))


def resample(
    x: torch.Tensor, spacing_xy: tuple[float, float], target: float | None, *, nearest: bool = False
) -> torch.Tensor:
    """(C, H, W) -> (C, H', W') on a grid of `target` mm pixels; None leaves x alone."""
    if target is None:
        return x
    shape = resampled_shape((x.shape[-2], x.shape[-1]), spacing_xy, target)
    return _interpolate(x, shape, nearest=nearest)


def _interpolate(x: torch.Tensor, shape: tuple[int, int], *, nearest: bool = False) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    if nearest:  # masks: labels must stay labels
        return F.interpolate(x[None], size=shape, mode="nearest-exact")[0]
    # antialias: downsampling a 256 px slice to 80 px would otherwise alias fine texture
    return F.interpolate(x[None], size=shape, mode="bilinear", align_corners=False, antialias=True)[0]


def square_box(center_yx: tuple[float, float], side: int, shape_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(top, left, side) of a square of `side` pixels centred as close to `center_yx` as fits."""
    side = max(1, min(side, *shape_hw))
    top = int(round(center_yx[0] - side / 2))
    left = int(round(center_yx[1] - side / 2))
    top = min(max(top, 0), shape_hw[0] - side)
    left = min(max(left, 0), shape_hw[1] - side)
    return top, left, side


def center_box(shape_hw: tuple[int, int], cfg: PreprocessConfig) -> tuple[int, int, int]:
    h, w = shape_hw
    side = cfg.crop_size if cfg.crop_size is not None else int(round(min(h, w) * cfg.crop_fraction))
    return square_box((h / 2, w / 2), side, shape_hw)


def mask_box(mask: torch.Tensor, cfg: PreprocessConfig, mask_path: Path) -> tuple[int, int, int]:
    """Square around the bounding box of the mask's non-zero pixels (any channel), plus margin."""
    rows = torch.nonzero(mask.ne(0).any(dim=0).any(dim=1)).flatten()
    cols = torch.nonzero(mask.ne(0).any(dim=0).any(dim=0)).flatten()
    if rows.numel() == 0:
        raise DatasetError(f"{mask_path}: the mask is empty (no non-zero pixel); fix it or use crop 'center'")
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(bottom - top, right - left) + 2 * cfg.mask_margin
    return square_box(((top + bottom) / 2, (left + right) / 2), side, tuple(mask.shape[-2:]))


# --- Intensities: each maps a (C, H, W) float tensor to [0, 1] ---------------------------------


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    if hi <= lo:  # constant image: nothing to stretch (check_dataset flags it)
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def normalise(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Per image, all channels together (keeps the colour balance of RGB)."""
    x = x.to(torch.float64)  # int16 CT values and float maps: exact statistics, then float32
    if cfg.normalize == "zscore":
        std = x.std(unbiased=False)
        z = (x - x.mean()) / std if std > 0 else torch.zeros_like(x)
        out = (z.clamp(-cfg.zscore_clip, cfg.zscore_clip) + cfg.zscore_clip) / (2 * cfg.zscore_clip)
    elif cfg.normalize == "percentile":
        q = torch.tensor([cfg.clip_low, cfg.clip_high], dtype=torch.float64) / 100
        lo, hi = torch.quantile(x.flatten(), q)
        out = _minmax(x.clamp(lo, hi))
    else:
        out = _minmax(x)
    return out.to(torch.float32)


# --- Per-file and per-batch entry points --------------------------------------------------------


def preprocess_slice(
    s: Slice, cfg: PreprocessConfig, mask: Slice | None = None, mask_path: Path | None = None
) -> torch.Tensor:
    """One 2D slice -> (C, S, S) float32 in [0, 1] (S = cfg.size, or the cropped size)."""
    x = resample(torch.from_numpy(s.array.astype(np.float32)), s.spacing, cfg.target_spacing)
    if cfg.crop == "mask":
        assert mask is not None and mask_path is not None, "crop 'mask' needs the mask slice"
        m = resample(torch.from_numpy(mask.array.astype(np.float32)), mask.spacing, cfg.target_spacing, nearest=True)
        if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
            raise DatasetError(
                f"{mask_path}: mask is {tuple(m.shape[-2:])} pixels after resampling but its image is "
                f"{tuple(x.shape[-2:])}; masks must share the image's size and spacing"
            )
        top, left, side = mask_box(m, cfg, mask_path)
    elif cfg.crop == "center":
        top, left, side = center_box(tuple(x.shape[-2:]), cfg)
    else:
        top, left, side = 0, 0, None
    if side is not None:
        x = x[:, top : top + side, left : left + side]
    if cfg.size is not None:
        x = _interpolate(x, (cfg.size, cfg.size))
    return normalise(x, cfg)


def read_and_preprocess(path: str | Path, cfg: PreprocessConfig) -> tuple[list[torch.Tensor], ImageInfo]:
    """A file -> its slices as (C, S, S) tensors in [0, 1], and what the file held."""
    array, info = read_image(path)
    slices = to_slices(array, info, cfg.slice, path)
    masks: list[Slice | None] = [None] * len(slices)
    mask_path = None
    if cfg.crop == "mask":
        mask_path = mask_path_for(path, cfg)
        if not mask_path.exists():
            raise DatasetError(
                f"{path}: crop 'mask' needs a mask file next to it named like {mask_path.name}; "
                "add it or use crop 'center'"
            )
        m_array, m_info = read_image(mask_path)
        masks = to_slices(m_array, m_info, cfg.slice, mask_path)
        if len(masks) != len(slices):
            raise DatasetError(f"{mask_path}: has {len(masks)} slices for the image's {len(slices)}")
    return [preprocess_slice(s, cfg, m, mask_path) for s, m in zip(slices, masks)], info


def finish(images01: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) in [0, 1] -> [-1, 1], the ImageDataset convention."""
    return (images01 * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()


def preprocess_npz_images(images: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """MedMNIST arrays, already (N, C, H, W) in [-1, 1]: resized only (no per-image
    normalisation: the 8-bit range is already common to all images)."""
    if cfg.size is None or tuple(images.shape[-2:]) == (cfg.size, cfg.size):
        return images
    x01 = F.interpolate(
        (images + 1.0) / 2.0, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False, antialias=True
    )
    return finish(x01.clamp(0.0, 1.0))
