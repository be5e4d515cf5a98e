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


# --- E-GAN and DAE-GAN: the same options through the evolution loop ---

from gantune.trainables.gans import daegan as daegan_module  # noqa: E402
from gantune.trainables.gans import egan as egan_module  # noqa: E402

EVOLUTION = dict(SMALL, mutations="minimax,heuristic")
"""Per E-GAN step D is called on: real, fake (D step), eval real (fitness), fake (mutations' G
losses), then once per child; DAE-GAN's D step is one mixup call, plus real and fake with LeCam/ADA."""


def evolution_recorder(monkeypatch, family: str) -> Recorder:
    if family == "egan":
        return record_discriminator(monkeypatch, egan_module, "build_dcgan_pair")
    return record_discriminator(monkeypatch, daegan_module, "build_daegan_pair")


def lecam_reg(r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """LeCam at step 1, where its anchors are the batch means themselves."""
    return F.relu(r - f.mean()).pow(2).mean() + F.relu(r.mean() - f).pow(2).mean()


def test_egan_trains_with_the_hinge_d_loss_and_lecam(monkeypatch, real):
    """Mutations caught: E-GAN ignoring gan.loss or gan.lecam in its D step."""
    recorder = evolution_recorder(monkeypatch, "egan")
    gan = fit(GANConfig(**EVOLUTION, family="egan", loss="hinge", lecam=5.0), real)
    r, f = recorder.outputs[0], recorder.outputs[1]
    reg = lecam_reg(r, f)
    assert reg > 1e-4
    expected = F.relu(1 - r).mean() + F.relu(1 + f).mean() + 5.0 * reg
    assert gan.history["loss_d"][0] == pytest.approx(float(expected), rel=1e-5)


def test_daegan_adds_lecam_on_the_pure_real_and_fake_logits(monkeypatch, real):
    """Mutation caught: DAE-GAN dropping LeCam from its mixup D loss. Until LeCam first bites
    (at init this D may rank every fake above every real, where the regulariser is 0 with a 0
    gradient) the run equals the plain one; at that step it differs by exactly lecam * R."""
    cfg = GANConfig(**{**EVOLUTION, "steps": 4}, family="daegan", mixture_components=3)
    plain = fit(cfg, real).history["loss_d"]  # same init, batches and lam: the mixup part
    recorder = evolution_recorder(monkeypatch, "daegan")
    with_lecam = fit(GANConfig(**{**cfg.to_dict(), "lecam": 5.0}), real).history["loss_d"]
    anchor_real = anchor_fake = None
    for step in range(4):
        r, f = recorder.outputs[7 * step + 1], recorder.outputs[7 * step + 2]  # calls: mixup, real, fake, ...
        anchor_real = r.mean() if anchor_real is None else 0.99 * anchor_real + 0.01 * r.mean()
        anchor_fake = f.mean() if anchor_fake is None else 0.99 * anchor_fake + 0.01 * f.mean()
        reg = float(F.relu(r - anchor_fake).pow(2).mean() + F.relu(anchor_real - f).pow(2).mean())
        assert with_lecam[step] == pytest.approx(plain[step] + 5.0 * reg, rel=1e-5)
        if reg > 1e-4:
            return
    pytest.fail("LeCam never bit in 4 steps; the test cannot see its weight")


@pytest.mark.parametrize("family,real_call,per_step", [("egan", 0, 6), ("daegan", 1, 7)])
def test_evolution_hands_the_ada_probability_to_the_discriminator(monkeypatch, real, family, real_call, per_step):
    """Mutations caught: the evolution loop never moving D's augmentation probability, or
    DiffAugment ignoring a p between 0 and 1 there."""
    monkeypatch.setattr(efficient, "AdaptiveP", HeldP)
    recorder = evolution_recorder(monkeypatch, family)
    cfg = GANConfig(**{**EVOLUTION, "steps": 9}, family=family, diffaugment="brightness", ada_target=0.6)
    gan = fit(cfg, real)
    assert gan.history["ada_p"] == [0.5] * 9
    assert len(recorder.inputs) == 9 * per_step
    reals = recorder.inputs[real_call::per_step]
    assert unaugmented(reals[0], real).all()  # step 1 ran at the initial p = 0
    share = float(torch.cat([unaugmented(x, real) for x in reals[1:]]).double().mean())
    assert 0.3 < share < 0.7, f"{share:.2f} of the real images went un-augmented at p = 0.5"


@pytest.mark.parametrize("family", ["egan", "daegan"])
def test_evolution_conditional_pair_sees_the_real_batch_labels(monkeypatch, real, family):
    """Mutation caught: a conditional evolution run calling G or D without the labels."""
    recorder = evolution_recorder(monkeypatch, family)
    labels = torch.tensor([0, 1] * (len(real) // 2))
    cfg = GANConfig(**EVOLUTION, family=family, conditional=True, mixture_components=3)
    gan = fit(cfg, real, labels=labels, num_classes=2)
    assert all(y is not None for y in recorder.labels)
    assert set(torch.cat(recorder.labels).tolist()) == {0, 1}
    assert gan.num_classes == 2
    assert not torch.equal(gan.for_class(0).sample(4, seed=1), gan.for_class(1).sample(4, seed=1))
    # the projection D: the same images get other logits under each class
    d, x = gan.discriminator.eval(), real[:8]
    with torch.no_grad():
        gap = d(x, torch.zeros(8, dtype=torch.long)) - d(x, torch.ones(8, dtype=torch.long))
    assert float(gap.abs().max()) > 1e-3


def test_daegan_spectral_norm_bounds_every_discriminator_layer(real):
    gan = fit(GANConfig(**EVOLUTION, family="daegan", spectral_norm=True), real)
    layers = [m for m in gan.discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(layers) >= 8  # every conv (blocks and attention) and the head
    for layer in layers:
        w = layer.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert float(sigma) == pytest.approx(1.0, rel=0.05)


def test_hinge_fitness_measures_the_hinge_d_loss_gradient():
    """F_d of an E-GAN trained with the hinge loss is the gradient norm of that loss."""
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
    real_x, fake_x = torch.rand(5, 1, 2, 2), -torch.rand(5, 1, 2, 2)
    real_grads = egan_module.d_loss_grads(d, real_x, 1.0, loss="hinge")
    fit_ = egan_module.child_fitness(d, fake_x, real_grads, 1.0, loss="hinge")
    hinge = F.relu(1 - d(real_x)).mean() + F.relu(1 + d(fake_x)).mean()
    norm = torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(hinge, list(d.parameters()))))
    assert fit_.diversity == pytest.approx(float(-torch.log(norm + egan_module.FD_EPS)), rel=1e-5)


def test_egan_fitness_measures_the_d_loss_it_trains_with(monkeypatch, real):
    """Mutation caught: an E-GAN trained with the hinge loss scoring F_d on the BCE loss. D is
    snapshot at the fitness call on the eval batch; the logged F_d of step 1 must be the hinge F_d
    of one of the children (and of none under BCE)."""
    import copy

    snapshots, original = [], egan_module.build_dcgan_pair
    recorder = Recorder()

    def build(*args, **kwargs):
        generator, discriminator = original(*args, **kwargs)

        def hook(module, args, output):
            recorder.hook(module, args, output)
            if len(recorder.inputs) == 3:  # step 1's third call: the fitness's eval real batch
                snapshots.append(copy.deepcopy(module))

        discriminator.register_forward_hook(hook)
        return generator, discriminator

    monkeypatch.setattr(egan_module, "build_dcgan_pair", build)
    gan = fit(GANConfig(**{**EVOLUTION, "steps": 1}, family="egan", loss="hinge"), real)
    d, eval_real = snapshots[0], recorder.inputs[2]
    children = recorder.inputs[4:6]

    def fd(loss: str, fake: torch.Tensor) -> float:
        grads = egan_module.d_loss_grads(d, eval_real, 1.0, loss=loss)
        return egan_module.child_fitness(d, fake, grads, 0.0, loss=loss).diversity

    logged = gan.history["egan_fd"][0]
    assert any(fd("hinge", c) == pytest.approx(logged, rel=1e-4) for c in children)
    assert not any(fd("bce", c) == pytest.approx(logged, rel=1e-4) for c in children)


# --- SimGAN refiner: the same options on the local discriminator's per-location scores ---

from gantune.trainables.gans import simgan as simgan_module  # noqa: E402
from gantune.trainables.gans.simgan import RefinerConfig  # noqa: E402

REFINE = dict(steps=1, pretrain_r_steps=0, pretrain_d_steps=9, batch_size=16, width=8, log_every=1, buffer_size=32)
"""D pretraining first: each of its steps calls D on a real batch, then on a refined one."""


def record_local_discriminator(monkeypatch) -> Recorder:
    recorder, original = Recorder(), simgan_module.LocalDiscriminator

    def build(*args, **kwargs):
        discriminator = original(*args, **kwargs)
        discriminator.register_forward_hook(recorder.hook)
        return discriminator

    monkeypatch.setattr(simgan_module, "LocalDiscriminator", build)
    return recorder


@pytest.fixture(scope="module")
def synthetic(real):
    return (torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.5


def refine(cfg: RefinerConfig, synthetic: torch.Tensor, real: torch.Tensor):
    return simgan_module.fit_refiner(cfg, synthetic, real, seed=0, device=CPU)


def test_refiner_hinge_and_lecam_are_the_d_loss_it_reports(monkeypatch, real, synthetic):
    """Mutations caught: the refiner's D ignoring refiner.loss 'hinge' or refiner.lecam."""
    recorder = record_local_discriminator(monkeypatch)
    trained = refine(RefinerConfig(**REFINE, loss="hinge", lecam=1e4), synthetic, real)
    s_real, s_fake = (simgan_module.realness(recorder.outputs[i]) for i in (0, 1))
    reg = lecam_reg(s_real, s_fake)
    assert 1e4 * reg > 0.05  # D's scores start close together: a large weight makes the term visible
    expected = F.relu(1 - s_real).mean() + F.relu(1 + s_fake).mean() + 1e4 * reg
    assert trained.history["pretrain_loss_d"][0] == pytest.approx(float(expected), rel=1e-5)
    bce = simgan_module.local_ce(recorder.outputs[0], 1) + simgan_module.local_ce(recorder.outputs[1], 0)
    assert abs(float(expected - bce)) > 0.1


def test_refiner_adversarial_hinge_loss_is_minus_the_mean_score(monkeypatch, real, synthetic):
    recorder = record_local_discriminator(monkeypatch)
    trained = refine(RefinerConfig(**{**REFINE, "pretrain_d_steps": 0}, loss="hinge"), synthetic, real)
    first_r_call = simgan_module.realness(recorder.outputs[0])  # round 1: two refiner steps, then D
    second_r_call = simgan_module.realness(recorder.outputs[1])
    expected = -(first_r_call.mean() + second_r_call.mean()) / 2
    assert trained.history["loss_r_adv"][0] == pytest.approx(float(expected), rel=1e-5)


def test_refiner_hands_the_ada_probability_to_its_discriminator(monkeypatch, real, synthetic):
    """Mutation caught: the refiner's ADA p never reaching the D it trains through."""
    monkeypatch.setattr(efficient, "AdaptiveP", HeldP)
    recorder = record_local_discriminator(monkeypatch)
    trained = refine(RefinerConfig(**REFINE, diffaugment="brightness", ada_target=0.6), synthetic, real)
    reals = recorder.inputs[0:18:2]
    assert unaugmented(reals[0], real).all()
    share = float(torch.cat([unaugmented(x, real) for x in reals[1:]]).double().mean())
    assert 0.3 < share < 0.7, f"{share:.2f} of the real images went un-augmented at p = 0.5"
    assert trained.history["ada_p"] == [0.5]


def test_refiner_spectral_norm_and_ema(real, synthetic):
    plain = refine(RefinerConfig(**REFINE), synthetic, real)
    trained = refine(RefinerConfig(**REFINE, spectral_norm=True, ema=0.5), synthetic, real)
    layers = [m for m in trained.discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == 8  # every convolution: 2 strided, 2 per residual block (2), 2 1x1
    for layer in layers:
        w = layer.weight.detach()
        assert float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)) == pytest.approx(1.0, rel=0.05)
    assert all(not p.requires_grad for p in trained.refiner.parameters())  # the EMA copy refines
    assert not torch.equal(trained.refine(synthetic[:4]), plain.refine(synthetic[:4]))


def test_refiner_options_round_trip_through_the_checkpoint(real, synthetic, tmp_path):
    from gantune.trainables.gans import load_refiners

    trained = refine(RefinerConfig(**REFINE, spectral_norm=True, ema=0.5, loss="hinge"), synthetic, real)
    torch.save({"refiners": {"0": trained.state()}}, tmp_path / "g.pt")
    loaded = load_refiners(str(tmp_path / "g.pt"))[0]
    assert torch.equal(loaded.refine(synthetic[:4]), trained.refine(synthetic[:4]))


@pytest.mark.parametrize("kwargs,match", [
    ({"loss": "wgan"}, "'refiner.loss' must be 'bce' or 'hinge'"),
    ({"ada_target": 0.6}, "'refiner.ada_target' .* set 'refiner.diffaugment'"),
    ({"diffaugment": "rotate"}, "'refiner.diffaugment' ops"),
])
def test_refiner_refuses_bad_options_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefinerConfig(**kwargs)
