"""The corpus data model: immutable, validated records of dialogues and utterances.

Every reader produces a :class:`Corpus`; everything downstream (feature extraction,
batching, training, evaluation) consumes one. Validation happens on construction, so a
corpus that exists is a corpus that makes sense: labels inside the schema, no empty
dialogue, unique ids, and each dialogue in at most one split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merkit.errors import MerkitError

SPLITS = ("train", "valid", "test")
Split = Literal["train", "valid", "test"]
MODALITIES = ("text", "audio", "visual")
MAX_SECONDS = 1e7  # about 115 days: a media time beyond it is a mistake, not a recording
MEDIA_KINDS = ("audio", "video", "image", "frames")  # the keys of Utterance.media (frames: a folder of images)

Label = int | tuple[int, ...]


SPEAKER_ROLE = "speaker_role"  # utterance meta: the speaker's index among the corpus's own roles (IEMOCAP M = 0, F = 1)


class CorpusError(MerkitError):
    """The records do not form a valid corpus (unknown label, empty dialogue, ...)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelSchema(_Frozen):
    """Ordered class names, and whether an utterance carries one class or a set of them."""

    names: tuple[str, ...]
    multi_label: bool = False

    @field_validator("names")
    @classmethod
    def _unique_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("a label schema needs at least one class")
        duplicates = [name for name, count in Counter(names).items() if count > 1]
        if duplicates:
            raise ValueError(f"duplicate class names {duplicates}")
        return names

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Class index of ``name``; a :class:`CorpusError` listing the known classes if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CorpusError(f"unknown label {name!r}; known labels: {', '.join(self.names)}") from None


class Utterance(_Frozen):
    """One turn of a dialogue.

    ``label`` is a class index for single-label corpora, a sorted tuple of class indices
    for multi-label ones (possibly empty: no emotion present), or ``None`` when unlabelled.
    ``media`` maps a kind of medium (:data:`MEDIA_KINDS`: ``audio``, ``video``, ``image``,
    ``frames``) to a file or folder path; ``meta`` keeps what a
    corpus says about the utterance beyond these fields (RAVDESS: gender, intensity, ...), as strings.
    """

    id: str = Field(min_length=1)
    speaker: str = ""
    text: str = ""
    label: Label | None = None
    sentiment: str | None = None
    start: float | None = Field(None, le=MAX_SECONDS, allow_inf_nan=False)
    end: float | None = Field(None, le=MAX_SECONDS, allow_inf_nan=False)
    media: Mapping[str, str] = Field(default_factory=dict)
    meta: Mapping[str, str] = Field(default_factory=dict)

    @field_validator("label")
    @classmethod
    def _canonical_label(cls, label: Label | None) -> Label | None:
        if isinstance(label, tuple):
            return tuple(sorted(set(label)))
        return label

    @model_validator(mode="after")
    def _times_in_order(self) -> "Utterance":
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end time {self.end} is before start time {self.start}")
        return self

    def label_indices(self) -> tuple[int, ...]:
        """The label as a tuple of class indices (empty when unlabelled)."""
        if self.label is None:
            return ()
        return self.label if isinstance(self.label, tuple) else (self.label,)


class Dialogue(_Frozen):
    """An ordered list of utterances sharing one conversational context."""

    id: str = Field(min_length=1)
    utterances: tuple[Utterance, ...]

    def __len__(self) -> int:
        return len(self.utterances)


