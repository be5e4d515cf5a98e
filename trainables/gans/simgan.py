"""SimGAN refiner (Shrivastava et al. 2017, as applied to E-GAN output in the cardiac refiner
paper): a residual PReLU refiner R and a local, fully convolutional discriminator, trained on
any generator's synthetic images against real ones.

Loss convention: D's per-location 2-way softmax has class 1 = real, class 0 = refined.
L_D = CE(D(real), 1) + CE(D(refined), 0); L_R = CE(D(R(x)), 1) + lambda * mean|R(x) - x|,
all means over batch and locations (the paper's sums, divided by a constant).

The data-efficient options of the GAN families apply here too (refiner.diffaugment, ada_target,
spectral_norm, loss, lecam, ema). The hinge loss and LeCam work on each location's realness score
s = logit_real - logit_refined (CE(D, real) = softplus(-s), so 'bce' is the paper's loss). There
is no refiner.conditional: a refiner is trained per class, on that class's images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from torch.nn.utils.parametrizations import spectral_norm

from .base import CombinationError, Report, RunningMeans, real_batches
from .efficient import LeCam, data_efficient, parse_policy

REAL, REFINED = 1, 0


@dataclass(frozen=True)
class RefinerConfig:
    lambda_reg: float = 0.5
    """Weight of the mean-reduced L1 self-regularisation |R(x) - x|. The adversarial term is a
    per-location cross-entropy (~0.69 at chance) and the L1 a mean per pixel on [-1, 1] images,
    so a useful search range is about 0.05-5 (log scale): near 0.05 R may rewrite content, above
    ~5 it stays close to the identity."""
    lr: float = 1e-3
    """Adam learning rate of refiner and discriminator (the papers use SGD at 1e-3; Adam converges
    within the small step budgets used here)."""
    steps: int = 200
    """Adversarial rounds after pretraining; each round = 2 refiner updates + 1 D update."""
    pretrain_r_steps: int = 500
    """Refiner updates on the self-regularisation loss alone, first (paper: 500)."""
    pretrain_d_steps: int = 100
    """Discriminator updates against the pretrained refiner, second (paper: 100)."""
    buffer_size: int = 512
    """Refined images kept in the history buffer (Shrivastava et al.: 100 x batch)."""
    batch_size: int = 32
    """Synthetic and real images per update (capped at the smaller set)."""
    width: int = 64
    """Refiner feature maps (paper: 64); the discriminator uses 1.5x, 1x and 0.5x of it."""
    log_every: int = 50
    """Report the running losses every this many updates of each phase."""
    diffaugment: str = ""
    """DiffAugment ops applied to every image the local D sees, real and refined, in the D and the
    refiner step (as gan.diffaugment); '' = off."""
    ada_target: float = 0.0
    """ADA target for the DiffAugment probability (as gan.ada_target; r_t over D's per-location
    scores on real images); 0 = fixed p = 1."""
    spectral_norm: bool = False
    """Spectral normalisation on every convolution of the local discriminator."""
    loss: str = "bce"
    """'bce' (the paper's per-location cross-entropy) or 'hinge' on the per-location score."""
    lecam: float = 0.0
    """Weight of LeCam regularisation on the per-location scores in the D loss; 0 = off."""
    ema: float = 0.0
    """Decay of an EMA of the refiner's weights, used to refine; 0 = the last refiner."""

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "hinge"):
            raise ValueError(f"'refiner.loss' must be 'bce' or 'hinge', got {self.loss!r}")
        if self.ada_target > 0 and not self.diffaugment:
            raise CombinationError(
                "'refiner.ada_target' adapts the DiffAugment probability: set 'refiner.diffaugment' too")
        try:
            parse_policy(self.diffaugment)
        except ValueError as exc:
            raise ValueError(str(exc).replace("gan.diffaugment", "refiner.diffaugment")) from None

    def to_dict(self) -> dict:
        return asdict(self)


# --- Networks (refiner paper's Table 1) ---


