"""The data-efficient options observed inside the real training loops (tiny nets, CPU, a few steps):
what the discriminator is handed and what it returns are recorded by hooks on the networks the
loop builds, and the losses the loop reports are checked against them. Each test fails under one
plausible wiring mistake (named in its docstring) that the function-level tests cannot see."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gantune.trainables.gans import GANS, GANConfig, efficient
from gantune.trainables.gans import dcgan as dcgan_module

CPU = torch.device("cpu")
SMALL = dict(steps=2, width=16, latent_dim=8, batch_size=16, log_every=1)


@pytest.fixture(scope="module")
def real(small_pool):
    return small_pool.of_class(0)


class Recorder:
    """Every discriminator call of a loop: its image input (what D saw, after any augmentation),
    its label input (conditional D) and its logits."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor | None] = []
        self.outputs: list[torch.Tensor] = []

    def hook(self, _module, args, output) -> None:
        self.inputs.append(args[0].detach().clone())
        self.labels.append(args[1].detach().clone() if len(args) > 1 else None)
        self.outputs.append(output.detach().clone())


def record_discriminator(monkeypatch, module=dcgan_module, name="build_dcgan_pair") -> Recorder:
    """Patch a family's network builder so the D it builds is recorded on every forward."""
    recorder, original = Recorder(), getattr(module, name)

    def build(*args, **kwargs):
        generator, discriminator = original(*args, **kwargs)
        discriminator.register_forward_hook(recorder.hook)
        return generator, discriminator

    monkeypatch.setattr(module, name, build)
    return recorder


def fit(cfg: GANConfig, images: torch.Tensor, **kwargs):
    return GANS[cfg.family](cfg, images, seed=0, device=CPU, **kwargs)


def first_step_logits(recorder: Recorder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real logits, fake logits of the D step, fake logits of the G step) of step 1: the DCGAN
    step calls D on real, on the detached fakes, then on the fakes again."""
    return recorder.outputs[0], recorder.outputs[1], recorder.outputs[2]


def test_lecam_weight_enters_the_reported_discriminator_loss(monkeypatch, real):
    """Mutation caught: LeCam's weight dropped (or multiplied by 0) in the DCGAN D loss."""
    recorder = record_discriminator(monkeypatch)
    gan = fit(GANConfig(**SMALL, lecam=5.0), real)
    r, f, _ = first_step_logits(recorder)
    bce = F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + F.binary_cross_entropy_with_logits(
        f, torch.zeros_like(f))
    # At step 1 LeCam's anchors are the batch means themselves.
    reg = F.relu(r - f.mean()).pow(2).mean() + F.relu(r.mean() - f).pow(2).mean()
    assert reg > 1e-4, "the test needs a non-zero regulariser to see its weight"
    assert gan.history["loss_d"][0] == pytest.approx(float(bce + 5.0 * reg), rel=1e-5)


def test_hinge_loss_is_what_the_loop_optimises(monkeypatch, real):
    """Mutation caught: 'loss: hinge' silently training with BCE (D and G)."""
    recorder = record_discriminator(monkeypatch)
    gan = fit(GANConfig(**SMALL, loss="hinge"), real)
    r, f, f_g = first_step_logits(recorder)
    hinge_d = F.relu(1 - r).mean() + F.relu(1 + f).mean()
    bce_d = F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + F.binary_cross_entropy_with_logits(
        f, torch.zeros_like(f))
    assert gan.history["loss_d"][0] == pytest.approx(float(hinge_d), rel=1e-5)
    assert abs(float(hinge_d - bce_d)) > 0.1  # the two losses are far apart near D = 0
    assert gan.history["loss_g"][0] == pytest.approx(float(-f_g.mean()), rel=1e-5)


