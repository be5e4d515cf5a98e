"""Readers and writers: shapes, axis order and spacing against the files' own bytes, and a
clear UnreadableImageError for every kind of broken file."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from gantune.trainables.data.datasets import DatasetError
from gantune.trainables.data.io import UnreadableImageError, read_image, read_slices, write_chw, write_image

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HEART_DCM = FIXTURES / "MR-MONO2-8-16x-heart.dcm"  # multi-frame, (256, 256, 16)
HEART_MHA = FIXTURES / "MR-MONO2-8-16x-heart_frame00.mha"  # frame 0 of the DICOM
HEART_NII = FIXTURES / "MR-MONO2-8-16x-heart_frame00.nii.gz"
HEAD_MHA = FIXTURES / "CT_2D_head_fixed.mha"  # 2D int16


def metaimage_reference(path):
    """Plain parse of an uncompressed .mha: header dict and the pixel bytes (x fastest)."""
    raw = path.read_bytes()
    end = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    header = dict(line.split(" = ", 1) for line in raw[:end].decode().splitlines())
    return header, raw[end:]


def test_real_2d_files_agree_and_keep_spacing():
    mha, nii = read_slices(HEART_MHA), read_slices(HEART_NII)
    assert len(mha) == len(nii) == 1
    assert mha[0].array.shape == (1, 256, 256) and mha[0].array.dtype == np.uint8
    np.testing.assert_array_equal(mha[0].array, nii[0].array)
    assert mha[0].spacing == nii[0].spacing == (1.0, 1.0)
    assert mha[0].index is None
    head = read_slices(HEAD_MHA)[0]
    assert head.array.shape == (1, 256, 256) and head.array.dtype == np.int16


def test_multiframe_dicom_slice_rules():
    frames = read_slices(HEART_DCM, "all")
    assert len(frames) == 16 and frames[0].array.shape == (1, 256, 256)
    assert [f.index for f in frames] == list(range(16))
    # the derived 2D file is frame 0 of the DICOM, array-identical (data README)
    np.testing.assert_array_equal(frames[0].array, read_slices(HEART_MHA)[0].array)
    assert read_slices(HEART_DCM, "middle")[0].index == 8
    np.testing.assert_array_equal(read_slices(HEART_DCM, -1)[0].array, frames[15].array)
    _, info = read_image(HEART_DCM)
    assert info.size == (256, 256, 16) and info.spacing[:2] == (1.0, 1.0)
    with pytest.raises(DatasetError, match=r"slice index 16 is outside the volume's 16 slices"):
        read_slices(HEART_DCM, 16)


def test_axis_order_and_spacing_against_raw_bytes(tmp_path):
    """A non-square crop of a real image with anisotropic spacing: the reader's (C, H, W) array
    must equal the file's bytes reshaped (rows, cols) and the header's x-first DimSize/spacing."""
    real = read_slices(HEART_MHA)[0].array[0, 20:220, 50:170]  # (200 rows, 120 cols)
    path = tmp_path / "crop.mha"
    write_image(path, real, spacing=(0.7, 1.3), compress=False)
    header, payload = metaimage_reference(path)
    assert header["DimSize"] == "120 200"  # x (columns) first
    assert [float(v) for v in header["ElementSpacing"].split()] == [0.7, 1.3]
    reference = np.frombuffer(payload, dtype=np.uint8).reshape(200, 120)
    s = read_slices(path)[0]
    assert s.array.shape == (1, 200, 120)
    np.testing.assert_array_equal(s.array[0], reference)
    np.testing.assert_array_equal(s.array[0], real)
    assert s.spacing == pytest.approx((0.7, 1.3))


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nrrd"])
def test_volume_round_trip_keeps_axes_and_spacing(tmp_path, suffix):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, size=(5, 30, 40)).astype(np.int16)  # (z, y, x)
    path = tmp_path / f"vol{suffix}"
    write_image(path, volume, spacing=(0.5, 0.75, 2.0))
    array, info = read_image(path)
    np.testing.assert_array_equal(array, volume)
    assert info.size == (40, 30, 5)
    assert info.spacing == pytest.approx((0.5, 0.75, 2.0))
    slices = read_slices(path, "all")
    assert len(slices) == 5
    np.testing.assert_array_equal(slices[3].array[0], volume[3])
    assert slices[3].spacing == pytest.approx((0.5, 0.75))


def test_rgb_and_rgba_png(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "rgb.png", rgb, rgb=True)
    s = read_slices(tmp_path / "rgb.png")[0]
    assert s.array.shape == (3, 20, 30)
    np.testing.assert_array_equal(s.array, rgb.transpose(2, 0, 1))
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=-1)
    write_image(tmp_path / "rgba.png", rgba, rgb=True)
    _, info = read_image(tmp_path / "rgba.png")
    assert info.channels == 3
    np.testing.assert_array_equal(read_slices(tmp_path / "rgba.png")[0].array, s.array)


def test_write_chw_png_maps_minus_one_one_to_bytes(tmp_path):
    image = np.linspace(-1, 1, 2 * 3 * 4, dtype=np.float32).reshape(1, 6, 4)
    write_chw(tmp_path / "g.png", image)
    back = read_slices(tmp_path / "g.png")[0].array
    np.testing.assert_array_equal(back, np.round((image + 1) * 127.5).astype(np.uint8))
    write_chw(tmp_path / "g.mha", image, spacing=(0.5, 0.5))
    s = read_slices(tmp_path / "g.mha")[0]
    np.testing.assert_allclose(s.array, image)
    assert s.spacing == (0.5, 0.5)


def _truncate(src, dst, keep=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _uncompressed_nii(tmp_path):
    path = tmp_path / "full.nii"
    write_image(path, read_slices(HEART_MHA)[0].array[0])
    return _truncate(path, tmp_path / "cut.nii", keep=0.9)


BROKEN = {
    "truncated .mha": lambda d: _truncate(HEART_MHA, d / "cut.mha"),
    "truncated .nii.gz": lambda d: _truncate(HEART_NII, d / "cut.nii.gz"),
    "truncated .nii": _uncompressed_nii,
    "truncated .dcm": lambda d: _truncate(HEART_DCM, d / "cut.dcm"),
    "text named .png": lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png",
    "garbage .mha": lambda d: (d / "junk.mha").write_bytes(b"\x00\x01garbage") and d / "junk.mha",
    "gzip of nothing .nii.gz": lambda d: (d / "z.nii.gz").write_bytes(gzip.compress(b"")) and d / "z.nii.gz",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_unreadable_naming_the_file(tmp_path, case):
    path = BROKEN[case](tmp_path)
    with pytest.raises(UnreadableImageError, match=re.escape(str(path)) + r": cannot be read as an image") as err:
        read_slices(path)
    assert "--skip-bad" in str(err.value)


def test_missing_file_and_bad_writes(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_slices(tmp_path / "nope.mha")
    with pytest.raises(ValueError, match="PNG needs a 2D uint8"):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="cannot write this format"):
        write_image(tmp_path / "f.jpg", np.zeros((4, 4), np.uint8))
