"""Classification metrics of the ERC literature, from a confusion matrix (tested against scikit-learn).

All metrics are over real, labelled utterances only (padding is dropped before calling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = gold class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, weighted and macro F1, UAR, per-class precision/recall/F1/support, confusion matrix.

    Weighted F1 = Σ_c (n_c/N)·F1_c with n_c the gold support (sklearn ``average="weighted"``);
    macro F1 averages F1 over all classes (a class absent from gold and prediction scores 0,
    as sklearn with ``zero_division=0``). UAR (unweighted average recall, the headline of speech
    emotion recognition) is the mean recall over the classes present in gold (sklearn
    ``balanced_accuracy_score``). ``warnings`` lists classes with zero F1.
    """
    num_classes = len(class_names)
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), num_classes)
    true_positive = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = support.sum()
    per_class = {
        name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]), "support": int(support[c])}
        for c, name in enumerate(class_names)
    }
    zero = [name for c, name in enumerate(class_names) if f1[c] == 0 and support[c] > 0]
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "uar": float(recall[support > 0].mean()) if total else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "count": int(total),
        "warnings": [f"class {name!r} has F1 = 0 (never predicted correctly)" for name in zero],
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "n": len(array)}


def multilabel_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], *, empty_match_scores_one: bool = False
) -> dict[str, Any]:
    """Example-based accuracy (Jaccard), micro/macro P/R/F1, Hamming loss and per-class F1 of multi-hot arrays.

    A sample whose gold and predicted sets are both empty scores 0 in the Jaccard accuracy by
    default, as the LDDU code does (``empty_match_scores_one=True`` gives scikit-learn's 1).
    """
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    intersection = (y_true & y_pred).sum(axis=1)
    union = (y_true | y_pred).sum(axis=1)
    empty_score = 1.0 if empty_match_scores_one else 0.0
    jaccard = np.where(union > 0, intersection / np.maximum(union, 1), empty_score)
    true_positive = (y_true & y_pred).sum(axis=0).astype(float)
    predicted = y_pred.sum(axis=0).astype(float)
    support = y_true.sum(axis=0).astype(float)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    micro_p = true_positive.sum() / predicted.sum() if predicted.sum() else 0.0
    micro_r = true_positive.sum() / support.sum() if support.sum() else 0.0
    micro_f1 = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    zero = [name for c, name in enumerate(class_names) if f1[c] == 0 and support[c] > 0]
    return {
        "jaccard_accuracy": float(jaccard.mean()) if len(jaccard) else 0.0,
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1.mean()),
        "hamming_loss": float((y_true != y_pred).mean()) if y_true.size else 0.0,
        "per_class": {
            name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]), "support": int(support[c])}
            for c, name in enumerate(class_names)
        },
        "count": int(len(y_true)),
        "warnings": [f"class {name!r} has F1 = 0 (never predicted correctly)" for name in zero],
    }


def score_metrics(
    labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], multi_label: bool, threshold: float | np.ndarray = 0.5
) -> dict[str, Any]:
    """Metrics from gold labels and model scores: argmax for single-label, ``scores > threshold`` for multi-label."""
    if multi_label:
        return multilabel_metrics(labels, scores > threshold, class_names)
    return classification_metrics(labels, scores.argmax(axis=1), class_names)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a metrics dict (what results tables show)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}
