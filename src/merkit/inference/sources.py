"""Inference input → an unlabelled :class:`~merkit.data.corpus.Corpus`: every dialogue in one split.

Conversations (from :mod:`merkit.inference.schema`) get their media paths resolved; a file is read
as JSON, ``"Speaker: text"`` lines or anything :func:`merkit.data.read_data` reads; a folder of
media with one transcript has its files matched to the utterances by name.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from merkit.data.corpus import Corpus, Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import Source, detect_format, read_data
from merkit.data.images import IMAGE_SUFFIXES, is_frame_folder
from merkit.errors import MerkitError
from merkit.inference.schema import MEDIA_FIELDS, ConversationInput, parse_lines, read_conversations

TRANSCRIPT_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".json", ".txt")
MEDIA_SUFFIXES = {
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"),
    "video": (".mp4", ".mkv", ".avi", ".webm", ".mov"),
    "image": IMAGE_SUFFIXES,
}
SPLIT = "test"  # the one split an inference corpus has: every dialogue in it
INPUT_POSITION = "input_position"  # utterance meta: its place in a flat input list of turns


def _resolve(path: str, base: Path) -> str:
    return str(path) if Path(path).is_absolute() else str((base / path).resolve())


def corpus_of_conversations(conversations: Sequence[ConversationInput], labels: LabelSchema, base: Path, name: str = "input") -> Corpus:
    """An unlabelled corpus with every dialogue in the inference split; media paths resolved against ``base``."""
    dialogues = []
    for conversation in conversations:
        utterances = []
        ids = _utterance_ids(conversation)
        positions = conversation._positions or [None] * len(ids)
        for index, (turn, utterance_id, position) in enumerate(zip(conversation.utterances, ids, positions, strict=True)):
            media = {field: _resolve(getattr(turn, field), base) for field in MEDIA_FIELDS if getattr(turn, field)}
            try:
                utterances.append(
                    build_utterance(
                        id=f"{conversation.dialogue_id}/{utterance_id}", speaker=turn.speaker, text=turn.text,
                        start=turn.start, end=turn.end, media=media,
                        meta={} if position is None else {INPUT_POSITION: str(position)},
                    )
                )  # fmt: skip
            except MerkitError as exc:
                raise exc.at(place=f"dialogue {conversation.dialogue_id!r}, utterance {index}") from None
        dialogues.append(Dialogue(id=conversation.dialogue_id, utterances=tuple(utterances)))
    return _inference_corpus(name, dialogues, labels)


def _utterance_ids(conversation: ConversationInput) -> list[str]:
    """Each turn's ``utterance_id``, or its position (from 0) when it has none; a clash is an error naming both turns."""
    ids = [turn.utterance_id or str(index) for index, turn in enumerate(conversation.utterances)]
    first: dict[str, int] = {}
    for index, utterance_id in enumerate(ids):
        if utterance_id in first:
            given = [i for i in (first[utterance_id], index) if conversation.utterances[i].utterance_id]
            why = "" if len(given) == 2 else " (a turn without an utterance_id is named by its position, from 0)"
            raise MerkitError(
                f"dialogue {conversation.dialogue_id!r}: utterances {first[utterance_id]} and {index} are both named "
                f"{utterance_id!r}{why}; give every turn its own utterance_id, or none"
            )
        first[utterance_id] = index
    return ids


def _inference_corpus(name: str, dialogues: Sequence[Dialogue], labels: LabelSchema) -> Corpus:
    return build_corpus(name=name, labels=labels, dialogues=tuple(dialogues), splits={SPLIT: tuple(d.id for d in dialogues)})


def unlabelled_corpus(corpus: Corpus, labels: LabelSchema) -> Corpus:
    """The corpus without its gold annotations, under the model's label schema, all in the inference split."""
    dialogues = [
        Dialogue(id=d.id, utterances=tuple(u.model_copy(update={"label": None, "sentiment": None}) for u in d.utterances))
        for d in corpus.dialogues
    ]
    return _inference_corpus(corpus.name, dialogues, labels)


