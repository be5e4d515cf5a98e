"""The trial loop: folds never leak held-out images into GAN training; metrics per fold."""

import numpy as np
import pytest
import torch

from gantune.trainables import trial
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import DataSplits
from gantune.trainables.data.folds import make_folds
from gantune.trainables.gans import GANS
from gantune.trainables.gans.dcgan import fit_dcgan

FAST = {
    "data.folds": 3, "data.positive_class": 0,
    "gan.steps": 2, "gan.width": 16, "gan.latent_dim": 8, "gan.batch_size": 8,
    "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05,
}


def image_ids(images: torch.Tensor) -> set:
    return {img.numpy().tobytes() for img in images}


def test_folds_partition_the_pool_and_are_stratified():
    labels = np.array([0] * 30 + [1] * 90)
    folds = make_folds(labels, k=3, seed=0)
    val = np.concatenate([f.val_idx for f in folds])
    assert sorted(val) == list(range(120))  # every index held out exactly once
    for f in folds:
        assert not set(f.train_idx) & set(f.val_idx)
        assert np.bincount(labels[f.val_idx]).tolist() == [10, 30]


def test_grouped_folds_never_split_a_patient():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    for f in make_folds(labels, k=4, seed=1, groups=groups):
        assert not set(groups[f.train_idx]) & set(groups[f.val_idx])


def test_no_held_out_image_reaches_gan_training(small_pool, monkeypatch):
    seen = []

    def spy(cfg, images, **kw):
        seen.append(image_ids(images))
        return fit_dcgan(cfg, images, **kw)

    monkeypatch.setitem(GANS, "dcgan", spy)
    cfg = TrialConfig.from_flat({**FAST, "synth.ratio": 1.0})
    data = DataSplits(pool=small_pool, test=small_pool.subset(np.arange(4)))
    folds = make_folds(small_pool.labels.numpy(), 3, cfg.data.seed)
    results = []
    trial.run_trial(cfg, data, torch.device("cpu"), on_fold=results.append)
    assert len(seen) == 3 * 2  # one GAN per class per fold
    for i, fold in enumerate(folds):
        held_out = image_ids(fold.val_view(small_pool).images)
        trained_on = seen[2 * i] | seen[2 * i + 1]
        assert trained_on == image_ids(fold.train_view(small_pool).images)
        assert not trained_on & held_out
    assert [r.fold for r in results] == [0, 1, 2]


def test_ratio_sets_the_synthetic_count_per_class(small_pool):
    counts = trial.synthetic_counts(small_pool, 1.5)
    assert counts == {0: 60, 1: 60}
    assert trial.synthetic_counts(small_pool, 0) == {0: 0, 1: 0}


def test_real_only_trial_trains_no_gan_and_reports_every_metric(small_pool, monkeypatch):
    monkeypatch.setitem(GANS, "dcgan", lambda *a, **k: pytest.fail("GAN trained at ratio 0"))
    cfg = TrialConfig.from_flat({**FAST, "synth.ratio": 0.0})
    data = DataSplits(pool=small_pool, test=small_pool)
    means = trial.run_trial(cfg, data, torch.device("cpu"))
    names = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")
    assert set(means) == {f"val_{m}" for m in names} | {f"val_{m}_min_fold" for m in names} | {"val_clf_best_step"}
    assert 0 < means.pop("val_clf_best_step") <= cfg.classifier.steps
    assert all(0 <= v <= 1 for v in means.values())
    assert all(means[f"val_{m}_min_fold"] <= means[f"val_{m}"] for m in names)


def test_fold_means_and_worst_fold_match_a_plain_computation():
    aucs, f1s = [0.715, 0.853, float("nan")], [0.2, 0.6, 0.7]  # a fold whose AUC is undefined

    def fold(i):
        metrics = {m: 0.5 for m in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")}
        metrics.update(auc=aucs[i], f1=f1s[i])
        return trial.FoldResult(i, metrics, np.zeros(1), np.zeros((1, 2)), trial.Synthetic(), {})

    means = trial.mean_metrics([fold(i) for i in range(3)])
    assert means["val_auc"] == pytest.approx((0.715 + 0.853) / 2)  # undefined folds are skipped
    assert means["val_auc_min_fold"] == pytest.approx(0.715)
    assert means["val_f1"] == pytest.approx(0.5) and means["val_f1_min_fold"] == pytest.approx(0.2)
    assert means["val_accuracy_min_fold"] == 0.5


def test_a_restored_trial_goes_on_after_its_checkpointed_folds(small_pool, tmp_path):
    """Fold results round-trip through the checkpoint files; run_trial(skip_folds=n) runs only
    the folds after n, with the same seeds, so a resumed trial equals an uninterrupted one."""
    cfg = TrialConfig.from_flat({**FAST, "synth.ratio": 0.5})
    data = DataSplits(pool=small_pool, test=small_pool)
    full: list = []
    trial.run_trial(cfg, data, torch.device("cpu"), full.append)
    assert [r.fold for r in full] == [0, 1, 2]

    trial.save_fold_results(full[:1], str(tmp_path))
    restored = trial.load_fold_results(str(tmp_path))
    assert len(restored) == 1 and restored[0].fold == 0
    assert restored[0].metrics == full[0].metrics and restored[0].synthetic_counts == full[0].synthetic_counts
    np.testing.assert_array_equal(restored[0].val_proba, full[0].val_proba)
    np.testing.assert_array_equal(restored[0].val_labels, full[0].val_labels)

    rest: list = []
    trial.run_trial(cfg, data, torch.device("cpu"), rest.append, skip_folds=len(restored))
    assert [r.fold for r in rest] == [1, 2]
    assert [r.metrics for r in rest] == [r.metrics for r in full[1:]]  # same folds, same seeds
    assert trial.mean_metrics(restored + rest) == trial.mean_metrics(full)
