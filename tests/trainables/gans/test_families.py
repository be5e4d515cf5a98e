"""One contract across every GAN family in the registry: network shapes, reproducibility, finite
losses, images in [-1, 1]."""

import math

import pytest
import torch

from gantune.trainables.gans import GANS, NETWORKS, GANConfig

CPU = torch.device("cpu")
TINY = GANConfig(steps=4, width=16, latent_dim=16, batch_size=8, log_every=2, mixture_components=3)


def test_every_family_can_be_rebuilt():
    assert set(GANS) == set(NETWORKS) and {"dcgan", "egan", "daegan"} <= set(GANS)


@pytest.mark.parametrize("family", sorted(NETWORKS))
@pytest.mark.parametrize("size", [28, 64, 80])
@pytest.mark.parametrize("channels", [1, 3])
def test_network_shapes(family, size, channels):
    torch.manual_seed(0)
    cfg = GANConfig(family=family, width=16, latent_dim=8)
    generator, discriminator = NETWORKS[family](cfg, (channels, size, size), CPU)
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, channels, size, size)
    assert images.abs().max() <= 1
    assert discriminator(images).shape == (2, 1)


@pytest.fixture(scope="module")
def images():
    return torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1


def run(family, images, seed):
    reports = []
    gan = GANS[family](
        GANConfig(**{**TINY.to_dict(), "family": family}),
        images,
        seed=seed,
        device=CPU,
        report=lambda s, m: reports.append((s, m)),
    )
    return gan, reports


@pytest.mark.parametrize("family", sorted(GANS))
def test_same_seed_same_losses_other_seed_other_losses(family, images):
    _, first = run(family, images, seed=1)
    _, again = run(family, images, seed=1)
    _, other = run(family, images, seed=2)
    assert first == again
    assert [m["loss_d"] for _, m in first] != [m["loss_d"] for _, m in other]


@pytest.mark.parametrize("family", sorted(GANS))
def test_a_few_steps_give_finite_losses_and_images_in_range(family, images):
    gan, reports = run(family, images, seed=0)
    assert [s for s, _ in reports] == [2, 4]
    assert all(math.isfinite(v) for _, m in reports for v in m.values())
    samples = gan.sample(5, seed=3)
    assert samples.shape == (5, 1, 28, 28) and samples.abs().max() <= 1
    assert torch.equal(samples, gan.sample(5, seed=3))


@pytest.mark.parametrize("family", ["egan", "daegan"])
def test_evolution_history_has_shares_and_fitness(family, images):
    gan, _ = run(family, images, seed=0)
    shares = [gan.history[f"egan_share_{n}"] for n in ("minimax", "heuristic", "least_squares")]
    assert all(sum(s) == pytest.approx(1.0) for s in zip(*shares))
    assert len(gan.history["egan_fq"]) == 2 and all(0 <= q <= 1 for q in gan.history["egan_fq"])
    assert all(math.isfinite(v) for v in gan.history["egan_fd"])


@pytest.mark.parametrize("family", sorted(GANS))
def test_checkpoint_round_trip_gives_the_same_samples(family, images, tmp_path):
    from gantune.trainables.gans import generator_checkpoint, load_generators

    gan, _ = run(family, images, seed=0)
    path = tmp_path / "generators.pt"
    torch.save(generator_checkpoint({0: gan}, ("only",)), path)
    loaded = load_generators(str(path))[0]
    assert torch.equal(loaded.sample(4, seed=9), gan.sample(4, seed=9))  # mixture latent included


@pytest.mark.parametrize("family", ["egan", "daegan"])
def test_conditional_spectral_evolution_round_trips_through_the_checkpoint(family, images, tmp_path):
    """What `gantune generate` rebuilds from the registry: per-class views of a conditional pair
    with a spectrally normalised D sample and score as the trained views did."""
    from gantune.trainables.gans import generator_checkpoint, load_generators

    cfg = GANConfig(**{**TINY.to_dict(), "family": family, "conditional": True, "spectral_norm": True,
                       "lecam": 0.3, "ema": 0.9})
    gan = GANS[family](cfg, images, seed=0, device=CPU, labels=torch.tensor([0, 1] * 12), num_classes=2)
    views = {c: gan.for_class(c) for c in (0, 1)}
    path = tmp_path / "generators.pt"
    torch.save(generator_checkpoint(views, ("a", "b")), path)
    loaded = load_generators(str(path))
    for c in (0, 1):
        assert torch.equal(loaded[c].sample(3, seed=4), views[c].sample(3, seed=4))
        assert torch.allclose(loaded[c].score(images[:3]), views[c].score(images[:3]))
