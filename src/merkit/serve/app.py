"""The FastAPI app: ``POST /predict``, ``POST /predict/recording``, ``GET /health``, ``GET /model``, the web page
at ``/``, OpenAPI at ``/docs``; every answer carries a Content-Security-Policy that keeps browsers on this server.

``POST /predict`` takes a conversation as JSON (``application/json``: a list of utterances,
``{"dialogue_id", "utterances": [...]}`` or ``{"dialogues": [...]}``, as
:func:`merkit.inference.read_conversations` reads them), or, with media,
``multipart/form-data``: a ``conversation`` field holding that JSON and the files, which
the utterances name in their ``audio``/``video`` fields. Uploads go to a temporary folder
that is deleted after the request; a JSON request can never name a file on the server.

``POST /predict/recording`` takes ``multipart/form-data`` with one ``recording`` file (audio or
video), optionally a ``speakers`` RTTM file and a ``language`` field, and answers the emotion
:class:`~merkit.recording.Timeline` (segments with times, speaker, transcript, label, probabilities,
uncertainty). The transcript is not cached on the server: nothing of an upload outlives its request.

Every error is a JSON ``{"detail": "what was wrong"}`` with a 4xx status (400 malformed
JSON, 413 body over ``max_upload_mb``, 415 other content types, 422 wrong types, unknown
fields or modalities, a number too long to read, an empty conversation, too many utterances or
characters, media too long, a request that by itself ran for the whole ``request_seconds``; 405 with
``Allow``), 503 with ``Retry-After`` when ``max_queue`` requests are already running or waiting or
when a request's time went waiting (see :class:`_Queue`), and 500 ``internal error`` for a bug, whose
traceback goes to the server log, never to the client. A field is named by its place in the
conversation (``utterances.1.start``) in either content type. The limits are listed at ``GET /model``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from merkit._version import __version__
from merkit.deadlines import TimeLimitExceeded
from merkit.errors import MerkitError
from merkit.features.media import media_duration
from merkit.fusion import FusedPredictor, FusedTimeline
from merkit.inference import (
    MEDIA_FIELDS,
    ConversationInput,
    DialoguesInput,
    PredictionResult,
    Predictor,
    read_conversations,
)
from merkit.diarization import DiarizationSettings
from merkit.diarization import available as can_diarize
from merkit.recording import EXTRA, RecordingSettings, Timeline
from merkit.recording import predict_recording as recording_timeline  # the route below is predict_recording
from merkit.serve.live import LiveLimits, add_live_route


class ServeLimits(BaseModel):
    """What one request may ask for; beyond it the answer is a 4xx naming the limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_utterances: int = Field(200, ge=1, description="utterances per request (all dialogues together)")
    max_upload_mb: float = Field(50.0, gt=0, description="request body size in MB (JSON or multipart)")
    max_media_seconds: float = Field(600.0, gt=0, description="duration of each uploaded media file")
    max_characters: int = Field(50_000, ge=1, description="characters of text per request (speakers and texts together)")
    max_queue: int = Field(8, ge=1, description="requests running or waiting; beyond it a 503 with Retry-After")
    request_seconds: float = Field(60.0, gt=0, description="time a request may wait and run; beyond it a 503 if waiting used it, else a 422")
    max_recording_seconds: float = Field(3600.0, gt=0, description="duration of a recording sent to POST /predict/recording")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 when the declared or the actually received body exceeds ``max_bytes``,
    so a client that lies about (or omits) Content-Length is still cut off."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await _error(400, "the Content-Length header is not a number")(scope, receive, send)
            if too_large:
                return await _error(413, _too_large_message(self.max_bytes))(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        await self.app(scope, counted, send)


# Pages load scripts, styles, images and workers from this server only (inline ones included: the page's and
# Swagger UI's scripts, Redoc's styles, its search worker): the browser then asks nothing of the internet, not
# even for what a bundle would fetch by itself (Redoc's logo from cdn.redoc.ly).
_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
).encode()


