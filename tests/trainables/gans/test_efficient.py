"""Data-efficient GAN training pieces against plain reference computations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gantune.trainables.gans.base import GANConfig
from gantune.trainables.gans.dcgan import fit_dcgan
from gantune.trainables.gans.efficient import (
    AdaptiveP,
    AugmentedDiscriminator,
    GeneratorEMA,
    LeCam,
    brightness,
    contrast,
    cutout,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
    parse_policy,
    translation,
)
from gantune.trainables.gans.nets import DCGANDiscriminator


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=rng(1)) * 2 - 1


def test_brightness_adds_one_offset_per_image_in_range():
    x = images()
    out = brightness(x, rng())
    offsets = (out - x).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
    assert offsets[:, 0].abs().max() <= 0.5
    assert torch.allclose(offsets[:, 0], torch.rand(len(x), generator=rng()) - 0.5)


def test_contrast_scales_around_each_image_mean():
    x = images()
    out = contrast(x, rng())
    c = torch.rand(len(x), generator=rng()) + 0.5
    for i in range(len(x)):
        m = x[i].mean()
        assert torch.allclose(out[i], (x[i] - m) * c[i] + m, atol=1e-6)


def test_translation_is_a_whole_pixel_shift_with_zero_fill():
    x = images(n=20, size=8)
    out = translation(x, rng())
    for i in range(len(x)):
        matched = False
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy): 8 - max(0, dy), max(0, -dx): 8 - max(0, dx)]
                ref[:, max(0, dy): 8 - max(0, -dy), max(0, dx): 8 - max(0, -dx)] = src
                matched |= torch.equal(out[i], ref)
        assert matched, f"image {i} is not a shift of at most 1 px (ratio 1/8 of 8 px)"


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    x = images(n=20, size=8) + 3.0  # no pixel is 0 before cutout
    out = cutout(x, rng())
    for i in range(len(x)):
        zero = out[i, 0] == 0
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 4 and 0 < len(cols) <= 4
        assert zero.sum() == len(rows) * len(cols)  # a (clipped) rectangle, not scattered pixels


def test_diff_augment_probability_zero_is_identity_and_one_changes_every_image():
    x = images()
    ops = parse_policy("translation,cutout,brightness,contrast")
    assert torch.equal(diff_augment(x, ops, rng(), p=0.0), x)
    out = diff_augment(x, ops, rng(), p=1.0)
    assert all(not torch.equal(out[i], x[i]) for i in range(len(x)))
    with pytest.raises(ValueError, match="gan.diffaugment"):
        parse_policy("translation,rotate")


def test_augmented_discriminator_augments_what_d_sees():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.flatten(1).mean(1, keepdim=True)

    x = images()
    AugmentedDiscriminator(Probe(), ("brightness",), rng())(x)
    assert torch.allclose(seen[0], brightness(x, rng()))


def test_generator_ema_matches_a_hand_rolled_average():
    g = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = GeneratorEMA(g, beta=0.9)
    reference = [p.detach().clone() for p in g.parameters()]
    for step in range(5):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn(p.shape, generator=rng(step)))
        g.train()(torch.randn(4, 3))  # moves the BatchNorm running stats
        ema.update(g)
        reference = [0.9 * r + 0.1 * p.detach() for r, p in zip(reference, g.parameters())]
    for r, p in zip(reference, ema.model.parameters()):
        assert torch.allclose(r, p, atol=1e-6)
    assert torch.equal(ema.model[1].running_mean, g[1].running_mean)


def test_lecam_matches_its_definition_with_ema_anchors():
    lecam = LeCam(decay=0.99)
    real1, fake1 = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])
    first = lecam(real1, fake1)
    a_r, a_f = real1.mean(), fake1.mean()
    assert torch.allclose(first, torch.relu(real1 - a_f).pow(2).mean() + torch.relu(a_r - fake1).pow(2).mean())
    real2, fake2 = torch.tensor([3.0, 0.0]), torch.tensor([2.0, -2.0])
    second = lecam(real2, fake2)
    a_r, a_f = 0.99 * a_r + 0.01 * real2.mean(), 0.99 * a_f + 0.01 * fake2.mean()
    assert torch.allclose(second, torch.relu(real2 - a_f).pow(2).mean() + torch.relu(a_r - fake2).pow(2).mean())


def test_hinge_losses_match_their_formulas():
    r, f = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([-2.0, 0.0, 1.5])
    expected = sum(max(0, 1 - v) for v in r.tolist()) / 3 + sum(max(0, 1 + v) for v in f.tolist()) / 3
    assert hinge_discriminator_loss(r, f).item() == pytest.approx(expected)
    assert hinge_generator_loss(f).item() == pytest.approx(-f.mean().item())


def test_adaptive_p_rises_when_d_is_sure_of_real_images_and_falls_otherwise():
    ada = AdaptiveP(target=0.6, speed_images=100, interval=2)
    for _ in range(4):
        ada.observe(torch.ones(10))  # r_t = 1 > 0.6: overfitting
        ada.update(batch=10)
    assert ada.p == pytest.approx(2 * 10 * 2 / 100)
    for _ in range(2):
        ada.observe(-torch.ones(10))
        ada.update(batch=10)
    assert ada.p == pytest.approx(10 * 2 / 100)


def test_spectral_norm_discriminator_has_unit_spectral_norm_and_no_batchnorm():
    d = DCGANDiscriminator(1, 28, 32, spectral=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    d.train()
    for _ in range(30):  # power iterations converge while training
        d(torch.randn(4, 1, 28, 28))
    w = d.features[0].weight.reshape(d.features[0].weight.shape[0], -1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=0.05)


SMALL = dict(steps=8, width=16, latent_dim=8, batch_size=8, log_every=4)


@pytest.mark.parametrize("extras", [
    {},
    {"diffaugment": "translation,cutout,brightness,contrast"},
    {"diffaugment": "translation", "ada_target": 0.6},
    {"spectral_norm": True, "loss": "hinge"},
    {"ema": 0.9},
    {"lecam": 0.3},
])
def test_every_option_trains_reproducibly(extras):
    cfg = GANConfig(**SMALL, **extras)
    x = images(n=16, size=28)
    a = fit_dcgan(cfg, x, seed=3, device=torch.device("cpu"))
    b = fit_dcgan(cfg, x, seed=3, device=torch.device("cpu"))
    assert torch.equal(a.sample(4, seed=1), b.sample(4, seed=1))
    assert a.history["loss_d"] == b.history["loss_d"]


def test_ema_generator_is_what_samples():
    cfg = GANConfig(**SMALL, ema=0.5)
    gan = fit_dcgan(cfg, images(n=16, size=28), seed=0, device=torch.device("cpu"))
    assert all(not p.requires_grad for p in gan.generator.parameters())  # the EMA copy, not the trained G


def test_diffaugment_changes_training():
    x = images(n=16, size=28)
    plain = fit_dcgan(GANConfig(**SMALL), x, seed=0, device=torch.device("cpu"))
    augmented = fit_dcgan(GANConfig(**SMALL, diffaugment="translation"), x, seed=0, device=torch.device("cpu"))
    assert plain.history["loss_d"] != augmented.history["loss_d"]


def test_conditional_gan_samples_each_requested_class():
    """A conditional generator given another label draws other images from the same latents, and
    each class view scores through the projection D with its own label."""
    x = images(n=16, size=28)
    y = torch.tensor([0, 1] * 8)
    gan = fit_dcgan(
        GANConfig(**SMALL, conditional=True), x, seed=0, device=torch.device("cpu"), labels=y, num_classes=2
    )
    zero, one = gan.for_class(0), gan.for_class(1)
    assert not torch.equal(zero.sample(4, seed=1), one.sample(4, seed=1))
    assert torch.equal(zero.sample(4, seed=1), copy.deepcopy(zero).sample(4, seed=1))
    assert not torch.equal(zero.score(x[:4]), one.score(x[:4]))
    with pytest.raises(AssertionError, match="for_class"):
        gan.sample(2, seed=0)


@pytest.mark.parametrize("family", ["egan", "daegan"])
def test_evolutionary_families_take_diffaugment_and_the_ema_generator(family):
    from gantune.trainables.gans import GANS

    x = images(n=16, size=28)
    extras = {"diffaugment": "translation,brightness", "ema": 0.9, "spectral_norm": family == "egan"}
    cfg = GANConfig(**{**SMALL, "steps": 4}, family=family, mutations="minimax,heuristic", **extras)
    a, b = (GANS[family](cfg, x, seed=1, device=torch.device("cpu")) for _ in range(2))
    plain = GANS[family](GANConfig(**{**SMALL, "steps": 4}, family=family, mutations="minimax,heuristic"), x, seed=1,
                         device=torch.device("cpu"))
    assert torch.equal(a.sample(3, seed=0), b.sample(3, seed=0))
    assert a.history["loss_d"] != plain.history["loss_d"]
    assert all(not p.requires_grad for p in a.generator.parameters())


@pytest.mark.parametrize("family", ["egan", "daegan"])
@pytest.mark.parametrize("key,value", [("conditional", True), ("lecam", 0.3), ("spectral_norm", True), ("ema", 0.9)])
def test_every_family_takes_the_data_efficient_options(family, key, value):
    assert getattr(GANConfig(family=family, **{key: value}), key) == value
    GANConfig(family=family, diffaugment="translation", ada_target=0.6)


def test_hinge_is_refused_for_the_mixup_discriminator_with_the_reason():
    assert GANConfig(family="egan", loss="hinge").loss == "hinge"
    with pytest.raises(ValueError, match="'gan.loss' 'hinge' has no meaning for gan.family 'daegan'.*soft target"):
        GANConfig(family="daegan", loss="hinge")


def test_conditional_gan_round_trips_through_the_generator_checkpoint(tmp_path):
    """The registry's checkpoint of a conditional GAN restores one class view per label that
    samples exactly what the trained views sampled (what `gantune generate` draws from)."""
    from gantune.trainables.gans import generator_checkpoint, load_generators

    x, y = images(n=16, size=28), torch.tensor([0, 1] * 8)
    gan = fit_dcgan(GANConfig(**SMALL, conditional=True, ema=0.9), x, seed=0, device=torch.device("cpu"),
                    labels=y, num_classes=2)
    views = {c: gan.for_class(c) for c in (0, 1)}
    path = tmp_path / "generator.pt"
    torch.save(generator_checkpoint(views, ("a", "b")), path)
    loaded = load_generators(str(path))
    for c in (0, 1):
        assert loaded[c].label == c and loaded[c].num_classes == 2
        assert torch.equal(loaded[c].sample(3, seed=5), views[c].sample(3, seed=5))
        assert torch.equal(loaded[c].score(x[:3]), views[c].score(x[:3]))
