"""``WebSocket /live``: a live conversation over one socket (issue #36), a :class:`~merkit.live.LiveSession` per connection.

Protocol: connect to ``/live?sample_type=int16`` (or ``float32``); the server answers ``{"type": "ready", ...}``
with the model, its labels and the limits. Then send binary frames of little-endian mono 16 kHz PCM
(``int16``, or ``float32`` in [-1, 1]), any length up to ``max_frame_bytes``; the server answers JSON text
messages: ``{"type": "turn", ...}`` as each turn ends and ``{"type": "revision", ...}`` when a later turn changes
an earlier turn's label or speaker (:class:`~merkit.live.TurnEvent`, :class:`~merkit.live.RevisionEvent`). Send the
text ``{"type": "stop"}`` to end: the turn in progress is closed and recognised, ``{"type": "end", ...}`` follows
with the whole timeline, and the server closes with 1000.

Every refusal is a close code with a reason: 1003 a text message other than stop, 1007 a frame that is not
whole samples, holds NaN or lies outside [-1, 1], 1008 a wrong ``sample_type``, a session past
``max_session_seconds`` of audio, or no frame for ``idle_seconds``, 1009 a frame over ``max_frame_bytes``, 1013
``max_sessions`` sessions already open or the server too busy for a turn, 1011 a bug (logged, never shown).
A client that leaves mid-turn leaves nothing behind: the turn being recognised finishes, nothing more starts,
and the session's files go.

Turns run through the server's request queue, one predictor at a time, beside the HTTP requests. The page's
Live tab captures the microphone with the AudioWorklet served at ``/live-worklet.js``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from fastapi import FastAPI, Response, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from merkit.errors import MerkitError
from merkit.live import SAMPLE_TYPES, LiveSession, LiveSettings, Speech, decode_frame
from merkit.recording import SAMPLE_RATE, RecordingSettings, TurnSettings, load_asr

log = logging.getLogger("merkit.serve")


# The page's AudioWorklet: the microphone's samples (at the audio context's rate, 44.1 or 48 kHz) averaged down to
# 16 kHz (each output sample the mean of the input samples it spans: a box low-pass against aliasing), as int16
# frames of 0.1 s posted to the page, which sends them over the socket.
WORKLET = """
class MerkitPcm extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 16000;
    this.position = 0; this.sum = 0; this.count = 0;
    this.frame = new Int16Array(1600); this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    for (let i = 0; i < input.length; i++) {
      this.sum += input[i]; this.count += 1; this.position += 1;
      if (this.position >= this.ratio) {
        this.position -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.sum / this.count));
        this.frame[this.filled++] = Math.round(v * 32767);
        this.sum = 0; this.count = 0;
        if (this.filled === this.frame.length) {
          this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
          this.frame = new Int16Array(1600); this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("merkit-pcm", MerkitPcm);
"""


class LiveLimits(BaseModel):
    """What one live connection may do; beyond it the socket closes with a code and a reason naming the limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sessions: int = Field(4, ge=1, description="live connections open at once")
    max_frame_bytes: int = Field(128_000, ge=2, description="bytes of one binary frame (4 s of int16, 2 s of float32)")
    max_session_seconds: float = Field(3600.0, gt=0, description="seconds of audio one connection may send")
    idle_seconds: float = Field(30.0, gt=0, description="seconds without a message after which the connection closes")


class _Closed(Exception):
    """End the connection with this close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]  # a close reason holds at most 123 bytes


def add_live_route(
    app: FastAPI, lend: Callable[[], contextlib.AbstractContextManager[Any]], model: dict[str, Any],
    recording: RecordingSettings, limits: LiveLimits,
) -> None:  # fmt: skip
    """Register ``WebSocket /live`` on ``app``: ``lend`` lends a predictor for one turn (the server's queue),
    ``model`` is what ``GET /model`` says, ``recording`` how speech is cut and which Whisper transcribes it (run with
    :class:`~merkit.live.LiveSettings`' compute type)."""
    own = {"compute_type", "temperature_fallback"}  # Whisper's decoding: live's own (int8, once)
    settings = LiveSettings(**recording.model_dump(include=set(TurnSettings.model_fields) - own))  # cut as recordings are
    opened = threading.BoundedSemaphore(limits.max_sessions)
    shared: dict[str, Any] = {}  # the Whisper model, loaded by the first session and shared
    loading = threading.Lock()

    def asr() -> Any:
        with loading:
            if "asr" not in shared:
                shared["asr"] = load_asr(settings)
            return shared["asr"]

    @app.get("/live-worklet.js", include_in_schema=False)
    def worklet() -> Response:
        return Response(WORKLET, media_type="text/javascript")

    @app.websocket("/live")
    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        if not opened.acquire(blocking=False):
            await websocket.close(1013, f"{limits.max_sessions} live sessions are open (max_sessions); try again later")
            return
        try:
            await _serve(websocket)
        finally:
            opened.release()

    async def _serve(websocket: WebSocket) -> None:
        sample_type = websocket.query_params.get("sample_type", "int16")
        if sample_type not in SAMPLE_TYPES:
            await websocket.close(1008, f"sample_type must be int16 or float32, not {sample_type[:20]!r}")
            return
        try:
            whisper = await run_in_threadpool(asr)
        except MerkitError as exc:
            await websocket.close(1011, f"this server cannot transcribe: {exc.message}")
            return
        session = await run_in_threadpool(LiveSession, _lending(lend), settings, asr=whisper)
        turns: asyncio.Queue[Speech | None] = asyncio.Queue()
        worker = asyncio.create_task(_recognise(websocket, session, turns))
        code, reason = 1000, "stopped"
        try:
            await websocket.send_json({"type": "ready", "sample_rate": SAMPLE_RATE, "sample_type": sample_type, "model": model["model"],
                                       "labels": model["labels"], "speakers": session.speakers.source, "notes": session.notes,
                                       "limits": limits.model_dump()})  # fmt: skip
            while True:
                try:
                    message = await asyncio.wait_for(websocket.receive(), timeout=limits.idle_seconds)
                except asyncio.TimeoutError:
                    raise _Closed(1008, f"no message for {limits.idle_seconds:g} s (idle_seconds)") from None
                if message["type"] == "websocket.disconnect":
                    code = None
                    break
                if message.get("bytes") is not None:
                    data = message["bytes"]
                    if len(data) > limits.max_frame_bytes:
                        raise _Closed(1009, f"a frame of {len(data):,} bytes is over the limit of {limits.max_frame_bytes:,} (max_frame_bytes)")
                    try:
                        samples = decode_frame(data, sample_type)
                    except MerkitError as exc:
                        raise _Closed(1007, exc.message) from None
                    if session.seconds + samples.size / SAMPLE_RATE > limits.max_session_seconds:
                        raise _Closed(1008, f"the session reached its limit of {limits.max_session_seconds:g} s of audio (max_session_seconds)")
                    for speech in await run_in_threadpool(session.listen, samples):
                        turns.put_nowait(speech)
                    if worker.done():
                        break
                    continue
                if _is_stop(message.get("text")):
                    for speech in await run_in_threadpool(session.finish):
                        turns.put_nowait(speech)
                    turns.put_nowait(None)
                    await worker
                    if worker.result() is None:
                        timeline = session.timeline(model["model"], model["labels"])
                        await websocket.send_json({"type": "end", "turns": len(timeline.segments), "timeline": timeline.model_dump(mode="json")})
                    break
                raise _Closed(1003, 'send binary PCM frames, or the text {"type": "stop"}')
        except _Closed as exc:
            code, reason = exc.code, exc.reason
        except WebSocketDisconnect:
            code = None
        except Exception:
            log.exception("the live session failed")
            code, reason = 1011, "internal error (logged on the server)"
        finally:
            with anyio.CancelScope(shield=True):  # also when the server cancels the handler of a client that left
                while not turns.empty():  # nothing new starts; the turn being recognised finishes
                    turns.get_nowait()
                turns.put_nowait(None)
                await asyncio.wait([worker])
                await run_in_threadpool(session.close)
        if worker.result() is not None:
            code, reason = worker.result()
        if code is not None:
            with contextlib.suppress(Exception):
                await websocket.close(code, reason)

    async def _recognise(websocket: WebSocket, session: LiveSession, turns: asyncio.Queue[Speech | None]) -> tuple[int, str] | None:
        """Recognise closed turns in order and send their events; a close code and reason if it had to stop."""
        sending = True
        while (speech := await turns.get()) is not None:
            try:
                events = await run_in_threadpool(session.recognise, speech)
            except HTTPException as exc:  # the server's queue is full or a turn waited too long
                return 1013, f"the server is too busy for this turn ({exc.detail})"
            except Exception:
                log.exception("a live turn failed")
                return 1011, "internal error (logged on the server)"
            for event in events if sending else ():
                try:
                    await websocket.send_text(event.model_dump_json())
                except Exception:  # the client has gone: finish quietly
                    sending = False
        return None


def _is_stop(text: str | None) -> bool:
    if text is None:
        return False
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "stop"


def _lending(lend: Callable[[], contextlib.AbstractContextManager[Any]]) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The server queue's ``turn()`` (a predictor and a deadline) as the session's lender of a predictor."""

    @contextlib.contextmanager
    def lent() -> Iterator[Any]:
        with lend() as (predictor, _deadline):
            yield predictor

    return lent


__all__ = ["LiveLimits", "add_live_route"]
