"""The input of inference: pydantic models of utterances, conversations and dialogues, and their parsing.

Python objects (a list of utterance dicts, ``{"dialogue_id": ..., "utterances": [...]}``, or
``{"dialogues": [...]}``) and ``"Speaker: text"`` lines become validated :class:`ConversationInput`;
anything wrong is one :class:`~merkit.errors.MerkitError` naming the field (``utterances.1.start``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from merkit.data.corpus import MAX_SECONDS, MEDIA_KINDS
from merkit.errors import MerkitError

MEDIA_FIELDS = MEDIA_KINDS
IGNORED_FIELDS = ("label", "sentiment", "split")  # gold annotations of a training file, not inputs


class UtteranceInput(BaseModel):
    """One turn to predict: text and/or media files (relative to the input's folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    utterance_id: str | None = Field(None, description="unique within the dialogue (default: its position, from 0)")
    dialogue_id: str | None = Field(None, description="groups a flat list of turns into dialogues")
    speaker: str = ""
    text: str = ""
    audio: str | None = Field(None, description="audio file (or a video whose sound track is used)")
    video: str | None = Field(None, description="video file")
    image: str | None = Field(None, description="image file: a face crop or a photograph")
    frames: str | None = Field(None, description="folder of frames (or OpenFace's output folder with its *_aligned crops)")
    start: float | None = Field(None, ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds from the start of the media file")
    end: float | None = Field(None, ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds from the start of the media file")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """Drop gold annotations, flatten a ``media`` mapping, and name any unknown field or modality."""
        if not isinstance(data, Mapping):
            return data
        data = {key: value for key, value in data.items() if key not in IGNORED_FIELDS}
        media = data.pop("media", None) or {}
        if not isinstance(media, Mapping):
            raise ValueError(f"media must map a kind of medium ({', '.join(MEDIA_FIELDS)}) to a file name")
        for modality, path in media.items():
            if modality not in MEDIA_FIELDS:
                raise ValueError(f"unknown modality {modality!r} in media (media can be: {', '.join(MEDIA_FIELDS)})")
            data[modality] = path
        unknown = [key for key in data if key not in cls.model_fields]
        if unknown:
            raise ValueError(
                f"unknown field {unknown[0]!r} (an utterance has: {', '.join(cls.model_fields)}; "
                f"the media are {', '.join(MEDIA_FIELDS)})"
            )
        for key in ("utterance_id", "dialogue_id"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = str(data[key])
        return data

    @field_validator("utterance_id", "dialogue_id", "speaker", "text", *MEDIA_FIELDS)
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        """A lone surrogate (``"\\ud800"`` in JSON) is not Unicode text: refused here, not a crash when encoding the answer."""
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"not valid Unicode text: {value[exc.start:exc.end]!a} at character {exc.start}") from None
        return value


class ConversationInput(BaseModel):
    """One dialogue: its turns in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dialogue_id: str = Field("conversation", min_length=1)
    utterances: list[UtteranceInput] = Field(json_schema_extra={"minItems": 1})  # the empty case has its own message
    # Where each turn stood in a flat input list (turns of several dialogues, interleaved): answers keep that order.
    _positions: list[int] | None = PrivateAttr(None)

    @field_validator("utterances")
    @classmethod
    def _not_empty(cls, utterances: list[UtteranceInput]) -> list[UtteranceInput]:
        if not utterances:
            raise ValueError("the conversation is empty (no utterances)")
        return utterances

    @model_validator(mode="after")
    def _one_dialogue(self) -> "ConversationInput":
        for index, turn in enumerate(self.utterances):
            if turn.dialogue_id is not None and turn.dialogue_id != self.dialogue_id:
                raise ValueError(
                    f"utterances.{index}.dialogue_id {turn.dialogue_id!r} is not the conversation's dialogue_id "
                    f"{self.dialogue_id!r}; to send several dialogues, give a flat list of turns or 'dialogues'"
                )
        return self


class DialoguesInput(BaseModel):
    """Several dialogues in one request."""

    model_config = ConfigDict(extra="forbid")

    dialogues: list[ConversationInput] = Field(min_length=1)


class _Turns(BaseModel):
    """A flat list of turns, validated as the ``utterances`` it is: a wrong field reads ``utterances.1.start`` in
    every form of input (a list, or ``{"utterances": [...]}`` whose turns carry their dialogue_ids)."""

    utterances: list[UtteranceInput]


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """The first errors of a pydantic validation as ``where: what`` phrases."""
    errors = exc.errors()
    parts = []
    for error in errors[:limit]:
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def read_conversations(data: Any) -> list[ConversationInput]:
    """Python objects (see the module docstring) → validated conversations; a :class:`MerkitError` says what is wrong."""
    try:
        if isinstance(data, ConversationInput):
            return [data]
        if isinstance(data, list) and data and all(isinstance(item, ConversationInput) for item in data):
            return list(data)
        if isinstance(data, Mapping):
            if "dialogues" in data and "utterances" not in data:
                return DialoguesInput.model_validate(data).dialogues
            turns = data.get("utterances")
            if set(data) == {"utterances"} and isinstance(turns, list) and any(isinstance(t, Mapping) and t.get("dialogue_id") is not None for t in turns):
                return _grouped(turns)  # no dialogue_id of its own: the turns' dialogue_ids group them
            return [ConversationInput.model_validate(data)]
        if isinstance(data, list):
            if data and all(isinstance(item, Mapping) and "utterances" in item for item in data):
                return DialoguesInput.model_validate({"dialogues": data}).dialogues
            return _grouped(data)
    except ValidationError as exc:
        raise MerkitError(validation_message(exc)) from None
    raise MerkitError(
        f"a conversation is a list of utterances or an object with 'utterances', not {type(data).__name__}"
    )


def _grouped(data: list[Any]) -> list[ConversationInput]:
    """A flat list of turns → one conversation per ``dialogue_id`` (first appearance first), each turn's place kept."""
    turns = _Turns(utterances=data).utterances
    if not turns:
        raise MerkitError("the conversation is empty (no utterances)")
    grouped: dict[str, list[tuple[int, UtteranceInput]]] = {}
    for position, turn in enumerate(turns):
        grouped.setdefault(turn.dialogue_id or "conversation", []).append((position, turn))
    conversations = []
    for dialogue_id, placed in grouped.items():
        conversation = ConversationInput(dialogue_id=dialogue_id, utterances=[turn for _, turn in placed])
        conversation._positions = [position for position, _ in placed]
        conversations.append(conversation)
    return conversations


def parse_lines(text: str, dialogue_id: str = "conversation") -> ConversationInput:
    """``"Speaker: text"`` lines → one conversation (a line without a speaker prefix is text alone).

    >>> [(u.speaker, u.text) for u in parse_lines("Ana: I got the job!\\nNo way.").utterances]
    [('Ana', 'I got the job!'), ('', 'No way.')]
    """
    turns = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        speaker, colon, said = line.partition(":")
        if colon and 0 < len(speaker.strip()) <= 40 and said.strip():
            turns.append(UtteranceInput(speaker=speaker.strip(), text=said.strip()))
        else:
            turns.append(UtteranceInput(text=line))
    if not turns:
        raise MerkitError("the conversation is empty (no utterances)")
    return ConversationInput(dialogue_id=dialogue_id, utterances=turns)
