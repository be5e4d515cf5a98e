"""Evolutionary GAN (Wang et al. 2019): mutations, fitness and selection, as one loop that DAE-GAN
reuses with its own discriminator loss, latent and networks.

Each iteration: update D against the parent generator; make one child per mutation by taking one
optimiser step on that mutation's loss from the parent; score every child on a fresh batch with
F = F_q + gamma * F_d; the best child (weights, BatchNorm buffers and Adam state) becomes the
next parent. Children live in ONE generator module and ONE optimiser: parent and best child are
preallocated tensor snapshots restored with copy_, so an iteration allocates no modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    GANConfig,
    LatentSampler,
    Report,
    RunningMeans,
    TrainedGAN,
    normal_latent,
    real_batches,
    report_due,
)
from .dcgan import DCGANLosses, adam, build_dcgan_pair
from .efficient import data_efficient, hinge_generator_loss

FD_EPS = 1e-8
"""Inside the log of F_d: a vanishing gradient norm gives a large finite F_d, not +inf (the public
E-GAN code has no epsilon there)."""


# --- Mutations: generator losses on D's logits, minimised ---


def minimax_mutation(fake_logits: torch.Tensor) -> torch.Tensor:
    """1/2 E[log(1 - D(G(z)))]; log(1 - sigmoid(l)) = -softplus(l)."""
    return -0.5 * F.softplus(fake_logits).mean()


def heuristic_mutation(fake_logits: torch.Tensor) -> torch.Tensor:
    """-1/2 E[log D(G(z))]; -log sigmoid(l) = softplus(-l)."""
    return 0.5 * F.softplus(-fake_logits).mean()


def least_squares_mutation(fake_logits: torch.Tensor) -> torch.Tensor:
    """E[(D(G(z)) - 1)^2]."""
    return (torch.sigmoid(fake_logits) - 1).pow(2).mean()


MUTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "minimax": minimax_mutation,
    "heuristic": heuristic_mutation,
    "least_squares": least_squares_mutation,
    "hinge": hinge_generator_loss,
}
"""mutation name -> generator loss on fake logits ('hinge': -E[D(G(z))], the generator side of
the hinge loss, for an evolution whose D is trained with gan.loss 'hinge')."""


def parse_mutations(spec: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in MUTATIONS]
    if not names or unknown:
        raise ValueError(f"'gan.mutations' must name some of {sorted(MUTATIONS)}, got {spec!r}")
    return names


# --- Fitness ---


def side_loss(loss: str, real: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """One side of the D loss `loss` ('bce' or 'hinge') on logits: the real images' term or the
    fakes' term. Both losses are a sum of the two, which lets F_d reuse the real term's gradient."""
    if loss == "hinge":
        return (lambda logits: F.relu(1 - logits).mean()) if real else (lambda logits: F.relu(1 + logits).mean())
    target = 1.0 if real else 0.0
    return lambda logits: F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass(frozen=True)
class Fitness:
    total: float
    """F = F_q + gamma * F_d; higher is better."""
    quality: float
    """F_q = E[D(G(z))]."""
    diversity: float
    """F_d = -log(||grad_D L_D|| + eps)."""


def d_loss_grads(discriminator: nn.Module, images: torch.Tensor, target: float, *cond: torch.Tensor,
                 loss: str = "bce") -> list[torch.Tensor]:
    """Gradient w.r.t. D's parameters of the D loss's real (target 1) or fake (target 0) term on
    `images` (with their labels for a conditional D); first order only, nothing accumulates in .grad."""
    params = [p for p in discriminator.parameters() if p.requires_grad]
    value = side_loss(loss, real=target == 1.0)(discriminator(images, *cond))
    return list(torch.autograd.grad(value, params))


def child_fitness(
    discriminator: nn.Module, fake: torch.Tensor, real_grads: list[torch.Tensor], gamma: float,
    *cond: torch.Tensor, loss: str = "bce",
) -> Fitness:
    """Score a child's samples. L_D (BCE: -E[log D(x)] - E[log(1 - D(G(z)))], or hinge) is a sum
    of a real and a fake term, so its gradient is the real term's (computed once per iteration)
    plus the fake's."""
    params = [p for p in discriminator.parameters() if p.requires_grad]
    logits = discriminator(fake.detach(), *cond)
    quality = torch.sigmoid(logits.detach()).mean()
    loss_fake = side_loss(loss, real=False)(logits)
    fake_grads = torch.autograd.grad(loss_fake, params)  # no create_graph: F_d is only a score
    sq_norm = sum((gr + gf).pow(2).sum() for gr, gf in zip(real_grads, fake_grads))
    diversity = -torch.log(sq_norm.sqrt() + FD_EPS)
    return Fitness(float(quality + gamma * diversity), float(quality), float(diversity))


