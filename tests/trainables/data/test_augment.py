"""On-device augmentation, classic and TrivialAugment: each transform against torch's own or its
formula, determinism, strength."""

import dataclasses

import pytest
import torch

from gantune.trainables.data.augment import (
    TRIVIAL_MAX,
    TRIVIAL_OPS,
    ULTRASOUND_CLASSIC,
    AffineParams,
    AugmentConfig,
    TrivialParams,
    affine_theta,
    apply_affine,
    apply_trivial,
    augment_batch,
    make_augment,
    sample_params,
    sample_trivial,
    trivial_batch,
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
    y = augment_batch(
        x,
        torch.Generator().manual_seed(0),
        AugmentConfig(enabled=True, max_rotation_deg=20, max_zoom=0.2, max_translate=0.1),
    )
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


# --- Classic: ultrasound settings ---


def test_vertical_flip_off_keeps_every_other_draw():
    on = params_of(AugmentConfig(enabled=True), 2000)
    off = params_of(AugmentConfig(enabled=True, vertical_flip=False), 2000)
    assert (on.vflip < 0).any() and (off.vflip > 0).all()
    assert torch.equal(on.hflip, off.hflip) and torch.equal(on.angle, off.angle)


def test_ultrasound_classic_has_no_vertical_flip_nor_quarter_turn():
    cfg = AugmentConfig(enabled=True, **ULTRASOUND_CLASSIC)
    p = params_of(cfg, 2000)
    assert (p.vflip > 0).all() and (p.quarter_turns == 0).all() and (p.hflip < 0).any()
    assert p.angle.abs().max() <= torch.deg2rad(torch.tensor(10.0)) + 1e-6


# --- TrivialAugment ---

TRIVIAL = AugmentConfig(enabled=True, policy="trivial")


def one_op(name, magnitude, n=1, shape=(1, 1, 4, 4), centre=(0.5, 0.5), noise=None):
    shape = (n, *shape[1:])
    return TrivialParams(
        op=torch.full((n,), TRIVIAL_OPS.index(name), dtype=torch.long),
        magnitude=torch.full((n,), float(magnitude)),
        centre=torch.tensor([centre] * n),
        noise=torch.zeros(shape) if noise is None else noise,
    )


def small(shape=(1, 1, 4, 4), scale=0.5):
    # Within [-0.5, 0.5]: no op in the formula tests below reaches the clamp at +-1.
    return (torch.rand(shape, generator=torch.Generator().manual_seed(5)) * 2 - 1) * scale


def test_trivial_identity_is_exact_and_hflip_is_torch_flip():
    x = images(n=2)
    assert torch.equal(apply_trivial(x, one_op("identity", 0.0, 2, x.shape)), x)
    assert torch.equal(apply_trivial(x, one_op("hflip", 0.0, 2, x.shape)), x.flip(-1))


def test_trivial_photometric_ops_match_their_formulas():
    x = small()
    mean = x.mean()
    assert torch.allclose(apply_trivial(x, one_op("brightness", 0.2)), x + 0.2)
    assert torch.allclose(apply_trivial(x, one_op("contrast", -0.4)), mean + 0.6 * (x - mean))
    assert torch.allclose(apply_trivial(x, one_op("gamma", 0.3)), 2 * ((x + 1) / 2) ** torch.exp(torch.tensor(0.3)) - 1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(apply_trivial(x, one_op("noise", 0.05, noise=noise)), x + 0.05 * noise)
    # Sharpness: PIL's blend with its 3x3 SMOOTH kernel (weights 1 around, 5 in the centre, / 13),
    # borders replicated; computed pixel by pixel here.
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0]
    smooth = torch.zeros(4, 4)
    for i in range(4):
        for j in range(4):
            window = padded[i : i + 3, j : j + 3]
            smooth[i, j] = (window.sum() + 4 * window[1, 1]) / 13
    for m in (-0.8, 0.6):
        expected = smooth + (1 + m) * (x[0, 0] - smooth)
        assert torch.allclose(apply_trivial(x, one_op("sharpness", m))[0, 0], expected, atol=1e-6)


def test_trivial_photometric_ops_clamp_to_range():
    x = torch.full((1, 1, 4, 4), 0.9)
    assert torch.equal(apply_trivial(x, one_op("brightness", 0.3)), torch.ones_like(x))


def test_trivial_cutout_zeroes_the_square_around_the_centre():
    x = small(shape=(1, 1, 8, 8)) + 0.6  # nonzero everywhere
    y = apply_trivial(x, one_op("cutout", 0.25, shape=x.shape, centre=(3.5 / 8, 5.5 / 8)))  # centre pixel (x 3, y 5)
    hole = torch.zeros(8, 8, dtype=torch.bool)
    hole[4:6, 2:4] = True  # side 0.25 * 8 = 2: rows 5 - 1 .. 5, cols 3 - 1 .. 3
    assert torch.equal(y[0, 0][hole], torch.zeros(4)) and torch.equal(y[0, 0][~hole], x[0, 0][~hole])


def test_trivial_rotate_90_equals_rot90_and_small_rotation_keeps_the_centre():
    x = images(n=1, c=1, size=8)
    y = apply_trivial(x, one_op("rotate", 90.0, shape=x.shape))
    assert torch.allclose(y, torch.rot90(x, 3, dims=(2, 3)), atol=1e-5)  # +90 degrees = rot90 k=3 (y down)
    flat = torch.ones(1, 1, 8, 8)
    assert torch.allclose(apply_trivial(flat, one_op("rotate", 20.0, shape=flat.shape)), flat, atol=1e-6)


@pytest.mark.parametrize("name, dim", [("translate_x", 3), ("translate_y", 2)])
def test_trivial_translate_moves_whole_pixels(name, dim):
    x = images(n=1, c=1, size=8)
    y = apply_trivial(x, one_op(name, 0.3, shape=x.shape))  # 0.3 * 8 = 2.4 -> 2 pixels
    kept = x.narrow(dim, 0, 6)
    assert torch.allclose(y.narrow(dim, 2, 6), kept, atol=1e-6)  # exact copy: no interpolation blur


@pytest.mark.parametrize("name", ["shear_x", "shear_y"])
def test_trivial_shear_shifts_each_row_by_m_times_its_coordinate(name):
    # On a 4 px image the row centres sit at normalised y = -0.75, -0.25, 0.25, 0.75; with m = 2 the
    # content of row y moves by m * y normalised = 4 * y pixels: -3, -1, 1, 3.
    x = images(n=1, c=1, size=4)
    if name == "shear_y":
        x = x.transpose(2, 3)
    y = apply_trivial(x, one_op(name, 2.0, shape=x.shape))
    if name == "shear_y":
        x, y = x.transpose(2, 3), y.transpose(2, 3)
    for row, shift in enumerate((-3, -1, 1, 3)):
        for col in range(4):
            src = col - shift
            if 0 <= src < 4:
                assert float(y[0, 0, row, col]) == pytest.approx(float(x[0, 0, row, src]), abs=1e-5)


def reference_op(x, name, m, centre, noise):
    """Plain per-image reference of each op, for the batch test."""
    if name in ("identity",):
        return x
    if name == "hflip":
        return x.flip(-1)
    p = one_op(name, m, 1, x[None].shape, tuple(centre.tolist()), noise[None])
    return apply_trivial(x[None], p)[0]


def test_trivial_batch_applies_exactly_one_op_per_image():
    x = images(n=300, c=1, size=8)
    p = sample_trivial(x.shape, TRIVIAL, torch.Generator().manual_seed(0), torch.device("cpu"))
    y = apply_trivial(x, p)
    assert set(p.op.tolist()) == set(range(len(TRIVIAL_OPS)))
    for i in range(len(x)):
        name = TRIVIAL_OPS[int(p.op[i])]
        expected = reference_op(x[i], name, float(p.magnitude[i]), p.centre[i], p.noise[i])
        assert torch.allclose(y[i], expected, atol=1e-6), name


def test_trivial_draws_ops_uniformly_and_magnitudes_within_strength():
    for strength in (1.0, 0.5):
        cfg = AugmentConfig(enabled=True, policy="trivial", strength=strength)
        p = sample_trivial((13_000, 1, 2, 2), cfg, torch.Generator().manual_seed(1), torch.device("cpu"))
        counts = torch.bincount(p.op, minlength=len(TRIVIAL_OPS)).float() / 13_000
        assert torch.allclose(counts, torch.full_like(counts, 1 / len(TRIVIAL_OPS)), atol=0.015)
        for k, name in enumerate(TRIVIAL_OPS):
            mags = p.magnitude[p.op == k]
            top = strength * TRIVIAL_MAX[name]
            assert mags.abs().max() <= top + 1e-6
            if top > 0:
                assert mags.abs().max() > 0.95 * top  # uniform up to the max, not a fixed magnitude
                assert (mags < 0).any() == (name not in ("noise", "cutout"))


def test_trivial_in_range_reproducible_and_seed_dependent():
    x = images(n=64, c=3, size=28)
    aug = make_augment(TRIVIAL)
    a, b = aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.min() >= -1 and a.max() <= 1 and a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, trivial_batch(x, torch.Generator().manual_seed(3), TRIVIAL))
    assert not torch.allclose(a, augment_batch(x, torch.Generator().manual_seed(3), TRIVIAL))


def test_trivial_strength_zero_is_identity_and_off_by_default():
    x = images()
    zero = dataclasses.replace(TRIVIAL, strength=0.0)
    assert torch.equal(trivial_batch(x, torch.Generator().manual_seed(0), zero), x)
    assert make_augment(AugmentConfig(policy="trivial")) is None


def test_unknown_policy_names_the_key():
    with pytest.raises(ValueError, match="policy"):
        AugmentConfig(policy="autoaugment")
