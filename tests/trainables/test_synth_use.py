"""Issue 27: synthetic pretraining then fine-tuning (same step budget, each phase its own images),
classifier-guided selection (only what a real-only classifier accepts; that classifier never sees
held-out images) and per-class amounts (each class reaches its requested count)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gantune.search import leaderboard
from gantune.trainables import outcome, synth_use, trial
from gantune.trainables.config import ConfigError, TrialConfig, check_dataset_fit
from gantune.trainables.data.datasets import ImageDataset
from gantune.trainables.data.folds import make_folds
from gantune.trainables.gans import GANConfig, TrainedGAN
from gantune.trainables.gans.base import normal_latent
from gantune.trainables.pipeline import StudySettings, failure_report, final_failure
from gantune.trainables.synth_use import Scorer, SelectionError

CPU = torch.device("cpu")
SIZE = 8


def flat_images(values: list[float], noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """One flat (1, SIZE, SIZE) image per value, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE).clone()
    return x + noise * torch.randn(x.shape, generator=g)


class FlatG(nn.Module):
    """z -> a flat image of value tanh(z_0): about half bright (> 0), half dark."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        return torch.tanh(z[:, :1]).view(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE) + self.dummy


def flat_gan() -> TrainedGAN:
    return TrainedGAN(GANConfig(latent_dim=2), FlatG(), nn.Identity(), normal_latent(2), (1, SIZE, SIZE))


def toy_real(per_class: tuple[int, ...] = (12, 12)) -> ImageDataset:
    """Real images: class 0 bright (+0.8), class 1 dark (-0.8)."""
    values = [0.8] * per_class[0] + [-0.8] * per_class[1]
    labels = torch.tensor([0] * per_class[0] + [1] * per_class[1])
    return ImageDataset(flat_images(values, 0.01), labels, ("bright", "dark"))


TOY = {
    "classifier.name": "cnn_bn", "classifier.width": 0.25, "classifier.batch_size": 8, "classifier.steps": 40,
    "classifier.eval_every": 5, "classifier.lr": 3e-3, "classifier.optimizer": "adam", "synth.ratio": 1.0,
}


# --- pretraining ---------------------------------------------------------------------------------


def disagreeing_synthetic(n: int = 12) -> trial.Synthetic:
    """Synthetic images whose labels contradict the real ones: bright (+0.7) labelled 1, dark 0."""
    images = flat_images([0.7] * n + [-0.7] * n, 0.01, seed=1)
    return trial.Synthetic(images=images, labels=torch.tensor([1] * n + [0] * n))


def record_phases(monkeypatch, cfg: TrialConfig, early_stop=None):
    """Train fit_pipeline on toy_real() with disagreeing_synthetic(); returns (model, per step: the
    share of the batch that is real (|value| ~ 0.8) and synthetic (~ 0.7))."""
    batches: list[tuple[float, float]] = []

    def spy_augment(_cfg):
        def augment(x, rng):
            level = x.mean(dim=(1, 2, 3)).abs()
            real, synthetic = (level - 0.8).abs() < 0.05, (level - 0.7).abs() < 0.05
            batches.append((float(real.float().mean()), float(synthetic.float().mean())))
            return x

        return augment

    monkeypatch.setattr(trial, "make_augment", spy_augment)
    monkeypatch.setattr(trial, "make_synthetic", lambda *a, **k: disagreeing_synthetic())
    model, _, _ = trial.fit_pipeline(cfg, toy_real(), early_stop, CPU, seed=0)
    return model, batches


def accuracy(model, data: ImageDataset) -> float:
    from gantune.trainables.classifiers import predict_proba

    return float((predict_proba(model, data.images).argmax(1) == data.labels).float().mean())


def test_pretrain_keeps_the_step_budget_synthetic_first_then_real_only(monkeypatch):
    cfg = TrialConfig.from_flat({**TOY, "synth.use": "pretrain", "synth.pretrain_share": 0.25})
    model, batches = record_phases(monkeypatch, cfg)
    assert len(batches) == 40  # every step went through the same augmentation, no extra ones
    assert batches[:10] == [(0.0, 1.0)] * 10  # 25 % of the steps: synthetic images only
    assert batches[10:] == [(1.0, 0.0)] * 30  # then real images only
    # Fine-tuning wins over the contradicting synthetic labels: the model follows the real ones;
    # with a single fine-tuning step it still follows the synthetic ones (pretraining trained).
    assert accuracy(model, toy_real()) == 1.0
    almost_all = TrialConfig.from_flat({**TOY, "synth.use": "pretrain", "synth.pretrain_share": 0.99})
    model, batches = record_phases(monkeypatch, almost_all)
    assert batches[-2:] == [(0.0, 1.0), (1.0, 0.0)] and accuracy(model, toy_real()) == 0.0


def test_mix_plus_pretrain_mixes_after_pretraining_and_plain_mix_mixes_from_the_start(monkeypatch):
    cfg = TrialConfig.from_flat({**TOY, "synth.use": "mix+pretrain", "synth.pretrain_share": 0.5})
    _, batches = record_phases(monkeypatch, cfg)
    assert len(batches) == 40 and batches[:20] == [(0.0, 1.0)] * 20
    assert all(0 < real < 1 and real + syn == 1 for real, syn in batches[20:])  # real and synthetic together
    _, mixed = record_phases(monkeypatch, TrialConfig.from_flat(TOY))  # synth.use: mix, the default
    assert len(mixed) == 40 and sum(0 < real < 1 for real, _ in mixed) > 30


def test_pretraining_steps_are_not_early_stopped_and_the_kept_model_is_fine_tuned(monkeypatch):
    cfg = TrialConfig.from_flat({**TOY, "synth.use": "pretrain", "synth.pretrain_share": 0.5,
                                 "classifier.patience": 1})
    model, batches = record_phases(monkeypatch, cfg, early_stop=toy_real((4, 4)))
    # Validation loss rises during synthetic pretraining (labels disagree); with patience 1 an
    # early stop there would end training before any real image was seen.
    assert any(real == 1.0 for real, _ in batches)
    assert accuracy(model, toy_real()) == 1.0


def test_pretrain_share_rounds_to_whole_steps_and_leaves_one_fine_tuning_step():
    steps = lambda share, total: trial.pretrain_steps(  # noqa: E731
        TrialConfig.from_flat({"synth.pretrain_share": share, "classifier.steps": total}))
    assert steps(0.25, 40) == 10 and steps(0.5, 3) == 2 and steps(0.99, 20) == 19


# --- selection -----------------------------------------------------------------------------------


def brightness_scorer(confidence: float, centroids=None, radii=None) -> Scorer:
    """A stand-in real-only classifier: logit(class 0) - logit(class 1) = 8 x mean pixel, so bright
    images are class 0 (as in toy_real); its features are the flattened pixels."""
    linear = nn.Linear(SIZE * SIZE, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([torch.full((SIZE * SIZE,), 4.0), torch.full((SIZE * SIZE,), -4.0)])
                            / (SIZE * SIZE))
        linear.bias.zero_()
    return Scorer(nn.Sequential(nn.Flatten(), linear), confidence, centroids, radii)


def test_selection_keeps_exactly_what_the_scorer_accepts_and_fills_the_count():
    gan, scorer = flat_gan(), brightness_scorer(0.9)
    produce = trial.class_sampler(TrialConfig(), gan, None)
    kept, rate, drawn = synth_use.select(produce, scorer, 0, 50, seed=3, rounds=10)
    assert len(kept) == 50 and scorer.accept(kept, 0).all()
    # Accepted: p(class 0) = sigmoid(8 m) >= 0.9, i.e. brightness m >= ln 9 / 8 ~ 0.275.
    assert (kept.mean(dim=(1, 2, 3)) >= np.log(9) / 8 - 1e-4).all()
    candidates = produce(drawn, 0)  # another draw of the same size: about the same acceptance
    assert abs(rate - float(scorer.accept(candidates, 0).float().mean())) < 0.1
    assert 0.2 < rate < 0.5 and drawn > 50
    again = synth_use.select(produce, scorer, 0, 50, seed=3, rounds=10)[0]
    assert torch.equal(kept, again)  # reproducible from the seed


def test_feature_distance_rejects_confident_images_far_from_the_class_real_images():
    centroids = torch.stack([torch.full((SIZE * SIZE,), 0.3), torch.full((SIZE * SIZE,), -0.3)])
    radius = 0.1 * SIZE  # a flat image of value v is |v - 0.3| x SIZE from class 0's centroid
    scorer = brightness_scorer(0.5, centroids, torch.tensor([radius, radius]))
    images = flat_images([0.25, 0.35, 0.9, -0.3])
    assert scorer.accept(images, 0).tolist() == [True, True, False, False]  # 0.9: confident but far


def test_feature_radius_is_the_select_distance_quantile_of_the_class_real_distances(monkeypatch):
    real = toy_real((20, 20))
    real = ImageDataset(real.images + 0.05 * torch.linspace(0, 1, 40).view(-1, 1, 1, 1), real.labels, real.class_names)
    stub = brightness_scorer(0.5).model
    monkeypatch.setattr(synth_use, "fit_classifier", lambda *a, **k: stub)
    cfg = TrialConfig.from_flat({"synth.select": "confidence+feature", "synth.select_distance": 0.75})
    scorer = synth_use.fit_scorer(cfg, real, seed=0)
    own = real.images[real.labels == 1].flatten(1)
    distances = torch.linalg.vector_norm(own - own.mean(0), dim=1)
    assert torch.allclose(scorer.centroids[1], own.mean(0))
    assert torch.isclose(scorer.radii[1], torch.quantile(distances, 0.75))
    assert (distances <= scorer.radii[1]).float().mean() == 0.75


def test_make_synthetic_keeps_only_accepted_images_per_class_and_logs_the_rate(monkeypatch):
    monkeypatch.setattr(trial, "train_gans", lambda cfg, train, classes, *a: {c: flat_gan() for c in classes})
    monkeypatch.setattr(trial, "fit_scorer", lambda *a: brightness_scorer(0.8))
    cfg = TrialConfig.from_flat({"synth.select": "confidence", "synth.select_confidence": 0.8})
    out = trial.make_synthetic(cfg, toy_real(), {0: 30, 1: 20}, CPU, seed=0)
    assert out.labels.tolist() == [0] * 30 + [1] * 20
    brightness = out.images.mean(dim=(1, 2, 3))
    assert (brightness[:30] > 0).all() and (brightness[30:] < 0).all()  # each class its own side
    assert out.scorer.accept(out.images[:30], 0).all() and out.scorer.accept(out.images[30:], 1).all()
    assert 0.2 < out.accept_rate < 0.5


def test_stream_selects_its_fresh_images_too(monkeypatch):
    synthetic = trial.Synthetic(gans={0: flat_gan(), 1: flat_gan()}, scorer=brightness_scorer(0.8))
    cfg = TrialConfig.from_flat({"synth.select": "confidence", "synth.select_confidence": 0.8})
    images, labels = trial.synthetic_stream(cfg, synthetic, {0: 1, 1: 1})(40, torch.Generator().manual_seed(0))
    assert len(images) == 40 and synthetic.scorer.accept(images[labels == 0], 0).all()
    assert synthetic.scorer.accept(images[labels == 1], 1).all()


def test_too_low_an_acceptance_fails_the_trial_for_good_with_the_reason(monkeypatch):
    monkeypatch.setattr(trial, "train_gans", lambda cfg, train, classes, *a: {c: flat_gan() for c in classes})
    monkeypatch.setattr(trial, "fit_scorer", lambda *a: brightness_scorer(0.9999))  # brightness >= 1.15: never
    cfg = TrialConfig.from_flat({"synth.select": "confidence", "synth.select_rounds": 3})
    with pytest.raises(SelectionError, match="kept 0 of the 10 images class 0 needs.*'synth.select_rounds' 3"):
        trial.make_synthetic(cfg, toy_real(), {0: 10}, CPU, seed=0)
    error = SelectionError("x")
    assert final_failure(error) is error  # reported, not retried: the same seed draws the same images
    settings = StudySettings({}, None, "", "", "", 0, 1, 0)
    report = failure_report(error, settings, 1)
    assert report["rejected"] == 1 and report["val_auc"] == 0.0
    assert leaderboard.reported_failure(report) == outcome.REJECTED
    assert not leaderboard.usable(report, "val_auc")


def test_the_scorer_trains_on_the_fold_training_images_only(small_pool, monkeypatch):
    """Leak test: the selection classifier sees the fold's real training images and nothing held
    out (no validation images, not even for early stopping), and it is what accepts the images."""
    calls = []
    real_fit = synth_use.fit_classifier

    def spy(cfg, images, labels, val_images, val_labels, *a, **k):
        model = real_fit(cfg, images, labels, val_images, val_labels, *a, **k)
        calls.append((images, val_images, model))
        return model

    monkeypatch.setattr(synth_use, "fit_classifier", spy)
    monkeypatch.setattr(trial, "train_gans", lambda cfg, train, classes, *a: {
        c: TrainedGAN(GANConfig(latent_dim=2), FlatG28(), nn.Identity(), normal_latent(2), (1, 28, 28))
        for c in classes})
    cfg = TrialConfig.from_flat({
        "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05, "synth.ratio": 0.25,
        "synth.select": "confidence", "synth.select_confidence": 0.0, "data.folds": 3,
    })
    fold = make_folds(small_pool.labels.numpy(), 3, 0)[0]
    train, val = fold.train_view(small_pool), fold.val_view(small_pool)
    result = trial.run_fold(cfg, small_pool, fold, CPU)
    (images, val_images, model), = calls
    ids = lambda x: {img.numpy().tobytes() for img in x}  # noqa: E731
    assert ids(images) == ids(train.images) and not ids(images) & ids(val.images)
    assert val_images is None
    assert result.synthetic.scorer.model is model
    assert result.metrics["synth_accept_rate"] == 1.0  # confidence 0 accepts every image
    assert trial.mean_metrics([result])["synth_accept_rate"] == 1.0


class FlatG28(FlatG):
    def forward(self, z):
        return torch.tanh(z[:, :1]).view(-1, 1, 1, 1).expand(-1, 1, 28, 28) + self.dummy


# --- per-class amounts ---------------------------------------------------------------------------


def test_per_class_ratios_and_balance_reach_the_requested_counts(monkeypatch):
    real = toy_real((10, 30))
    def counts(class_ratio: dict[int, float] | None = None, **flat) -> dict[int, int]:
        per_class = {f"synth.class_ratio.{c}": r for c, r in (class_ratio or {}).items()}
        cfg = TrialConfig.from_flat({**{f"synth.{k}": v for k, v in flat.items()}, **per_class})
        return trial.synthetic_counts(real, cfg.synth.ratios(2), cfg.synth.classes)

    assert counts(ratio=0.5) == {0: 5, 1: 15}
    assert counts(ratio=0.5, class_ratio={0: 2.0}) == {0: 20, 1: 15}  # class 0's own ratio
    assert counts(ratio=0.0, class_ratio={0: 1.5}) == {0: 15, 1: 0}  # minority only, its own amount
    assert counts(ratio=1.0, classes="balance") == {0: 20, 1: 0}  # up to the largest class
    assert counts(ratio=0.5, classes="balance") == {0: 10, 1: 0}
    assert counts(ratio=1.0, class_ratio={1: 0.5}, classes="minority") == {0: 10, 1: 0}
    # And the synthetic set that trains the classifier has exactly those counts per class.
    monkeypatch.setattr(trial, "train_gans", lambda cfg, train, classes, *a: {c: flat_gan() for c in classes})
    cfg = TrialConfig.from_flat({"synth.ratio": 1.0, "synth.classes": "balance"})
    wanted = trial.synthetic_counts(real, cfg.synth.ratios(2), cfg.synth.classes)
    out = trial.make_synthetic(cfg, real, wanted, CPU, seed=0)
    assert torch.bincount(out.labels, minlength=2).tolist() == [20, 0]
    assert np.bincount(torch.cat([real.labels, out.labels]).numpy()).tolist() == [30, 30]


def test_class_ratio_keys_round_trip_and_bad_ones_name_the_key():
    cfg = TrialConfig.from_flat({"synth.class_ratio.1": 0.5, "synth.class_ratio.0": 2, "synth.ratio": 0.0})
    assert cfg.synth.class_ratio == ((0, 2.0), (1, 0.5)) and cfg.baseline_name() is None
    flat = cfg.to_flat()
    assert flat["synth.class_ratio.0"] == 2.0 and "synth.class_ratio" not in flat
    assert TrialConfig.from_flat(flat) == cfg  # a trial_config.json reproduces the trial
    assert TrialConfig.from_flat({"synth.class_ratio.0": 0.0}).baseline_name() == "real_only"
    with pytest.raises(ConfigError, match=r"'synth.class_ratio.1' must be >= 0, got -1"):
        TrialConfig.from_flat({"synth.class_ratio.1": -1})
    with pytest.raises(ConfigError, match=r"'synth.class_ratio.x': the part after 'synth.class_ratio.' must be"):
        TrialConfig.from_flat({"synth.class_ratio.x": 1.0})
    with pytest.raises(ConfigError, match=r"'synth.class_ratio' takes one key per entry"):
        TrialConfig.from_flat({"synth.class_ratio": {0: 1.0}})
    with pytest.raises(ConfigError, match=r"'synth.class_ratio.2' names class 2, but the dataset has 2 classes"):
        check_dataset_fit(TrialConfig.from_flat({"synth.class_ratio.2": 1.0}), 2)
    with pytest.raises(ConfigError, match=r"'synth.use' must be one of"):
        TrialConfig.from_flat({"synth.use": "finetune"})
    with pytest.raises(ConfigError, match=r"'synth.pretrain_share' must be in \(0, 1\)"):
        TrialConfig.from_flat({"synth.pretrain_share": 1.0})
