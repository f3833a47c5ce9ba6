"""MELD ``{train,dev,test}_sent_emo.csv`` (the public MELD release, text + labels + times)."""

from __future__ import annotations

import re
from pathlib import Path

from merkit.data.corpus import Corpus, Dialogue, LabelSchema, Utterance, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._text import csv_rows, repair_text
from merkit.data.labels import MELD_EMOTIONS, MELD_SENTIMENTS
from merkit.errors import MerkitError

_SPLIT_FILES = {"train": "train_sent_emo.csv", "valid": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
_FILE_PREFIX = {"train": "train", "valid": "dev", "test": "test"}
_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime")
_TIME = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})$")


def parse_time(value: str) -> float:
    """``"00:16:16,059"`` → seconds (16*60 + 16.059)."""
    match = _TIME.match(value.strip())
    if not match:
        raise ValueError(f"time {value!r} is not HH:MM:SS,mmm")
    hours, minutes, seconds, millis = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def _split_files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        return {split: path / name for split, name in _SPLIT_FILES.items() if (path / name).is_file()}
    for split, name in _SPLIT_FILES.items():
        if path.name == name:
            return {split: path}
    return {"train": path}


@register_reader
class MeldCsvReader:
    name = "meld-csv"
    description = "MELD *_sent_emo.csv files (a folder with train/dev/test, or one file)"

    def detect(self, source: Source) -> bool:
        path = source.path
        if path.is_dir():
            return any((path / name).is_file() for name in _SPLIT_FILES.values())
        if path.is_file() and path.name.endswith("_sent_emo.csv"):
            return True
        if path.is_file() and path.suffix.lower() == ".csv":
            with path.open("rb") as handle:
                head = handle.readline().decode("utf-8-sig", errors="replace")
            return all(column in head for column in ("Utterance", "Emotion", "Dialogue_ID"))
        return False

    def read(self, source: Source, *, repair: bool = True) -> DataBundle:
        files = _split_files(source.path)
        if not files:
            raise MerkitError(f"no MELD CSV files ({', '.join(_SPLIT_FILES.values())}) found", path=source.path)
        schema = LabelSchema(names=MELD_EMOTIONS)
        dialogues: list[Dialogue] = []
        splits: dict[str, tuple[str, ...]] = {}
        for split, path in files.items():
            split_dialogues = _read_split(path, _FILE_PREFIX[split], schema, repair=repair)
            dialogues.extend(split_dialogues)
            splits[split] = tuple(dialogue.id for dialogue in split_dialogues)
        corpus: Corpus = build_corpus(
            name="meld", labels=schema, dialogues=tuple(dialogues), splits=splits, sentiment_names=MELD_SENTIMENTS
        )
        return DataBundle(corpus)


def _read_split(path: Path, prefix: str, schema: LabelSchema, *, repair: bool) -> list[Dialogue]:
    turns: dict[int, list[tuple[int, Utterance]]] = {}
    for line, row in csv_rows(path, required=_COLUMNS):
        place = f"line {line}"
        try:
            dialogue_id = int(row["Dialogue_ID"])
            turn = int(row["Utterance_ID"])
            start, end = parse_time(row["StartTime"]), parse_time(row["EndTime"])
        except ValueError as exc:
            raise MerkitError(f"bad value: {exc}", path=path, place=place) from None
        emotion = row["Emotion"].strip().lower()
        sentiment = row["Sentiment"].strip().lower()
        if sentiment not in MELD_SENTIMENTS:
            raise MerkitError(f"unknown sentiment {sentiment!r}", path=path, place=place)
        text = row["Utterance"]
        try:
            utterance = build_utterance(
                id=f"{prefix}_dia{dialogue_id}_utt{turn}",
                speaker=row["Speaker"].strip(),
                text=repair_text(text) if repair else text,
                label=schema.index(emotion),
                sentiment=sentiment,
                start=start,
                end=end,
            )
        except MerkitError as exc:
            raise exc.at(path, place) from None
        turns.setdefault(dialogue_id, []).append((turn, utterance))
    dialogues = []
    for dialogue_id in sorted(turns):
        ordered = sorted(turns[dialogue_id], key=lambda pair: pair[0])
        dialogues.append(Dialogue(id=f"{prefix}_dia{dialogue_id}", utterances=tuple(u for _, u in ordered)))
    return dialogues
