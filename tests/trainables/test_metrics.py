import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from gantune.trainables.metrics import classification_metrics


def random_predictions(n: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("positive", [0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(positive, seed):
    y, proba = random_predictions(200, 2, seed)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba, positive=positive)
    assert m["auc"] == pytest.approx(roc_auc_score(y == positive, proba[:, positive]))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=positive))
    assert m["specificity"] == pytest.approx(recall_score(y, pred, pos_label=1 - positive))
    assert m["precision"] == pytest.approx(precision_score(y, pred, pos_label=positive))
    assert m["f1"] == pytest.approx(f1_score(y, pred, pos_label=positive))


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_match_sklearn(seed):
    y, proba = random_predictions(300, 5, seed)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba)
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    # macro specificity by hand: per class, TN / (TN + FP)
    spec = [((pred != c) & (y != c)).sum() / (y != c).sum() for c in range(5)]
    assert m["specificity"] == pytest.approx(np.mean(spec))


def test_perfect_and_inverted_predictions():
    y = np.array([0, 0, 1, 1])
    perfect = np.eye(2)[y]
    assert classification_metrics(y, perfect, positive=1)["auc"] == 1.0
    assert classification_metrics(y, 1 - perfect, positive=1)["auc"] == 0.0
