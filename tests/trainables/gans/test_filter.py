"""Discriminator-score filter: keeps exactly the images D scores >= threshold; deterministic
oversampling."""

import pytest
import torch
from torch import nn

from gantune.trainables.gans import FILTERS, GANConfig, TrainedGAN, score_filter
from gantune.trainables.gans.base import normal_latent


class MeanPixelD(nn.Module):
    """Logit = 4 * mean pixel: bright images look real."""

    def forward(self, x):
        return 4 * x.mean(dim=(1, 2, 3)).unsqueeze(1)


class NoiseG(nn.Module):
    """z -> a flat image of value tanh(z_0)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        return torch.tanh(z[:, :1]).view(-1, 1, 1, 1).expand(-1, 1, 4, 4) + self.dummy


def toy_gan():
    return TrainedGAN(GANConfig(latent_dim=2), NoiseG(), MeanPixelD(), normal_latent(2), (1, 4, 4))


def test_score_filter_keeps_images_at_or_above_the_threshold():
    values = torch.tensor([-0.5, 0.0, 0.2, 0.9])
    x = values.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    prob = torch.sigmoid(4 * values)
    kept, fraction = score_filter(toy_gan(), x, threshold=float(prob[2]))  # boundary counts as kept
    assert torch.equal(kept, x[2:]) and fraction == 0.5
    with pytest.raises(ValueError, match="threshold"):
        score_filter(toy_gan(), x, threshold=1.5)


def test_sample_filtered_oversamples_until_n_pass_deterministically():
    gan, sample = toy_gan(), FILTERS["d_score"]
    kept, fraction = sample(gan, 50, threshold=0.76, seed=3, max_rounds=20)
    assert len(kept) == 50 and (gan.score(kept) >= 0.76).all()
    assert 0.1 < fraction < 0.5  # P(sigmoid(4 tanh(z)) >= 0.76) for z ~ N(0, 1) is about 0.3
    again, _ = sample(gan, 50, threshold=0.76, seed=3, max_rounds=20)
    other, _ = sample(gan, 50, threshold=0.76, seed=4, max_rounds=20)
    assert torch.equal(kept, again) and not torch.equal(kept, other)


def test_sample_filtered_returns_what_it_has_when_rounds_run_out():
    kept, fraction = FILTERS["d_score"](toy_gan(), 20, threshold=0.99, seed=0, max_rounds=2)
    assert len(kept) < 20 and fraction < 0.1  # sigmoid(4 tanh z) <= sigmoid(4) = 0.982 < 0.99
    all_kept, fraction = FILTERS["d_score"](toy_gan(), 20, threshold=0.0, seed=0, max_rounds=1)
    assert len(all_kept) == 20 and fraction == 1.0
