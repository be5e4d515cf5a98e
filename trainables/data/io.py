"""Medical image files in and out. This is the project's only SimpleITK import: everything else
sees numpy arrays in (C, H, W) order with the in-plane pixel spacing next to them.

Axis orders, because SimpleITK and numpy disagree:
  - `sitk.GetArrayFromImage(img)` is (z, y, x) for scalar pixels and (z, y, x, c) for vector
    (RGB) pixels, i.e. numpy order, slowest axis first.
  - `img.GetSize()` and `img.GetSpacing()` stay (x, y, z), i.e. ITK order, fastest axis first.
A `Slice` therefore keeps `array` as (C, H, W) = (c, y, x) and `spacing` as (x, y) in mm, so
`spacing[0]` is the width of one column and `spacing[1]` the height of one row.
Orientation (direction cosines) is ignored: a 2D classifier only needs the pixel grid, and images
of one protocol share their orientation.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import DatasetError

IMAGE_SUFFIXES = (
    ".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm",
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp",
)  # fmt: skip
"""File name endings read as images (case-insensitive)."""

SIDECAR_SUFFIXES = (".raw", ".zraw", ".img")
"""Pixel-data companions of header files (.mhd, .nhdr); never images by themselves."""

WRITE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".png")
"""File name endings `write_image` accepts."""

SliceRule = str | int
"""Which 2D slice(s) of a 3D volume to use: "middle", "all", or a z index (negative counts from
the end). 2D images are used as they are, whatever the rule."""


class UnreadableImageError(DatasetError):
    """A file that SimpleITK cannot decode: corrupt, truncated, or not an image at all."""


@dataclass(frozen=True)
class Slice:
    """One 2D image as read from disk, before any preprocessing."""

    array: np.ndarray
    """(C, H, W) pixels in the file's dtype; C = 1 (grayscale) or 3 (RGB)."""
    spacing: tuple[float, float]
    """(x, y) pixel spacing in mm (column width, row height), SimpleITK order."""
    index: int | None = None
    """z index in the source volume, None for a 2D file."""


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, before slicing: for dataset summaries."""

    size: tuple[int, ...]
    """(x, y) or (x, y, z) in voxels, SimpleITK order."""
    spacing: tuple[float, ...]
    """Same order and length as `size`, in mm."""
    channels: int
    """Components per pixel after dropping alpha (1 or 3)."""
    pixel_type: str
    """SimpleITK's name of the stored pixel type, e.g. '16-bit signed integer'."""


