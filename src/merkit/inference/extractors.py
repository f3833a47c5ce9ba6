"""The feature extractors of inference: rebuilt from a checkpoint's manifest, then run over an inference corpus.

A rebuilt extractor must give the fingerprint the checkpoint records (name, settings, weight
checksums), so a model never reads features from other weights than it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet, stack_rows
from merkit.deadlines import check_deadline
from merkit.errors import MerkitError
from merkit.features.extract import Absent
from merkit.features.registry import Extractor, available_extractors, get_extractor
from merkit.progress import progress_bar

EXTRACT_BATCH = 32  # inputs per extractor call


def rebuild_extractor(modality: str, entry: Mapping[str, Any], *, device: str, workers: int = 1) -> Extractor:
    """The extractor a checkpoint's feature-manifest entry records, checked against its recorded fingerprint."""
    settings = dict(entry.get("settings") or {})
    name = settings.get("extractor") or entry.get("extractor")
    recorded = settings.get("fingerprint")
    registry = available_extractors()
    if name not in registry or not recorded:
        raise MerkitError(
            f"the model's {modality} features come from {entry.get('extractor')!r} "
            f"({entry.get('source') or 'unknown source'}), which merkit cannot compute from raw input; "
            "train on features made by `merkit extract` to predict from raw conversations"
        )
    fields = registry[name].extractor_class.Settings.model_fields
    kwargs = {key: value for key, value in settings.items() if key in fields}
    if "workers" in fields:
        kwargs["workers"] = workers  # a run setting: never part of the fingerprint
    extractor = get_extractor(name, modality=modality, device=device, **kwargs)
    extractor.record_name = str(entry.get("extractor") or name)
    found = extractor.fingerprint()
    if found != recorded:
        raise MerkitError(
            f"the {modality} extractor {extractor.record_name!r} built here is not the one the model was trained with "
            f"(fingerprint {found[:12]}…, recorded {recorded[:12]}…): its weights or settings differ; "
            "install the weights the checkpoint's model.json names"
        )
    return extractor



def absent_features(modality: str, count: int, dim: int, sequence: bool) -> FeatureSet:
    """A modality no utterance of the input has: every row masked."""
    values = np.zeros((0 if sequence else count, dim), dtype=np.float32)
    offsets = np.zeros(count + 1, dtype=np.int64) if sequence else None
    return FeatureSet(modality, values, np.zeros(count, dtype=bool), offsets)


def extract_features(
    extractor: Extractor, corpus: Corpus, modality: str, dim: int, *, progress: bool = False, deadline: float | None = None
) -> tuple[FeatureSet, dict[str, str]]:  # fmt: skip
    """One modality's ``dim``-wide rows for every utterance, and why each utterance with the medium got none.

    Unlike :func:`merkit.features.extract.run_extraction` there is no cache or store, and a
    conversation where every file of a medium fails is masked rather than an error.
    ``deadline`` (a ``time.monotonic()`` value) is checked between extractor calls.
    """
    ids = [u.id for u in corpus.utterances()]
    items = extractor.plan(corpus)
    rows: list[np.ndarray | None] = [None] * len(ids)
    reasons: dict[str, str] = {}
    todo = sorted((i for i, item in enumerate(items) if item is not None), key=lambda i: -items[i].cost)
    bar = progress_bar(len(todo), f"{extractor.record_name} {modality}", enabled=progress, leave=False)
    try:
        for start in range(0, len(todo), EXTRACT_BATCH):
            check_deadline(deadline)
            batch = todo[start : start + EXTRACT_BATCH]
            for i, row in zip(batch, extractor.encode([items[i].payload for i in batch]), strict=True):
                if isinstance(row, Absent):
                    reasons[ids[i]] = row.reason
                else:
                    rows[i] = row
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    sequence = extractor.level == "sequence"
    if all(row is None for row in rows):
        return absent_features(modality, len(ids), dim, sequence), reasons
    features = stack_rows(modality, rows, ids=ids, sequence=sequence, extractor=extractor.record_name)
    if features.dim != dim:
        raise MerkitError(f"the {modality} extractor gave {features.dim}-d features; the model reads {dim}-d")
    return features, reasons
