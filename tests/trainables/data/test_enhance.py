"""Bilateral filter and gamma correction against brute-force references."""

import math

import numpy as np
import pytest
import torch

from gantune.trainables.data.enhance import EnhanceConfig, bilateral_filter, enhance, gamma_correction


def brute_force_bilateral(img: np.ndarray, sigma_space: float, sigma_color: float, r: int, span: float) -> np.ndarray:
    """Plain loops over pixels and neighbours, reflected borders, joint colour distance."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    reflect = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)  # noqa: E731
    for y in range(h):
        for x in range(w):
            num, den = np.zeros(c), 0.0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    q = img[:, reflect(y + dy, h), reflect(x + dx, w)]
                    weight = math.exp(-(dy * dy + dx * dx) / (2 * sigma_space**2)) * math.exp(
                        -((q - img[:, y, x]) ** 2).sum() / (2 * (sigma_color * span) ** 2)
                    )
                    num += weight * q
                    den += weight
            out[:, y, x] = num / den
    return out


@pytest.mark.parametrize("channels, value_range", [(1, (0.0, 1.0)), (3, (-1.0, 1.0))])
def test_bilateral_equals_brute_force_on_a_tiny_image(channels, value_range):
    lo, hi = value_range
    img = torch.rand(2, channels, 5, 6, generator=torch.Generator().manual_seed(0)) * (hi - lo) + lo
    out = bilateral_filter(img, sigma_space=1.2, sigma_color=0.2, radius=2, value_range=value_range, chunk=1)
    for i in range(2):
        ref = brute_force_bilateral(img[i].double().numpy(), 1.2, 0.2, 2, hi - lo)
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-5)


def gaussian_blur(img: torch.Tensor, sigma: float, r: int) -> torch.Tensor:
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(offsets[:, None] ** 2 + offsets[None] ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 2 * r + 1, 2 * r + 1)
    padded = torch.nn.functional.pad(img, (r, r, r, r), mode="reflect")
    return torch.nn.functional.conv2d(padded, k)


def test_bilateral_preserves_a_step_edge_better_than_a_gaussian_blur():
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    noisy = step + 0.02 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    bilateral = bilateral_filter(noisy, sigma_space=2.0, sigma_color=0.1, radius=4)
    blurred = gaussian_blur(noisy, 2.0, 4)
    edge = slice(6, 10)  # columns next to the edge
    err_bilateral = (bilateral - step)[..., edge].abs().mean()
    err_blur = (blurred - step)[..., edge].abs().mean()
    assert err_bilateral < 0.05 < err_blur
    # and it still denoises the flat parts
    assert (bilateral - step)[..., :4].std() < (noisy - step)[..., :4].std()


def test_bilateral_keeps_shape_and_validates():
    x = torch.rand(3, 3, 8, 8)
    assert bilateral_filter(x).shape == x.shape
    with pytest.raises(ValueError, match="sigma"):
        bilateral_filter(x, sigma_color=0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        bilateral_filter(x[0])


def test_gamma_correction_matches_the_formula_on_both_ranges():
    unit = torch.tensor([0.0, 0.1, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(gamma_correction(unit, 1.5).numpy(), unit.numpy() ** (1 / 1.5), rtol=1e-6)
    signed = unit * 2 - 1
    expected = (unit.numpy() ** (1 / 1.5)) * 2 - 1
    np.testing.assert_allclose(gamma_correction(signed, 1.5, value_range=(-1, 1)).numpy(), expected, atol=1e-6)
    assert torch.equal(gamma_correction(unit, 1.0), unit)
    with pytest.raises(ValueError, match="gamma"):
        gamma_correction(unit, 0.0)


def test_enhance_is_bilateral_then_gamma_on_the_dataset_range():
    """The one enhance(): [-1, 1] images, the filter first, then O = I^(1/gamma) on [0, 1]."""
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert enhance(x, EnhanceConfig()) is x  # off by default
    got = enhance(x, EnhanceConfig(gamma=1.5))
    np.testing.assert_allclose(got.numpy(), ((x.numpy() + 1) / 2) ** (1 / 1.5) * 2 - 1, atol=1e-6)
    cfg = EnhanceConfig(bilateral=True, sigma_space=1.0, sigma_color=0.2, gamma=2.0)
    ref = gamma_correction(bilateral_filter(x, sigma_space=1.0, sigma_color=0.2, value_range=(-1, 1)), 2.0, (-1, 1))
    np.testing.assert_allclose(enhance(x, cfg).numpy(), ref.numpy(), atol=1e-6)
