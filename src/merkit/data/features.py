"""In-memory per-utterance feature arrays for one modality.

Rows follow the corpus order of utterances (:meth:`Corpus.utterances`). Utterance-level
features are ``values[N, D]``; sequence-level features (frames, tokens) are the rows of
all utterances stacked, ``values[sum(L), D]``, with ``offsets[N+1]`` marking where each
utterance's rows start and end. ``present[N]`` says which utterances have this modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from merkit.errors import MerkitError


@dataclass(frozen=True)
class FeatureSet:
    modality: str
    values: np.ndarray
    present: np.ndarray
    offsets: np.ndarray | None = None
    extractor: str = "unknown"
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def level(self) -> str:
        return "utterance" if self.offsets is None else "sequence"

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def row(self, index: int) -> np.ndarray:
        """Features of utterance ``index``: ``[D]`` or ``[L, D]``."""
        if self.offsets is None:
            return self.values[index]
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def describe(self) -> dict[str, Any]:
        """Manifest entry: everything needed to know what these numbers are."""
        return {
            "modality": self.modality,
            "level": self.level,
            "dim": self.dim,
            "dtype": str(self.values.dtype),
            "count": len(self),
            "present": int(self.present.sum()),
            "extractor": self.extractor,
            "settings": self.settings,
            "source": self.source,
        }

    def validate(self, utterance_ids: Sequence[str], *, path: str | None = None) -> None:
        """Check shapes and finiteness; the error names the modality and the first bad utterance."""
        count = len(utterance_ids)
        if self.values.ndim != 2:
            raise MerkitError(f"{self.modality} features must be 2-D, got shape {self.values.shape}", path=path)
        if self.present.shape != (count,):
            raise MerkitError(
                f"{self.modality} features cover {self.present.shape[0]} utterances, the corpus has {count}", path=path
            )
        if self.offsets is None and self.values.shape[0] != count:
            raise MerkitError(
                f"{self.modality} features have {self.values.shape[0]} rows, the corpus has {count} utterances", path=path
            )
        if self.offsets is not None and (self.offsets.shape != (count + 1,) or self.offsets[-1] != self.values.shape[0]):
            raise MerkitError(f"{self.modality} sequence offsets do not match the stacked rows", path=path)
        bad_rows = ~np.isfinite(self.values).all(axis=1)
        if bad_rows.any():
            first_row = int(np.argmax(bad_rows))
            item = first_row if self.offsets is None else int(np.searchsorted(self.offsets, first_row, side="right") - 1)
            raise MerkitError(
                f"{self.modality} features contain NaN or infinite values ({int(bad_rows.sum())} rows)",
                path=path,
                place=f"utterance {utterance_ids[item]!r}",
            )


def stack_rows(
    modality: str,
    rows: Sequence[np.ndarray | None],
    *,
    ids: Sequence[str],
    sequence: bool = False,
    dtype: np.dtype | type = np.float32,
    path: str | None = None,
    **info: Any,
) -> FeatureSet:
    """Build a :class:`FeatureSet` from one array per utterance (``None`` = modality absent).

    Every row must have the same width (and be 1-D, or 2-D when ``sequence``); the error
    names the first utterance (``ids``) that does not.
    """
    width = next((np.shape(row)[-1] for row in rows if row is not None), 0)
    for row, utterance_id in zip(rows, ids, strict=True):
        if row is None:
            continue
        shape = np.shape(row)
        if len(shape) != (2 if sequence else 1) or shape[-1] != width:
            expected = f"[L, {width}]" if sequence else f"[{width}]"
            raise MerkitError(
                f"{modality} features of shape {list(shape)} where {expected} was expected",
                path=path,
                place=f"utterance {utterance_id!r}",
            )
    present = np.array([row is not None for row in rows], dtype=bool)
    if sequence:
        lengths = [0 if row is None else row.shape[0] for row in rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.asarray(row, dtype=dtype).reshape(-1, width) for row in rows if row is not None]
        values = np.concatenate(parts) if parts else np.zeros((0, width), dtype=dtype)
        features = FeatureSet(modality, values, present, offsets, **info)
    else:
        values = np.zeros((len(rows), width), dtype=dtype)
        for index, row in enumerate(rows):
            if row is not None:
                values[index] = row
        features = FeatureSet(modality, values, present, **info)
    features.validate(ids, path=path)
    return features
