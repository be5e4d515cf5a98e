"""Generative metrics against plain references: scipy's sqrtm formula, brute-force PRDC loops."""

import numpy as np
import pytest
import scipy.linalg
import torch

from gantune.trainables.classifiers import CLASSIFIERS, ClassifierConfig, SmallCNN
from gantune.trainables.generative_metrics import (
    GEN_METRIC_NAMES,
    GenMetricsConfig,
    RealReferenceCache,
    fd_classifier,
    features,
    frechet_distance,
    gaussian_fit,
    generative_metrics,
    memorisation,
    prdc,
)


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    return rng.normal(size=(n, d)) @ mix * scale + shift


def reference_fd(x, y):
    """The usual formula with scipy's general matrix square root (pytorch-fid style)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


# --- Fréchet distance ---


def test_fd_matches_scipy_reference():
    x, y = gaussian(300, 6, 0), gaussian(200, 6, 1, shift=0.5, scale=1.5)
    assert frechet_distance(*gaussian_fit(x), *gaussian_fit(y)) == pytest.approx(reference_fd(x, y), rel=1e-6)


def test_fd_zero_for_identical_sets_and_grows_with_mean_shift():
    x = gaussian(300, 6, 0)
    assert frechet_distance(*gaussian_fit(x), *gaussian_fit(x)) == pytest.approx(0.0, abs=1e-8)
    shifts = [0.5, 1.0, 2.0]
    fds = [frechet_distance(*gaussian_fit(x), *gaussian_fit(x + s)) for s in shifts]
    # Same covariance: FD is exactly the squared mean shift, s^2 * d.
    assert fds == pytest.approx([s * s * 6 for s in shifts], rel=1e-8)


def test_fd_singular_covariance_stays_finite():
    x, y = gaussian(5, 20, 0), gaussian(5, 20, 1)  # 5 points in 20 dims: rank-4 covariances
    fd = frechet_distance(*gaussian_fit(x), *gaussian_fit(y))
    assert np.isfinite(fd) and fd == pytest.approx(reference_fd(x, y), rel=1e-4)


# --- PRDC ---


def brute_prdc(real, fake, k):
    def radius(points, i):
        d = sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)
        return d[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    dist = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    precision = np.mean([any(dist(f, r) < r_real[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(dist(r, f) < r_fake[j] for j, f in enumerate(fake)) for r in real])
    density = np.mean([sum(dist(f, r) < r_real[i] for i, r in enumerate(real)) for f in fake]) / k
    coverage = np.mean([min(dist(r, f) for f in fake) < r_real[i] for i, r in enumerate(real)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [1, 3])
def test_prdc_matches_brute_force(k):
    real, fake = gaussian(25, 3, 0), gaussian(18, 3, 1, shift=0.7, scale=1.3)
    got = prdc(torch.tensor(real), torch.tensor(fake), k)
    want = brute_prdc(real, fake, k)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1  # a non-degenerate case


def test_prdc_far_fakes_score_zero():
    real = torch.tensor(gaussian(30, 3, 0))
    got = prdc(real, real + 100.0, 5)
    assert got == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_k_too_large_names_k():
    with pytest.raises(ValueError, match="'k'"):
        prdc(torch.randn(4, 2), torch.randn(4, 2), k=4)


# --- Memorisation ---


def test_memorisation_flags_copies_not_independent_samples():
    g = torch.Generator().manual_seed(0)
    train, val, fresh = (torch.randn(n, 1, 8, 8, generator=g) for n in (200, 100, 150))
    copies = memorisation(train[:150], train, val)
    assert copies["ratio"] == pytest.approx(0.0, abs=1e-6) and copies["fraction"] == 1.0
    honest = memorisation(fresh, train, val)
    assert 0.85 < honest["ratio"] < 1.15 and honest["fraction"] < 0.15


def test_memorisation_reference_numbers():
    train = torch.tensor([[0.0], [10.0]])
    val = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])  # nearest-train distances 1..5, median 3
    synth = torch.tensor([[0.5], [9.0], [6.0]])  # distances 0.5, 1, 4 -> median 1
    out = memorisation(synth, train, val, quantile=0.5)  # threshold = median of val = 3
    assert out["ratio"] == pytest.approx(1 / 3) and out["fraction"] == pytest.approx(2 / 3)


# --- Features and the per-fold reference ---


def test_features_are_penultimate_activations():
    torch.manual_seed(0)
    model = SmallCNN(1, 3, 28, width=0.0625).train()
    x = torch.randn(5, 1, 28, 28)
    got = features(model, x, batch=2)
    model.eval()
    with torch.no_grad():
        want = model.head[:-1](model.features(x))
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_features_for_every_classifier(name):
    model = CLASSIFIERS[name](3, 4, 28, ClassifierConfig(width=1 / 16, middle_repeats=1)).train()
    feats = features(model, torch.randn(3, 3, 28, 28))
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert feats.shape == (3, fc.in_features) and fc.out_features == 4
    assert model.training  # mode restored


def test_fd_classifier_zero_on_same_images_larger_for_other_distributions():
    torch.manual_seed(0)
    model = SmallCNN(1, 2, 28, width=0.0625)
    real = torch.rand(80, 1, 28, 28) * 2 - 1
    a, b = real[:40], real[40:]
    assert fd_classifier(model, a, a) == pytest.approx(0.0, abs=1e-9)
    other = b * 0.2 + 0.5  # low contrast, brighter
    want = frechet_distance(*gaussian_fit(features(model, a)), *gaussian_fit(features(model, other)))
    assert fd_classifier(model, a, other) == pytest.approx(want, rel=1e-9)
    # Untrained features have a tiny scale: compare with a same-distribution sample, not a constant.
    assert fd_classifier(model, a, other) > 5 * fd_classifier(model, a, b)


def test_cache_builds_once_per_fold_and_metrics_are_flat_floats():
    torch.manual_seed(0)
    train, val = torch.rand(30, 1, 28, 28) * 2 - 1, torch.rand(12, 1, 28, 28) * 2 - 1
    built = []

    def build():
        built.append(1)
        return SmallCNN(1, 2, 28, width=0.0625)

    cache = RealReferenceCache()
    ref = cache.get(0, train, val, build, GenMetricsConfig(k=3))
    assert cache.get(0, train, val, build, GenMetricsConfig(k=3)) is ref and len(built) == 1
    cache.get(0, train[:20], val, build, GenMetricsConfig(k=3))  # different images: rebuild
    cache.get(1, train, val, build, GenMetricsConfig(k=3))
    assert len(built) == 3 and cache.builds == 3

    copies = generative_metrics(ref, train)
    assert set(copies) == set(GEN_METRIC_NAMES) - {"gen_tstr_auc"}  # the one that trains a classifier
    assert all(isinstance(v, float) for v in copies.values())
    assert copies["gen_fd_classifier"] == pytest.approx(0.0, abs=1e-5)
    assert copies["gen_precision"] == 1.0 and copies["gen_coverage"] == 1.0
    # cdist's matrix-product path leaves ~1e-7 of rounding on identical images
    assert copies["gen_memorisation_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert copies["gen_memorisation_fraction"] == 1.0 and copies["gen_memorized"] == 1.0
    fresh = generative_metrics(ref, torch.rand(25, 1, 28, 28) * 2 - 1)
    assert fresh["gen_memorisation_ratio"] > 0.8 and fresh["gen_memorisation_fraction"] < 0.3
    assert fresh["gen_memorized"] == fresh["gen_memorisation_fraction"]
    assert all(np.isfinite(v) for v in fresh.values())


# --- The headline metrics: FD ratio, TSTR, memorised share -------------------------------------


def test_fd_ratio_is_the_synthetic_fd_over_the_real_validation_fd_by_scipy():
    """gen_fd_ratio against the plain formula (scipy sqrtm) on the same features: the synthetic
    side a seeded subset of the validation set's size."""
    from gantune.trainables.generative_metrics import build_real_reference

    torch.manual_seed(0)
    model = SmallCNN(1, 2, 28, width=0.0625)
    train, val = torch.rand(120, 1, 28, 28) * 2 - 1, torch.rand(50, 1, 28, 28) * 2 - 1
    fake = (torch.rand(90, 1, 28, 28) * 2 - 1) * 0.5 + 0.3
    ref = build_real_reference(model, 0, train, val, GenMetricsConfig(k=3))
    f_train, f_val, f_fake = (features(model, x).double().numpy() for x in (train, val, fake))
    pick = torch.randperm(90, generator=torch.Generator().manual_seed(0))[:50].numpy()
    expected = reference_fd(f_fake[pick], f_train) / reference_fd(f_val, f_train)
    got = generative_metrics(ref, fake)["gen_fd_ratio"]
    assert got == pytest.approx(expected, rel=1e-3)
    assert got > 3  # other images are far from the floor ...
    fresh = generative_metrics(ref, torch.rand(90, 1, 28, 28) * 2 - 1)["gen_fd_ratio"]
    assert 0.5 < fresh < 2  # ... fresh images of the same distribution are at it


