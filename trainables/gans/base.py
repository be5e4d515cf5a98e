"""What every GAN family shares: its config and the trained result. The loop plumbing they share
with the classifier lives in trainables/loop.py (re-exported here for the GAN loops)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import torch
from torch import nn

from .efficient import parse_policy
from ..loop import DivergedError, Report, RunningMeans, real_batches, report_due  # noqa: F401 - re-exported


class CombinationError(ValueError):
    """A rule between two keys (gan.ada_target needs gan.diffaugment): a space file's key alone
    cannot break it, so it is checked on the space's fixed values together, not key by key."""


@dataclass(frozen=True)
class GANConfig:
    family: str = "dcgan"
    """Registry key of the GAN family (see gantune.trainables.gans.GANS)."""
    latent_dim: int = 100
    """Length of the latent vector z."""
    lr: float = 2e-4
    """Adam learning rate of generator and discriminator (DCGAN paper: 2e-4)."""
    beta1: float = 0.5
    """Adam beta1 (DCGAN paper: 0.5)."""
    batch_size: int = 64
    """Real images per discriminator step (capped at the class size)."""
    steps: int = 300
    """Discriminator/generator update rounds per generator."""
    width: int = 64
    """Feature maps of the widest generator layer; the discriminator mirrors it."""
    gamma: float = 0.5
    """E-GAN: weight of the diversity fitness F_d against quality F_q (>= 0)."""
    alpha: float = 0.2
    """Mixup discriminator: lam ~ Beta(alpha, alpha) (> 0)."""
    mixture_components: int = 0
    """DAE-GAN: Gaussian-mixture latent with K components (means and stds fixed, drawn from the
    seed); 0 = plain N(0, I). The paper does not give K; the other families ignore it."""
    mutations: str = "minimax,heuristic,least_squares"
    """E-GAN / DAE-GAN: comma-separated generator mutations, one child each per iteration
    (names in gantune.trainables.gans.egan.MUTATIONS)."""
    d_steps: int = 1
    """E-GAN / DAE-GAN: discriminator updates per evolution iteration (n_D of Wang et al.)."""
    log_every: int = 50
    """Report the running losses every this many steps."""
    conditional: bool = False
    """One class-conditional GAN on all classes of the fold's training images (class embedding in
    G, projection D) instead of one GAN per class; every family."""
    diffaugment: str = ""
    """DiffAugment ops applied to every image D sees, real and fake, in the D and the G step
    (comma-separated, from 'translation,cutout,brightness,contrast'); '' = off."""
    ada_target: float = 0.0
    """ADA-style adaptive DiffAugment probability: p moves toward keeping E[sign D(real)] at this
    target (StyleGAN2-ADA: 0.6), in (0, 1); 0 = fixed p = 1 (plain DiffAugment)."""
    spectral_norm: bool = False
    """Spectral normalisation on every discriminator layer (and no BatchNorm in D); every family."""
    loss: str = "bce"
    """'bce' (the paper's non-saturating loss) or 'hinge'; DCGAN and E-GAN (whose F_d then measures
    the hinge D loss; add the 'hinge' mutation for the matching G loss). DAE-GAN: 'bce' only."""
    ema: float = 0.0
    """Decay of an EMA of the generator's weights used for sampling and the registry (typical
    0.999); 0 = sample the last generator."""
    lecam: float = 0.0
    """Weight of LeCam regularisation in the D loss (Tseng et al.: 0.3, EMA decay 0.99); 0 = off."""

    def __post_init__(self) -> None:
        # Every family takes every data-efficient option but one: DAE-GAN's mixup D is trained
        # towards the soft target lam, which the hinge loss has no form for.
        if self.family == "daegan" and self.loss != "bce":
            raise CombinationError(f"'gan.loss' {self.loss!r} has no meaning for gan.family 'daegan': its mixup "
                             "discriminator is trained towards a soft target (the mix coefficient), which only "
                             "the BCE loss takes; use 'bce'")
        parse_policy(self.diffaugment)  # names 'gan.diffaugment' and the allowed ops
        if self.ada_target > 0 and not self.diffaugment:
            raise CombinationError("'gan.ada_target' adapts the DiffAugment probability: set 'gan.diffaugment' too")

    def to_dict(self) -> dict:
        return asdict(self)


class LatentSampler(Protocol):
    def __call__(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor: ...


def normal_latent(latent_dim: int) -> LatentSampler:
    def sample(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.randn(n, latent_dim, generator=generator, device=device)

    return sample


@dataclass
class TrainedGAN:
    """A trained generator with its discriminator (for score filtering) and latent sampler."""

    config: GANConfig
    generator: nn.Module
    discriminator: nn.Module
    latent: LatentSampler
    image_shape: tuple[int, int, int]
    history: dict[str, list[float]] = field(default_factory=dict)
    num_classes: int = 0
    """A class-conditional GAN's number of classes; 0 = an unconditional (per-class) GAN."""
    label: int | None = None
    """The class a conditional GAN samples and scores (`for_class`); None for unconditional GANs."""

    def for_class(self, label: int) -> TrainedGAN:
        """This conditional GAN seen as the GAN of one class (the same modules, no copy), so
        filters, refiners, sample grids and checkpoints treat both kinds alike."""
        return replace(self, label=label)

    def _labels(self, n: int, device: torch.device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        assert self.label is not None, "a conditional GAN samples through for_class(label)"
        return torch.full((n,), self.label, dtype=torch.long, device=device)

    @torch.no_grad()
    def sample(self, n: int, seed: int, batch: int = 256) -> torch.Tensor:
        """n images in [-1, 1], (n, C, H, W), reproducible from `seed`."""
        device = next(self.generator.parameters()).device
        rng = torch.Generator(device).manual_seed(seed)
        self.generator.eval()
        chunks = []
        for i in range(0, n, batch):
            m = min(batch, n - i)
            z, labels = self.latent(m, rng, device), self._labels(m, device)
            chunks.append(self.generator(z) if labels is None else self.generator(z, labels))
        return torch.cat(chunks) if chunks else torch.empty(0, *self.image_shape, device=device)

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """sigmoid of the discriminator's logit per image, (n,): its probability that the image is
        real under the BCE loss; a monotone realism score under the hinge loss."""
        self.discriminator.eval()
        labels = self._labels(len(images), images.device)
        logits = self.discriminator(images) if labels is None else self.discriminator(images, labels)
        return torch.sigmoid(logits.reshape(len(images), -1).mean(dim=1))

    def state(self) -> dict:
        """A checkpoint: state_dicts, shapes and config; never a pickled module."""
        return {
            "config": self.config.to_dict(),
            "image_shape": list(self.image_shape),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            # A mixture latent's fixed means/stds are part of the model; N(0, I) has no state.
            "latent": self.latent.state_dict() if isinstance(self.latent, nn.Module) else {},
            "num_classes": self.num_classes,
            "label": -1 if self.label is None else self.label,  # -1: torch.load(weights_only) takes no None
        }
