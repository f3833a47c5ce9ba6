"""Shared reading of the per-dialogue multimodal feature pickles (SDT/SURE, DialogueGCN/MMGCN).

These pickles are tuples of per-dialogue dicts (ids, speakers, labels, feature arrays,
sentences) plus train/test id lists. The layouts differ only in which item holds what;
each reader passes its item names and this module does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import stack_rows
from merkit.data.formats import DataBundle, Source
from merkit.data.formats.iemocap_cosmic import speaker_role
from merkit.data.labels import IEMOCAP_EMOTIONS, MELD_EMOTIONS, MELD_SENTIMENTS
from merkit.errors import MerkitError

FEATURE_ITEMS = {"text": "text", "audio": "audio", "visual": "visual"}


def as_items(obj: Any) -> tuple | None:
    """The top-level tuple of a feature pickle, or None if it is not one."""
    return tuple(obj) if isinstance(obj, (list, tuple)) else None


def _natural(key: Any) -> tuple:
    """Sort int-like dialogue keys numerically (MELD) and the rest by name (IEMOCAP)."""
    text = str(key)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def _speaker_name(speaker: Any) -> str:
    if isinstance(speaker, str):
        return speaker
    vector = np.asarray(speaker)
    if vector.ndim == 1 and vector.size > 1:
        return f"speaker{int(np.argmax(vector))}"
    return str(speaker)


def _valid_ids(train_ids: list[str], valid_ids: Any, valid_fraction: float, seed: int) -> list[str]:
    """The dialogues held out for validation from the merged train+valid ids of these pickles.

    Explicit ids (a list, a comma-separated string, or a file with one id per line) win;
    otherwise a seeded ``valid_fraction`` of the sorted ids [R: the published files carry no
    validation split].
    """
    if valid_ids is not None:
        if isinstance(valid_ids, str):
            candidate = Path(valid_ids)
            names = candidate.read_text().split() if candidate.is_file() else valid_ids.split(",")
        else:
            names = list(valid_ids)
        chosen = [str(name).strip() for name in names if str(name).strip()]
        unknown = sorted(set(chosen) - set(train_ids))
        if unknown:
            raise MerkitError(f"valid_ids not among the training dialogues: {unknown[:5]}")
        return chosen
    if not 0 <= valid_fraction < 1:
        raise MerkitError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    count = int(round(valid_fraction * len(train_ids)))
    if valid_fraction > 0 and len(train_ids) > 1:
        count = max(count, 1)
    order = np.random.default_rng(seed).permutation(len(train_ids))
    return sorted(train_ids[i] for i in order[:count])


def read_feature_pickle(
    source: Source,
    layout: Sequence[str],
    *,
    meld: bool,
    extractor_prefix: str,
    valid_ids: Any = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> DataBundle:
    path = source.path
    items = as_items(source.pickle_object)
    if items is None or len(items) != len(layout):
        found = len(items) if items is not None else type(source.pickle_object).__name__
        raise MerkitError(f"expected a {len(layout)}-item tuple ({', '.join(layout)}), found {found}", path=path)
    parts: dict[str, Any] = dict(zip(layout, items, strict=True))
    for name in ("speakers", "labels", "sentences", *FEATURE_ITEMS.values()):
        if not isinstance(parts[name], Mapping):
            raise MerkitError(f"item {layout.index(name)} ({name}) should be a dict keyed by dialogue id", path=path)
    labels: Mapping[Any, Sequence[int]] = parts["labels"]
    schema = LabelSchema(names=MELD_EMOTIONS if meld else IEMOCAP_EMOTIONS)
    sentiment = parts.get("sentiment")
    ids = parts.get("ids") or {}

    def dialogue_key(raw: Any) -> Any:
        # Split lists hold the same keys as the dicts, but numpy ints or strings of ints also occur.
        if raw in labels:
            return raw
        for candidate in (str(raw), int(raw) if str(raw).lstrip("-").isdigit() else None):
            if candidate is not None and candidate in labels:
                return candidate
        raise MerkitError(f"split lists dialogue {raw!r}, which has no labels", path=path)

    train_keys = sorted((dialogue_key(k) for k in parts["train"]), key=_natural)
    test_keys = sorted((dialogue_key(k) for k in parts["test"]), key=_natural)
    dialogues: list[Dialogue] = []
    rows: dict[str, list[np.ndarray]] = {modality: [] for modality in FEATURE_ITEMS}
    utterance_ids: list[str] = []
    for key in train_keys + test_keys:
        place = f"dialogue {key!r}"
        turns = len(labels[key])
        try:
            arrays = {m: np.asarray(parts[item][key], dtype=np.float32) for m, item in FEATURE_ITEMS.items()}
        except KeyError:
            raise MerkitError("dialogue is missing from a feature item", path=path, place=place) from None
        except ValueError as exc:
            raise MerkitError(f"ragged feature rows: {exc}", path=path, place=place) from None
        for modality, array in arrays.items():
            if array.ndim != 2 or array.shape[0] != turns:
                raise MerkitError(
                    f"{modality} features have shape {list(array.shape)}, expected [{turns}, D]", path=path, place=place
                )
        speakers, sentences = parts["speakers"][key], parts["sentences"][key]
        if len(speakers) != turns or len(sentences) != turns:
            raise MerkitError("speakers, sentences and labels differ in length", path=path, place=place)
        given_ids = list(ids.get(key, [])) if isinstance(ids, Mapping) else []
        sentiments = _sentiments(sentiment, key, turns)
        utterances = []
        for turn in range(turns):
            raw_id = given_ids[turn] if len(given_ids) == turns and isinstance(given_ids[turn], str) else None
            utterance_id = raw_id or f"{key}_{turn:03d}"
            try:
                utterances.append(
                    build_utterance(
                        id=utterance_id,
                        speaker=_speaker_name(speakers[turn]),
                        meta=speaker_role(speakers[turn]),
                        text=str(sentences[turn]),
                        label=int(labels[key][turn]),
                        sentiment=sentiments[turn] if sentiments else None,
                    )
                )
            except MerkitError as exc:
                raise exc.at(path, place) from None
            utterance_ids.append(utterance_id)
            for modality, array in arrays.items():
                rows[modality].append(array[turn])
        dialogues.append(Dialogue(id=str(key), utterances=tuple(utterances)))

    train_ids = [str(k) for k in train_keys]
    held_out = set(_valid_ids(train_ids, valid_ids, valid_fraction, seed))
    splits = {
        "train": tuple(k for k in train_ids if k not in held_out),
        "valid": tuple(k for k in train_ids if k in held_out),
        "test": tuple(str(k) for k in test_keys),
    }
    corpus = build_corpus(
        name="meld" if meld else "iemocap",
        labels=schema,
        dialogues=tuple(dialogues),
        splits=splits,
        sentiment_names=MELD_SENTIMENTS if sentiment is not None else None,
    )
    features = {
        modality: stack_rows(
            modality,
            rows[modality],
            ids=utterance_ids,
            path=str(path),
            extractor=f"{extractor_prefix}:{item}",
            settings={"pickle_item": layout.index(item)},
            source=path.name,
        )
        for modality, item in FEATURE_ITEMS.items()
    }
    return DataBundle(corpus, features)


def _sentiments(sentiment: Any, key: Any, turns: int) -> list[str] | None:
    """Item 12 of the MELD pickles is believed to be sentiment; use it only if it looks like it."""
    if not isinstance(sentiment, Mapping) or key not in sentiment:
        return None
    values = list(sentiment[key])
    if len(values) != turns or not all(isinstance(v, (int, np.integer)) and 0 <= v < 3 for v in values):
        return None
    return [MELD_SENTIMENTS[int(v)] for v in values]