class PReLUResidualBlock(nn.Module):
    """conv3x3 -> PReLU -> conv3x3, plus the input; no activation after the add (the paper's
    change to the ResNet block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, x):
        return x + self.body(x)


class Refiner(nn.Module):
    """Image -> conv3x3 -> 5 residual blocks -> conv1x1 -> tanh: same size as the input, in
    [-1, 1]."""

    def __init__(self, channels: int, width: int = 64, blocks: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1),
            nn.PReLU(width),
            *[PReLUResidualBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, channels, 1),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.body(x)


class LocalDiscriminator(nn.Module):
    """conv3x3 s2 -> conv3x3 s2 -> max-pool 3x3 s1 -> 2 residual blocks -> conv1x1 -> conv1x1:
    2-way logits per location, (B, 2, H/4, W/4) rounded up; fully convolutional, so each output
    judges one local patch. spectral: every convolution spectrally normalised."""

    def __init__(self, channels: int, width: int = 64, spectral: bool = False) -> None:
        super().__init__()
        wide, mid, narrow = width * 3 // 2, width, max(width // 2, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, wide, 3, 2, 1),
            nn.PReLU(wide),
            nn.Conv2d(wide, mid, 3, 2, 1),
            nn.PReLU(mid),
            nn.MaxPool2d(3, 1, 1),
            PReLUResidualBlock(mid),
            PReLUResidualBlock(mid),
            nn.Conv2d(mid, narrow, 1),
            nn.PReLU(narrow),
            nn.Conv2d(narrow, 2, 1),
        )
        if spectral:
            for module in list(self.modules()):
                if isinstance(module, nn.Conv2d):
                    spectral_norm(module)

    def forward(self, x):
        return self.body(x)


def realness(logits: torch.Tensor) -> torch.Tensor:
    """Per-location score s = logit_real - logit_refined (B, h, w): CE(., real) = softplus(-s)."""
    return logits[:, REAL] - logits[:, REFINED]


def local_ce(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Mean per-location cross-entropy of (B, 2, h, w) logits against one class."""
    target = torch.full((logits.shape[0], *logits.shape[2:]), label, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


# --- Image history buffer ---


class ImageHistory:
    """Refined images from earlier refiner states, so D does not forget old artefacts. It fills
    slot by slot first (public SimGAN code that only ever replaces never fills); once full, new
    images replace random entries."""

    def __init__(self, capacity: int, image_shape: tuple[int, ...], device: torch.device, generator: torch.Generator):
        if capacity < 1:
            raise ValueError(f"'refiner.buffer_size' must be >= 1, got {capacity}")
        self.images = torch.empty(capacity, *image_shape, device=device)
        self.size = 0
        self.generator = generator

    def push(self, images: torch.Tensor) -> None:
        images = images.detach()[: len(self.images)]
        free = min(len(self.images) - self.size, len(images))
        self.images[self.size : self.size + free] = images[:free]
        self.size += free
        rest = images[free:]
        if len(rest):
            slots = torch.randperm(self.size, generator=self.generator, device=self.generator.device)[: len(rest)]
            self.images[slots.to(self.images.device)] = rest

    def mix(self, fresh: torch.Tensor) -> torch.Tensor:
        """A D batch of len(fresh) refined images: half drawn from the buffer and half fresh once
        the buffer holds half a batch (all fresh before); the fresh half then enters the buffer."""
        half = len(fresh) // 2
        if half == 0 or self.size < half:
            self.push(fresh)
            return fresh
        picks = torch.randperm(self.size, generator=self.generator, device=self.generator.device)[:half]
        old = self.images[picks.to(self.images.device)]
        new = fresh[: len(fresh) - half]
        self.push(new)
        return torch.cat([old, new])


# --- Training ---


@dataclass
class TrainedRefiner:
    config: RefinerConfig
    refiner: nn.Module
    discriminator: nn.Module
    history: dict[str, list[float]] = field(default_factory=dict)

    @torch.no_grad()
    def refine(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """R(images), same shape, in [-1, 1], on the images' device."""
        self.refiner.eval()
        device = next(self.refiner.parameters()).device
        chunks = [
            self.refiner(images[i : i + batch].to(device)).to(images.device) for i in range(0, len(images), batch)
        ]
        return torch.cat(chunks) if chunks else images.clone()

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "refiner": self.refiner.state_dict(),
            "discriminator": self.discriminator.state_dict(),
        }


def refiner_loss(d_logits: torch.Tensor, refined: torch.Tensor, synthetic: torch.Tensor, lambda_reg: float,
                 loss: str = "bce"):
    """(total, adversarial, L1): CE towards 'real' (hinge: -E[s]) plus lambda * mean |R(x) - x|."""
    adversarial = local_ce(d_logits, REAL) if loss == "bce" else -realness(d_logits).mean()
    l1 = (refined - synthetic).abs().mean()
    return adversarial + lambda_reg * l1, adversarial, l1


def local_d_loss(real_logits: torch.Tensor, refined_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """CE(D(real), real) + CE(D(refined), refined), or the hinge loss on the per-location scores."""
    if loss == "bce":
        return local_ce(real_logits, REAL) + local_ce(refined_logits, REFINED)
    return F.relu(1 - realness(real_logits)).mean() + F.relu(1 + realness(refined_logits)).mean()


def fit_refiner(
    cfg: RefinerConfig,
    synthetic: torch.Tensor,
    real: torch.Tensor,
    *,
    seed: int,
    device: torch.device,
    report: Report | None = None,
) -> TrainedRefiner:
    """Train R on `synthetic` against `real` (both (N, C, H, W) in [-1, 1], same C, H, W, on
    `device`). One step = one pretraining update or one 2:1 round; steps count across phases and
    each phase reports its own keys (pretrain_r_l1, pretrain_loss_d, then loss_r, loss_r_adv,
    loss_r_l1, loss_d) every log_every of its steps and at its end."""
    if synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(f"synthetic images {tuple(synthetic.shape[1:])} and real {tuple(real.shape[1:])} differ")
    if cfg.lambda_reg < 0:
        raise ValueError(f"'refiner.lambda_reg' must be >= 0, got {cfg.lambda_reg}")
    torch.manual_seed(seed)  # network initialisation
    rng = torch.Generator(device).manual_seed(seed)
    channels = synthetic.shape[1]
    refiner = Refiner(channels, cfg.width).to(device)
    discriminator = LocalDiscriminator(channels, cfg.width, cfg.spectral_norm).to(device)
    opt_r = torch.optim.Adam(refiner.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr)
    trained_d, ada, ema = data_efficient(cfg, refiner, discriminator, rng)  # D(T(x)), ADA's p, EMA of R
    lecam = LeCam() if cfg.lecam > 0 else None
    synth_batches = real_batches(synthetic, cfg.batch_size, rng)
    real_batches_ = real_batches(real, cfg.batch_size, rng)
    history = ImageHistory(cfg.buffer_size, tuple(synthetic.shape[1:]), device, rng)
    means = RunningMeans()
    step = 0

    def update(opt, loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def refiner_step(adversarial: bool) -> dict[str, torch.Tensor]:
        x = next(synth_batches)
        refined = refiner(x)
        if adversarial:
            loss, adv, l1 = refiner_loss(trained_d(refined), refined, x, cfg.lambda_reg, cfg.loss)
            logged = {"loss_r": loss, "loss_r_adv": adv, "loss_r_l1": l1}
        else:
            loss = (refined - x).abs().mean()
            logged = {"pretrain_r_l1": loss}
        update(opt_r, loss)
        if ema is not None:
            ema.update(refiner)
        return {k: v.detach() for k, v in logged.items()}

    def discriminator_step(name: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            refined = history.mix(refiner(next(synth_batches)))
        real = next(real_batches_)
        real_logits, refined_logits = trained_d(real), trained_d(refined)
        loss = local_d_loss(real_logits, refined_logits, cfg.loss)
        if lecam is not None:
            loss = loss + cfg.lecam * lecam(realness(real_logits), realness(refined_logits))
        update(opt_d, loss)
        if ada is not None:  # p follows the sign of D's scores on the real patches
            ada.observe(realness(real_logits))
            trained_d.p = ada.update(len(real))
        return {name: loss.detach()}

    def tick(phase_step: int, phase_steps: int, **logged: torch.Tensor) -> None:
        nonlocal step
        step += 1
        means.add(**logged)
        if phase_step % cfg.log_every == 0 or phase_step == phase_steps:
            flushed = means.flush(step)
            if report:
                report(step, flushed)

    refiner.train(), discriminator.train()
    # --- Refiner pretraining: self-regularisation only ---
    for i in range(1, cfg.pretrain_r_steps + 1):
        tick(i, cfg.pretrain_r_steps, **refiner_step(adversarial=False))
    # --- Discriminator pretraining against the pretrained refiner ---
    for i in range(1, cfg.pretrain_d_steps + 1):
        tick(i, cfg.pretrain_d_steps, **discriminator_step("pretrain_loss_d"))
    # --- Adversarial rounds: 2 refiner updates per D update ---
    for i in range(1, cfg.steps + 1):
        first, second = refiner_step(adversarial=True), refiner_step(adversarial=True)
        both = {k: (first[k] + second[k]) / 2 for k in first}
        tick(i, cfg.steps, **both, **discriminator_step("loss_d"))
    if ada is not None:
        means.history["ada_p"] = [ada.p]
    return TrainedRefiner(cfg, ema.model if ema is not None else refiner, discriminator, means.history)
