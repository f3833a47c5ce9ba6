"""Named, seeded robustness protocols: missing modalities, feature noise, cross-corpus transfer.

Each protocol returns rows ``{"condition": ..., "level": x, <metric>: y}`` and, where the
condition has a level axis, a relative-robustness summary: the area under the score-vs-level
curve divided by the area a model that never degrades would have (clean score × level range).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from merkit.batching import ConversationBatch
from merkit.errors import MerkitError
from merkit.metrics import headline, score_metrics
from merkit.prediction import Predictions

DROP_RATES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)

Predict = Callable[[Callable[[ConversationBatch], ConversationBatch] | None], Predictions]


DROP_MODES = ("mask", "zero")
# How the papers drop a modality when they test robustness: MiSTER-E's official `test_mod_drop` zeroes the
# inputs of a model that is not told; SURE reports single-modality scores without saying how [U]; SDT and
# LDDU report none. merkit's `mask` also tells the model (the modality is absent, so a gate can route around it).
PAPER_DROP_MODES = {"mister-e": "zero (official code, test_mod_drop)", "sure": "unreported", "sdt": "none reported", "lddu": "none reported"}


def _dropped(batch: ConversationBatch, lost: Mapping[str, torch.Tensor], mode: str) -> ConversationBatch:
    """``batch`` with the utterances of ``lost[m]`` (``[B, T]`` bool) losing modality ``m``: features zeroed, and with
    ``mode="mask"`` marked absent too; with ``"zero"`` they stay marked present, as when a paper zero-fills inputs."""
    features, present = dict(batch.features), dict(batch.present)
    for m, gone in lost.items():
        features[m] = batch.features[m] * ~gone.unsqueeze(-1)
        if mode == "mask":
            present[m] = batch.present[m] & ~gone
    return batch.with_features(features, present)


def _check_mode(mode: str) -> None:
    if mode not in DROP_MODES:
        raise MerkitError(f"unknown drop mode {mode!r}; choose one of: {', '.join(DROP_MODES)}")


def drop_modalities(dropped: Sequence[str], mode: str = "mask") -> Callable[[ConversationBatch], ConversationBatch]:
    """Remove whole modalities from every utterance (see :func:`_dropped` for ``mode``)."""
    _check_mode(mode)

    def transform(batch: ConversationBatch) -> ConversationBatch:
        return _dropped(batch, {m: torch.ones_like(batch.present[m]) for m in dropped}, mode)

    return transform


def drop_at_random(rate: float, seed: int, mode: str = "mask") -> Callable[[ConversationBatch], ConversationBatch]:
    """Each utterance loses each modality independently with probability ``rate`` (seeded)."""
    _check_mode(mode)
    generator = torch.Generator().manual_seed(seed)

    def transform(batch: ConversationBatch) -> ConversationBatch:
        lost = {m: (torch.rand(p.shape, generator=generator) < rate).to(p.device) for m, p in batch.present.items()}
        return _dropped(batch, lost, mode)

    return transform


def add_noise(modality: str, sigma: float, seed: int) -> Callable[[ConversationBatch], ConversationBatch]:
    """Gaussian noise of standard deviation ``sigma`` on one modality's present features (seeded)."""
    generator = torch.Generator().manual_seed(seed)

    def transform(batch: ConversationBatch) -> ConversationBatch:
        x = batch.features[modality]
        noise = torch.randn(x.shape, generator=generator).to(x.device) * sigma
        features = dict(batch.features)
        features[modality] = x + noise * batch.present[modality].unsqueeze(-1)
        return batch.with_features(features, batch.present)

    return transform


def relative_robustness(levels: Sequence[float], scores: Sequence[float]) -> float:
    """Area under score(level) over the area of the constant clean score; 1.0 = no degradation."""
    levels, scores = np.asarray(levels, float), np.asarray(scores, float)
    if len(levels) < 2 or scores[0] <= 0:
        return float("nan")
    area = float(np.sum((scores[1:] + scores[:-1]) / 2 * np.diff(levels)))
    return area / (scores[0] * (levels[-1] - levels[0]))