def is_image_file(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(IMAGE_SUFFIXES)


def strip_image_suffix(name: str) -> str:
    """'x.nii.gz' -> 'x' (the double suffix is why Path.stem is not enough)."""
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _short_reason(exc: Exception) -> str:
    """ITK messages span several lines of source locations; keep the one that says what failed,
    without the 'ITK ERROR: MetaImageIO(0x..): ' prefix."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln] or lines[-1:] or [type(exc).__name__]
    line = errors[-1]
    return re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", line) or line


def _unreadable(path: Path, reason: str) -> UnreadableImageError:
    return UnreadableImageError(
        f"{path}: cannot be read as an image ({reason}); the file is corrupt, truncated or not an "
        "image: re-export it, or remove it (or pass --skip-bad to leave it out)"
    )


def _nifti_header(raw: bytes) -> tuple[tuple[int, ...], int, int] | None:
    """(dims, bits per voxel, data offset) of a NIfTI-1 or NIfTI-2 header, either byte order."""
    for order in "<>":
        if len(raw) < 348:
            return None
        (header_size,) = struct.unpack(order + "i", raw[:4])
        if header_size == 348:  # NIfTI-1: dim short[8] @40, bitpix @72, vox_offset float @108
            dims = struct.unpack(order + "8h", raw[40:56])
            (bitpix,) = struct.unpack(order + "h", raw[72:74])
            return dims, bitpix, int(struct.unpack(order + "f", raw[108:112])[0])
        if header_size == 540 and len(raw) >= 540:  # NIfTI-2: bitpix @14, dim int64[8] @16
            dims = struct.unpack(order + "8q", raw[16:80])
            (bitpix,) = struct.unpack(order + "h", raw[14:16])
            return dims, bitpix, struct.unpack(order + "q", raw[168:176])[0]
    return None


def _nifti_truncated(path: Path) -> str | None:
    """ITK's NIfTI reader zero-fills a short file without complaint, so compare the payload
    length with what the header promises. Returns the reason, or None when complete."""
    try:
        raw = gzip.open(path).read() if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip stream cut short or not gzip at all
        return f"compressed stream is broken: {exc}"
    header = _nifti_header(raw)
    if header is None:
        return None  # not a header we know: ITK already accepted the file
    dims, bitpix, offset = header
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : dims[0] + 1]]))
    expected = offset + voxels * bitpix // 8
    if len(raw) < expected:
        return f"pixel data ends at byte {len(raw)}, the header promises {expected}"
    return None


def read_image(path: str | Path) -> tuple[np.ndarray, ImageInfo]:
    """Read a whole file: the array in numpy order ((y, x) / (z, y, x), with a trailing channel
    axis only for vector pixels, alpha dropped) and its ImageInfo. Raises UnreadableImageError."""
    import SimpleITK as sitk  # here: the worker side imports without it (a GPU node's own PyTorch)

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _unreadable(path, _short_reason(exc)) from exc
    if path.name.lower().endswith((".nii", ".nii.gz")) and (reason := _nifti_truncated(path)):
        raise _unreadable(path, reason)
    if image.GetDimension() not in (2, 3):
        raise DatasetError(
            f"{path}: {image.GetDimension()}D images are not supported; save 2D images or 3D volumes"
        )
    array = sitk.GetArrayFromImage(image)  # (z, y, x) or (y, x), plus (.., c) for vector pixels
    vector = image.GetNumberOfComponentsPerPixel() > 1
    if vector:
        array = _drop_alpha(array, path)
    info = ImageInfo(
        size=tuple(int(s) for s in image.GetSize()),
        spacing=tuple(float(s) for s in image.GetSpacing()),
        channels=int(array.shape[-1]) if vector else 1,
        pixel_type=image.GetPixelIDTypeAsString(),
    )
    return array, info


def _drop_alpha(array: np.ndarray, path: Path) -> np.ndarray:
    """(.., c) -> (.., 1 or 3): PNGs often carry an alpha channel that is not image content."""
    c = array.shape[-1]
    if c in (2, 4):
        array = array[..., : c - 1]
    if array.shape[-1] not in (1, 3):
        raise DatasetError(f"{path}: {c} channels per pixel; only grayscale and RGB(A) are supported")
    return array


def to_slices(array: np.ndarray, info: ImageInfo, rule: SliceRule, path: str | Path = "") -> list[Slice]:
    """Numpy-order array from `read_image` -> 2D (C, H, W) slices chosen by `rule`."""
    vector = info.channels > 1 or array.ndim == len(info.size) + 1
    if not vector:
        array = array[..., None]  # one code path: always a trailing channel axis
    spacing_xy = (info.spacing[0], info.spacing[1])
    if len(info.size) == 2 or info.size[2] == 1:
        plane = array if len(info.size) == 2 else array[0]  # (y, x, c)
        return [Slice(np.moveaxis(plane, -1, 0), spacing_xy, None)]
    depth = array.shape[0]  # (z, y, x, c)
    if rule == "all":
        indices = list(range(depth))
    elif rule == "middle":
        indices = [depth // 2]
    elif isinstance(rule, int) and not isinstance(rule, bool):
        if not -depth <= rule < depth:
            raise DatasetError(f"{path}: slice index {rule} is outside the volume's {depth} slices")
        indices = [rule % depth]
    else:
        raise DatasetError(f"slice rule must be 'middle', 'all' or an integer index, got {rule!r}")
    return [Slice(np.moveaxis(array[z], -1, 0), spacing_xy, z) for z in indices]


def read_slices(path: str | Path, rule: SliceRule = "middle") -> list[Slice]:
    """Read any supported file as a list of 2D (C, H, W) slices with (x, y) spacing."""
    array, info = read_image(path)
    return to_slices(array, info, rule, path)


def write_image(
    path: str | Path,
    array: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    *,
    rgb: bool = False,
    compress: bool = True,
) -> None:
    """Write a numpy-order array: (y, x) or (z, y, x); with `rgb`, a trailing (.., 3) channel axis.
    `spacing` is in SimpleITK order (x, y[, z]). PNG needs uint8/uint16 pixels and 2D arrays.
    `compress` is for formats that support it (.mha, .nrrd; .nii.gz is always gzipped)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.name.lower().endswith(WRITE_SUFFIXES):
        raise ValueError(f"{path}: cannot write this format; use one of {WRITE_SUFFIXES}")
    array = np.asarray(array)
    spatial = array.ndim - (1 if rgb else 0)
    if spatial not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D array, got shape {array.shape} (rgb={rgb})")
    if path.suffix.lower() == ".png" and (spatial != 2 or array.dtype not in (np.uint8, np.uint16)):
        raise ValueError(f"{path}: PNG needs a 2D uint8/uint16 array, got {array.dtype} {array.shape}")
    image = sitk.GetImageFromArray(array, isVector=rgb)  # numpy (z, y, x) -> ITK size (x, y, z)
    if spacing is not None:
        if len(spacing) != spatial:
            raise ValueError(f"{path}: spacing {spacing} does not match a {spatial}D image")
        image.SetSpacing(tuple(float(s) for s in spacing))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress)


def write_chw(path: str | Path, image: np.ndarray, spacing: tuple[float, float] | None = None) -> None:
    """Write one generated (C, H, W) image with values in [-1, 1] (the ImageDataset convention).
    PNG gets uint8 pixels; .mha/.nii.gz keep float32 values."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{path}: expected a (C, H, W) image with C in (1, 3), got {image.shape}")
    if Path(path).suffix.lower() == ".png":
        image = np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    plane = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)  # (H, W) or (H, W, 3)
    write_image(path, plane, spacing, rgb=image.shape[0] == 3)