def fitness(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, gamma: float) -> Fitness:
    """F = F_q + gamma * F_d of `fake` against D, with `real` as the real half of L_D."""
    return child_fitness(discriminator, fake, d_loss_grads(discriminator, real, 1.0), gamma)


# --- Selection without copying modules ---


class StateSnapshot:
    """Preallocated copies of a fixed list of live tensors (parameters, buffers, optimiser state);
    save/load are in-place copies, so snapshots cost memory once and no allocation afterwards."""

    def __init__(self, live: list[torch.Tensor]) -> None:
        self.live = live
        self.saved = [t.detach().clone() for t in live]

    @torch.no_grad()
    def save(self) -> None:
        for s, t in zip(self.saved, self.live):
            s.copy_(t)

    @torch.no_grad()
    def load(self) -> None:
        for s, t in zip(self.saved, self.live):
            t.copy_(s)


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimiser's lazily allocated state now, equal to a fresh optimiser's (zeros, step
    0), so snapshots can hold it from the first iteration. A step on zero gradients allocates it;
    zeroing afterwards undoes the step counter (Adam's update with zero moments is exactly 0)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p in params:
            for value in optimizer.state[p].values():
                if torch.is_tensor(value):
                    value.zero_()


def model_and_optimizer_tensors(module: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Everything a child inherits: parameters, buffers (BatchNorm statistics), optimiser state."""
    tensors = list(module.parameters()) + list(module.buffers())
    for p in module.parameters():
        state = optimizer.state[p]
        tensors += [state[k] for k in sorted(state) if torch.is_tensor(state[k])]
    return tensors


@dataclass(frozen=True)
class Selection:
    index: int
    """Position of the selected child in the mutation order."""
    name: str
    """The selected child's mutation."""
    loss: float
    """The selected mutation's loss, before its step."""
    fitnesses: tuple[Fitness, ...]
    """Every child's fitness, in mutation order."""


class Evolution:
    """One generator and its optimiser hold every child in turn; the parent and the best child so
    far are snapshots of the same tensors."""

    def __init__(self, generator: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        init_optimizer_state(optimizer)
        self.generator, self.optimizer = generator, optimizer
        self.params = list(generator.parameters())
        live = model_and_optimizer_tensors(generator, optimizer)
        self.parent, self.best = StateSnapshot(live), StateSnapshot(live)

    def step(self, losses: dict[str, torch.Tensor], score: Callable[[nn.Module], Fitness]) -> Selection:
        """`losses`: each mutation's loss on the parent's samples (one shared graph). Children all
        start from the parent, so their gradients are those losses' gradients at the parent."""
        names = list(losses)
        grads = [
            torch.autograd.grad(losses[n], self.params, retain_graph=i < len(names) - 1)
            for i, n in enumerate(names)
        ]
        self.parent.save()
        fitnesses, best = [], 0
        for i, child_grads in enumerate(grads):
            if i > 0:
                self.parent.load()
            for p, g in zip(self.params, child_grads):
                p.grad = g
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            fitnesses.append(score(self.generator))
            if i == 0 or fitnesses[i].total > fitnesses[best].total:
                best = i
                self.best.save()
        if best != len(names) - 1:  # the last child is still live in the module otherwise
            self.best.load()
        return Selection(best, names[best], float(losses[names[best]].detach()), tuple(fitnesses))


# --- The loop, parametrised by networks, D loss and latent ---

DiscriminatorLoss = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
"""(D, real, fake, rng, *labels) -> (loss, D's logits on the real images or None when it did not
see them); fake is already detached; labels only for a conditional pair."""


def standard_d_loss(cfg: GANConfig) -> DiscriminatorLoss:
    """The DCGAN D loss of `cfg` (BCE or hinge, plus LeCam) on D(real) and D(fake)."""
    losses = DCGANLosses(cfg)

    def d_loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng, *cond: torch.Tensor):
        real_logits = discriminator(real, *cond)
        return losses.discriminator(real_logits, discriminator(fake, *cond)), real_logits

    return d_loss


def fit_evolutionary(
    cfg: GANConfig,
    images: torch.Tensor,
    *,
    seed: int,
    device: torch.device,
    report: Report | None,
    build: Callable[[GANConfig, tuple[int, int, int], torch.device], tuple[nn.Module, nn.Module]],
    d_loss: DiscriminatorLoss,
    latent: LatentSampler,
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    fitness_loss: str = "bce",
) -> TrainedGAN:
    """The E-GAN loop on `images` ((N, C, H, W) in [-1, 1], on `device`); with `labels` and
    num_classes > 0, one class-conditional pair on all of them (fakes get the real batch's labels).
    `fitness_loss`: the D loss whose gradient norm F_d measures."""
    mutations = parse_mutations(cfg.mutations)
    if cfg.gamma < 0:
        raise ValueError(f"'gan.gamma' must be >= 0, got {cfg.gamma}")
    if cfg.d_steps < 1:
        raise ValueError(f"'gan.d_steps' must be >= 1, got {cfg.d_steps}")
    torch.manual_seed(seed)  # network initialisation
    rng = torch.Generator(device).manual_seed(seed)
    image_shape = tuple(images.shape[1:])
    conditional = labels is not None and num_classes > 0
    generator, discriminator = build(cfg, image_shape, device, num_classes) if conditional else build(
        cfg, image_shape, device)
    opt_g, opt_d = adam(generator.parameters(), cfg), adam(discriminator.parameters(), cfg)
    evolution = Evolution(generator, opt_g)
    # DiffAugment on what D sees in the D step and in the mutations' G losses; the fitness keeps
    # the plain D, so selection compares children on un-augmented evidence.
    trained_d, ada, ema = data_efficient(cfg, generator, discriminator, rng)
    batches = real_batches(images, cfg.batch_size, rng, labels if conditional else None)

    def next_real() -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A real batch and the labels a conditional pair is called with (() otherwise)."""
        if not conditional:
            return next(batches), ()
        x, y = next(batches)
        return x, (y,)

    means = RunningMeans()
    generator.train(), discriminator.train()
    for step in range(1, cfg.steps + 1):
        # --- Discriminator step(s) against the parent ---
        for _ in range(cfg.d_steps):
            real, cond = next_real()
            fake = generator(latent(len(real), rng, device), *cond)  # the last one's graph feeds the mutations
            loss_d, real_logits = d_loss(trained_d, real, fake.detach(), rng, *cond)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if ada is not None:  # ADA's p follows D's confidence on the real images it trained on
                ada.observe(real_logits)
                trained_d.p = ada.update(len(real))
        # --- Mutate, score, select ---
        # Every child is scored on the same fresh batch (common random numbers), so selection
        # compares mutations, not noise draws.
        eval_real, eval_cond = next_real()
        eval_z = latent(len(eval_real), rng, device)
        real_grads = d_loss_grads(discriminator, eval_real, 1.0, *eval_cond, loss=fitness_loss)

        # score is called within this iteration (evolution.step), so binding the loop's values late is right.
        def score(child: nn.Module) -> Fitness:
            with torch.no_grad():
                child_fake = child(eval_z, *eval_cond)  # noqa: B023
            return child_fitness(discriminator, child_fake, real_grads, cfg.gamma, *eval_cond,  # noqa: B023
                                 loss=fitness_loss)

        fake_logits = trained_d(fake, *cond)
        chosen = evolution.step({n: MUTATIONS[n](fake_logits) for n in mutations}, score)
        if ema is not None:
            ema.update(generator)
        best = chosen.fitnesses[chosen.index]
        means.add(
            loss_d=loss_d.detach(),
            loss_g=chosen.loss,
            egan_fq=best.quality,
            egan_fd=best.diversity,
            **{f"egan_share_{n}": float(n == chosen.name) for n in mutations},
        )
        if report_due(step, cfg):
            flushed = means.flush(step)
            if ada is not None:
                means.history.setdefault("ada_p", []).append(ada.p)
            if report:
                report(step, flushed)
    return TrainedGAN(
        cfg, ema.model if ema is not None else generator, discriminator, latent, image_shape, means.history,
        num_classes=num_classes if conditional else 0,
    )


def fit_egan(
    cfg: GANConfig, images: torch.Tensor, *, seed: int, device: torch.device, report: Report | None = None,
    labels: torch.Tensor | None = None, num_classes: int = 0,
) -> TrainedGAN:
    """E-GAN as published: DCGAN networks, the standard D loss, z ~ N(0, I); with gan.loss,
    gan.lecam and gan.conditional, the DCGAN loop's hinge / LeCam D loss and class-conditional
    pair (F_d then measures the gradient of the D loss trained)."""
    return fit_evolutionary(
        cfg,
        images,
        seed=seed,
        device=device,
        report=report,
        build=build_dcgan_pair,
        d_loss=standard_d_loss(cfg),
        latent=normal_latent(cfg.latent_dim),
        labels=labels,
        num_classes=num_classes,
        fitness_loss=cfg.loss,
    )
