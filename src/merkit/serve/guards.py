"""What a request may take, and the server's gatekeeping: :class:`ServeLimits`, the body-size and
Content-Security-Policy middlewares, the request queue (503 + ``Retry-After`` when the server is busy) and the
offline API docs."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from merkit.deadlines import TimeLimitExceeded
from merkit.inference import Predictor


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


class BodyTooLarge(Exception):
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
                return await error_response(400, "the Content-Length header is not a number")(scope, receive, send)
            if too_large:
                return await error_response(413, too_large_message(self.max_bytes))(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
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


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def too_large_message(max_bytes: int) -> str:
    return f"the request is larger than the limit of {max_bytes / 1_000_000:g} MB (max_upload_mb)"


class RequestQueue:
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


def application(**options: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc pages load their scripts from the installed ``fastapi-offline``
    package, not from a CDN (the server is often offline); without that package they are off (the schema
    is still at /openapi.json)."""
    try:
        from fastapi_offline import FastAPIOffline
    except ModuleNotFoundError:
        return FastAPI(docs_url=None, redoc_url=None, **options)
    return FastAPIOffline(**options)