def _score(predictions: Predictions, class_names: Sequence[str], multi_label: bool, metric: str) -> float:
    return headline(score_metrics(predictions.labels, predictions.scores, class_names, multi_label))[metric]


def missing_modality(
    run: Predict, modalities: Sequence[str], class_names: Sequence[str], multi_label: bool, metric: str, seed: int = 0,
    mode: str = "mask",
) -> dict[str, Any]:  # fmt: skip
    """Every combination of dropped modalities (leaving at least one), then random per-utterance drop rates
    (an utterance that loses every modality is predicted from the label prior: see :func:`merkit.prediction.predict`)."""
    rows = []
    for size in range(0, len(modalities)):
        for dropped in itertools.combinations(modalities, size):
            score = _score(run(drop_modalities(dropped, mode) if dropped else None), class_names, multi_label, metric)
            rows.append({"condition": "dropped: " + (", ".join(dropped) or "none"), "dropped": list(dropped), metric: score})
    rates = []
    for rate in DROP_RATES:
        predictions = run(drop_at_random(rate, seed, mode) if rate else None)
        rates.append({"condition": "random drop", "level": rate, metric: _score(predictions, class_names, multi_label, metric),
                      "from_prior": int(predictions.from_prior.sum()) if predictions.from_prior is not None else 0})  # fmt: skip
    return {
        "drop_mode": mode,
        "combinations": rows,
        "random_drop": rates,
        "relative_robustness": relative_robustness([r["level"] for r in rates], [r[metric] for r in rates]),
    }


def feature_noise(
    run: Predict,
    modalities: Sequence[str],
    feature_std: Mapping[str, float],
    class_names: Sequence[str],
    multi_label: bool,
    metric: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Gaussian noise at ``NOISE_LEVELS`` × the modality's feature standard deviation, one modality at a time."""
    clean = _score(run(None), class_names, multi_label, metric)
    curves = {}
    for modality in modalities:
        rows = [{"condition": f"noise on {modality}", "level": 0.0, metric: clean}]
        for level in NOISE_LEVELS[1:]:
            transform = add_noise(modality, level * feature_std[modality], seed)
            rows.append({"condition": f"noise on {modality}", "level": level, metric: _score(run(transform), class_names, multi_label, metric)})
        curves[modality] = {"rows": rows, "relative_robustness": relative_robustness(NOISE_LEVELS, [r[metric] for r in rows])}
    return curves


MELD_IEMOCAP_SHARED = {
    "meld": {"neutral": "neutral", "joy": "joy", "sadness": "sadness", "anger": "anger"},
    "iemocap": {"neutral": "neutral", "happy": "joy", "excited": "joy", "sad": "sadness", "angry": "anger"},
}


def cross_corpus(
    predictions: Predictions,
    source_classes: Sequence[str],
    target_classes: Sequence[str],
    source_map: Mapping[str, str],
    target_map: Mapping[str, str],
) -> dict[str, Any]:
    """Score a model on another corpus through a shared label set.

    Probabilities of source classes mapping to the same shared class are summed (unmapped source
    classes are dropped); target utterances whose gold class has no shared counterpart are skipped.
    """
    shared = sorted(set(source_map.values()) & set(target_map.values()))
    if not shared:
        raise MerkitError("the label mappings share no class")
    source_index = {c: i for i, c in enumerate(source_classes)}
    unknown = [c for c in source_map if c not in source_index] + [c for c in target_map if c not in target_classes]
    if unknown:
        raise MerkitError(f"label mapping names unknown classes: {unknown}")
    shared_scores = np.stack(
        [predictions.scores[:, [source_index[c] for c, s in source_map.items() if s == name]].sum(axis=1) for name in shared], axis=1
    )
    gold_names = [target_classes[int(y)] for y in predictions.labels]
    keep = np.array([target_map.get(name) in shared for name in gold_names])
    gold = np.array([shared.index(target_map[name]) for name, k in zip(gold_names, keep) if k], dtype=int)
    metrics = score_metrics(gold, shared_scores[keep], shared, multi_label=False)
    return {"shared_classes": shared, "utterances": int(keep.sum()), "skipped": int((~keep).sum()), **metrics}
