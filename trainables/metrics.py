"""Classification metrics on held-out real images, binary and multiclass.

Binary: the positive ("diseased") class is configurable; sensitivity is its recall, specificity
the recall of the other class. Multiclass: macro averages, and macro one-vs-rest ROC-AUC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

METRIC_NAMES = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


def trial_metric_names() -> tuple[str, ...]:
    """What every trial reports to Tune after each fold, i.e. what `search.metric` may name: the
    fold mean `val_<m>` and the worst fold `val_<m>_min_fold` of each classification metric
    (trial.mean_metrics). The generative metrics (GEN_METRIC_NAMES) come on top with
    `synth.gen_metrics: true`."""
    return tuple(f"val_{m}" for m in METRIC_NAMES) + tuple(f"val_{m}_min_fold" for m in METRIC_NAMES)


def fold_metric_key(name: str) -> str:
    """The MLflow key of a per-fold value (`fold_val_auc`), logged once per fold with step = the
    fold index, so the runs table gets one column per metric instead of one per metric and fold."""
    return f"fold_{name}"


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, positive: int = 1) -> dict[str, float]:
    """y_true (N,) ints, proba (N, K) class probabilities -> the six metrics as flat floats."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    if k == 2:
        neg = 1 - positive
        tp, fn = cm[positive, positive], cm[positive, neg]
        fp, tn = cm[neg, positive], cm[neg, neg]
        sens, spec, prec = _safe_div(tp, tp + fn), _safe_div(tn, tn + fp), _safe_div(tp, tp + fp)
        f1 = _safe_div(2 * prec * sens, prec + sens)
        auc = roc_auc_score(y_true == positive, proba[:, positive]) if len(set(y_true)) == 2 else float("nan")
    else:
        tp = np.diag(cm).astype(float)
        fn, fp = cm.sum(axis=1) - tp, cm.sum(axis=0) - tp
        tn = cm.sum() - tp - fn - fp
        sens = float(np.mean([_safe_div(a, a + b) for a, b in zip(tp, fn)]))
        spec = float(np.mean([_safe_div(a, a + b) for a, b in zip(tn, fp)]))
        per_class_prec = [_safe_div(a, a + b) for a, b in zip(tp, fp)]
        per_class_rec = [_safe_div(a, a + b) for a, b in zip(tp, fn)]
        prec = float(np.mean(per_class_prec))
        f1 = float(np.mean([_safe_div(2 * p * r, p + r) for p, r in zip(per_class_prec, per_class_rec)]))
        present = np.unique(y_true)
        auc = (
            roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(k)))
            if len(present) == k
            else float("nan")
        )
    return {
        "auc": float(auc),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "sensitivity": float(sens),
        "specificity": float(spec),
        "precision": float(prec),
        "f1": float(f1),
    }
