"""GoEmotions TSVs (text, comma-separated label ids, comment id; no header, no quoting).

Each comment becomes a one-utterance dialogue; the label set is multi-label.
"""

from __future__ import annotations

import csv
from pathlib import Path

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._text import read_text, text_lines
from merkit.errors import MerkitError

EKMAN_EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
_SPLIT_FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}


def _label_names(folder: Path) -> tuple[str, ...]:
    labels_file = folder / "labels.txt"
    if labels_file.is_file():
        return tuple(line.strip() for line in read_text(labels_file).splitlines() if line.strip())
    return EKMAN_EMOTIONS


@register_reader
class GoEmotionsTsvReader:
    name = "goemotions-tsv"
    description = "GoEmotions train/dev/test.tsv (multi-label; labels.txt names the classes)"

    def detect(self, source: Source) -> bool:
        path = source.path
        if path.is_dir():
            return (path / "train.tsv").is_file() or (path / "test.tsv").is_file()
        return path.is_file() and path.suffix.lower() == ".tsv"

    def read(self, source: Source) -> DataBundle:
        path = source.path
        folder = path if path.is_dir() else path.parent
        files = (
            {split: folder / name for split, name in _SPLIT_FILES.items() if (folder / name).is_file()}
            if path.is_dir()
            else {next((s for s, n in _SPLIT_FILES.items() if n == path.name), "train"): path}
        )
        schema = LabelSchema(names=_label_names(folder), multi_label=True)
        dialogues: list[Dialogue] = []
        splits: dict[str, tuple[str, ...]] = {}
        for split, file in files.items():
            split_dialogues = [
                Dialogue(id=utterance.id, utterances=(utterance,)) for utterance in _read_file(file, split, schema)
            ]
            dialogues.extend(split_dialogues)
            splits[split] = tuple(dialogue.id for dialogue in split_dialogues)
        return DataBundle(build_corpus(name="goemotions", labels=schema, dialogues=tuple(dialogues), splits=splits))


def _read_file(path: Path, split: str, schema: LabelSchema):
    reader = csv.reader(text_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    for line, fields in enumerate(reader, start=1):
        if not fields:
            continue
        place = f"line {line}"
        if len(fields) != 3:
            raise MerkitError(f"expected 3 tab-separated fields (text, labels, id), found {len(fields)}", path=path, place=place)
        text, label_field, comment_id = fields
        try:
            indices = tuple(int(part) for part in label_field.split(","))
        except ValueError:
            raise MerkitError(f"label field {label_field!r} is not a comma-separated list of ids", path=path, place=place) from None
        unknown = [index for index in indices if not 0 <= index < schema.num_classes]
        if unknown:
            raise MerkitError(
                f"unknown label id(s) {unknown}; labels are 0..{schema.num_classes - 1} ({', '.join(schema.names)})",
                path=path,
                place=place,
            )
        try:
            yield build_utterance(id=f"{split}_{comment_id}", speaker="author", text=text, label=indices)
        except MerkitError as exc:
            raise exc.at(path, place) from None
