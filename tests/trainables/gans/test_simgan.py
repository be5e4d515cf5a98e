"""SimGAN refiner: history buffer, network shapes, losses, schedule, reproducibility."""

import math

import pytest
import torch
import torch.nn.functional as F

from gantune.trainables.gans import REFINERS
from gantune.trainables.gans.simgan import (
    ImageHistory,
    LocalDiscriminator,
    Refiner,
    RefinerConfig,
    local_ce,
    refiner_loss,
)

CPU = torch.device("cpu")
TINY = RefinerConfig(
    steps=3, pretrain_r_steps=2, pretrain_d_steps=2, buffer_size=12, batch_size=8, width=8, log_every=2
)


def images(n, value, size=4):
    """n distinguishable images: image i is filled with value + i."""
    return (value + torch.arange(n, dtype=torch.float32)).view(n, 1, 1, 1).expand(n, 1, size, size).clone()


def ids(batch):
    return sorted(batch[:, 0, 0, 0].tolist())


def test_history_fills_then_mixes_half_old_half_new_and_replaces():
    buffer = ImageHistory(6, (1, 4, 4), CPU, torch.Generator().manual_seed(0))
    first = buffer.mix(images(4, 0))  # empty: all fresh, all stored
    assert ids(first) == [0, 1, 2, 3] and buffer.size == 4
    second = buffer.mix(images(4, 100))
    old, new = ids(second[:2]), ids(second[2:])
    assert set(old) <= {0, 1, 2, 3} and len(set(old)) == 2  # half from the buffer, no repeats
    assert new == [100, 101]  # half fresh
    assert buffer.size == 6 and set(ids(buffer.images)) == {0, 1, 2, 3, 100, 101}  # filled
    third = buffer.mix(images(4, 200))
    assert ids(third[2:]) == [200, 201] and buffer.size == 6
    stored = ids(buffer.images)
    assert {200, 201} <= set(stored) and len(set(stored) - {200, 201}) == 4  # two random entries replaced


def test_history_push_larger_than_capacity_keeps_capacity():
    buffer = ImageHistory(3, (1, 4, 4), CPU, torch.Generator().manual_seed(0))
    buffer.push(images(5, 0))
    assert buffer.size == 3 and len(buffer.images) == 3
    with pytest.raises(ValueError, match="refiner.buffer_size"):
        ImageHistory(0, (1, 4, 4), CPU, torch.Generator())


@pytest.mark.parametrize("size", [28, 64, 80])
@pytest.mark.parametrize("channels", [1, 3])
def test_refiner_and_local_discriminator_shapes(size, channels):
    x = torch.rand(2, channels, size, size) * 2 - 1
    refined = Refiner(channels, width=8)(x)
    assert refined.shape == x.shape and refined.abs().max() <= 1
    side = math.ceil(size / 4)
    assert LocalDiscriminator(channels, width=8)(refined).shape == (2, 2, side, side)


def test_refiner_loss_is_local_cross_entropy_plus_mean_l1():
    logits = torch.randn(2, 2, 3, 3)
    refined, synthetic = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    total, adv, l1 = refiner_loss(logits, refined, synthetic, lambda_reg=0.3)
    p_real = torch.softmax(logits, dim=1)[:, 1]  # class 1 = real
    assert float(adv) == pytest.approx(float(-torch.log(p_real).mean()), rel=1e-5)
    assert float(l1) == pytest.approx(float((refined - synthetic).abs().mean()), rel=1e-6)
    assert float(total) == pytest.approx(float(adv) + 0.3 * float(l1), rel=1e-6)
    assert float(local_ce(logits, 0)) == pytest.approx(float(-torch.log(1 - p_real).mean()), rel=1e-5)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(20, 1, 28, 28, generator=g) * 2 - 1, torch.rand(16, 1, 28, 28, generator=g) * 2 - 1


def run(data, seed, cfg=TINY):
    reports = []
    trained = REFINERS["simgan"](cfg, *data, seed=seed, device=CPU, report=lambda s, m: reports.append((s, m)))
    return trained, reports


def test_schedule_reports_each_phase_and_refines_in_range(data):
    trained, reports = run(data, seed=0)
    assert [(s, sorted(m)) for s, m in reports] == [
        (2, ["pretrain_r_l1"]),
        (4, ["pretrain_loss_d"]),
        (6, ["loss_d", "loss_r", "loss_r_adv", "loss_r_l1"]),
        (7, ["loss_d", "loss_r", "loss_r_adv", "loss_r_l1"]),
    ]
    assert all(math.isfinite(v) for _, m in reports for v in m.values())
    refined = trained.refine(data[0])
    assert refined.shape == data[0].shape and refined.abs().max() <= 1
    state = trained.state()
    assert set(state) == {"config", "refiner", "discriminator"} and state["config"]["lambda_reg"] == TINY.lambda_reg


def test_pretraining_learns_the_identity(data):
    cfg = RefinerConfig(steps=0, pretrain_r_steps=60, pretrain_d_steps=0, batch_size=8, width=8, log_every=60)
    trained, reports = run(data, seed=0, cfg=cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = F.l1_loss(Refiner(1, width=8)(data[0]), data[0])
    assert reports[-1][1]["pretrain_r_l1"] < 0.5 * float(untrained)


def test_same_seed_same_losses_other_seed_other_losses(data):
    _, first = run(data, seed=1)
    _, again = run(data, seed=1)
    _, other = run(data, seed=2)
    assert first == again and first != other
