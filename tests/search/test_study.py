"""The data-efficiency study's statistics: the hierarchical bootstrap against a plain loop, the
binormal AUC standard error against a simulation, the detectable difference, the per-fraction
comparison and its verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gantune.search import stats, study
from gantune.search.study import FractionResult, MethodRuns
from scipy import stats as sps
from sklearn.metrics import roc_auc_score


def auc_pos1(y, p):
    return roc_auc_score(y == 1, p[:, 1])


def scores(rng, labels, draws, seeds, signal):
    """(D, S, N, 2) probabilities with a per-draw and per-seed offset in how well they separate."""
    out = np.empty((draws, seeds, len(labels), 2))
    for d in range(draws):
        for s in range(seeds):
            z = (signal + 0.3 * rng.normal()) * labels + rng.normal(size=len(labels))
            p1 = 1 / (1 + np.exp(-z))
            out[d, s] = np.stack([1 - p1, p1], axis=1)
    return out


def plain_hierarchical(labels, a, b, statistic, n_boot, seed):
    """The documented draw order, written out with loops."""
    rng = np.random.default_rng(seed)
    n_draws, n_seeds = a.shape[:2]
    classes = sorted(set(labels.tolist()))
    values = []
    for _ in range(n_boot):
        draws = rng.integers(0, n_draws, n_draws)
        seeds = rng.integers(0, n_seeds, (n_draws, n_seeds))
        images = []
        for c in classes:
            idx = [i for i, y in enumerate(labels) if y == c]
            images += [idx[j] for j in rng.integers(0, len(idx), len(idx))]
        images = np.array(images)
        total = 0.0
        for i, d in enumerate(draws):
            for s in seeds[i]:
                total += statistic(labels[images], a[d, s][images]) - statistic(labels[images], b[d, s][images])
        values.append(total / (n_draws * n_seeds))
    full = np.mean([[statistic(labels, a[d, s]) - statistic(labels, b[d, s]) for s in range(n_seeds)]
                    for d in range(n_draws)])
    return full, np.percentile(values, [2.5, 97.5])


def test_hierarchical_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(30, int), np.ones(12, int)]
    a, b = scores(rng, labels, 3, 2, 3.0), scores(rng, labels, 3, 2, 0.3)
    boot = stats.hierarchical_bootstrap(labels, a, b, auc_pos1, n_boot=200, seed=7)
    full, (low, high) = plain_hierarchical(labels, a, b, auc_pos1, 200, 7)
    assert boot.delta == pytest.approx(full)
    assert (boot.low, boot.high) == pytest.approx((low, high))
    assert boot.low > 0  # a clear gain


def test_hierarchical_interval_widens_with_draw_to_draw_noise():
    """Same mean difference; when it swings between draws the interval must say so."""
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(60, int), np.ones(30, int)]
    base = scores(rng, labels, 4, 2, 1.0)
    steady = base.copy()
    swinging = base.copy()
    swinging[:2] = scores(rng, labels, 2, 2, 2.5)  # two draws far better, two far worse
    swinging[2:] = scores(rng, labels, 2, 2, 0.0)
    steady_boot = stats.hierarchical_bootstrap(labels, steady, base, auc_pos1, 300, 0)
    swing_boot = stats.hierarchical_bootstrap(labels, swinging, base, auc_pos1, 300, 0)
    assert steady_boot.delta == 0 and steady_boot.low == steady_boot.high == 0
    assert swing_boot.high - swing_boot.low > 0.1


def test_hierarchical_bootstrap_refuses_unpaired_shapes():
    labels = np.r_[np.zeros(5, int), np.ones(5, int)]
    with pytest.raises(ValueError, match="need"):
        stats.hierarchical_bootstrap(labels, np.zeros((2, 3, 10, 2)), np.zeros((2, 2, 10, 2)), auc_pos1)


@pytest.mark.parametrize("auc_value,n_pos,n_neg", [(0.85, 42, 114), (0.9, 42, 114), (0.8, 226, 174)])
def test_binormal_auc_se_matches_a_simulation(auc_value, n_pos, n_neg):
    rng = np.random.default_rng(0)
    d = math.sqrt(2) * sps.norm.ppf(auc_value)
    simulated = [
        (rng.normal(d, 1, n_pos)[:, None] > rng.normal(0, 1, n_neg)[None, :]).mean() for _ in range(3000)
    ]
    assert stats.auc_se_binormal(auc_value, n_pos, n_neg) == pytest.approx(np.std(simulated), rel=0.06)


def test_min_detectable_difference_has_the_stated_power_in_a_simulation():
    """Two models whose scores share a common part (so their AUCs correlate), the second better by
    the computed difference: a two-sided test with the SE the formula assumes rejects about 80 %
    of the time."""
    rng = np.random.default_rng(0)
    n_pos, n_neg, base_auc, rho = 42, 114, 0.85, 0.8
    mde = stats.min_detectable_auc_delta(base_auc, n_pos, n_neg, correlation=rho)
    d_a = math.sqrt(2) * sps.norm.ppf(base_auc)
    d_b = math.sqrt(2) * sps.norm.ppf(base_auc + mde)
    aucs = []
    for _ in range(1500):
        shared_pos, shared_neg = rng.normal(size=n_pos), rng.normal(size=n_neg)
        own = [(rng.normal(size=n_pos), rng.normal(size=n_neg)) for _ in range(2)]
        w = math.sqrt(rho)  # score correlation rho between the models, per image
        pairs = []
        for (op, on), d in zip(own, (d_a, d_b)):
            pos, neg = d + w * shared_pos + math.sqrt(1 - w * w) * op, w * shared_neg + math.sqrt(1 - w * w) * on
            pairs.append((pos[:, None] > neg[None, :]).mean())
        aucs.append(pairs)
    aucs = np.array(aucs)
    observed_r = np.corrcoef(aucs.T)[0, 1]
    se_diff = stats.auc_se_binormal(base_auc, n_pos, n_neg) * math.sqrt(2 * (1 - observed_r))
    power = np.mean(np.abs(aucs[:, 1] - aucs[:, 0]) / se_diff > sps.norm.ppf(0.975))
    assert 0.6 < observed_r < 0.95
    # The formula's power at its own correlation; with the observed one it must be in the same range.
    assert mde == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8))
                                * stats.auc_se_binormal(base_auc, n_pos, n_neg) * math.sqrt(2 * (1 - rho)))
    assert 0.6 < power < 0.99


def test_a_bigger_test_split_resolves_smaller_differences():
    breast = stats.min_detectable_auc_delta(0.9, 42, 114)
    retina = stats.min_detectable_auc_delta(0.9, 226, 174)
    assert retina < breast and 0.03 < breast < 0.07


def runs_with(proba: np.ndarray, auc_values: list[float]) -> MethodRuns:
    return MethodRuns([{"auc": v} for v in auc_values], list(proba.reshape(-1, *proba.shape[2:])))


def test_compare_fraction_uses_that_fractions_strongest_baseline():
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    good, weak = scores(rng, labels, 2, 2, 2.0), scores(rng, labels, 2, 2, 0.5)
    by_method = {"best_config": runs_with(good, [0.9] * 4), "real_only": runs_with(weak, [0.7] * 4),
                 "classic_aug": runs_with(good, [0.95] * 4), "trivial_aug": runs_with(weak, [0.6] * 4)}
    result = study.compare_fraction(0.25, 40, by_method, ["real_only", "classic_aug", "trivial_aug"], labels, 2,
                                    auc_pos1, n_boot=100)
    assert result.baseline == "classic_aug" and result.delta == 0
    assert result.metrics() == {"frac_0.25_delta_auc": 0.0, "frac_0.25_delta_auc_lo": 0.0,
                                "frac_0.25_delta_auc_hi": 0.0, "frac_0.25_train_images": 40.0}


@pytest.mark.parametrize("delta,low,high,mde,verdict", [
    (0.03, 0.01, 0.05, 0.04, "gain shown"),
    (-0.03, -0.05, -0.01, 0.04, "loss shown"),
    (0.01, -0.02, 0.04, 0.04, "underpowered"),
    (0.06, -0.01, 0.13, 0.04, "not shown"),
])
def test_verdicts(delta, low, high, mde, verdict):
    assert FractionResult(1.0, 10, "real_only", delta, low, high, {}).verdict(mde).startswith(verdict)


def test_fraction_keys_are_the_metric_names():
    assert [study.fraction_key(f) for f in (0.25, 0.5, 1.0)] == ["0.25", "0.5", "1"]


def test_data_check_prints_the_test_splits_power(capsys):
    from pathlib import Path

    from gantune.search.cli import main

    root = Path(__file__).resolve().parents[2]
    assert main(["data", "check", str(root / "data" / "breastmnist.npz")]) == 0
    out = capsys.readouterr().out
    expected = stats.min_detectable_auc_delta(0.9, 114, 42)
    assert "Test split power: 42 malignant + 114 normal_benign images" in out and f"{expected:.3f} at AUC 0.90" in out
    assert main(["data", "check", str(root / "data" / "retinamnist.npz"), "--space",
                 str(root / "spaces" / "retinamnist_binary.yaml")]) == 0
    out = capsys.readouterr().out
    assert "174 grade0 + 226 grade1+grade2+grade3+grade4 images" in out
