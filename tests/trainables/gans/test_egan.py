"""E-GAN mechanics against plain references: mutation losses, fitness, selection with the
chosen child's optimiser state."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from gantune.trainables.gans.egan import (
    FD_EPS,
    MUTATIONS,
    Evolution,
    Fitness,
    child_fitness,
    d_loss_grads,
    fitness,
    init_optimizer_state,
    parse_mutations,
)

LOGITS = torch.tensor([[2.0], [-0.5], [0.3], [-3.0]])
P = 1 / (1 + np.exp(-LOGITS.numpy().ravel().astype(np.float64)))  # D(G(z))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("minimax", 0.5 * np.mean(np.log(1 - P))),
        ("heuristic", -0.5 * np.mean(np.log(P))),
        ("least_squares", np.mean((P - 1) ** 2)),
    ],
)
def test_mutation_losses_match_the_formulas(name, expected):
    assert float(MUTATIONS[name](LOGITS)) == pytest.approx(expected, rel=1e-6)


def test_mutation_losses_are_stable_for_extreme_logits():
    extreme = torch.tensor([[80.0], [-80.0]], requires_grad=True)
    for loss in MUTATIONS.values():
        value = loss(extreme)
        value.backward()
        assert math.isfinite(float(value.detach())) and torch.isfinite(extreme.grad).all()
        extreme.grad = None


def test_parse_mutations_names_the_key():
    assert parse_mutations("heuristic, minimax") == ("heuristic", "minimax")
    with pytest.raises(ValueError, match="gan.mutations"):
        parse_mutations("minimax,wgan")


def tiny_linear_d(features: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 1))


def test_fitness_matches_a_hand_computed_gradient_norm():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(5, 1, 2, 3, generator=g), torch.randn(4, 1, 2, 3, generator=g)
    d = tiny_linear_d(6)
    w = d[1].weight.detach().double().numpy().ravel()
    b = float(d[1].bias.detach())
    xr, xf = real.double().numpy().reshape(5, -1), fake.double().numpy().reshape(4, -1)
    sr, sf = 1 / (1 + np.exp(-(xr @ w + b))), 1 / (1 + np.exp(-(xf @ w + b)))
    # d/dw of mean BCE(l, y) = mean((sigmoid(l) - y) x)
    grad_w = ((sr - 1)[:, None] * xr).mean(0) + (sf[:, None] * xf).mean(0)
    grad_b = (sr - 1).mean() + sf.mean()
    fq = sf.mean()
    fd = -np.log(np.sqrt((grad_w**2).sum() + grad_b**2) + FD_EPS)
    result = fitness(d, real, fake, gamma=0.7)
    assert result.quality == pytest.approx(fq, rel=1e-5)
    assert result.diversity == pytest.approx(fd, rel=1e-5)
    assert result.total == pytest.approx(fq + 0.7 * fd, rel=1e-5)
    assert all(p.grad is None for p in d.parameters())  # a score, not a training step


class ConstantD(nn.Module):
    """Zero gradient w.r.t. its parameter: F_d must be -log(eps), not inf."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (self.w * 0.0).expand(len(x), 1)


def test_fitness_epsilon_is_inside_the_log():
    x = torch.zeros(3, 1, 2, 2)
    result = fitness(ConstantD(), x, x, gamma=1.0)
    assert result.diversity == pytest.approx(-math.log(FD_EPS))
    assert result.quality == pytest.approx(0.5)


def test_fresh_optimizer_state_behaves_like_a_fresh_adam():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = copy.deepcopy(a)
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1)
    init_optimizer_state(opt_a)
    assert torch.equal(a.weight, b.weight)  # allocating the state did not move the weights
    x = torch.randn(4, 3)
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(2):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight) and torch.allclose(
        opt_a.state[a.weight]["exp_avg"], opt_b.state[b.weight]["exp_avg"]
    )


# --- Selection ---

NAMES = ("minimax", "heuristic", "least_squares")


def tiny_setup():
    torch.manual_seed(3)
    g = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh())
    d = nn.Linear(4, 1)
    opt = torch.optim.Adam(g.parameters(), lr=0.05, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(4)
    z, z_eval, real = (torch.randn(8, n, generator=gen) for n in (3, 3, 4))
    return g, d, opt, z, z_eval, real


def reference_children(g, opt, d, z, score):
    """Each child from an independent deep copy of the parent and its Adam state (the plain way)."""
    children = []
    for name in NAMES:
        child = copy.deepcopy(g)
        child_opt = torch.optim.Adam(child.parameters(), lr=0.05, betas=(0.5, 0.999))
        child_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        loss = MUTATIONS[name](d(child(z)))
        child_opt.zero_grad()
        loss.backward()
        child_opt.step()
        children.append((child, child_opt, score(child)))
    return children


def run_evolution_step(evolution, g, d, z, score):
    logits = d(g(z))
    return evolution.step({n: MUTATIONS[n](logits) for n in NAMES}, score)


def assert_same_state(g, opt, child, child_opt):
    for p, q in zip(g.parameters(), child.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
        assert torch.allclose(opt.state[p]["exp_avg"], child_opt.state[q]["exp_avg"], atol=1e-7)
        assert torch.allclose(opt.state[p]["exp_avg_sq"], child_opt.state[q]["exp_avg_sq"], atol=1e-9)
        assert float(opt.state[p]["step"]) == float(child_opt.state[q]["step"])
    for a, b in zip(g.buffers(), child.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


@pytest.mark.parametrize("best", [0, 1, 2])
def test_selection_keeps_the_fittest_child_and_its_optimizer_state(best):
    g, d, opt, z, _, _ = tiny_setup()
    evolution = Evolution(g, opt)
    scores = [0.1, 0.2, 0.3]
    scores[best] = 0.9

    def forced(values):
        it = iter(values)
        return lambda child: Fitness(next(it), 0.0, 0.0)

    reference = reference_children(g, opt, d, z, forced(scores))  # copies; g and opt untouched
    chosen = run_evolution_step(evolution, g, d, z, forced(scores))
    assert (chosen.index, chosen.name) == (best, NAMES[best])
    child, child_opt, _ = reference[best]
    assert_same_state(g, opt, child, child_opt)


def test_two_generations_with_real_fitness_match_the_deepcopy_reference():
    g, d, opt, z, z_eval, real = tiny_setup()
    evolution = Evolution(g, opt)
    real_grads = d_loss_grads(d, real, 1.0)

    def score(child):
        with torch.no_grad():
            fake = child(z_eval)
        return child_fitness(d, fake, real_grads, gamma=0.5)

    for _ in range(2):  # the second generation starts from a non-trivial Adam state
        reference = reference_children(g, opt, d, z, score)  # copies; g and opt untouched
        chosen = run_evolution_step(evolution, g, d, z, score)
        totals = [r[2].total for r in reference]
        assert chosen.index == int(np.argmax(totals))
        assert [f.total for f in chosen.fitnesses] == pytest.approx(totals, rel=1e-5)
        child, child_opt, _ = reference[chosen.index]
        assert_same_state(g, opt, child, child_opt)
