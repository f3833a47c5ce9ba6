"""Decision thresholds for multi-label scores: a fixed value, or tuned on one split (the selection split).

A label is predicted when its score is above its threshold. Tuning only ever sees the
labels and scores it is given; the engine passes the selection split (validation under
the honest protocol) and applies the result to the test split unchanged.

>>> labels = np.array([[1, 0], [0, 1], [1, 1]])
>>> scores = np.array([[0.3, 0.1], [0.2, 0.6], [0.4, 0.7]])
>>> choose_thresholds("per_class", labels, scores).tolist()
[0.25, 0.25]
>>> choose_thresholds("per_class_f1", labels, scores).tolist()
[0.25, 0.35]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from merkit.errors import MerkitError

# LDDU's (disabled) search routine: one global threshold, 0.150 to 0.295 in steps of 0.005.
LDDU_GRID = np.round(np.arange(0.150, 0.2951, 0.005), 3)
# merkit's grid for the global and per-class searches.
FINE_GRID = np.round(np.arange(0.01, 0.991, 0.01), 2)
DEFAULT_THRESHOLD = 0.5


def _f1(true_positive: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
    """F1 = 2·TP / (predicted + support), 0 where both are 0 (elementwise)."""
    denominator = predicted + support
    return np.divide(2.0 * true_positive, denominator, out=np.zeros_like(denominator, dtype=float), where=denominator > 0)


def _counts(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grid value and class: true positives, predicted positives, gold positives (``[G, K]`` each)."""
    gold = labels.astype(bool)
    predicted = scores[None, :, :] > grid[:, None, None]  # [G, N, K]
    return (predicted & gold[None]).sum(1), predicted.sum(1), np.broadcast_to(gold.sum(0), (len(grid), gold.shape[1]))


def _middle_of_best(values: np.ndarray) -> int:
    """Index of the middle grid value among those reaching the maximum: ties span a range of
    thresholds that separate the same scores, and its middle is the safest choice."""
    best = np.flatnonzero(np.isclose(values, values.max()))
    return int(best[len(best) // 2])


def tune_global(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray = FINE_GRID) -> float:
    """The grid value with the best micro-F1 (the middle one on ties)."""
    true_positive, predicted, support = _counts(labels, scores, grid)
    return float(grid[_middle_of_best(_f1(true_positive.sum(1), predicted.sum(1), support.sum(1)))])


def tune_per_class(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray = FINE_GRID, rounds: int = 5) -> np.ndarray:
    """Per-class thresholds that maximise micro-F1: start from the best global threshold, then move
    one class at a time to its best grid value given the others, until nothing improves.

    Each move can only raise micro-F1, so the result is never below the global search's. (Tuning
    each class for its own F1 instead — :func:`tune_per_class_f1` — lets a rare, badly separated
    class take a near-zero threshold that floods micro precision.)
    """
    true_positive, predicted, support = _counts(labels, scores, grid)
    chosen = np.full(labels.shape[1], _middle_of_best(_f1(true_positive.sum(1), predicted.sum(1), support.sum(1))))
    columns = np.arange(labels.shape[1])
    for _ in range(rounds):
        changed = False
        for k in columns:
            others = columns != k
            tp = true_positive[chosen[others], columns[others]].sum() + true_positive[:, k]
            pred = predicted[chosen[others], columns[others]].sum() + predicted[:, k]
            micro = _f1(tp, pred, np.full(len(grid), support[0].sum()))
            if micro.max() > micro[chosen[k]] + 1e-12:
                chosen[k], changed = _middle_of_best(micro), True
        if not changed:
            break
    return grid[chosen].astype(float)


def tune_per_class_f1(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray = FINE_GRID) -> np.ndarray:
    """For each class the grid value with its own best F1 (the middle one on ties), which maximises
    macro-F1; a class with no gold positive in ``labels`` keeps 0.5, since any threshold scores 0 there."""
    true_positive, predicted, support = _counts(labels, scores, grid)
    f1 = _f1(true_positive, predicted, support)
    best = np.array([grid[_middle_of_best(f1[:, k])] for k in range(f1.shape[1])])
    return np.where(support[0] > 0, best, DEFAULT_THRESHOLD).astype(float)


def choose_thresholds(strategy: float | str, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One threshold per class (``[K]``) for ``strategy``: a number (fixed), or tuned on ``labels`` /
    ``scores`` (multi-hot and sigmoid ``[N, K]``): ``"per_class"`` (micro-F1), ``"per_class_f1"``
    (each class's F1), ``"global"`` (one value, micro-F1) or ``"lddu_search"`` (LDDU's grid)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    classes = scores.shape[1]
    if isinstance(strategy, (int, float)):
        if not 0 <= strategy < 1:
            raise MerkitError(f"a fixed threshold must be in [0, 1), got {strategy}")
        return np.full(classes, float(strategy))
    if len(labels) == 0:
        raise MerkitError(f"cannot tune thresholds ({strategy}) on an empty split")
    if strategy == "per_class":
        return tune_per_class(labels, scores)
    if strategy == "per_class_f1":
        return tune_per_class_f1(labels, scores)
    if strategy == "global":
        return np.full(classes, tune_global(labels, scores))
    if strategy == "lddu_search":
        return np.full(classes, tune_global(labels, scores, LDDU_GRID))
    raise MerkitError(f"unknown threshold strategy {strategy!r}; use a number, per_class, per_class_f1, global or lddu_search")


def checkpoint_thresholds(meta: Mapping[str, Any], class_names: Sequence[str]) -> np.ndarray:
    """Per-class decision thresholds recorded in a checkpoint's ``model.json`` (0.5 when none)."""
    value = meta.get("thresholds", 0.5)
    if isinstance(value, Mapping):
        return np.array([float(value.get(name, 0.5)) for name in class_names])
    if isinstance(value, list):
        return np.asarray(value, dtype=float)
    return np.full(len(class_names), float(value))
