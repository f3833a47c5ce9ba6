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
when a request's time went waiting (see :class:`RequestQueue`), and 500 ``internal error`` for a bug, whose
traceback goes to the server log, never to the client. A field is named by its place in the
conversation (``utterances.1.start``) in either content type. The limits are listed at ``GET /model``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from merkit._version import __version__
from merkit.deadlines import TimeLimitExceeded
from merkit.errors import MerkitError
from merkit.features.media import media_duration
from merkit.fusion import FusedPredictor, FusedTimeline
from merkit.inference import (
    ConversationInput,
    DialoguesInput,
    PredictionResult,
    Predictor,
)
from merkit.diarization import DiarizationSettings
from merkit.diarization import available as can_diarize
from merkit.recording import EXTRA, RecordingSettings, Timeline
from merkit.recording import predict_recording as recording_timeline  # the route below is predict_recording
from merkit.serve.guards import BodyLimit, BodyTooLarge, LocalOnly, RequestQueue, ServeLimits, application, error_response, too_large_message
from merkit.serve.live import LiveLimits, add_live_route
from merkit.serve.requests import conversations_of, parse_json, public_message, save_upload, with_uploads


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
    waiting = RequestQueue(limits, predictors)
    fused_lock = threading.Lock()
    described = predictors[0].describe()
    info = {**described, "replicas": len(predictors),
            "recording": {"asr": recording.asr, "model": fused.name if fused else described["model"]} if can_transcribe else None}  # fmt: skip
    app = application(
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
        except TimeLimitExceeded:  # it ran the whole limit by itself (see RequestQueue)
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
            conversations = conversations_of(parse_json(await request.body(), "the request body"), limits)
            return await run_in_threadpool(run, with_uploads(conversations, {}, limits))
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
            conversations = conversations_of(parse_json(field, "the 'conversation' field"), limits)
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
                    files[name] = save_upload(upload, Path(folder) / f"upload{len(files)}{Path(name).suffix[:16]}")
                return await run_in_threadpool(run, with_uploads(conversations, files, limits))
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
                saved = save_upload(upload, Path(folder) / f"recording{Path(name).suffix[:16]}")
                seconds = media_duration(saved)
                if seconds is not None and seconds > limits.max_recording_seconds:
                    raise HTTPException(
                        422, f"{name} lasts {seconds:.1f} s, longer than the limit of {limits.max_recording_seconds:g} s (max_recording_seconds)"
                    )
                speakers, renames = rttm if isinstance(rttm, str) else "auto" if can_diarize() else "none", {str(saved): name}
                if isinstance(rttm, UploadFile):
                    speakers = save_upload(rttm, Path(folder) / "speakers.rttm")
                    renames[str(speakers)] = Path(rttm.filename or "").name or "speakers.rttm"
                timeline = await run_in_threadpool(run_recording, saved, settings, speakers, diarization, renames)
                said = {"speakers": f"RTTM {renames[str(speakers)]}"} if isinstance(speakers, Path) else {}
                notes = [note.replace(saved.name, name) for note in timeline.notes]  # the client's file, not the server's copy
                return timeline.model_copy(update={"recording": name, "notes": notes, **said})
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
        except TimeLimitExceeded:  # it ran the whole limit by itself (see RequestQueue)
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
        return error_response(exc.status_code, str(exc.detail), exc.headers)  # a 405 keeps its Allow header

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, too_large_message(limits.max_body_bytes))

    @app.exception_handler(MerkitError)
    async def input_error(request: Request, exc: MerkitError) -> JSONResponse:
        return error_response(422, public_message(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs its traceback.
        return error_response(500, "internal error (logged on the server)")

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
