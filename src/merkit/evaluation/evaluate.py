"""``merkit evaluate``: a checkpoint on a split, with bootstrap intervals, robustness and calibration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merkit import calibration
from merkit.batching import DialogueDataset
from merkit.checkpoint import Checkpoint, check_compatible, load_checkpoint
from merkit.data.formats import DataBundle, read_data
from merkit.data.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS
from merkit.errors import MerkitError
from merkit.evaluation import robustness
from merkit.metrics import headline, score_metrics
from merkit.prediction import Predictions, make_loader, predict
from merkit.thresholds import checkpoint_thresholds

PROTOCOLS = ("missing-modality", "noise", "calibration")


def bootstrap_intervals(
    predictions: Predictions,
    groups: np.ndarray,
    class_names: Sequence[str],
    multi_label: bool,
    threshold: float | np.ndarray = 0.5,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """95% percentile intervals of every headline metric, resampling whole dialogues (``groups``)
    with replacement, since utterances of one dialogue are not independent."""
    rng = np.random.default_rng(seed)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        chosen = np.concatenate([members[g] for g in rng.integers(0, len(unique), len(unique))])
        values = headline(score_metrics(predictions.labels[chosen], predictions.scores[chosen], class_names, multi_label, threshold))
        for name, value in values.items():
            draws.setdefault(name, []).append(value)
    return {name: {"low": float(np.percentile(v, 2.5)), "high": float(np.percentile(v, 97.5))} for name, v in draws.items()}


def expert_summary(predictions: Predictions, modalities: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean expert (modality) weight and, when the model gives one per modality, mean uncertainty on the split:
    what SURE's claim "the noisy modality gets the least weight and the highest uncertainty" is checked with."""
    summary: dict[str, dict[str, float]] = {}
    if predictions.expert_weights is not None:
        for name, column in zip(predictions.expert_names, predictions.expert_weights.T):
            summary.setdefault(name, {})["weight"] = float(column.mean())
    uncertainty = predictions.uncertainty
    if uncertainty is not None and uncertainty.ndim == 2 and uncertainty.shape[1] == len(modalities) and predictions.labels.ndim == 1:
        for name, column in zip(modalities, uncertainty.T):
            summary.setdefault(name, {})["uncertainty"] = float(column.mean())
    return summary


