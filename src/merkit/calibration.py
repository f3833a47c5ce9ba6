"""Calibration and uncertainty: ECE/MCE, NLL, Brier, temperature scaling, reliability, selective prediction.

All functions take class probabilities ``[N, C]`` and gold class indices ``[N]`` (single-label).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def reliability_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins over (0, 1]: per-bin count, mean confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins).astype(float)
    conf_sum = np.bincount(index, weights=confidence, minlength=num_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges,
            "count": count,
            "confidence": np.where(count > 0, conf_sum / count, np.nan),
            "accuracy": np.where(count > 0, acc_sum / count, np.nan),
        }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """ECE = Σ_b (n_b/N)·|acc_b − conf_b| over equal-width confidence bins."""
    bins = reliability_bins(probs, labels, num_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((bins["count"][filled] * gaps).sum() / bins["count"].sum())


def maximum_calibration_error(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> float:
    """MCE = max over non-empty bins of |acc_b − conf_b|."""
    bins = reliability_bins(probs, labels, num_bins)
    filled = bins["count"] > 0
    return float(np.abs(bins["accuracy"][filled] - bins["confidence"][filled]).max())


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over items of Σ_c (p_c − 1[y = c])²."""
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, num_bins: int = 15) -> dict[str, float]:
    return {
        "ece": expected_calibration_error(probs, labels, num_bins),
        "mce": maximum_calibration_error(probs, labels, num_bins),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
    }


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(log p / T)`` (fit it on the validation split)."""
    log_probs = torch.log(torch.as_tensor(probs, dtype=torch.float64).clamp(min=1e-12))
    targets = torch.as_tensor(labels, dtype=torch.long)
    log_temperature = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(log_probs / log_temperature.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_temperature.detach().exp())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def selective_prediction(labels: np.ndarray, predicted: np.ndarray, uncertainty: np.ndarray) -> dict[str, Any]:
    """Accuracy against coverage when the most uncertain items are abstained from first.

    Returns the curve (coverage k/N, accuracy of the k most certain items, for k = 1..N) and
    its area (mean accuracy over coverages); higher area = uncertainty ranks errors better.
    """
    order = np.argsort(uncertainty, kind="stable")
    correct = (predicted[order] == labels[order]).astype(float)
    kept = np.arange(1, len(labels) + 1)
    accuracy = np.cumsum(correct) / kept
    return {"coverage": kept / len(labels), "accuracy": accuracy, "area": float(accuracy.mean())}


def error_auroc(errors: np.ndarray, uncertainty: np.ndarray) -> float:
    """AUROC of ``uncertainty`` for detecting ``errors`` (both flat): 0.5 = no better than chance, below 0.5 =
    the quantity falls as errors rise (it is no uncertainty); NaN when every item is right (or wrong)."""
    from sklearn.metrics import roc_auc_score

    errors = np.asarray(errors, dtype=bool).ravel()
    if errors.all() or not errors.any():
        return float("nan")
    return float(roc_auc_score(errors, np.asarray(uncertainty, dtype=float).ravel()))
