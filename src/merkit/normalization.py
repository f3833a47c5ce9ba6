"""Per-modality feature scaling, fitted on the training split and stored in the checkpoint.

Acoustic functionals span many orders of magnitude (openSMILE IS10: energies near 1e-6 beside
frequencies near 1e3); fed raw, one large column swamps the rest and training fails (an audio
MLP on a real speech corpus: 36 % raw, 74 % standardised). So every modality is scaled with
statistics of the training split's *present* rows only (absent rows are zeros, not data; the
frames of sequence features), by scikit-learn's ``StandardScaler`` or ``RobustScaler``.

``auto`` (the default, [R]) is ``none`` for the text features merkit's own encoders make
(L2-normalised sentence embeddings or LayerNorm-ed transformer states, whose scale is already
sane) and ``standard`` for everything else: openSMILE and Whisper means, face features, action
units, and features imported from files, whose scale nobody here checked. The fitted centre and
scale travel in ``model.json`` (``normalization``), so ``evaluate``, ``predict`` and ``serve``
apply exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet
from merkit.errors import MerkitError

Method = Literal["none", "standard", "robust"]
METHODS = ("none", "standard", "robust")
MAX_FIT_ROWS = 200_000  # frame rows used to fit a sequence modality (an even subsample beyond this)


@dataclass(frozen=True)
class Scaler:
    """``(x - center) / scale`` per feature column."""

    method: str
    center: np.ndarray
    scale: np.ndarray

    def apply(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.center) / self.scale).astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "Scaler":
        center = np.asarray(entry["center"], dtype=np.float32)
        scale = np.asarray(entry["scale"], dtype=np.float32)
        if center.shape != scale.shape or center.ndim != 1 or not (np.isfinite(center).all() and (scale > 0).all()):
            raise MerkitError("invalid normalization entry in the checkpoint (centre/scale shapes or values)")
        return cls(str(entry["method"]), center, scale)


def auto_method(features: FeatureSet) -> str:
    """``none`` for merkit's own text encoders' output, ``standard`` for every other feature set."""
    settings = features.settings or {}
    own_text_encoder = features.modality == "text" and settings.get("modality") == "text" and "extractor" in settings
    return "none" if settings.get("normalize") is True or own_text_encoder else "standard"


def resolve_methods(choice: str | Mapping[str, str], features: Mapping[str, FeatureSet], modalities: Sequence[str]) -> dict[str, str]:
    """The method per modality: one name for all (``auto`` decides per modality) or a ``{modality: method}`` map."""
    per_modality = dict(choice) if isinstance(choice, Mapping) else {m: choice for m in modalities}
    unknown = set(per_modality) - set(modalities)
    if unknown:
        raise MerkitError(f"normalize names modalities the model does not read: {', '.join(sorted(unknown))}")
    methods = {}
    for modality in modalities:
        method = per_modality.get(modality, "auto")
        if method not in (*METHODS, "auto"):
            raise MerkitError(f"normalize={method!r} for {modality}: choose auto, {', '.join(METHODS)}")
        methods[modality] = auto_method(features[modality]) if method == "auto" else method
    return methods


def _training_rows(features: FeatureSet, corpus: Corpus, splits: Sequence[str]) -> np.ndarray:
    """Rows of the present utterances of ``splits`` (frame rows for sequence features)."""
    rows = np.array([row for row, _ in corpus.split_rows(splits) if features.present[row]], dtype=np.int64)
    if features.offsets is None:
        return np.asarray(features.values[rows], dtype=np.float64)
    frames = np.concatenate([np.arange(features.offsets[r], features.offsets[r + 1]) for r in rows]) if len(rows) else rows
    if len(frames) > MAX_FIT_ROWS:
        frames = frames[np.linspace(0, len(frames) - 1, MAX_FIT_ROWS).astype(np.int64)]
    return np.asarray(features.values[frames], dtype=np.float64)


def fit_scalers(
    features: Mapping[str, FeatureSet], corpus: Corpus, splits: Sequence[str], methods: Mapping[str, str]
) -> dict[str, Scaler]:
    """One :class:`Scaler` per modality whose method is not ``none``, fitted on the ``splits``' present rows."""
    from sklearn.preprocessing import RobustScaler, StandardScaler

    scalers = {}
    for modality, method in methods.items():
        if method == "none":
            continue
        rows = _training_rows(features[modality], corpus, splits)
        if len(rows) < 2:
            raise MerkitError(f"cannot fit {method} normalization of {modality}: {len(rows)} training row(s) have it")
        fitted = (StandardScaler() if method == "standard" else RobustScaler()).fit(rows)
        center = fitted.mean_ if method == "standard" else fitted.center_
        scale = np.where(fitted.scale_ > 1e-12, fitted.scale_, 1.0)  # constant columns stay as they are
        scalers[modality] = Scaler(method, center.astype(np.float32), scale.astype(np.float32))
    return scalers


def scalers_to_json(scalers: Mapping[str, Scaler]) -> dict[str, Any]:
    return {modality: scaler.to_json() for modality, scaler in scalers.items()}


def scalers_from_json(entries: Mapping[str, Any] | None) -> dict[str, Scaler]:
    return {modality: Scaler.from_json(entry) for modality, entry in (entries or {}).items()}
