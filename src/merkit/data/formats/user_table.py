"""A user's own conversations as JSONL (one utterance per line) or CSV (one utterance per row).

Fields: ``dialogue_id`` (required), ``utterance_id``, ``speaker``, ``text``, ``label`` (a class
name; for multi-label a JSON list or a ``;``-separated string, an empty list (CSV: an empty cell)
for "no emotion", a missing field or ``null`` for unlabelled; ``multi_label=true`` declares a
multi-label file whose rows hold one label at most), ``sentiment``, ``start``,
``end`` (seconds), ``split`` (train/valid/dev/test) and media paths ``audio``, ``video``,
``image`` (a face crop or photograph) and ``frames`` (a folder of frames, or OpenFace's output
folder; see :mod:`merkit.data.images`); relative paths are resolved against the file's folder. Utterances keep file order within
their dialogue. See docs/guides/data.md ("Your own data") for an example.

Column names: a label column called ``label``, ``labels``, ``emotion`` or ``class`` (any case) is
the label; other fields match their name exactly, else case-insensitively. ``label_column=NAME``
(and ``text_column``, ``speaker_column``, ``dialogue_column``, ``utterance_column``,
``split_column``, ``audio_column``, ``video_column``, ``image_column``, ``frames_column``) name a column explicitly, ``none`` drops the
field; ``dialogue_column=none`` makes every row its own one-utterance dialogue (speech and tweet
corpora). Columns that are neither a field nor mapped are listed in one warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from merkit.data.corpus import MAX_SECONDS, MEDIA_KINDS, Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._text import csv_rows, repair_text, text_lines
from merkit.errors import MerkitError

_SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MerkitError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path, place=f"line {line_number}") from None
        if not isinstance(row, dict):
            raise MerkitError("each line must be a JSON object", path=path, place=f"line {line_number}")
        yield line_number, row


FIELDS = ("dialogue_id", "utterance_id", "speaker", "text", "label", "sentiment", "start", "end", "split", *MEDIA_KINDS, "media")
LABEL_NAMES = ("label", "labels", "emotion", "class")  # matched case-insensitively
# option name → the field it maps
COLUMN_OPTIONS = {
    "label_column": "label",
    "text_column": "text",
    "speaker_column": "speaker",
    "dialogue_column": "dialogue_id",
    "utterance_column": "utterance_id",
    "split_column": "split",
    "audio_column": "audio",
    "video_column": "video",
    "image_column": "image",
    "frames_column": "frames",
}
_NO_DIALOGUE_HINT = (
    "if every row is its own dialogue (speech or tweet corpora), pass -o dialogue_column=none; "
    "or name the column with -o dialogue_column=NAME"
)


def _columns_of(rows: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Every key of the rows, in order of first appearance (a CSV's header: its rows carry every column)."""
    return list(dict.fromkeys(key for _, row in rows for key in row))


def _find_column(field: str, columns: list[str]) -> str | None:
    """The column that holds ``field``: its exact name, else (the first) in any case; for the label also its common names."""
    if field in columns:
        return field
    names = LABEL_NAMES if field == "label" else (field,)
    return next((c for c in columns if c.lower() in names), None)


def _media_name(row: dict[str, Any]) -> str:
    """A one-row dialogue's name from its media file (``clips/happy1.wav`` → ``clips/happy1``): predictions then
    name the file, not the row number."""
    path = next((str(row[kind]).strip() for kind in MEDIA_KINDS if str(row.get(kind) or "").strip()), "")
    return str(Path(path).with_suffix("")) if path else ""