def _attach_folder_media(corpus: Corpus, folder: Path) -> Corpus:
    """Give each utterance without media the folder's files named after it (``<utterance_id>.wav``, ``.png``, a
    ``<utterance_id>/`` folder of frames ...).

    Files numbered 1…N beside utterances numbered 0…N−1 (a ``.txt`` transcript's lines count from 0)
    are matched in order, with a warning; files named after no utterance are listed in a warning."""
    by_stem: dict[str, dict[str, str]] = {}
    for path in sorted(folder.iterdir()):
        for modality, suffixes in MEDIA_SUFFIXES.items():
            if path.is_file() and path.suffix.lower() in suffixes:
                by_stem.setdefault(path.stem, {}).setdefault(modality, str(path.resolve()))
        if path.is_dir() and is_frame_folder(path):
            by_stem.setdefault(path.name, {}).setdefault("frames", str(path.resolve()))
    own_ids = [u.id.removeprefix(f"{d.id}/") for d in corpus.dialogues for u in d.utterances]
    count = len(own_ids)
    shift = 0
    if set(by_stem) == {str(i) for i in range(1, count + 1)} and set(own_ids) == {str(i) for i in range(count)}:
        shift = 1
        warnings.warn(f"{folder}: the media files are numbered 1-{count} and the utterances 0-{count - 1}: "
                      f"matched in order (1.* to the first utterance)", UserWarning, stacklevel=3)  # fmt: skip
    used: set[str] = set()
    dialogues = []
    for dialogue in corpus.dialogues:
        utterances = []
        for utterance in dialogue.utterances:
            own_id = utterance.id.removeprefix(f"{dialogue.id}/")
            if shift:
                own_id = str(int(own_id) + shift)
            stem = next((s for s in (own_id, f"{dialogue.id}_{own_id}") if s in by_stem), None)
            if not utterance.media and stem is not None:
                utterance = utterance.model_copy(update={"media": by_stem[stem]})
                used.add(stem)
            utterances.append(utterance)
        dialogues.append(Dialogue(id=dialogue.id, utterances=tuple(utterances)))
    unused = [Path(p).name for stem, media in by_stem.items() if stem not in used for p in media.values()]
    if unused:
        shown = ", ".join(unused[:5]) + (", …" if len(unused) > 5 else "")
        warnings.warn(f"{folder}: {len(unused)} media file(s) named after no utterance, not used: {shown} "
                      f"(name them after the utterance ids: {', '.join(own_ids[:3])}, …)", UserWarning, stacklevel=3)  # fmt: skip
    return _inference_corpus(corpus.name, dialogues, corpus.labels)


def read_input(source: str | Path, labels: LabelSchema) -> Corpus:
    """A file or folder (see the module docstring) → an unlabelled inference corpus."""
    path = Path(source)
    if not path.exists():
        raise MerkitError("no such file or directory", path=path)
    if path.is_dir():
        transcripts = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TRANSCRIPT_SUFFIXES)
        if len(transcripts) == 1:
            return _attach_folder_media(read_input(transcripts[0], labels), path)
        try:
            detect_format(Source(path))  # a corpus folder merkit reads (MELD, a feature store, ...)
        except MerkitError:
            found = ", ".join(p.name for p in transcripts) or "none"
            raise MerkitError(
                f"a folder of media needs exactly one transcript file ({', '.join(TRANSCRIPT_SUFFIXES)}); found: {found}",
                path=path,
            ) from None
        return unlabelled_corpus(read_data(path).corpus, labels)
    suffix = path.suffix.lower()
    kind = next((k for k, suffixes in MEDIA_SUFFIXES.items() if suffix in suffixes), None)
    if kind is not None:
        raise MerkitError(
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} file alone is not a conversation: give JSON naming it ([{{\"{kind}\": \"{path.name}\"}}]), a transcript "
            f"({', '.join(TRANSCRIPT_SUFFIXES)}), or a folder holding the media and one transcript",
            path=path,
        )
    try:
        if suffix == ".json":
            data = json.loads(path.read_text("utf-8"))
            return corpus_of_conversations(read_conversations(data), labels, path.parent, path.stem)
        if suffix == ".txt":
            return corpus_of_conversations([parse_lines(path.read_text("utf-8"), path.stem)], labels, path.parent, path.stem)
    except json.JSONDecodeError as exc:
        raise MerkitError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path=path) from None
    except UnicodeDecodeError:
        raise MerkitError("not a UTF-8 text file", path=path) from None
    except MerkitError as exc:
        raise exc.at(path) from None
    return unlabelled_corpus(read_data(path).corpus, labels)
