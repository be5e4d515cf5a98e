"""Classic on-device augmentation: exact transforms against torch's own, determinism, strength."""

import dataclasses

import pytest
import torch

from gantune.trainables.data.augment import (
    AffineParams,
    AugmentConfig,
    affine_theta,
    apply_affine,
    augment_batch,
    make_augment,
    sample_params,
)

ONLY = dict(enabled=True, flip_p=0.0, quarter_turn_p=0.0, max_rotation_deg=0.0, max_translate=0.0, max_zoom=0.0)


def images(n=8, c=3, size=16, dtype=torch.float32):
    return (torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype) * 2 - 1)


def params_of(cfg, n, seed=0):
    return sample_params(n, cfg, torch.Generator().manual_seed(seed), torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_preserved(dtype):
    x = images(dtype=dtype)
    y = make_augment(AugmentConfig(enabled=True))(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


def test_deterministic_given_seed():
    x, aug = images(), make_augment(AugmentConfig(enabled=True))
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_strength_zero_is_identity_and_disables():
    x = images()
    cfg = AugmentConfig(enabled=True, strength=0.0)
    assert torch.allclose(augment_batch(x, torch.Generator().manual_seed(0), cfg), x, atol=1e-6)
    assert make_augment(cfg) is None
    assert make_augment(AugmentConfig()) is None  # off by default
    off = AugmentConfig(enabled=False, strength=1.0)
    assert torch.allclose(augment_batch(x, torch.Generator().manual_seed(0), off), x, atol=1e-6)


def test_quarter_turns_equal_rot90():
    cfg = AugmentConfig(**{**ONLY, "quarter_turn_p": 1.0})
    x = images(n=12)
    y = augment_batch(x, torch.Generator().manual_seed(0), cfg)
    turns = params_of(cfg, 12).quarter_turns
    assert set(turns.tolist()) == {1, 2, 3}
    expected = torch.stack([torch.rot90(x[i], int(k), dims=(1, 2)) for i, k in enumerate(turns)])
    assert torch.allclose(y, expected, atol=1e-5)


def test_flips_equal_torch_flip():
    x = images(n=16)
    cfg = AugmentConfig(**{**ONLY, "flip_p": 0.5})
    y = augment_batch(x, torch.Generator().manual_seed(0), cfg)
    p = params_of(cfg, 16)
    for i in range(16):
        dims = [d for d, s in ((2, p.vflip[i]), (3, p.hflip[i])) if s < 0]
        assert torch.allclose(y[i : i + 1], x[i : i + 1].flip(dims) if dims else x[i : i + 1], atol=1e-5)
    assert (p.hflip < 0).any() and (p.hflip > 0).any()


def test_shift_moves_content_by_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    one_pixel = 2.0 / 8  # normalised coordinates span 2 over the image
    p = AffineParams(
        hflip=torch.ones(1), vflip=torch.ones(1), quarter_turns=torch.zeros(1, dtype=torch.long),
        angle=torch.zeros(1), zoom=torch.ones(1), shift=torch.tensor([[one_pixel, 2 * one_pixel]]),
    )
    y = apply_affine(x, affine_theta(p))
    assert y[0, 0, 5, 4] == pytest.approx(1.0, abs=1e-5) and y.sum() == pytest.approx(1.0, abs=1e-5)


def test_values_stay_in_range():
    x = images(n=32)
    y = augment_batch(x, torch.Generator().manual_seed(0), AugmentConfig(enabled=True, max_rotation_deg=20, max_zoom=0.2, max_translate=0.1))
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6


def test_reflection_padding_no_black_corners():
    x = torch.ones(4, 1, 16, 16)  # any constant image stays constant under reflection padding
    cfg = AugmentConfig(**{**ONLY, "max_rotation_deg": 20.0, "max_translate": 0.02, "max_zoom": 0.02})
    assert torch.allclose(augment_batch(x, torch.Generator().manual_seed(0), cfg), x, atol=1e-5)


def test_strength_scales_ranges_and_probabilities():
    full, half = AugmentConfig(enabled=True), AugmentConfig(enabled=True, strength=0.5)
    a, b = params_of(full, 4000), params_of(half, 4000)
    # Same draws, half the range.
    assert torch.allclose(b.angle, a.angle / 2)
    assert torch.allclose(b.shift, a.shift / 2)
    assert torch.allclose(b.zoom - 1, (a.zoom - 1) / 2, atol=1e-6)
    assert a.angle.abs().max() <= torch.deg2rad(torch.tensor(20.0)) + 1e-6
    assert (a.shift.abs() <= 2 * 0.02 + 1e-7).all()
    # Flip and quarter-turn probabilities scale too: 0.5 -> 0.25.
    assert float((a.hflip < 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert float((b.hflip < 0).float().mean()) == pytest.approx(0.25, abs=0.03)
    assert float((b.quarter_turns > 0).float().mean()) == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("key, value", [("strength", 1.5), ("strength", -0.1), ("flip_p", 2.0), ("max_zoom", -0.1)])
def test_invalid_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        dataclasses.replace(AugmentConfig(enabled=True), **{key: value})