def map_columns(
    rows: list[tuple[int, dict[str, Any]]], path: Path, columns: list[str], mapping: dict[str, Any]
) -> list[tuple[int, dict[str, Any]]]:
    """Rows with their columns renamed to merkit's fields (see the module docstring).

    ``mapping`` is the ``*_column`` options; a named column that does not exist is an error."""
    unknown_options = [key for key in mapping if key not in COLUMN_OPTIONS]
    if unknown_options:
        raise MerkitError(
            f"option not understood by this reader: {', '.join(unknown_options)} (it takes labels, multi_label, name, "
            f"valid_pattern and {', '.join(COLUMN_OPTIONS)})"
        )
    source_of: dict[str, str | None] = {}
    for option, value in mapping.items():
        name = str(value).strip() if value is not None else "none"
        if name.lower() == "none":
            source_of[COLUMN_OPTIONS[option]] = None
        elif name not in columns:
            raise MerkitError(f"{option}={name!r}: no such column; the file has: {', '.join(columns) or 'no columns'}", path=path)
        else:
            source_of[COLUMN_OPTIONS[option]] = name
    taken = {c for c in source_of.values() if c is not None}
    for field in FIELDS:
        if field not in source_of:
            column = _find_column(field, [c for c in columns if c not in taken])
            source_of[field] = column
            if column is not None:
                taken.add(column)
    one_per_row = "dialogue_column" in mapping and source_of["dialogue_id"] is None
    if source_of["dialogue_id"] is None and not one_per_row and columns:
        raise MerkitError(f"missing dialogue_id column; found: {', '.join(columns)}; {_NO_DIALOGUE_HINT}", path=path, place="line 1")
    ignored = [c for c in columns if c not in taken]
    if ignored:
        warnings.warn(
            f"{path.name}: ignoring column(s) {', '.join(map(repr, ignored))} (neither a known field nor mapped; "
            f"map one with -o label_column=NAME, text_column=NAME, ...)",
            UserWarning,
            stacklevel=2,
        )
    renamed: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, (line, row) in enumerate(rows, start=1):
        new = {field: row[column] for field, column in source_of.items() if column is not None and column in row}
        if one_per_row:
            dialogue_id = str(new.get("utterance_id") or "").strip() or _media_name(new) or f"row{number}"
            if dialogue_id in seen:
                raise MerkitError(
                    f"duplicate utterance id {dialogue_id!r} (dialogue_column=none: one dialogue per row)", path=path, place=f"line {line}"
                )
            seen.add(dialogue_id)
            new["dialogue_id"] = dialogue_id
        renamed.append((line, new))
    return renamed