def unaugmented(seen: torch.Tensor, training: torch.Tensor) -> torch.Tensor:
    """Per image D saw: is it exactly one of the training images (i.e. was it left un-augmented)?
    Brightness adds a continuous offset, so an augmented image never equals a training image."""
    d = torch.cdist(seen.flatten(1).double(), training.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(dim=1).values == 0


class HeldP:
    """An ADA controller that holds p at 0.5 from its first update on."""

    def __init__(self, target: float) -> None:
        self.p = 0.0

    def observe(self, real_logits: torch.Tensor) -> None:
        pass

    def update(self, batch: int) -> float:
        self.p = 0.5
        return self.p


def test_an_augmentation_probability_between_0_and_1_augments_about_that_share(monkeypatch, real):
    """Mutation caught: DiffAugment treating any 0 < p < 1 as 1 (or as 0)."""
    monkeypatch.setattr(efficient, "AdaptiveP", HeldP)
    recorder = record_discriminator(monkeypatch)
    fit(GANConfig(**{**SMALL, "steps": 9}, diffaugment="brightness", ada_target=0.6), real)
    reals = recorder.inputs[0::3]  # each step's first D call is on the real batch
    assert unaugmented(reals[0], real).all()  # step 1 ran at the initial p = 0
    share = float(torch.cat([unaugmented(x, real) for x in reals[1:]]).double().mean())
    assert 0.3 < share < 0.7, f"{share:.2f} of the real images went un-augmented at p = 0.5"


def test_the_ada_probability_reaches_the_discriminator(monkeypatch, real):
    """Mutation caught: ADA's p computed and logged but never handed to the D the loop trains.
    A fast controller (p moves by 0.25 per step) so a few steps span p in [0, 1]."""
    controller = efficient.AdaptiveP
    monkeypatch.setattr(efficient, "AdaptiveP", lambda target: controller(target, speed_images=64, interval=1))
    recorder = record_discriminator(monkeypatch)
    gan = fit(GANConfig(**{**SMALL, "steps": 10}, diffaugment="brightness", ada_target=0.01), real)
    p_used = [0.0] + gan.history["ada_p"][:-1]  # p after step t is what step t + 1 augments with
    augmented = [float((~unaugmented(x, real)).double().mean()) for x in recorder.inputs[0::3]]
    assert max(p_used) > 0.4, f"the controller never raised p (history {gan.history['ada_p']})"
    for p, share in zip(p_used, augmented):
        if p in (0, 1):
            assert share == p
        else:  # 16 images a step: a binomial share within ~3 standard deviations of p
            assert abs(share - p) < 0.4, f"p = {p} augmented {share} of the real batch"
    assert sum(augmented) > 0.25 * sum(p_used)


def test_projection_discriminator_adds_the_class_embedding_times_the_summed_features(monkeypatch, real):
    """Mutation caught: the projection's sum over D's last feature map replaced by a mean (a
    class term 1/49 as strong at 28 px). Checked on every D call of a conditional training run."""
    features: list[torch.Tensor] = []
    gaps: list[float] = []
    original = dcgan_module.build_dcgan_pair

    def build(*args, **kwargs):
        generator, discriminator = original(*args, **kwargs)
        assert discriminator.embed is not None
        discriminator.features.register_forward_hook(lambda _m, _a, out: features.append(out.detach()))

        @torch.no_grad()
        def check(module, args, output):
            h, labels = features[-1], args[1]
            expected = module.head(h).flatten(1) + (module.embed(labels) * h.sum(dim=(2, 3))).sum(1, keepdim=True)
            gaps.append(float((output - expected).abs().max()))

        discriminator.register_forward_hook(check)
        return generator, discriminator

    monkeypatch.setattr(dcgan_module, "build_dcgan_pair", build)
    labels = torch.tensor([0, 1] * (len(real) // 2))
    gan = fit(GANConfig(**{**SMALL, "steps": 3}, conditional=True), real, labels=labels, num_classes=2)
    assert len(gaps) == 9 and max(gaps) < 1e-5
    # ... and the class term is large enough to matter: the same images score differently per class.
    assert float((gan.for_class(0).score(real[:8]) - gan.for_class(1).score(real[:8])).abs().max()) > 1e-3
