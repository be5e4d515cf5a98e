"""Preprocessing against plain references: resampled sizes from spacing arithmetic, crops against
hand-picked array regions, intensity scalings against numpy formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gantune.trainables.config import ConfigError, TrialConfig
from gantune.trainables.data.datasets import DatasetError
from gantune.trainables.data.io import write_image
from gantune.trainables.data.preprocess import (
    PreprocessConfig,
    finish,
    normalise,
    preprocess_npz_images,
    read_and_preprocess,
)

HEAD_MHA = Path(__file__).resolve().parents[2] / "fixtures" / "CT_2D_head_fixed.mha"  # 2D int16


def minmax_ref(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz"])
def test_generated_volume_resamples_to_expected_size(tmp_path, suffix):
    """(z, y, x) = (5, 30, 40) at spacing (x, y, z) = (0.5, 2.0, 3.0) mm, resampled to 1 mm:
    rows 30 * 2.0 = 60, columns 40 * 0.5 = 20."""
    volume = np.random.default_rng(0).normal(size=(5, 30, 40)).astype(np.float32)
    path = tmp_path / f"v{suffix}"
    write_image(path, volume, spacing=(0.5, 2.0, 3.0))
    cfg = PreprocessConfig(target_spacing=1.0, crop="none", slice="all")
    slices, info = read_and_preprocess(path, cfg)
    assert info.size == (40, 30, 5)
    assert len(slices) == 5 and all(s.shape == (1, 60, 20) for s in slices)
    # and to 0.25 mm: rows 240, columns 80
    slices, _ = read_and_preprocess(path, PreprocessConfig(target_spacing=0.25, crop="none"))
    assert [tuple(s.shape) for s in slices] == [(1, 240, 80)]


def test_real_file_to_80x80_in_unit_range():
    [x], info = read_and_preprocess(HEAD_MHA, PreprocessConfig(size=80))
    assert info.size == (256, 256) and x.shape == (1, 80, 80) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0, abs=1e-6)


def test_center_crop_takes_the_middle_square(tmp_path):
    image = np.arange(30 * 50, dtype=np.float32).reshape(30, 50)  # value encodes position
    write_image(tmp_path / "x.mha", image)
    [x], _ = read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="center", crop_size=10))
    np.testing.assert_allclose(x[0].numpy(), minmax_ref(image[10:20, 20:30]), atol=1e-6)
    [x], _ = read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="center"))  # shorter side
    np.testing.assert_allclose(x[0].numpy(), minmax_ref(image[:, 10:40]), atol=1e-6)


def test_mask_crop_uses_the_bounding_box_of_the_mask_next_to_the_image(tmp_path):
    image = np.arange(60 * 80, dtype=np.float32).reshape(60, 80)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:20, 30:50] = 1  # 10 rows x 20 cols -> a 20 px square centred on (15, 40), +2 margin
    write_image(tmp_path / "x.mha", image)
    write_image(tmp_path / "x_mask.mha", mask)
    cfg = PreprocessConfig(crop="mask", mask_margin=2)
    [x], _ = read_and_preprocess(tmp_path / "x.mha", cfg)
    np.testing.assert_allclose(x[0].numpy(), minmax_ref(image[3:27, 28:52]), atol=1e-6)
    # near the border the square shifts inside the image instead of shrinking
    mask[:] = 0
    mask[0:4, 76:80] = 1
    write_image(tmp_path / "x_mask.mha", mask)
    [x], _ = read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="mask", mask_margin=3))
    np.testing.assert_allclose(x[0].numpy(), minmax_ref(image[0:10, 70:80]), atol=1e-6)


def test_mask_problems_name_the_file(tmp_path):
    write_image(tmp_path / "x.mha", np.ones((8, 8), np.float32))
    with pytest.raises(DatasetError, match=r"x\.mha: crop 'mask' needs a mask file next to it named like x_mask\.mha"):
        read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="mask"))
    write_image(tmp_path / "x_mask.mha", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"x_mask\.mha: the mask is empty"):
        read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="mask"))
    write_image(tmp_path / "x_mask.mha", np.ones((6, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"x_mask\.mha: mask is \(6, 8\) pixels"):
        read_and_preprocess(tmp_path / "x.mha", PreprocessConfig(crop="mask"))


def test_normalisations_match_numpy():
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, 50.0, size=(3, 16, 16)).astype(np.float32)
    x = torch.from_numpy(a)
    np.testing.assert_allclose(normalise(x, PreprocessConfig()).numpy(), minmax_ref(a), atol=1e-6)
    z = (a - a.mean()) / a.std()
    ref = (np.clip(z, -2.0, 2.0) + 2.0) / 4.0
    got = normalise(x, PreprocessConfig(normalize="zscore", zscore_clip=2.0)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    lo, hi = np.percentile(a, [2.0, 98.0])
    got = normalise(x, PreprocessConfig(normalize="percentile", clip_low=2.0, clip_high=98.0)).numpy()
    np.testing.assert_allclose(got, minmax_ref(np.clip(a, lo, hi)), atol=1e-5)
    assert normalise(torch.full((1, 4, 4), 7.0), PreprocessConfig()).abs().max() == 0  # constant image


def test_finish_maps_unit_intensities_to_the_dataset_range():
    x01 = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(finish(x01).numpy(), (x01 * 2 - 1).numpy(), atol=1e-6)


def test_npz_images_only_resized():
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert preprocess_npz_images(images, PreprocessConfig()) is images  # nothing asked, nothing done
    out = preprocess_npz_images(images, PreprocessConfig(size=64))
    assert out.shape == (3, 1, 64, 64) and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"crop": "roi"}, "crop"),
        ({"normalize": "l2"}, "normalize"),
        ({"slice": "first"}, "slice"),
        ({"clip_low": 50.0, "clip_high": 10.0}, "clip_high"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(DatasetError, match=rf"'preprocess\.{field}'"):
        PreprocessConfig(**kwargs)


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("size", 2, ">= 4"),
        ("target_spacing", 0.0, "> 0"),
        ("crop_fraction", 1.5, r"in \(0, 1\]"),
        ("crop_size", 0, ">= 1"),
        ("size", "80", "int or null"),  # issue 12: an Optional field was not type-checked at all
    ],
)
def test_range_and_type_errors_name_the_key(key, value, why):
    with pytest.raises(ConfigError, match=rf"'preprocess\.{key}' must be {why}, got"):
        TrialConfig.from_flat({f"preprocess.{key}": value})
