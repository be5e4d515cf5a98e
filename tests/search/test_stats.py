"""search/stats.py against plain reference computations: DeLong from the O(m n) placement matrix,
the bootstrap from a hand-written loop with the documented draw order, the sensitivity at a fixed
specificity from an explicit confusion count, and the fold bound from scipy's paired t test."""

import math

import numpy as np
import pytest
from gantune.search import stats
from scipy import stats as sps
from sklearn.metrics import roc_auc_score


def correlated_scores(n_pos=12, n_neg=17, seed=3, ties=True):
    """Two models' scores on the same images, correlated through a shared latent, with ties."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    rng.shuffle(y)
    shared = rng.normal(size=y.size) + 1.2 * y
    a, b = shared + 0.5 * rng.normal(size=y.size), shared + 0.8 * rng.normal(size=y.size) - 0.3 * y
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


def delong_by_hand(y, a, b):
    """DeLong et al. 1988 written out: psi(x, y) for every (positive, negative) pair."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    m, n = len(pos), len(neg)
    v10, v01, aucs = [], [], []
    for s in (a, b):
        psi = np.array([[1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for j in neg] for i in pos])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())

    def cov(u, w, k):
        return sum((u[i] - u.mean()) * (w[i] - w.mean()) for i in range(k)) / (k - 1)

    s10 = [[cov(v10[r], v10[c], m) for c in range(2)] for r in range(2)]
    s01 = [[cov(v01[r], v01[c], n) for c in range(2)] for r in range(2)]
    var = (s10[0][0] + s10[1][1] - 2 * s10[0][1]) / m + (s01[0][0] + s01[1][1] - 2 * s01[0][1]) / n
    z = (aucs[0] - aucs[1]) / math.sqrt(var)
    return aucs, math.sqrt(var), 2 * (1 - sps.norm.cdf(abs(z)))


@pytest.mark.parametrize("ties", [True, False])
def test_delong_matches_direct_placement_computation(ties):
    y, a, b = correlated_scores(ties=ties)
    result = stats.delong(y, a, b)
    aucs, se, p = delong_by_hand(y, a, b)
    assert (result.auc_a, result.auc_b) == pytest.approx(aucs)
    assert (result.auc_a, result.auc_b) == pytest.approx((roc_auc_score(y, a), roc_auc_score(y, b)))
    assert result.delta == pytest.approx(aucs[0] - aucs[1])
    assert result.se == pytest.approx(se)
    assert result.p == pytest.approx(p)
    assert 0 < result.p < 1


def test_delong_se_agrees_with_a_stratified_bootstrap():
    """An independent check of the variance formula (the by-hand version could share a mistake)."""
    y, a, b = correlated_scores(n_pos=150, n_neg=250, seed=11, ties=False)
    se = stats.delong(y, a, b).se
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    deltas = []
    for _ in range(1500):
        i = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        deltas.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert se == pytest.approx(np.std(deltas), rel=0.15)


def test_delong_identical_and_bad_input():
    y, a, _ = correlated_scores()
    same = stats.delong(y, a, a)
    assert same.delta == 0 and same.se == 0 and same.p == 1.0
    with pytest.raises(ValueError, match="both classes"):
        stats.delong(np.ones(5), np.arange(5), np.arange(5))
    with pytest.raises(ValueError, match="do not match"):
        stats.delong(y, a[:-1], a)


def test_auc_is_sklearns():
    y, a, _ = correlated_scores()
    assert stats.auc(y, a) == pytest.approx(roc_auc_score(y, a))


def test_paired_bootstrap_matches_fixed_seed_reference():
    y, a, b = correlated_scores()
    labels = y.astype(int)
    result = stats.paired_bootstrap(labels, a, b, stats.auc, n_boot=300, seed=7)

    # the documented draw order, written as a plain loop
    rng = np.random.default_rng(7)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    rows = [rng.integers(0, len(idx), (300, len(idx))) for idx in classes]
    deltas = []
    for r in range(300):
        i = np.concatenate([classes[c][rows[c][r]] for c in range(2)])
        deltas.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert result.replicates == 300
    assert result.delta == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))
    assert result.low < result.delta < result.high
    again = stats.paired_bootstrap(labels, a, b, stats.auc, n_boot=300, seed=7)
    other = stats.paired_bootstrap(labels, a, b, stats.auc, n_boot=300, seed=8)
    assert (again.low, again.high) == (result.low, result.high) and (other.low, other.high) != (result.low, result.high)