class LocalOnly:
    """ASGI middleware: every answer carries the Content-Security-Policy ``_POLICY``, so /, /docs and /redoc work
    offline and tell no one else that they are being read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_policy(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"content-security-policy", _POLICY)]}
            await send(message)

        await self.app(scope, receive, with_policy)


def _error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _too_large_message(max_bytes: int) -> str:
    return f"the request is larger than the limit of {max_bytes / 1_000_000:g} MB (max_upload_mb)"


def _public_message(exc: MerkitError) -> str:
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


def _parse_json(raw: bytes | str, what: str) -> Any:
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


def _conversations(data: Any, limits: ServeLimits) -> list[ConversationInput]:
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
        raise HTTPException(422, _public_message(exc)) from None
    count = sum(len(c.utterances) for c in conversations)
    if count > limits.max_utterances:
        raise HTTPException(422, f"too many utterances: {count}, the limit is {limits.max_utterances} (max_utterances)")
    characters = sum(len(u.text) + len(u.speaker) for c in conversations for u in c.utterances)
    if characters > limits.max_characters:
        raise HTTPException(422, f"too much text: {characters:,} characters, the limit is {limits.max_characters:,} (max_characters)")
    return conversations


def _save(upload: UploadFile, path: Path) -> Path:
    """Copy an uploaded file to ``path``, a name of the server's own (the client's name is never a path here)."""
    with path.open("wb") as handle:
        shutil.copyfileobj(upload.file, handle)
    return path


def _with_uploads(conversations: list[ConversationInput], files: dict[str, Path], limits: ServeLimits) -> list[ConversationInput]:
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


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["conversation"],
                    "properties": {
                        "conversation": {"type": "string", "description": "the conversation as JSON; utterances name the uploaded files in audio/video/image"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                }
            },
        },
    }
}
_RECORDING_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["recording"],
                    "properties": {
                        "recording": {"type": "string", "format": "binary", "description": "an audio or video file"},
                        "speakers": {"type": "string", "format": "binary", "description": "optional: who speaks when, as an RTTM file; or auto "
                                     "(diarize: the default where the diarization extra is installed) or none (one unknown speaker)"},
                        "num_speakers": {"type": "integer", "description": "optional: the number of speakers, when known (for auto)"},
                        "language": {"type": "string", "description": "optional: the spoken language (e.g. en)"},
                    },
                }
            }
        },
    }
}
_ERRORS = {
    status: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
    for status, text in {400: "malformed JSON", 413: "request too large", 415: "unsupported content type", 422: "invalid conversation"}.items()
}


class _Queue:
    """At most one prediction per predictor at a time (a predictor is not thread-safe), at most ``max_queue``
    requests holding a place, each within ``request_seconds`` from when it got its place. With several
    predictors (``merkit serve --replicas``) that many requests run at once.

    Time lost waiting is the server's doing, so it is a 503 with ``Retry-After``, never the client's 422: a
    request that waited starts only if at least a prediction's usual duration (the running mean) is left of its
    limit, and one that then runs out of time had it only because of the wait (it computed less than the whole
    limit). A request that ran the whole limit by itself is too large for it: the caller's 422."""

    def __init__(self, limits: ServeLimits, predictors: Sequence[Predictor]):
        self.limits = limits
        self.idle: queue.SimpleQueue[Predictor] = queue.SimpleQueue()  # the predictors no request holds
        for predictor in predictors:
            self.idle.put(predictor)
        self.replicas = len(predictors)
        self.places = threading.BoundedSemaphore(limits.max_queue)
        self.seconds = 1.0  # running mean of a prediction's duration, for Retry-After and for what is worth starting

    def _busy(self, why: str) -> HTTPException:
        retry = max(1, math.ceil(self.seconds * self.limits.max_queue / self.replicas))
        return HTTPException(503, f"the server is busy: {why}; retry in {retry} s", headers={"Retry-After": str(retry)})

    def _after_waiting(self, placed: float, deadline: float) -> Predictor:
        """The next predictor to come free, if enough of the request's time is left to use it."""
        limit = f"time limit of {self.limits.request_seconds:g} s (request_seconds)"
        try:
            predictor = self.idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise self._busy(f"the request waited the whole {limit}") from None
        now = time.monotonic()
        if deadline - now < self.seconds:
            self.idle.put(predictor)
            raise self._busy(
                f"the request waited {now - placed:.1f} s of its {limit}; a prediction takes about {self.seconds:.1f} s, more than is left"
            )
        return predictor

    @contextlib.contextmanager
    def turn(self) -> Iterator[tuple[Predictor, float]]:
        """Hold a place and then a predictor; yields it and the request's deadline (``time.monotonic()``).
        A :class:`TimeLimitExceeded` from the body becomes a 503 when the wait caused it, else passes on."""
        if not self.places.acquire(blocking=False):
            raise self._busy(f"{self.limits.max_queue} requests are running or waiting (max_queue)")
        try:
            placed = time.monotonic()
            deadline = placed + self.limits.request_seconds
            try:
                predictor, waited = self.idle.get_nowait(), False
            except queue.Empty:
                predictor, waited = self._after_waiting(placed, deadline), True
            started = time.monotonic()
            try:
                yield predictor, deadline
            except TimeLimitExceeded:
                if waited and time.monotonic() - started < self.limits.request_seconds:
                    raise self._busy(
                        f"the request waited {started - placed:.1f} s for its turn and then ran out of the time limit of "
                        f"{self.limits.request_seconds:g} s (request_seconds)"
                    ) from None
                raise
            finally:
                self.seconds = 0.8 * self.seconds + 0.2 * (time.monotonic() - started)
                self.idle.put(predictor)
        finally:
            self.places.release()


