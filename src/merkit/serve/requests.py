"""Request bodies → conversations: JSON parsed with every field named by its place (``utterances.1.start``),
numbers too long to read refused by name, the per-request limits checked, and uploaded media matched to the
utterances that name them (a request can never name a file on the server)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from merkit.errors import MerkitError
from merkit.features.media import media_duration
from merkit.inference import MEDIA_FIELDS, ConversationInput, read_conversations
from merkit.serve.guards import ServeLimits


def public_message(exc: MerkitError) -> str:
    """The error without the server's file paths (temporary upload folders)."""
    return f"{exc.place}: {exc.message}" if exc.place else exc.message


class _LongNumber(str):
    """An integer literal of more digits than Python converts (``sys.get_int_max_str_digits``), kept as its
    digits so that the error can name the field that holds it."""


def _integer(digits: str) -> int | _LongNumber:
    try:
        return int(digits)
    except ValueError:
        return _LongNumber(digits)


def parse_json(raw: bytes | str, what: str) -> Any:
    try:
        return json.loads(raw, parse_int=_integer)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise HTTPException(400, f"{what} is not valid JSON{where}") from None
    except RecursionError:
        raise HTTPException(400, f"{what} is nested too deeply") from None


def _long_number(data: Any) -> tuple[str, _LongNumber] | None:
    """The first :class:`_LongNumber` in ``data`` and where it is (``utterances.0.start``); iterative, as
    ``data`` may be nested as deeply as the JSON parser allows."""
    todo: list[tuple[str, Any]] = [("", data)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, _LongNumber):
            return where, value
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        todo.extend((f"{where}.{key}" if where else str(key), item) for key, item in reversed(list(items)))
    return None


def _as_conversation(data: Any) -> Any:
    """A flat list of turns as the ``utterances`` it is, so that a turn's field has one name, ``utterances.0.start``,
    whether the list or ``{"utterances": [...]}`` was sent (the README's multipart and JSON examples differ so)."""
    if isinstance(data, list) and not any(isinstance(item, Mapping) and "utterances" in item for item in data):
        return {"utterances": data}
    return data


def conversations_of(data: Any, limits: ServeLimits) -> list[ConversationInput]:
    data = _as_conversation(data)
    found = _long_number(data)
    if found is not None:
        where, digits = found
        raise HTTPException(
            422, f"{where or 'the conversation'}: the number has {len(digits.lstrip('-')):,} digits, too many to be read "
            f"(at most {sys.get_int_max_str_digits():,}); send a shorter number"
        )
    try:
        conversations = read_conversations(data)
    except MerkitError as exc:
        raise HTTPException(422, public_message(exc)) from None
    count = sum(len(c.utterances) for c in conversations)
    if count > limits.max_utterances:
        raise HTTPException(422, f"too many utterances: {count}, the limit is {limits.max_utterances} (max_utterances)")
    characters = sum(len(u.text) + len(u.speaker) for c in conversations for u in c.utterances)
    if characters > limits.max_characters:
        raise HTTPException(422, f"too much text: {characters:,} characters, the limit is {limits.max_characters:,} (max_characters)")
    return conversations


def save_upload(upload: UploadFile, path: Path) -> Path:
    """Copy an uploaded file to ``path``, a name of the server's own (the client's name is never a path here)."""
    with path.open("wb") as handle:
        shutil.copyfileobj(upload.file, handle)
    return path


def with_uploads(conversations: list[ConversationInput], files: dict[str, Path], limits: ServeLimits) -> list[ConversationInput]:
    """Utterances naming uploaded files get their saved paths; anything else naming media is refused."""
    used: set[str] = set()
    result = []
    for conversation in conversations:
        turns = []
        for index, turn in enumerate(conversation.utterances):
            update = {}
            for field in MEDIA_FIELDS:
                name = getattr(turn, field)
                if not name:
                    continue
                if field == "frames":
                    raise HTTPException(
                        422, f"dialogue {conversation.dialogue_id!r}, utterance {index}: a frames folder cannot be uploaded; "
                        "send the frames as a video, or one image per utterance",
                    )
                if name not in files:
                    uploaded = ", ".join(sorted(files)) or "none"
                    raise HTTPException(
                        422,
                        f"dialogue {conversation.dialogue_id!r}, utterance {index}: {field} {name!r} is not an uploaded file "
                        f"(uploaded: {uploaded}); send media as multipart/form-data with the files",
                    )
                update[field] = str(files[name])
                used.add(name)
            turns.append(turn.model_copy(update=update))
        result.append(conversation.model_copy(update={"utterances": turns}))
    unused = sorted(set(files) - used)
    if unused:
        raise HTTPException(422, f"uploaded file(s) not named by any utterance's audio, video or image: {', '.join(unused)}")
    for name in sorted(used):
        seconds = media_duration(files[name])
        if seconds is not None and seconds > limits.max_media_seconds:
            raise HTTPException(
                422, f"{name} lasts {seconds:.1f} s, longer than the limit of {limits.max_media_seconds:g} s (max_media_seconds)"
            )
    return result