def test_paired_bootstrap_with_a_multiclass_statistic():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    pa = rng.dirichlet(np.ones(3), 30) + np.eye(3)[labels]
    pa /= pa.sum(1, keepdims=True)
    pb = rng.dirichlet(np.ones(3), 30)

    def macro(y, p):
        return roc_auc_score(y, p, multi_class="ovr")

    result = stats.paired_bootstrap(labels, pa, pb, macro, n_boot=50)
    assert result.delta == pytest.approx(macro(labels, pa) - macro(labels, pb)) and result.low > 0
    with pytest.raises(ValueError, match="30 labels but scores for 29"):
        stats.paired_bootstrap(labels, pa[:-1], pb, macro)


def sensitivity_by_hand(y, s, target):
    best = 0.0
    for t in sorted(set(s.tolist())) + [math.inf]:
        tp = sum(1 for yi, si in zip(y, s) if yi and si >= t)
        tn = sum(1 for yi, si in zip(y, s) if not yi and si < t)
        if tn / sum(~y) >= target:
            best = max(best, tp / sum(y))
    return best


@pytest.mark.parametrize("target", [0.0, 0.5, 0.8, 0.9412, 1.0])
def test_sensitivity_at_specificity_matches_explicit_count(target):
    y, a, _ = correlated_scores()
    assert stats.sensitivity_at_specificity(y, a, target) == pytest.approx(sensitivity_by_hand(y, a, target))


def test_sensitivity_at_specificity_edges():
    y = np.array([1, 1, 0, 0], bool)
    assert stats.sensitivity_at_specificity(y, np.array([0.9, 0.8, 0.2, 0.1]), 1.0) == 1.0  # separable
    assert stats.sensitivity_at_specificity(y, np.array([0.9, 0.1, 0.5, 0.2]), 1.0) == 0.5
    assert stats.specificity_at(y, np.array([1, 1, 1, 0])) == 0.5
    with pytest.raises(ValueError, match="specificity must be in"):
        stats.sensitivity_at_specificity(y, np.arange(4.0), 1.5)


def test_paired_ci_matches_scipy_ttest_rel():
    a, b = [0.91, 0.88, 0.93, 0.90], [0.89, 0.88, 0.90, 0.86]
    mean, low, high = stats.paired_ci(a, b)
    reference = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert (low, high) == pytest.approx((reference.low, reference.high))
    d = np.subtract(a, b)  # by hand: mean +- t(0.975, n-1) * sd / sqrt(n)
    half = sps.t.ppf(0.975, 3) * math.sqrt(sum((x - d.mean()) ** 2 for x in d) / 3) / 2
    assert high - mean == pytest.approx(half)
    assert math.isnan(stats.paired_ci([0.9], [0.8])[1])
    with pytest.raises(ValueError, match="equally long"):
        stats.paired_ci([0.9, 0.8], [0.8])


def test_mean_sd():
    assert stats.mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1, 2, 4], ddof=1)))
    assert math.isnan(stats.mean_sd([1.0])[1])


def test_fold_delta_plain_is_the_one_sided_paired_t_bound():
    a, b = [0.84, 0.80, 0.86, 0.83, 0.79, 0.85], [0.82, 0.81, 0.83, 0.80, 0.78, 0.82]
    result = stats.fold_delta(a, b)
    reference = sps.ttest_rel(a, b, alternative="greater").confidence_interval(0.95)
    assert result.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert result.lcb == pytest.approx(reference.low)
    assert result.folds == 6 and result.worst_a == 0.79 and result.worst_b == 0.78


def test_fold_delta_nadeau_bengio_correction_widens_by_hand():
    a, b = [0.84, 0.80, 0.86, 0.83, 0.79, 0.85], [0.82, 0.81, 0.83, 0.80, 0.78, 0.82]
    d = np.subtract(a, b)
    ratio = 1 / 2  # 3-fold CV, 2 repeats
    corrected = stats.fold_delta(a, b, test_train_ratio=ratio)
    by_hand = d.mean() - sps.t.ppf(0.95, 5) * d.std(ddof=1) * math.sqrt(1 / 6 + ratio)
    assert corrected.lcb == pytest.approx(by_hand)
    assert corrected.lcb < stats.fold_delta(a, b).lcb < corrected.mean
    one = stats.fold_delta([0.9], [0.8])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.lcb)
    with pytest.raises(ValueError, match="equally many folds"):
        stats.fold_delta([0.9, 0.8], [0.8])