def test_tstr_auc_scores_the_synthetic_only_classifier_on_the_real_images():
    from sklearn.metrics import roc_auc_score

    from gantune.trainables.generative_metrics import tstr_auc

    synthetic, labels = torch.zeros(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    val_images, val_labels = torch.arange(8.0).view(8, 1, 1, 1), torch.tensor([1, 1, 0, 1, 0, 0, 1, 0])
    fitted = []

    def fit(x, y):
        fitted.append((x, y))
        return "model"

    def predict(model, images):  # a fixed ranking: P(class 0) grows with the image value
        p0 = images.flatten() / 8
        return torch.stack([p0, 1 - p0], dim=1)

    auc = tstr_auc(fit, predict, synthetic, labels, val_images, val_labels, num_classes=2, positive=0)
    assert fitted[0][0] is synthetic and fitted[0][1] is labels  # trained on synthetic images only
    assert auc == pytest.approx(roc_auc_score(val_labels.numpy() == 0, (val_images.flatten() / 8).numpy()))
    missing = tstr_auc(fit, predict, synthetic, torch.zeros(6, dtype=torch.long), val_images, val_labels, 2, 0)
    assert np.isnan(missing) and len(fitted) == 1  # no classifier for a one-class synthetic set


def test_trial_logs_the_headline_generative_metrics_per_fold(small_pool, monkeypatch):
    """gen_fd_ratio, gen_tstr_auc and gen_memorized on every fold and in the trial's means, and
    the TSTR classifier sees the synthetic images only."""
    from gantune.trainables import trial
    from gantune.trainables.config import TrialConfig
    from gantune.trainables.data.datasets import DataSplits

    fast = {"data.folds": 2, "data.positive_class": 0, "gan.steps": 2, "gan.width": 16, "gan.latent_dim": 8,
            "gan.batch_size": 8, "classifier.steps": 4, "classifier.eval_every": 2, "classifier.width": 0.05,
            "synth.ratio": 1.0, "synth.gen_metrics": True}
    cfg = TrialConfig.from_flat(fast)
    data = DataSplits(pool=small_pool, test=small_pool.subset(np.arange(4)))
    fits, fit_classifier = [], trial.fit_classifier

    def spy(cfg, x, y, val_x, val_y, *args, **kwargs):
        fits.append((x, val_x))
        return fit_classifier(cfg, x, y, val_x, val_y, *args, **kwargs)

    monkeypatch.setattr(trial, "fit_classifier", spy)
    results = []
    means = trial.run_trial(cfg, data, torch.device("cpu"), on_fold=results.append)
    ids = lambda images: {img.numpy().tobytes() for img in images}  # noqa: E731
    synthetic = set().union(*(ids(r.synthetic.images) for r in results))
    tstr = [(x, v) for x, v in fits if ids(x) <= synthetic]
    assert len(tstr) == 2 and all(ids(v) <= synthetic for _, v in tstr)  # early-stopped on synthetic too
    for r in results:
        assert {"gen_fd_ratio", "gen_tstr_auc", "gen_memorized"} <= r.gen_metrics.keys()
        assert all(np.isfinite(r.gen_metrics[k]) for k in ("gen_fd_ratio", "gen_tstr_auc", "gen_memorized"))
        assert 0 <= r.gen_metrics["gen_tstr_auc"] <= 1 and r.gen_metrics["gen_fd_ratio"] > 0
    assert means["gen_tstr_auc"] == pytest.approx(np.mean([r.gen_metrics["gen_tstr_auc"] for r in results]))