def _hash_split(dialogue_id: str) -> str:
    """Deterministic 80/10/10 split by dialogue id, for files that carry no ``split`` field."""
    bucket = int(hashlib.sha256(dialogue_id.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "valid" if bucket == 1 else "train"


def _labels_of(value: Any, multi_label: bool) -> list[str] | None:
    """The class names of a label field; ``None``: unlabelled.

    A missing field or ``null`` is unlabelled. In a multi-label file an empty list (CSV: an empty
    cell) is labelled, with no emotion; in a single-label file it is unlabelled too."""
    if value is None:
        return None
    if isinstance(value, list):
        names = [str(v).strip() for v in value]
    else:
        text = str(value).strip()
        names = [part.strip() for part in text.split(";") if part.strip()] if multi_label else [text] if text else []
    return names if names or multi_label else None


def _is_multi_label(rows: list[tuple[int, dict[str, Any]]], path: Path) -> bool:
    """Whether labels are written as lists (JSON lists, ``a;b``); a note when no row holds more than one."""
    multi = any(isinstance(row.get("label"), list) or ";" in str(row.get("label") or "") for _, row in rows)
    if multi and max(len(_labels_of(row.get("label"), True) or ()) for _, row in rows) <= 1:
        warnings.warn(
            f"{path.name}: labels are written as lists but no row holds more than one; reading it as multi-label "
            "(an empty list: no emotion). Pass -o multi_label=true to confirm (and silence this note), or "
            "-o multi_label=false for one class per row (an empty list: unlabelled)",
            UserWarning,
            stacklevel=2,
        )
    return multi


def _number(value: Any, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MerkitError(f"{field} {value!r} is not a number of seconds") from None
    if not 0 <= seconds <= MAX_SECONDS:  # also NaN and infinities
        raise MerkitError(f"{field} {value!r} is not a time in seconds between 0 and {MAX_SECONDS:g}")
    return seconds


def rows_to_corpus(
    rows: list[tuple[int, dict[str, Any]]],
    path: Path,
    *,
    labels: str | list[str] | None = None,
    multi_label: bool | None = None,
    name: str | None = None,
    **column_options: Any,
) -> DataBundle:
    if not rows:
        raise MerkitError("no utterances in file", path=path)
    rows = map_columns(rows, path, _columns_of(rows), column_options)
    multi = _is_multi_label(rows, path) if multi_label is None else multi_label
    if labels is None:
        names = sorted({label for _, row in rows for label in _labels_of(row.get("label"), multi) or ()})
        if not names:
            names = ["unlabelled"]
    else:
        names = [n.strip() for n in labels.split(",")] if isinstance(labels, str) else list(labels)
    schema = LabelSchema(names=tuple(names), multi_label=multi)
    has_split = [bool(row.get("split")) for _, row in rows]
    if any(has_split) and not all(has_split):
        line = rows[has_split.index(False)][0]
        raise MerkitError("some rows have a split and this one has none", path=path, place=f"line {line}")

    grouped: dict[str, list] = {}
    split_of: dict[str, str] = {}
    for line, row in rows:
        place = f"line {line}"
        try:
            dialogue_id = str(row.get("dialogue_id") or "").strip()
            if not dialogue_id:
                raise MerkitError(f"missing dialogue_id; {_NO_DIALOGUE_HINT}")
            raw_split = str(row.get("split") or "").strip().lower()
            split = _SPLIT_ALIASES.get(raw_split) if raw_split else _hash_split(dialogue_id)
            if split is None:
                raise MerkitError(f"unknown split {raw_split!r}; use train, valid (or dev) or test")
            if split_of.setdefault(dialogue_id, split) != split:
                raise MerkitError(f"dialogue {dialogue_id!r} is in two splits: {split_of[dialogue_id]!r} and {split!r}")
            turns = grouped.setdefault(dialogue_id, [])
            names_given = _labels_of(row.get("label"), multi)
            indices = tuple(schema.index(label) for label in names_given or ())
            if not multi and len(indices) > 1:
                raise MerkitError("several labels in a single-label file; pass -o multi_label=true")
            label = None if names_given is None else indices if multi else indices[0]
            media = dict(row.get("media") or {})
            media.update({field: row[field] for field in MEDIA_KINDS if row.get(field)})
            media = {m: str((path.parent / str(p)).resolve()) if not Path(str(p)).is_absolute() else str(p) for m, p in media.items()}
            turns.append(
                build_utterance(
                    id=f"{dialogue_id}/{str(row.get('utterance_id') or len(turns)).strip()}",
                    speaker=str(row.get("speaker") or "").strip(),
                    text=repair_text(str(row.get("text") or "")),
                    label=label,
                    sentiment=(str(row["sentiment"]).strip() or None) if row.get("sentiment") is not None else None,
                    start=_number(row.get("start"), "start"),
                    end=_number(row.get("end"), "end"),
                    media=media,
                )
            )
        except MerkitError as exc:
            raise exc.at(path, place) from None
    dialogues = tuple(Dialogue(id=d, utterances=tuple(u)) for d, u in grouped.items())
    splits = {s: tuple(d for d in grouped if split_of[d] == s) for s in ("train", "valid", "test")}
    corpus = build_corpus(name=name or path.stem, labels=schema, dialogues=dialogues, splits=splits)
    return DataBundle(corpus)


@register_reader
class JsonlReader:
    name = "jsonl"
    description = "your own conversations, one JSON object per utterance (docs/guides/data.md)"

    def detect(self, source: Source) -> bool:
        return source.path.is_file() and source.path.suffix.lower() in {".jsonl", ".ndjson"}

    def read(self, source: Source, **options: Any) -> DataBundle:
        return rows_to_corpus(list(_jsonl_rows(source.path)), source.path, **options)


@register_reader
class CsvReader:
    name = "csv"
    description = "your own conversations, one CSV row per utterance (docs/guides/data.md; -o dialogue_column=none: one per row)"

    def detect(self, source: Source) -> bool:
        # Any .csv: the corpus CSVs merkit knows (MELD) are detected by readers that come first.
        return source.path.is_file() and source.path.suffix.lower() == ".csv"

    def read(self, source: Source, **options: Any) -> DataBundle:
        return rows_to_corpus(list(csv_rows(source.path, required=())), source.path, **options)