class Evaluator:
    """A checkpoint and the data it is evaluated on, checked for compatibility once."""

    def __init__(self, checkpoint: str | Path | Checkpoint, data: str | Path | DataBundle, batch_size: int = 16):
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.bundle = data if isinstance(data, DataBundle) else read_data(data)
        self.labels = self.checkpoint.labels
        check_compatible(self.checkpoint.meta, self.bundle.corpus.labels, {m: f.describe() for m, f in self.bundle.features.items()})
        self.batch_size = batch_size
        self.metric = "micro_f1" if self.labels.multi_label else "weighted_f1"
        self.threshold = checkpoint_thresholds(self.checkpoint.meta, self.labels.names)

    def dataset(self, split: str) -> DialogueDataset:
        if not self.bundle.corpus.splits.get(split):
            raise MerkitError(f"the data has no {split!r} split")
        return self.checkpoint.dataset(self.bundle.corpus, self.bundle.features, [split])

    def predict(self, split: str, transform=None) -> Predictions:
        return predict(self.checkpoint.model, make_loader(self.dataset(split), self.batch_size), transform=transform, prior=self.checkpoint.prior)

    def metrics(self, predictions: Predictions) -> dict[str, Any]:
        return score_metrics(predictions.labels, predictions.scores, self.labels.names, self.labels.multi_label, self.threshold)

    def dialogue_groups(self, predictions: Predictions) -> np.ndarray:
        owner = {u.id: d.id for d in self.bundle.corpus.dialogues for u in d.utterances}
        return np.array([owner[u] for u in predictions.utterance_ids])

    def feature_std(self, split: str) -> dict[str, float]:
        """Spread of each modality's features as the model reads them (after the training split's scaling)."""
        dataset = self.dataset(split)
        stds = {}
        for modality, features in dataset.features.items():
            rows = np.concatenate([np.arange(s, s + n) for s, n in zip(dataset.row_starts, dataset.lengths)])
            values = np.asarray(features.values[rows])[np.asarray(features.present[rows])]
            if modality in dataset.scalers:
                values = dataset.scalers[modality].apply(values)
            stds[modality] = float(values.std()) if values.size else 1.0
        return stds

    def run(
        self, split: str = "test", protocols: Sequence[str] = PROTOCOLS, bootstrap: int = 1000, seed: int = 0,
        drop_modes: Sequence[str] = robustness.DROP_MODES,
    ) -> dict[str, Any]:  # fmt: skip
        """``drop_modes``: how the missing-modality protocol drops (``mask``: absent, ``zero``: zero inputs, model not told)."""
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown:
            raise MerkitError(f"unknown protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
        predictions = self.predict(split)
        result: dict[str, Any] = {
            "model": self.checkpoint.meta["model"],
            "modalities": self.checkpoint.modalities,
            "split": split,
            "metric": self.metric,
            "metrics": self.metrics(predictions),
        }
        if bootstrap:
            result["ci95"] = bootstrap_intervals(
                predictions, self.dialogue_groups(predictions), self.labels.names, self.labels.multi_label, self.threshold, bootstrap, seed
            )
        experts = expert_summary(predictions, self.checkpoint.modalities)
        if experts:
            result["experts"] = experts
        if predictions.uncertainty is not None:
            result["uncertainty"] = self.error_detection(predictions)
        names, multi = self.labels.names, self.labels.multi_label
        run = lambda transform: self.predict(split, transform)  # noqa: E731
        if "missing-modality" in protocols:
            result["missing_modality"] = {
                mode: robustness.missing_modality(run, self.checkpoint.modalities, names, multi, self.metric, seed, mode) for mode in drop_modes
            }
        if "noise" in protocols:
            result["noise"] = robustness.feature_noise(run, self.checkpoint.modalities, self.feature_std(split), names, multi, self.metric, seed)
        if "calibration" in protocols and not multi:
            result["calibration"] = self.calibration(predictions, split)
        return result

    def error_detection(self, predictions: Predictions) -> dict[str, Any]:
        """How well the model's ``uncertainty`` ranks its own errors: AUROC per label decision (multi-label data
        with one uncertainty per label) or per utterance (its mean over modalities/labels otherwise)."""
        uncertainty = predictions.uncertainty
        if self.labels.multi_label:
            wrong = (predictions.scores >= np.asarray(self.threshold)) != predictions.labels.astype(bool)
            if uncertainty.shape == wrong.shape:
                return {"error_auroc": calibration.error_auroc(wrong, uncertainty), "unit": "label decision"}
            errors = wrong.any(axis=1)
        else:
            errors = predictions.predicted != predictions.labels
        per_utterance = uncertainty.reshape(len(errors), -1).mean(axis=1)
        return {"error_auroc": calibration.error_auroc(errors, per_utterance), "unit": "utterance"}

    def calibration(self, predictions: Predictions, split: str) -> dict[str, Any]:
        """Temperature fitted on the validation split, applied to ``split``; reliability and selective prediction."""
        valid = self.predict("valid")
        temperature = calibration.fit_temperature(valid.scores, valid.labels)
        scaled = calibration.apply_temperature(predictions.scores, temperature)
        if predictions.uncertainty is not None:
            uncertainty = predictions.uncertainty.reshape(len(predictions.labels), -1).mean(axis=1)
            source = "model uncertainty"
        else:
            uncertainty = 1.0 - predictions.scores.max(axis=1)
            source = "1 − max probability"
        selective = calibration.selective_prediction(predictions.labels, predictions.predicted, uncertainty)
        keep = np.unique(np.linspace(0, len(selective["coverage"]) - 1, 101).astype(int))
        return {
            "temperature": temperature,
            "fitted_on": "valid",
            "before": calibration.calibration_metrics(predictions.scores, predictions.labels),
            "after": calibration.calibration_metrics(scaled, predictions.labels),
            "reliability_before": _jsonable(calibration.reliability_bins(predictions.scores, predictions.labels)),
            "reliability_after": _jsonable(calibration.reliability_bins(scaled, predictions.labels)),
            "selective": {
                "uncertainty": source,
                "coverage": selective["coverage"][keep].tolist(),
                "accuracy": selective["accuracy"][keep].tolist(),
                "area": selective["area"],
            },
        }


def _jsonable(bins: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: [None if np.isnan(x) else float(x) for x in v] for k, v in bins.items()}


def cross_corpus_evaluation(
    checkpoint: str | Path | Checkpoint, target: str | Path | DataBundle, split: str = "test", batch_size: int = 16
) -> dict[str, Any]:
    """Score a checkpoint trained on one corpus on another (MELD ↔ IEMOCAP shared classes)."""
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    bundle = target if isinstance(target, DataBundle) else read_data(target)
    source_name = checkpoint.meta.get("corpus") or _corpus_of(checkpoint.labels.names)
    target_name = _corpus_of(bundle.corpus.labels.names)
    maps = robustness.MELD_IEMOCAP_SHARED
    if {source_name, target_name} != {"meld", "iemocap"}:
        raise MerkitError("cross-corpus mapping is defined for MELD ↔ IEMOCAP (7 and 6 emotion classes)")
    check_compatible(checkpoint.meta, checkpoint.labels, {m: f.describe() for m, f in bundle.features.items()})
    dataset = checkpoint.dataset(bundle.corpus, bundle.features, [split])
    predictions = predict(checkpoint.model, make_loader(dataset, batch_size), prior=checkpoint.prior)
    result = robustness.cross_corpus(
        predictions, checkpoint.labels.names, bundle.corpus.labels.names, maps[source_name], maps[target_name]
    )
    return {"source": source_name, "target": target_name, "split": split, **result}


def _corpus_of(class_names: Sequence[str]) -> str:
    return {tuple(MELD_EMOTIONS): "meld", tuple(IEMOCAP_EMOTIONS): "iemocap"}.get(tuple(class_names), "other")
