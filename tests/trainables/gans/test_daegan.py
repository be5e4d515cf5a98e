"""DAE-GAN parts: mixup discriminator loss and Gaussian-mixture latent."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gantune.trainables.gans.base import GANConfig
from gantune.trainables.gans.daegan import (
    GaussianMixtureLatent,
    SelfAttention,
    build_latent,
    mixup_batch,
    mixup_d_loss,
    restore_latent,
    sample_lam,
)

CPU = torch.device("cpu")


def test_mixup_targets_equal_lam_and_mix_each_pair():
    real, fake = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2) - 1
    lam = torch.tensor([0.0, 0.25, 1.0])
    x_mix, target = mixup_batch(real, fake, lam)
    assert torch.equal(target.ravel(), lam)
    for i, weight in enumerate(lam.tolist()):
        assert torch.allclose(x_mix[i], weight * real[i] + (1 - weight) * fake[i])


def test_mixup_loss_is_bce_against_lam():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    real, fake = torch.rand(6, 1, 2, 2), -torch.rand(6, 1, 2, 2)
    loss = mixup_d_loss(0.4)(d, real, fake, torch.Generator().manual_seed(5))
    lam = sample_lam(6, 0.4, torch.Generator().manual_seed(5)).double().numpy()
    w, b = d[1].weight.detach().double().numpy().ravel(), float(d[1].bias.detach())
    x = (lam[:, None] * real.double().numpy().reshape(6, -1)) + (1 - lam[:, None]) * fake.double().numpy().reshape(
        6, -1
    )
    p = 1 / (1 + np.exp(-(x @ w + b)))
    expected = -np.mean(lam * np.log(p) + (1 - lam) * np.log(1 - p))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_lam_follows_beta_and_the_seed():
    alpha = 0.2
    lam = sample_lam(20000, alpha, torch.Generator().manual_seed(0)).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)  # Beta(a, a) variance
    again = sample_lam(5, alpha, torch.Generator().manual_seed(0))
    other = sample_lam(5, alpha, torch.Generator().manual_seed(1))
    assert torch.equal(again, torch.as_tensor(lam[:5])) and not torch.equal(again, other)
    with pytest.raises(ValueError, match="gan.alpha"):
        sample_lam(2, 0.0, torch.Generator())


def test_lam_sampler_slices_batches_off_one_block_per_copy():
    from gantune.trainables.gans.daegan import LamSampler

    sampler = LamSampler(0.4, torch.Generator().manual_seed(3), block_batches=4)
    batches = [sampler(8) for _ in range(5)]  # four from the first block, one from a second
    seed = int(torch.randint(0, 2**62, (), generator=torch.Generator().manual_seed(3)))
    first_block = np.random.default_rng(seed).beta(0.4, 0.4, size=32).astype(np.float32)
    np.testing.assert_array_equal(torch.cat(batches[:4]).numpy(), first_block)
    assert batches[4].shape == (8,) and sampler.cursor == 8  # a new block, its first batch taken


def test_mixture_latent_samples_every_component_with_its_mean_and_std():
    latent = GaussianMixtureLatent(latent_dim=3, components=4, seed=7)
    z, k = latent.sample_with_components(40000, torch.Generator().manual_seed(1), CPU)
    counts = np.bincount(k.numpy(), minlength=4)
    assert (abs(counts - 10000) < 500).all()  # each component about a quarter of the draws
    for c in range(4):
        zc = z[k == c]
        assert torch.allclose(zc.mean(0), latent.means[c], atol=0.05)
        assert torch.allclose(zc.std(0), latent.stds[c], atol=0.05)
    # means/stds are fixed by the seed, and differ between seeds
    assert torch.equal(GaussianMixtureLatent(3, 4, 7).means, latent.means)
    assert not torch.equal(GaussianMixtureLatent(3, 4, 8).means, latent.means)


def test_latent_choice_and_checkpoint_round_trip():
    assert not isinstance(build_latent(GANConfig(mixture_components=0), 0, CPU), nn.Module)
    mixture = build_latent(GANConfig(latent_dim=5, mixture_components=3), 11, CPU)
    restored = restore_latent(GANConfig(latent_dim=5, mixture_components=3), mixture.state_dict(), CPU)
    a = mixture(4, torch.Generator().manual_seed(2), CPU)
    b = restored(4, torch.Generator().manual_seed(2), CPU)
    assert torch.equal(a, b)


def test_self_attention_starts_as_identity_and_matches_the_sagan_formula():
    torch.manual_seed(0)
    sa = SelfAttention(16)
    x = torch.randn(2, 16, 3, 3)
    assert torch.equal(sa(x), x)
    with torch.no_grad():
        sa.gain.fill_(1.0)
    q, k, v = (m(x).flatten(2) for m in (sa.query, sa.key, sa.value))  # (B, c, N)
    attn = F.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), unscaled as in SAGAN
    expected = x + (v @ attn.transpose(1, 2)).view_as(x)
    assert torch.allclose(sa(x), expected, atol=1e-5)