def _application(**options: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc pages load their scripts from the installed ``fastapi-offline``
    package, not from a CDN (the server is often offline); without that package they are off (the schema
    is still at /openapi.json)."""
    try:
        from fastapi_offline import FastAPIOffline
    except ModuleNotFoundError:
        return FastAPI(docs_url=None, redoc_url=None, **options)
    return FastAPIOffline(**options)


def create_app(
    predictor: Predictor | Sequence[Predictor], limits: ServeLimits | None = None, recording: RecordingSettings | None = None,
    live: LiveLimits | None = None, fused: FusedPredictor | None = None,
) -> FastAPI:
    """The app serving ``predictor`` within ``limits``: calls to one predictor are serialised (it is not
    thread-safe); given several copies of one model, as many requests run at once. ``recording``: how
    POST /predict/recording cuts and transcribes (default :class:`~merkit.recording.RecordingSettings`), and
    ``WebSocket /live`` too, within ``live`` (:mod:`merkit.serve.live`). ``fused``: the fused words + voice model
    that POST /predict/recording uses instead (``merkit serve`` with no model); its calls take a turn of the queue too,
    so with one replica its words model may be ``predictor`` itself."""
    limits = limits or ServeLimits()
    recording = recording or RecordingSettings()
    can_transcribe = importlib.util.find_spec("faster_whisper") is not None
    predictors = list(predictor) if isinstance(predictor, Sequence) else [predictor]
    if not predictors:
        raise ValueError("create_app needs at least one predictor")
    waiting = _Queue(limits, predictors)
    fused_lock = threading.Lock()
    described = predictors[0].describe()
    info = {**described, "replicas": len(predictors),
            "recording": {"asr": recording.asr, "model": fused.name if fused else described["model"]} if can_transcribe else None}  # fmt: skip
    app = _application(
        title="merkit",
        version=__version__,
        description=f"Emotion recognition in conversations with the `{info['model']}` model "
        f"({', '.join(info['modalities'])}; classes: {', '.join(info['labels'])}).",
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(LocalOnly)

    def run(conversations: list[ConversationInput]) -> PredictionResult:
        try:
            with waiting.turn() as (predictor, deadline):
                return predictor.predict(conversations, deadline=deadline)
        except TimeLimitExceeded:  # it ran the whole limit by itself (see _Queue)
            raise HTTPException(
                422, f"the request took longer than the limit of {limits.request_seconds:g} s (request_seconds); "
                "send fewer or shorter utterances or media"
            ) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("merkit.serve").joinpath("page.html").read_text("utf-8"))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": info["model"]}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return {**info, "limits": limits.model_dump()}

    @app.post("/predict", response_model=PredictionResult, openapi_extra=_PREDICT_BODY, responses=_ERRORS)
    async def predict(request: Request) -> PredictionResult:
        """Per-utterance emotions, probabilities, uncertainty and the modalities used, for a JSON conversation or an upload."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            conversations = _conversations(_parse_json(await request.body(), "the request body"), limits)
            return await run_in_threadpool(run, _with_uploads(conversations, {}, limits))
        if kind == "multipart/form-data":
            return await _predict_upload(request)
        raise HTTPException(
            415, "send application/json (a conversation) or multipart/form-data (a 'conversation' field and the media files)"
        )

    async def _predict_upload(request: Request) -> PredictionResult:
        form = await request.form(max_files=2 * limits.max_utterances, max_fields=10, max_part_size=limits.max_body_bytes)
        try:
            field = form.get("conversation")
            if field is None or isinstance(field, UploadFile):
                raise HTTPException(422, "the form needs a 'conversation' field holding the conversation as JSON")
            conversations = _conversations(_parse_json(field, "the 'conversation' field"), limits)
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            with tempfile.TemporaryDirectory(prefix="merkit-upload-") as folder:
                files: dict[str, Path] = {}
                for upload in uploads:
                    name = Path(upload.filename or "").name
                    if name in ("", ".", ".."):
                        raise HTTPException(422, "an uploaded file has no name; utterances refer to files by name")
                    if name in files:
                        raise HTTPException(422, f"two uploaded files are named {name!r}")
                    # Saved under a short name of our own: the client's name is only the key utterances use.
                    files[name] = _save(upload, Path(folder) / f"upload{len(files)}{Path(name).suffix[:16]}")
                return await run_in_threadpool(run, _with_uploads(conversations, files, limits))
        finally:
            await form.close()

    @app.post("/predict/recording", response_model=FusedTimeline | Timeline, openapi_extra=_RECORDING_BODY, responses=_ERRORS)
    async def predict_recording(request: Request) -> Timeline:
        """The emotion timeline of an uploaded recording: speech segments, transcripts, speakers (RTTM), emotions."""
        if not can_transcribe:
            raise HTTPException(501, f"this server cannot transcribe recordings: faster-whisper is not installed ({EXTRA})")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise HTTPException(415, "send multipart/form-data with a 'recording' file (and optionally 'speakers' (RTTM, auto or none), 'num_speakers' and 'language')")
        form = await request.form(max_files=2, max_fields=5, max_part_size=limits.max_body_bytes)
        try:
            upload, rttm, language, count = form.get("recording"), form.get("speakers"), form.get("language"), form.get("num_speakers")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "the form needs a 'recording' file (audio or video)")
            if rttm is not None and not isinstance(rttm, UploadFile) and rttm not in ("auto", "none"):
                raise HTTPException(422, "'speakers' must be an uploaded RTTM file, auto or none")
            if count is not None and (not isinstance(count, str) or not count.strip().isdigit() or not 1 <= int(count) <= 32):
                raise HTTPException(422, "'num_speakers' must be a whole number from 1 to 32")
            diarization = DiarizationSettings(num_speakers=int(count) if count else None)
            if language is not None and (not isinstance(language, str) or not language.strip().isalpha() or len(language.strip()) > 8):
                raise HTTPException(422, "'language' must be a language code such as en")
            name = Path(upload.filename or "").name or "recording"
            settings = recording.model_copy(update={"language": language.strip().lower()}) if language else recording
            with tempfile.TemporaryDirectory(prefix="merkit-upload-") as folder:
                saved = _save(upload, Path(folder) / f"recording{Path(name).suffix[:16]}")
                seconds = media_duration(saved)
                if seconds is not None and seconds > limits.max_recording_seconds:
                    raise HTTPException(
                        422, f"{name} lasts {seconds:.1f} s, longer than the limit of {limits.max_recording_seconds:g} s (max_recording_seconds)"
                    )
                speakers, renames = rttm if isinstance(rttm, str) else "auto" if can_diarize() else "none", {str(saved): name}
                if isinstance(rttm, UploadFile):
                    speakers = _save(rttm, Path(folder) / "speakers.rttm")
                    renames[str(speakers)] = Path(rttm.filename or "").name or "speakers.rttm"
                timeline = await run_in_threadpool(run_recording, saved, settings, speakers, diarization, renames)
                said = {"speakers": f"RTTM {renames[str(speakers)]}"} if isinstance(speakers, Path) else {}
                return timeline.model_copy(update={"recording": name, **said})
        finally:
            await form.close()

    def run_recording(path: Path, settings: RecordingSettings, speakers: str | Path, diarization: DiarizationSettings,
                      renames: dict[str, str]) -> Timeline:  # fmt: skip
        try:
            with waiting.turn() as (predictor, deadline):
                if fused is None:
                    return recording_timeline(predictor, path, settings, speakers=speakers, diarization=diarization, cache=False, deadline=deadline)
                with fused_lock:
                    return fused.predict_recording(path, settings, speakers=speakers, diarization=diarization, cache=False, deadline=deadline)
        except TimeLimitExceeded:  # it ran the whole limit by itself (see _Queue)
            raise HTTPException(
                422, f"the recording took longer than the limit of {limits.request_seconds:g} s (request_seconds); send a shorter one"
            ) from None
        except MerkitError as exc:  # said with the client's file name, not the server's temporary path
            named = MerkitError(exc.message, path=renames.get(exc.path or ""), place=exc.place)
            raise HTTPException(422, str(named)) from None

    if can_transcribe:
        add_live_route(app, waiting.turn, info, recording, live or LiveLimits())  # WebSocket /live: merkit.serve.live

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)  # a 405 keeps its Allow header

    @app.exception_handler(_BodyTooLarge)
    async def body_too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:
        return _error(413, _too_large_message(limits.max_body_bytes))

    @app.exception_handler(MerkitError)
    async def input_error(request: Request, exc: MerkitError) -> JSONResponse:
        return _error(422, _public_message(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs its traceback.
        return _error(500, "internal error (logged on the server)")

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request models the /predict body refers to (it is read by hand, not by FastAPI)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            dialogues = DialoguesInput.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(dialogues.pop("$defs"))  # ConversationInput and UtteranceInput
            components["DialoguesInput"] = dialogues
            components["PredictRequest"] = {
                "description": "one conversation, several ('dialogues', or a list of conversations), or a flat list of "
                "turns that their dialogue_id groups (answers keep the list's order)",
                "oneOf": [
                    {"$ref": "#/components/schemas/ConversationInput"},
                    {"$ref": "#/components/schemas/DialoguesInput"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ConversationInput"}},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/UtteranceInput"}},
                ],
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
