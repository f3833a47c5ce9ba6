"""CMU-MOSEI as read by LDDU: the MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl`` pickles and the
TAILOR/CARAT torch file. See models.md §7.4.

Top level ``{train, valid, test}``; each split holds ``text``/``src-text``, ``audio``/``src-audio``,
``vision``/``src-visual`` (``[N, L, D]`` or a list of ``[L, D]``) and ``tgt`` (token lists
``[<s>, emotion tokens..., </s>]`` with emotions from id 4). Each segment becomes a
one-utterance dialogue with sequence-level features.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import stack_rows
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._text import csv_rows
from merkit.errors import MerkitError

MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
FIRST_EMOTION_TOKEN = 4
_SPLIT_NAMES = {"train": "train", "valid": "valid", "test": "test"}
_KEYS = {"text": ("src-text", "text"), "audio": ("src-audio", "audio"), "visual": ("src-visual", "vision")}


def decode_tgt(tokens: Any, num_labels: int) -> tuple[int, ...]:
    """``[2, 4, 7, 3]`` → ``(0, 3)``: drop the start/end tokens, emotions start at id 4."""
    ids = [int(t) for t in tokens][1:-1]
    labels = tuple(sorted({i - FIRST_EMOTION_TOKEN for i in ids}))
    bad = [i for i in labels if not 0 <= i < num_labels]
    if bad:
        raise MerkitError(f"target tokens {list(tokens)} name unknown emotion ids {[b + FIRST_EMOTION_TOKEN for b in bad]}")
    return labels


def _load(source: Source) -> Any:
    if zipfile.is_zipfile(source.path):
        return _torch_load(source.path, trust=source.trust_pickle)
    return source.pickle_object


def _torch_load(path: Path, *, trust: bool) -> Any:
    """A torch file: with ``weights_only`` (torch's own restricted unpickler) unless trusted."""
    import torch

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    plain_globals = [
        argparse.Namespace,  # CARAT keeps its command-line options under "settings": plain data
        np.ndarray,
        np.dtype,
        # numpy >= 1.25 pickles a dtype with its class (numpy.dtypes.Float32DType, ...).
        *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdFD"},
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
    ]
    try:
        with torch.serialization.safe_globals(plain_globals):
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # torch raises several types for refused globals and corrupt files
        raise MerkitError(
            f"cannot load this torch file safely ({str(exc).splitlines()[0]}); if you trust it, pass --trust-pickle",
            path=path,
        ) from None


def _is_mosei(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and {"train", "test"} <= set(obj)
        and isinstance(obj["train"], dict)
        and any(key in obj["train"] for keys in _KEYS.values() for key in keys)
        and "len_list" not in obj["train"]  # M3ED's CARAT file (one sample = one dialogue): the m3ed-torch format
    )


@register_reader
class MoseiPickleReader:
    name = "mosei-pickle"
    description = "CMU-MOSEI aligned/unaligned pickles (MMSA layout) or TAILOR/CARAT torch file, as LDDU reads them"

    def detect(self, source: Source) -> bool:
        if not source.path.is_file() or source.path.suffix.lower() not in {".pkl", ".pickle", ".pt", ".pth"}:
            return False
        return _is_mosei(_load(source))

    def read(self, source: Source, *, labels_csv: str | None = None) -> DataBundle:
        obj = _load(source)
        if not _is_mosei(obj):
            raise MerkitError("expected a dict with train/valid/test splits holding text/audio/vision arrays", path=source.path)
        csv_targets = _targets_from_csv(Path(labels_csv)) if labels_csv else None
        schema = LabelSchema(names=MOSEI_EMOTIONS, multi_label=True)
        dialogues, splits, ids = [], {}, []
        rows: dict[str, list[np.ndarray]] = {modality: [] for modality in _KEYS}
        for split, key in _SPLIT_NAMES.items():
            if key not in obj:
                continue
            part = obj[key]
            arrays = {modality: _pick(part, keys, source.path, key) for modality, keys in _KEYS.items()}
            count = len(arrays["text"])
            if any(len(a) != count for a in arrays.values()):
                raise MerkitError(f"modalities of split {key!r} differ in sample count", path=source.path)
            targets = csv_targets.get(split) if csv_targets else part.get("tgt")
            if targets is None:
                raise MerkitError(
                    f"split {key!r} has no 'tgt' labels; pass labels_csv=FILE (columns mode,tgt)", path=source.path
                )
            if len(targets) != count:
                raise MerkitError(f"split {key!r} has {count} samples but {len(targets)} targets", path=source.path)
            raw_ids = part.get("id")
            texts = part.get("raw_text")
            split_ids = []
            for index in range(count):
                place = f"split {key!r}, sample {index}"
                sample_id = f"{key}_{index:05d}"
                try:
                    utterance = build_utterance(
                        id=sample_id,
                        speaker=str(raw_ids[index]).split("$_$")[0] if raw_ids is not None else "",
                        text=str(texts[index]) if texts is not None else "",
                        label=decode_tgt(targets[index], schema.num_classes),
                    )
                except MerkitError as exc:
                    raise exc.at(source.path, place) from None
                dialogues.append(Dialogue(id=sample_id, utterances=(utterance,)))
                split_ids.append(sample_id)
                ids.append(sample_id)
                for modality, values in arrays.items():
                    frames = np.asarray(values[index], dtype=np.float32)
                    rows[modality].append(np.where(np.isneginf(frames), 0.0, frames))  # COVAREP -inf → 0, as LDDU
            splits[split] = tuple(split_ids)
        corpus = build_corpus(name="cmu-mosei", labels=schema, dialogues=tuple(dialogues), splits=splits)
        features = {
            modality: stack_rows(
                modality, rows[modality], ids=ids, sequence=True, path=str(source.path),
                extractor=f"published:mosei:{modality}", source=source.path.name,
            )
            for modality in _KEYS
        }  # fmt: skip
        return DataBundle(corpus, features)


def _pick(part: dict, keys: tuple[str, ...], path: Path, split: str) -> Any:
    for key in keys:
        if key in part:
            return part[key]
    raise MerkitError(f"split {split!r} lacks any of {list(keys)}", path=path)


def _targets_from_csv(path: Path) -> dict[str, list[list[int]]]:
    """LDDU's label CSV: columns ``mode`` (train/valid/test) and ``tgt`` (e.g. ``"[2, 4, 3]"``), in sample order."""
    targets: dict[str, list[list[int]]] = {}
    for line, row in csv_rows(path, required=("mode", "tgt")):
        try:
            tokens = [int(t) for t in row["tgt"].strip("[] ").replace(" ", "").split(",") if t]
        except ValueError:
            raise MerkitError(f"tgt {row['tgt']!r} is not a list of ints", path=path, place=f"line {line}") from None
        targets.setdefault(row["mode"].strip(), []).append(tokens)
    return targets
