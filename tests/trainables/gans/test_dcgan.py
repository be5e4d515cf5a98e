import math

import numpy as np
import pytest
import torch

from gantune.trainables.gans import GANConfig, load_generators, generator_checkpoint
from gantune.trainables.gans.base import DivergedError
from gantune.trainables.gans.dcgan import discriminator_loss, fit_dcgan, nonsaturating_generator_loss

CPU = torch.device("cpu")
TINY = GANConfig(steps=6, width=16, latent_dim=16, batch_size=16, log_every=3)


def test_losses_match_the_formulas():
    real, fake = torch.tensor([[2.0], [-0.5]]), torch.tensor([[0.3], [-1.2]])
    d = lambda t: 1 / (1 + np.exp(-t.numpy().ravel()))  # noqa: E731
    expected_d = -np.mean(np.log(d(real))) - np.mean(np.log(1 - d(fake)))
    expected_g = -np.mean(np.log(d(fake)))
    assert float(discriminator_loss(real, fake)) == pytest.approx(expected_d, rel=1e-6)
    assert float(nonsaturating_generator_loss(fake)) == pytest.approx(expected_g, rel=1e-6)


def run(images, seed, cfg=TINY):
    reports = []
    gan = fit_dcgan(cfg, images, seed=seed, device=CPU, report=lambda s, m: reports.append((s, m)))
    return gan, reports


def test_finite_losses_and_images_in_range(small_pool):
    gan, reports = run(small_pool.of_class(0), seed=0)
    assert [s for s, _ in reports] == [3, 6]
    assert all(math.isfinite(v) for _, m in reports for v in m.values())
    images = gan.sample(10, seed=1)
    assert images.shape == (10, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert ((gan.score(images) >= 0) & (gan.score(images) <= 1)).all()


def test_same_seed_same_losses_different_seed_different(small_pool):
    images = small_pool.of_class(1)
    _, a = run(images, seed=3)
    _, b = run(images, seed=3)
    _, c = run(images, seed=4)
    assert a == b
    assert a != c


def test_sampling_is_reproducible_from_its_seed(small_pool):
    gan, _ = run(small_pool.of_class(0), seed=0)
    assert torch.equal(gan.sample(4, seed=9), gan.sample(4, seed=9))
    assert not torch.equal(gan.sample(4, seed=9), gan.sample(4, seed=10))


def test_divergence_raises_a_named_error(small_pool):
    images = small_pool.of_class(0).clone()
    images[:] = float("nan")  # what a broken preprocessing step would hand the loop
    with pytest.raises(DivergedError, match="became nan by step 3"):  # TINY reports every 3 steps
        run(images, seed=0)


def test_checkpoint_round_trip_rebuilds_the_same_generator(small_pool, tmp_path):
    gan, _ = run(small_pool.of_class(0), seed=0)
    path = tmp_path / "g.pt"
    torch.save(generator_checkpoint({0: gan}, ("a", "b")), path)
    loaded = load_generators(str(path))[0]
    assert torch.equal(loaded.sample(5, seed=2), gan.sample(5, seed=2))


def test_running_means_match_a_plain_mean_and_catch_a_non_finite_loss():
    from gantune.trainables.gans.base import RunningMeans

    means = RunningMeans()
    losses = [0.5, 1.25, 2.0]
    for i, loss in enumerate(losses):
        means.add(loss_d=torch.tensor(loss), share=float(i % 2))
    assert means.flush(3) == pytest.approx({"loss_d": sum(losses) / 3, "share": 1 / 3})
    assert means.history == {"loss_d": [pytest.approx(sum(losses) / 3)], "share": [pytest.approx(1 / 3)]}
    means.add(loss_d=torch.tensor(1.0), share=0.0)
    means.add(loss_d=torch.tensor(float("inf")), share=0.0)  # one bad step is enough
    means.add(loss_d=torch.tensor(1.0), share=0.0)
    with pytest.raises(DivergedError, match="loss_d became inf by step 6"):
        means.flush(6)
