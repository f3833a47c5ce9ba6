"""IEMOCAP transcripts as published with COSMIC: ``iemocap.pkl`` =
``[speakers, labels, sentences, train_ids, test_ids, valid_ids]`` (a plain-data pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import SPEAKER_ROLE, Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.labels import IEMOCAP_EMOTIONS
from merkit.errors import MerkitError

IEMOCAP_ROLES = ("M", "F")  # the index order of the official SDT/SURE speaker one-hot for IEMOCAP


def speaker_role(speaker: Any) -> dict[str, str]:
    """Utterance meta with the speaker's role index, as the official SDT/SURE codes embed it: the one-hot's
    index, or M = 0 / F = 1 for IEMOCAP's letters; empty for any other speaker."""
    if isinstance(speaker, str):
        return {SPEAKER_ROLE: str(IEMOCAP_ROLES.index(speaker))} if speaker in IEMOCAP_ROLES else {}
    vector = np.asarray(speaker)
    return {SPEAKER_ROLE: str(int(np.argmax(vector)))} if vector.ndim == 1 and vector.size > 1 else {}


def _pickle_path(path: Path) -> Path:
    return path / "iemocap.pkl" if path.is_dir() else path


def _looks_like_cosmic(obj: Any) -> bool:
    return (
        isinstance(obj, (list, tuple))
        and len(obj) == 6
        and all(isinstance(part, dict) for part in obj[:3])
        and all(isinstance(part, (list, tuple, set, frozenset)) for part in obj[3:])
    )


@register_reader
class IemocapCosmicReader:
    name = "iemocap-cosmic"
    description = "IEMOCAP transcript pickle of COSMIC (iemocap.pkl, or a folder holding it)"

    def detect(self, source: Source) -> bool:
        path = _pickle_path(source.path)
        if not (path.is_file() and path.suffix == ".pkl"):
            return False
        inner = source if path == source.path else Source(path, trust_pickle=source.trust_pickle)
        return _looks_like_cosmic(inner.pickle_object)

    def read(self, source: Source) -> DataBundle:
        path = _pickle_path(source.path)
        obj = (source if path == source.path else Source(path, trust_pickle=source.trust_pickle)).pickle_object
        if not _looks_like_cosmic(obj):
            raise MerkitError("expected [speakers, labels, sentences, train_ids, test_ids, valid_ids]", path=path)
        speakers, labels, sentences, train_ids, test_ids, valid_ids = obj
        schema = LabelSchema(names=IEMOCAP_EMOTIONS)
        dialogues = []
        for dialogue_id in sorted(labels):
            place = f"dialogue {dialogue_id!r}"
            if dialogue_id not in speakers or dialogue_id not in sentences:
                raise MerkitError("dialogue lacks speakers or sentences", path=path, place=place)
            lengths = {len(labels[dialogue_id]), len(speakers[dialogue_id]), len(sentences[dialogue_id])}
            if len(lengths) != 1:
                raise MerkitError(f"labels, speakers and sentences differ in length {sorted(lengths)}", path=path, place=place)
            try:
                utterances = tuple(
                    build_utterance(id=f"{dialogue_id}_{turn:03d}", speaker=str(speaker), text=str(text), label=int(label),
                                    meta=speaker_role(speaker))
                    for turn, (speaker, label, text) in enumerate(
                        zip(speakers[dialogue_id], labels[dialogue_id], sentences[dialogue_id], strict=True)
                    )
                )
            except MerkitError as exc:
                raise exc.at(path, place) from None
            dialogues.append(Dialogue(id=str(dialogue_id), utterances=utterances))
        splits = {
            "train": tuple(sorted(map(str, train_ids))),
            "valid": tuple(sorted(map(str, valid_ids))),
            "test": tuple(sorted(map(str, test_ids))),
        }
        return DataBundle(build_corpus(name="iemocap", labels=schema, dialogues=tuple(dialogues), splits=splits))