class Corpus(_Frozen):
    """Dialogues, a label schema, and the train/valid/test assignment of dialogue ids."""

    name: str
    labels: LabelSchema
    dialogues: tuple[Dialogue, ...]
    splits: Mapping[Split, tuple[str, ...]] = Field(default_factory=dict)
    sentiment_names: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Corpus":
        seen_dialogues: set[str] = set()
        seen_utterances: set[str] = set()
        for dialogue in self.dialogues:
            if dialogue.id in seen_dialogues:
                raise CorpusError(f"duplicate dialogue id {dialogue.id!r}")
            seen_dialogues.add(dialogue.id)
            if not dialogue.utterances:
                raise CorpusError("empty dialogue (no utterances)", place=f"dialogue {dialogue.id!r}")
            for utterance in dialogue.utterances:
                place = f"dialogue {dialogue.id!r}, utterance {utterance.id!r}"
                if utterance.id in seen_utterances:
                    raise CorpusError(f"duplicate utterance id {utterance.id!r}", place=place)
                seen_utterances.add(utterance.id)
                self._check_label(utterance, place)
        owner: dict[str, str] = {}
        for split, ids in self.splits.items():
            for dialogue_id in ids:
                if dialogue_id not in seen_dialogues:
                    raise CorpusError(f"split {split!r} names unknown dialogue {dialogue_id!r}")
                if dialogue_id in owner and owner[dialogue_id] != split:
                    raise CorpusError(
                        f"dialogue {dialogue_id!r} is in two splits: {owner[dialogue_id]!r} and {split!r}"
                    )
                owner[dialogue_id] = split
        return self

    def _check_label(self, utterance: Utterance, place: str) -> None:
        label = utterance.label
        if label is None:
            return
        if self.labels.multi_label != isinstance(label, tuple):
            kind = "multi-label (a list of classes)" if self.labels.multi_label else "single-label (one class)"
            raise CorpusError(f"label {label!r} does not fit a {kind} corpus", place=place)
        for index in utterance.label_indices():
            if not 0 <= index < self.labels.num_classes:
                raise CorpusError(
                    f"unknown label index {index}; the schema has {self.labels.num_classes} classes "
                    f"({', '.join(self.labels.names)})",
                    place=place,
                )
        if utterance.sentiment is not None and self.sentiment_names and utterance.sentiment not in self.sentiment_names:
            raise CorpusError(f"unknown sentiment {utterance.sentiment!r}", place=place)

    # ------------------------------------------------------------------ access
    def utterances(self) -> Iterator[Utterance]:
        """All utterances in corpus order (dialogue order, then turn order)."""
        for dialogue in self.dialogues:
            yield from dialogue.utterances

    @property
    def num_utterances(self) -> int:
        return sum(len(dialogue) for dialogue in self.dialogues)

    def split_rows(self, splits: Sequence[Split]) -> list[tuple[int, Utterance]]:
        """``(row, utterance)`` for the utterances of ``splits``; ``row`` is the position in corpus order,
        i.e. the utterance's row in feature arrays."""
        row_of = {u.id: i for i, u in enumerate(self.utterances())}
        return [(row_of[u.id], u) for split in splits for d in self.split_dialogues(split) for u in d.utterances]

    def split_dialogues(self, split: Split) -> list[Dialogue]:
        by_id = {dialogue.id: dialogue for dialogue in self.dialogues}
        return [by_id[dialogue_id] for dialogue_id in self.splits.get(split, ())]

    def stats(self) -> dict:
        """Per-split dialogue/utterance counts and label distributions (the ``data stats`` JSON)."""
        names = self.labels.names

        def label_counts(dialogues: list[Dialogue]) -> dict[str, int]:
            counts = Counter(index for d in dialogues for u in d.utterances for index in u.label_indices())
            return {name: counts.get(i, 0) for i, name in enumerate(names)}

        def no_emotion_count(dialogues: list[Dialogue]) -> int:
            """Multi-label utterances labelled with no class (an empty list): in no class's count, yet labelled."""
            return sum(1 for d in dialogues for u in d.utterances if u.label == ())

        def speaker_count(dialogues: list[Dialogue]) -> int:
            return len({u.speaker for d in dialogues for u in d.utterances if u.speaker})

        splits = {}
        for split in SPLITS:
            dialogues = self.split_dialogues(split)
            entry = {
                "dialogues": len(dialogues),
                "utterances": sum(len(d) for d in dialogues),
                "speakers": speaker_count(dialogues),
                "labels": label_counts(dialogues),
            }
            if self.labels.multi_label:
                entry["multi_label_utterances"] = sum(
                    1 for d in dialogues for u in d.utterances if len(u.label_indices()) > 1
                )
                entry["no_emotion_utterances"] = no_emotion_count(dialogues)
            splits[split] = entry
        every = list(self.dialogues)
        stats = {
            "name": self.name,
            "label_kind": "multi-label" if self.labels.multi_label else "single-label",
            "classes": list(names),
            "dialogues": len(every),
            "utterances": self.num_utterances,
            "speakers": speaker_count(every),
            "splits": splits,
            "labels": label_counts(every),
        }
        if self.labels.multi_label:
            stats["no_emotion_utterances"] = no_emotion_count(every)
        return stats


def _corpus_error(exc: ValidationError) -> CorpusError:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return CorpusError(f"{message} (field {location})" if location else message)


def build_utterance(**fields) -> Utterance:
    """Construct an :class:`Utterance`; invalid fields raise a :class:`CorpusError` (readers add file and line)."""
    try:
        return Utterance(**fields)
    except ValidationError as exc:
        raise _corpus_error(exc) from None


def build_corpus(**fields) -> Corpus:
    """Construct a :class:`Corpus`; invalid fields raise a :class:`CorpusError`."""
    try:
        return Corpus(**fields)
    except ValidationError as exc:
        raise _corpus_error(exc) from None
