"""A trial through the generator cache: GANs shared by trials that differ only downstream, the
same fold metrics as without the cache, restored trials reuse GANs; conditional GANs, synthetic
streams, minority-only synthesis and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gantune.trainables import trial
from gantune.trainables.config import TrialConfig
from gantune.trainables.data.datasets import DataSplits
from gantune.trainables.gans import GANS
from gantune.trainables.gans.cache import GeneratorCache

CPU = torch.device("cpu")
FAST = {
    "data.folds": 2, "data.positive_class": 0,
    "gan.steps": 3, "gan.width": 16, "gan.latent_dim": 8, "gan.batch_size": 8,
    "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05,
    "synth.ratio": 0.5,
}


def run(small_pool, cache=None, on_fold=None, skip_folds=0, **overrides):
    cfg = TrialConfig.from_flat({**FAST, **overrides})
    results = []

    def collect(r):
        results.append(r)
        if on_fold:
            on_fold(r)

    trial.run_trial(
        cfg, DataSplits(pool=small_pool, test=small_pool), CPU, collect, skip_folds=skip_folds, gan_cache=cache
    )
    return results


def totals(results):
    return trial.gan_totals(results)


def test_trials_differing_downstream_share_gans_with_identical_fold_metrics(small_pool, tmp_path):
    cache = GeneratorCache(str(tmp_path))
    without = run(small_pool)
    first = run(small_pool, cache)
    assert totals(first)["gan_cache_misses"] == 4 and totals(first)["gan_cache_hits"] == 0  # 2 folds x 2 classes
    again = run(small_pool, cache)
    assert totals(again)["gan_cache_hits"] == 4 and totals(again)["gan_cache_misses"] == 0
    assert totals(again)["gan_train_seconds"] == 0
    for a, b, c in zip(without, first, again):
        assert a.metrics == b.metrics == c.metrics  # a hit computes exactly what training would
    downstream = run(small_pool, cache, **{"synth.ratio": 1.0, "synth.filter_threshold": 0.3,
                                           "augment.enabled": True, "classifier.lr": 5e-4})
    assert totals(downstream)["gan_cache_hits"] == 4
    other_gan = run(small_pool, cache, **{"gan.lr": 1e-3})
    assert totals(other_gan)["gan_cache_misses"] == 4


def test_a_restored_trial_reuses_the_gans_of_the_fold_it_had_not_reported(small_pool, tmp_path):
    cache = GeneratorCache(str(tmp_path))

    class Killed(Exception):
        pass

    def die_at_second_fold(result):
        if result.fold == 1:
            raise Killed  # the GANs of fold 1 were trained; its report never happened

    with pytest.raises(Killed):
        run(small_pool, cache, on_fold=die_at_second_fold)
    restored = run(small_pool, cache, skip_folds=1)
    assert [r.fold for r in restored] == [1]
    assert totals(restored) | {"gan_train_seconds": 0} == {
        "gan_cache_hits": 2,
        "gan_cache_misses": 0,
        "gan_train_seconds": 0,
    }


def test_gan_stats_survive_the_fold_checkpoint(small_pool, tmp_path):
    results = run(small_pool, GeneratorCache(str(tmp_path / "cache")))
    trial.save_fold_results(results, str(tmp_path))
    assert [r.gan_stats for r in trial.load_fold_results(str(tmp_path))] == [r.gan_stats for r in results]


def test_a_conditional_gan_is_trained_once_per_fold_and_draws_every_class(small_pool, monkeypatch):
    calls = []
    real_fit = GANS["dcgan"]

    def spy(cfg, images, **kw):
        calls.append((len(images), kw.get("num_classes")))
        return real_fit(cfg, images, **kw)

    monkeypatch.setitem(GANS, "dcgan", spy)
    results = run(small_pool, **{"gan.conditional": True})
    assert [c[1] for c in calls] == [2, 2]  # one conditional GAN per fold, on both classes
    for r in results:
        assert calls[0][0] == sum(r.synthetic_counts.values()) * 2  # ratio 0.5: the whole fold-train set
        counts = torch.bincount(r.synthetic.labels, minlength=2).tolist()
        assert counts == [r.synthetic_counts[0], r.synthetic_counts[1]]
        assert r.gans[0].label == 0 and r.gans[1].label == 1 and r.gans[0].generator is r.gans[1].generator


def test_minority_only_synthesis_trains_no_gan_for_the_majority_class(small_pool):
    labels = small_pool.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == 0)[:15], np.flatnonzero(labels == 1)])  # 15 vs 40
    imbalanced = small_pool.subset(keep)
    counts = trial.synthetic_counts(imbalanced, 1.0, "minority")
    small, large = sorted(range(2), key=lambda c: imbalanced.class_counts()[c])
    assert counts[large] == 0 and counts[small] == imbalanced.class_counts()[small]
    results = run(imbalanced, **{"synth.classes": "minority"})
    assert all(set(r.gans) == {small} for r in results)


def test_stream_mode_draws_fresh_images_per_batch_in_the_pool_proportion(small_pool):
    cfg = TrialConfig.from_flat({**FAST, "synth.mode": "stream"})
    counts = trial.synthetic_counts(small_pool, 0.5)
    synthetic = trial.make_synthetic(cfg, small_pool, counts, CPU, seed=0)
    stream = trial.synthetic_stream(cfg, synthetic, counts)
    rng = torch.Generator().manual_seed(0)
    a_images, a_labels = stream(64, rng)
    b_images, _ = stream(64, rng)
    assert a_images.shape == (64, *small_pool.images.shape[1:]) and not torch.equal(a_images, b_images)
    assert set(a_labels.tolist()) <= {0, 1}
    pool = run(small_pool)
    streamed = run(small_pool, **{"synth.mode": "stream"})
    assert [r.metrics for r in pool] != [r.metrics for r in streamed]


def test_synthetic_weight_changes_training_and_weight_one_is_the_plain_mean(small_pool):
    plain = run(small_pool)
    assert [r.metrics for r in run(small_pool, **{"synth.weight": 1.0})] == [r.metrics for r in plain]
    assert [r.metrics for r in run(small_pool, **{"synth.weight": 0.25})] != [r.metrics for r in plain]
