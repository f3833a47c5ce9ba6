"""M3ED as processed by CARAT and read by LDDU (models.md §7.5).

One torch file ``{train, valid, test, dict, settings}``. Each split holds ``src-text`` (a list
of ``[60, 768]`` arrays, RoBERTa-wwm-base Chinese), ``src-visual`` (``[60, 1024]``),
``src-audio`` (``[60, 342]``), ``len_list`` (utterances per dialogue) and ``tgt`` (token lists
``[<s>, emotion tokens..., </s>]``, emotions from id 4). One sample is a whole dialogue: its
utterance vectors (zero-padded to 100 and cut to the first 60 by CARAT) become the frames of
one sequence, kept up to the dialogue's length, and its target is the set of emotions that
occur in it. Each sample becomes a one-utterance dialogue with sequence-level features.

Modality names: by width, ``src-visual`` (1024) holds wav2vec audio features and ``src-audio``
(342) DenseNet face features — a probable naming swap. ``modality_map="auto"`` (default)
swaps them exactly when the widths say so; ``as_named`` and ``swapped`` force a reading. The
mapping is recorded in each feature set's settings (``source_key``, ``modality_map``).
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import stack_rows
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.errors import MerkitError

FIRST_EMOTION_TOKEN = 4
# CARAT's dict['tgt'] order (ids 4..10).
M3ED_EMOTIONS = ("happy", "neutral", "sad", "disgust", "anger", "fear", "surprise")
CARAT_WIDTHS = {"src-audio": 342, "src-visual": 1024}  # DenseNet faces, wav2vec audio
_SPLITS = ("train", "valid", "test")
_NAMED = {"text": "src-text", "audio": "src-audio", "visual": "src-visual"}
_SWAPPED = {"text": "src-text", "audio": "src-visual", "visual": "src-audio"}


def _load(source: Source) -> Any:
    # Imported here, not at the top: importing mosei_pickle registers its reader, and the
    # registry lists readers in the order of _READER_MODULES.
    from merkit.data.formats.mosei_pickle import _torch_load

    return _torch_load(source.path, trust=source.trust_pickle)


def _is_m3ed(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("train"), dict)
        and "len_list" in obj["train"]
        and all(key in obj["train"] for key in _NAMED.values())
    )


def _width(values: Any) -> int:
    return int(np.shape(values[0])[-1]) if len(values) else 0


def _mapping(part: dict, choice: str) -> tuple[dict[str, str], str]:
    """Modality → source key, and the reading used (``as_named`` or ``swapped``)."""
    if choice == "auto":
        widths = {key: _width(part[key]) for key in CARAT_WIDTHS}
        choice = "swapped" if widths == CARAT_WIDTHS else "as_named"
    if choice == "swapped":
        return _SWAPPED, choice
    if choice == "as_named":
        return _NAMED, choice
    raise MerkitError(f"modality_map must be auto, as_named or swapped, not {choice!r}")


def _label_names(obj: dict) -> tuple[str, ...]:
    """Emotion names from ``dict['tgt']`` (ids from 4, in id order), else CARAT's M3ED order."""
    vocabulary = obj.get("dict", {}).get("tgt") if isinstance(obj.get("dict"), dict) else None
    if not isinstance(vocabulary, dict):
        return M3ED_EMOTIONS
    emotions = sorted((int(i), str(name).lower()) for name, i in vocabulary.items() if int(i) >= FIRST_EMOTION_TOKEN)
    if [i for i, _ in emotions] != list(range(FIRST_EMOTION_TOKEN, FIRST_EMOTION_TOKEN + len(emotions))):
        raise MerkitError(f"dict['tgt'] emotion ids are not consecutive from {FIRST_EMOTION_TOKEN}: {dict(emotions)}")
    return tuple(name for _, name in emotions)


@register_reader
class M3EDTorchReader:
    name = "m3ed-torch"
    description = "M3ED as processed by CARAT (torch file; one sample = one dialogue of utterance vectors), as LDDU reads it"

    def detect(self, source: Source) -> bool:
        if not source.path.is_file() or source.path.suffix.lower() not in {".pt", ".pth", ".pkl", ".data"}:
            return False
        return zipfile.is_zipfile(source.path) and _is_m3ed(_load(source))

    def read(self, source: Source, *, modality_map: str = "auto") -> DataBundle:
        from merkit.data.formats.mosei_pickle import decode_tgt

        obj = _load(source)
        if not _is_m3ed(obj):
            raise MerkitError("expected a dict with train/valid/test splits holding src-text/src-audio/src-visual and len_list", path=source.path)
        schema = LabelSchema(names=_label_names(obj), multi_label=True)
        mapping, reading = _mapping(obj["train"], modality_map)
        dialogues, splits, ids = [], {}, []
        rows: dict[str, list[np.ndarray | None]] = {modality: [] for modality in mapping}
        for split in _SPLITS:
            if split not in obj:
                continue
            part = obj[split]
            lengths, targets = part.get("len_list"), part.get("tgt")
            count = len(part["src-text"])
            if lengths is None or targets is None or len(lengths) != count or len(targets) != count:
                raise MerkitError(f"split {split!r} needs len_list and tgt with one entry per sample ({count})", path=source.path)
            split_ids = []
            for index in range(count):
                sample_id = f"{split}_{index:05d}"
                try:
                    label = decode_tgt(targets[index], schema.num_classes)
                    utterance = build_utterance(id=sample_id, speaker="", label=label)
                except MerkitError as exc:
                    raise exc.at(source.path, f"split {split!r}, sample {index}") from None
                dialogues.append(Dialogue(id=sample_id, utterances=(utterance,)))
                split_ids.append(sample_id)
                ids.append(sample_id)
                for modality, key in mapping.items():
                    frames = np.asarray(part[key][index], dtype=np.float32)
                    kept = frames[: min(int(lengths[index]), len(frames))]
                    rows[modality].append(kept if len(kept) else None)
            splits[split] = tuple(split_ids)
        corpus = build_corpus(name="m3ed", labels=schema, dialogues=tuple(dialogues), splits=splits)
        features = {
            modality: stack_rows(
                modality, rows[modality], ids=ids, sequence=True, path=str(source.path),
                extractor=f"published:m3ed-carat:{key}", settings={"source_key": key, "modality_map": reading},
                source=source.path.name,
            )
            for modality, key in mapping.items()
        }  # fmt: skip
        return DataBundle(corpus, features)
