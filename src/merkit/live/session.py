"""A live conversation: 16 kHz mono audio in as it arrives, the emotion of each turn out as the turn ends (issue #36).

The stages are the recording pipeline's (:mod:`merkit.recording`), run incrementally: Silero voice activity
over the stream (:class:`StreamingVad`: the same model, state carried from window to window, and the same
decisions as :func:`~merkit.recording.speech_spans` makes on the whole file) closes a turn after
``min_pause`` of silence; the turn is transcribed by the same Whisper (:func:`~merkit.recording.transcribe`),
given a speaker (a :class:`SpeakerAssigner`: the nearest speaker embedding of :mod:`merkit.diarization` online,
or one ``unknown`` speaker), and
predicted by the checkpoint's :class:`~merkit.inference.Predictor` with the earlier turns as its context
(the whole conversation so far, or the last ``context_turns``). Each turn's features are computed once:
later turns reuse them (:class:`_Remembered`).

Events (:class:`TurnEvent`, :class:`RevisionEvent`): a turn when it ends, with its latency from the moment
its end of speech was heard; a revision when a later turn changes the label (a model that reads the whole
dialogue, such as the BiGRU, re-predicts earlier turns) or the speaker of an earlier turn. After the last
turn, with the whole conversation as context, the labels are those of the offline timeline of the same
audio (:func:`~merkit.recording.predict_recording`), except where the two cut the speech differently
(the offline pipeline decodes in ``chunk``-second pieces and cuts each again).

[R] merkit's choices (fields of :class:`LiveSettings`, beside :class:`~merkit.recording.RecordingSettings`'
VAD, padding, segment and Whisper settings): ``context_turns`` None (the whole conversation); ``early_asr``
0.2 s: after that much silence the turn is transcribed and featurised in a worker thread while the rest of
``min_pause`` is waited for, so the wait hides most of Whisper's cost (the work is dropped if speech resumes).

>>> import merkit
>>> from merkit.live import LiveSession
>>> with merkit.load("runs/mine/seed0/best") as predictor, LiveSession(predictor) as session:  # doctest: +SKIP
...     for chunk in chunks_from_a_microphone():
...         for event in session.feed(chunk):
...             print(event.model_dump_json())
...     events = session.stop()
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from merkit.errors import MerkitError
from merkit.features.registry import WorkItem
from merkit.recording import (
    SAMPLE_RATE,
    UNKNOWN_SPEAKER,
    RecordingSettings,
    Timeline,
    TimelineSegment,
    _faster_whisper,
    load_asr,
    speaker_summary,
    transcribe,
)

if TYPE_CHECKING:
    from merkit.inference import Predictor

WINDOW = 512  # samples per Silero window at 16 kHz
CONTEXT = 64  # samples of the previous window Silero v6 reads beside each window
SAMPLE_TYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}


class LiveSettings(RecordingSettings):
    """How a live stream is cut, transcribed and given context ([R]: merkit's defaults; the cutting and
    transcription fields are :class:`~merkit.recording.RecordingSettings`', so a live turn is cut as the
    offline timeline cuts it; ``chunk`` is the offline pipeline's and unused here)."""

    context_turns: int | None = Field(
        None, ge=1, description="turns the model reads for each new turn, the new one included (None: the whole conversation)"
    )
    early_asr: float | None = Field(
        0.2, ge=0, description="seconds of silence after which the turn in progress is transcribed and featurised ahead, "
        "while the pause may still turn out shorter than min_pause (the work is dropped if it does); None: only once closed",
    )


# ------------------------------------------------------------------ input
def decode_frame(data: bytes, sample_type: str) -> np.ndarray:
    """A binary frame of little-endian mono 16 kHz PCM (``int16`` or ``float32``) as float32 samples in [-1, 1].

    >>> decode_frame(b"\\x00\\x40\\x00\\xc0", "int16").tolist()
    [0.5, -0.5]
    """
    dtype = SAMPLE_TYPES.get(sample_type)
    if dtype is None:
        raise MerkitError(f"unknown sample type {sample_type!r} (int16 or float32)")
    if len(data) % dtype.itemsize:
        raise MerkitError(f"a frame of {len(data)} bytes is not whole {sample_type} samples ({dtype.itemsize} bytes each)")
    samples = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "i":
        return samples.astype(np.float32) / 32768.0
    if not np.isfinite(samples).all():
        raise MerkitError("the frame holds a NaN or infinite sample")
    if samples.size and float(np.abs(samples).max()) > 1.0 + 1e-6:
        raise MerkitError("float32 samples must lie in [-1, 1]")
    return samples.astype(np.float32)


# ------------------------------------------------------------------ voice activity
@dataclass
class Speech:
    """A closed turn's span: samples from the stream's start; ``heard`` when its end of speech arrived."""

    start: int
    end: int
    speech_end: int  # where the voice stopped (before the padding)
    audio: np.ndarray = field(repr=False)
    heard: float = 0.0

    @property
    def seconds(self) -> tuple[float, float]:
        return round(self.start / SAMPLE_RATE, 3), round(self.end / SAMPLE_RATE, 3)


class StreamingVad:
    """Silero VAD (faster-whisper's bundled v6 model) fed window by window, with the decisions of
    faster-whisper's ``get_speech_timestamps`` (threshold, silence threshold 0.15 below it, ``min_pause``,
    ``max_segment`` split at the last pause, ``padding`` shared halfway across a short gap), made as soon as
    the stream allows. Silero carries its state across windows, so the probabilities equal the whole-file ones.
    Keeps only the audio of the turn in progress."""

    def __init__(self, settings: RecordingSettings):
        self.model = _faster_whisper().vad.get_vad_model()
        self.threshold = settings.vad_threshold
        self.negative = max(settings.vad_threshold - 0.15, 0.01)
        self.pad = int(SAMPLE_RATE * settings.padding)
        self.min_silence = SAMPLE_RATE * settings.min_pause
        self.max_speech = SAMPLE_RATE * settings.max_segment - WINDOW - 2 * self.pad
        self.min_segment = settings.min_segment
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT), np.float32)
        self.partial = np.zeros(0, np.float32)  # samples short of a whole window
        self.windows = 0
        self.triggered = False
        self.current = 0  # start of the speech in progress
        self.temp_end = self.prev_end = self.next_start = 0
        self.waiting: list[int] | None = None  # [padded start, speech end] of a closed speech whose padded end is open
        self.next_padded_start: int | None = None
        self.buffer = np.zeros(0, np.float32)  # the stream from sample ``kept``
        self.kept = 0
        self.received = 0
        self.arrivals: deque[tuple[int, float]] = deque()  # (samples received by then, time)

    # ---------------------------------------------------------------- the stream
    def push(self, samples: np.ndarray, arrived: float) -> list[Speech]:
        """Add samples (float32, 16 kHz mono) that arrived at ``arrived``; the turns that closed."""
        self.received += samples.size
        self.arrivals.append((self.received, arrived))
        self.buffer = np.concatenate([self.buffer, samples])
        joined = np.concatenate([self.partial, samples])
        whole = joined.size // WINDOW * WINDOW
        self.partial = joined[whole:]
        return self._windows(joined[:whole])

    def finish(self) -> list[Speech]:
        """Close the stream: the remainder padded to a window as faster-whisper pads a file, the open turn closed."""
        length = self.received
        closed = self._windows(np.pad(self.partial, (0, WINDOW - self.partial.size)))
        self.partial = np.zeros(0, np.float32)
        if self.triggered:
            closed += self._close(self.current, length)
            self.triggered = False
        if self.waiting is not None:
            closed += self._final(self.waiting[0], min(length, self.waiting[1] + self.pad), self.waiting[1])
            self.waiting = None
        return closed

    def _windows(self, audio: np.ndarray) -> list[Speech]:
        if audio.size == 0:
            return []
        batch = audio.reshape(-1, WINDOW)
        contexts = np.concatenate([self.context, batch[:-1, -CONTEXT:]])
        self.context = batch[-1:, -CONTEXT:].copy()
        probabilities, self.h, self.c = self.model.session.run(
            None, {"input": np.concatenate([contexts, batch], axis=1), "h": self.h, "c": self.c}
        )
        closed: list[Speech] = []
        for probability in np.asarray(probabilities).reshape(-1):
            closed += self._step(float(probability), WINDOW * self.windows)
            self.windows += 1
            closed += self._settle(WINDOW * self.windows)
        self._forget()
        return closed

    def _step(self, p: float, at: int) -> list[Speech]:
        """One window of faster-whisper's ``get_speech_timestamps`` loop (its variable names)."""
        closed: list[Speech] = []
        if p >= self.threshold and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if p >= self.threshold and not self.triggered:
            self.triggered, self.current = True, at
            return closed
        if self.triggered and at - self.current > self.max_speech:
            if self.prev_end:
                closed += self._close(self.current, self.prev_end)
                if self.next_start < self.prev_end:
                    self.triggered = False
                else:
                    self.current = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                closed += self._close(self.current, at)
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return closed
        if p < self.negative and self.triggered:
            if not self.temp_end:
                self.temp_end = at
            if at - self.temp_end > SAMPLE_RATE * 98 / 1000:
                self.prev_end = self.temp_end
            if at - self.temp_end >= self.min_silence:
                closed += self._close(self.current, self.temp_end)
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
        return closed

    def _close(self, start: int, end: int) -> list[Speech]:
        """A speech stretch ended: the one before it gets its padded end, this one waits for its own."""
        closed = self._share_gap(start) if self.waiting is not None else []
        padded = self.next_padded_start if self.next_padded_start is not None else max(0, start - self.pad)
        self.next_padded_start = None
        self.waiting = [padded, end]
        return closed

    def _share_gap(self, start: int) -> list[Speech]:
        """The waiting speech's end and the next one's start, padded across the gap between them."""
        before, end = self.waiting
        gap = start - end
        if gap < 2 * self.pad:
            self.next_padded_start = max(0, start - gap // 2)
            closed = self._final(before, end + gap // 2, end)
        else:
            self.next_padded_start = max(0, start - self.pad)
            closed = self._final(before, end + self.pad, end)
        self.waiting = None
        return closed

    def _settle(self, now: int) -> list[Speech]:
        """Give the waiting speech its end as soon as the next speech's start (or its absence) decides it."""
        if self.waiting is None:
            return []
        if self.triggered and self.current >= self.waiting[1]:
            return self._share_gap(self.current)
        if now - self.waiting[1] >= 2 * self.pad:
            before, end = self.waiting
            self.waiting = None
            self.next_padded_start = None
            return self._final(before, end + self.pad, end)
        return []

    def _final(self, start: int, end: int, speech_end: int) -> list[Speech]:
        """A turn with its final span, unless shorter than ``min_segment`` (dropped, as offline)."""
        end = min(end, self.received)
        if round(end / SAMPLE_RATE, 3) - round(start / SAMPLE_RATE, 3) < self.min_segment:
            return []
        audio = self.buffer[max(0, start - self.kept) : end - self.kept].copy()
        index = bisect.bisect_left([n for n, _ in self.arrivals], max(speech_end, 1))
        heard = self.arrivals[min(index, len(self.arrivals) - 1)][1]
        return [Speech(start, end, speech_end, audio, heard)]

    def tentative(self, silence: float) -> Speech | None:
        """The turn in progress as it will close if its current pause, already ``silence`` seconds long, lasts
        ``min_pause`` (None while there is no such pause, or when a pause could not close it so)."""
        if not (self.triggered and self.temp_end) or self.min_silence < 2 * self.pad:
            return None
        if WINDOW * self.windows - self.temp_end < max(silence * SAMPLE_RATE, self.pad) or self.received < self.temp_end + self.pad:
            return None
        start = self.next_padded_start if self.next_padded_start is not None else max(0, self.current - self.pad)
        end = self.temp_end + self.pad
        if round(end / SAMPLE_RATE, 3) - round(start / SAMPLE_RATE, 3) < self.min_segment:
            return None
        return Speech(start, end, self.temp_end, self.buffer[max(0, start - self.kept) : end - self.kept].copy())

    def _forget(self) -> None:
        """Drop audio and arrival times no open or future turn can need."""
        keep = WINDOW * self.windows - self.pad - WINDOW
        if self.triggered:
            keep = min(keep, self.current - self.pad)
        if self.waiting is not None:
            keep = min(keep, self.waiting[0])
        if self.next_padded_start is not None:
            keep = min(keep, self.next_padded_start)
        keep = max(keep, self.kept)
        if keep > self.kept:
            self.buffer = self.buffer[keep - self.kept :]
            self.kept = keep
        while len(self.arrivals) > 1 and self.arrivals[0][0] < keep:
            self.arrivals.popleft()


# ------------------------------------------------------------------ speakers
class SpeakerAssigner(Protocol):
    """Gives each new turn a speaker; may revise earlier turns' (it returns every turn's speaker so far).
    :meth:`embed` may run ahead on a turn that is not yet closed; :meth:`assign` runs once the turn is."""

    source: str  # what the timeline's ``speakers`` says

    def embed(self, audio: np.ndarray) -> Any:
        """What :meth:`assign` needs of a turn's audio (16 kHz mono), without changing the assigner."""

    def assign(self, embedding: Any) -> list[str]:
        """The speakers of all turns so far, the new turn (its :meth:`embed`) last."""


class OneSpeaker:
    """Every turn is the one ``unknown`` speaker (as the offline timeline without an RTTM file)."""

    source = UNKNOWN_SPEAKER

    def __init__(self) -> None:
        self.turns = 0

    def embed(self, audio: np.ndarray) -> None:
        return None

    def assign(self, embedding: None) -> list[str]:
        self.turns += 1
        return [UNKNOWN_SPEAKER] * self.turns


class NearestSpeaker:
    """Online speakers from voice embeddings: a turn joins the speaker whose mean embedding is nearest (cosine
    distance) if nearer than ``threshold``, else starts a new speaker ``S1``, ``S2``, ...; after each turn every
    earlier turn is re-assigned to its nearest mean, which may revise it. ``embed``: 16 kHz mono → a vector."""

    source = "voice embeddings (online)"

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], threshold: float):
        self.encoder = embed
        self.threshold = threshold
        self.vectors: list[np.ndarray] = []
        self.names: list[str] = []
        self.created = 0

    def _means(self) -> tuple[list[str], np.ndarray]:
        speakers = sorted(set(self.names), key=self.names.index)
        means = np.stack([np.mean([v for v, n in zip(self.vectors, self.names) if n == s], axis=0) for s in speakers])
        return speakers, means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        vector = np.asarray(self.encoder(audio), dtype=np.float64).reshape(-1)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def assign(self, vector: np.ndarray) -> list[str]:
        name = None
        if self.names:
            speakers, means = self._means()
            distances = 1.0 - means @ vector
            if distances.min() < self.threshold:
                name = speakers[int(distances.argmin())]
        if name is None:
            self.created += 1
            name = f"S{self.created}"
        self.vectors.append(vector)
        self.names.append(name)
        speakers, means = self._means()
        self.names = [speakers[int((1.0 - means @ v).argmin())] for v in self.vectors]
        return list(self.names)


def voice_speakers() -> tuple[SpeakerAssigner, str | None]:
    """:class:`NearestSpeaker` over :func:`merkit.diarization.embed` (CAM++) at its ``THRESHOLD``, or, when the
    diarization extra is missing, :class:`OneSpeaker` and why."""
    from merkit import diarization

    try:
        diarization.speaker_encoder("campplus")
    except (MerkitError, ImportError, OSError) as exc:
        return OneSpeaker(), f"one speaker: no speaker embeddings ({exc}); {diarization.EXTRA}"
    return NearestSpeaker(diarization.embed, diarization.THRESHOLD), None


# ------------------------------------------------------------------ events
class TurnEvent(BaseModel):
    """A turn that ended: what was said, by whom, and its emotion with the earlier turns as context."""

    type: Literal["turn"] = "turn"
    turn: int = Field(description="the turn's number, from 0")
    start: float = Field(description="seconds from the stream's start")
    end: float
    speaker: str
    text: str
    label: str | list[str]
    probabilities: dict[str, float]
    uncertainty: float | None = None
    latency: float = Field(description="seconds from when the turn's end of speech arrived to this event")
    stages: dict[str, float] = Field(description="seconds of this turn's work: asr, speaker, features, model")
    early: bool = Field(False, description="whether the transcript and features were made during the pause (early_asr)")


class RevisionEvent(BaseModel):
    """An earlier turn's label or speaker changed (a later turn gave the model more context, or moved a voice)."""

    type: Literal["revision"] = "revision"
    turn: int
    field: Literal["label", "speaker"]
    previous: str | list[str]
    speaker: str
    label: str | list[str]
    probabilities: dict[str, float]
    uncertainty: float | None = None


LiveEvent = TurnEvent | RevisionEvent


class _Remembered:
    """A predictor's extractor that encodes each distinct input (``WorkItem.content``) once per session, so the
    earlier turns of the context cost nothing; rows of inputs the last call did not use are forgotten.
    Its owner closes the extractor itself."""

    def __init__(self, inner: Any, rows: dict[bytes, Any], timer: dict[str, float], forget: bool = True):
        self.inner, self.rows, self.timer, self.forget = inner, rows, timer, forget

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def plan(self, corpus: Any) -> list[WorkItem | None]:
        items = self.inner.plan(corpus)
        if self.forget:
            keys = {hashlib.sha256(item.content).digest() for item in items if item is not None}
            for key in set(self.rows) - keys:
                del self.rows[key]
        return [None if item is None else WorkItem(item.content, item.cost, (hashlib.sha256(item.content).digest(), item.payload))
                for item in items]  # fmt: skip

    def encode(self, payloads: Sequence[tuple[bytes, Any]]) -> list[Any]:
        todo = [(key, payload) for key, payload in payloads if key not in self.rows]
        if todo:
            began = time.perf_counter()
            for (key, _), row in zip(todo, self.inner.encode([payload for _, payload in todo]), strict=True):
                self.rows[key] = row
            self.timer["features"] = self.timer.get("features", 0.0) + time.perf_counter() - began
        return [self.rows[key] for key, _ in payloads]

    def close(self) -> None:
        pass


@dataclass
class _Turn:
    start: float
    end: float
    speaker: str
    text: str
    audio: Path
    label: str | list[str] = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    uncertainty: float | None = None


@dataclass
class _Prepared:
    """A turn's work that needs no other turn: transcript, voice embedding, audio file, features (remembered)."""

    text: str
    embedding: Any
    path: Path
    stages: dict[str, float]


# ------------------------------------------------------------------ the session
class LiveSession:
    """One live conversation: :meth:`feed` it audio as it arrives and get the events of the turns it closed.

    ``predictor``: the model, a :class:`~merkit.inference.Predictor`, or a callable giving a context manager that
    lends one (a server's pool; a predictor is used by one thread at a time); ``asr``: a loaded ``WhisperModel``
    to share (default: one of ``settings.asr``, loaded on the first turn); ``speakers``: a
    :class:`SpeakerAssigner` (default :func:`voice_speakers`); ``clock``: the time source of latencies. Each
    turn's audio is kept in a temporary folder (the extractors read files) until :meth:`close`, which also
    waits for the worker thread of ``early_asr``. :meth:`listen` and :meth:`recognise` may run in two threads,
    each serialised.
    """

    def __init__(
        self, predictor: Predictor | Callable[[], contextlib.AbstractContextManager[Predictor]], settings: LiveSettings | None = None,
        *, asr: Any = None, speakers: SpeakerAssigner | None = None, clock: Callable[[], float] = time.monotonic,
    ):  # fmt: skip
        self.lend = predictor if callable(predictor) and not hasattr(predictor, "predict") else (lambda: contextlib.nullcontext(predictor))
        self.settings = settings or LiveSettings()
        self.asr = asr
        self.notes: list[str] = []
        if speakers is None:
            speakers, why = voice_speakers()
            self.notes += [why] if why else []
        self.speakers = speakers
        self.clock = clock
        self.vad = StreamingVad(self.settings)
        self.turns: list[_Turn] = []
        self.rows: dict[str, dict[bytes, Any]] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="merkit-live-"))
        self.files = 0
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merkit-live") if self.settings.early_asr is not None else None
        self.ahead: dict[tuple[int, int], Future[_Prepared]] = {}  # early work by span; listen adds, recognise takes
        self.ahead_lock = threading.Lock()
        self.lock = threading.Lock()  # the ASR model and the remembered features: one user at a time

    @property
    def seconds(self) -> float:
        """Seconds of audio received."""
        return self.vad.received / SAMPLE_RATE

    # ---------------------------------------------------------------- stages
    def listen(self, samples: np.ndarray, arrived: float | None = None) -> list[Speech]:
        """Voice activity over new samples (float32, 16 kHz mono, arrived at ``arrived``, default now): the turns that
        closed. With ``early_asr``, a turn whose pause has lasted that long starts being worked on in the background."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        closed = self.vad.push(samples, self.clock() if arrived is None else arrived)
        if self.worker is not None and not closed:
            early = self.vad.tentative(self.settings.early_asr)
            if early is not None:
                with self.ahead_lock:
                    if (early.start, early.end) not in self.ahead:
                        # the same turn cut earlier (its speaker went on) is superseded
                        self._discard([span for span in self.ahead if span[0] == early.start])
                        self.ahead[(early.start, early.end)] = self.worker.submit(self._prepare, early)
        return closed

    def finish(self) -> list[Speech]:
        """The stream ended: the turn in progress, if any, closed."""
        return self.vad.finish()

    def _prepare(self, speech: Speech) -> _Prepared:
        """Transcribe, embed and featurise one turn (its features are remembered for :meth:`recognise`)."""
        stages: dict[str, float] = {}
        with self.lend() as predictor, self.lock:
            began = time.perf_counter()
            if self.asr is None:
                self.asr = load_asr(self.settings)
            text = transcribe(self.asr, speech.audio, [(0.0, speech.audio.size / SAMPLE_RATE)], self.settings)[0].text
            stages["asr"] = time.perf_counter() - began
            began = time.perf_counter()
            embedding = self.speakers.embed(speech.audio)
            stages["speaker"] = time.perf_counter() - began
            import soundfile

            path = self.folder / f"turn{self.files}.wav"
            self.files += 1
            soundfile.write(path, speech.audio, SAMPLE_RATE, subtype="FLOAT")
            timer: dict[str, float] = {}
            self._view(predictor, timer, forget=False).predict([{"text": text, "audio": str(path)}])
            stages["features"] = timer.get("features", 0.0)
        return _Prepared(text, embedding, path, stages)

    def _discard(self, spans: Sequence[tuple[int, int]]) -> None:
        """Forget early work (holding ``ahead_lock``): cancelled if it has not started, else its audio file is deleted once done."""
        for span in spans:
            future = self.ahead.pop(span)
            if not future.cancel():
                future.add_done_callback(lambda done: done.exception() is None and done.result().path.unlink(missing_ok=True))

    def _take_ahead(self, span: tuple[int, int]) -> Future[_Prepared] | None:
        """The early work on exactly this span, if any; early work on earlier turns is discarded."""
        with self.ahead_lock:
            future = self.ahead.pop(span, None)
            self._discard([other for other in self.ahead if other[0] < span[1]])
        return future

    def _view(self, predictor: Predictor, timer: dict[str, float], forget: bool) -> Predictor:
        """The predictor with this session's remembered features."""
        from merkit.inference import Predictor

        remembered = {m: _Remembered(e, self.rows.setdefault(m, {}), timer, forget) for m, e in predictor.extractors.items()}
        return Predictor(predictor.checkpoint, device=predictor.device, batch_size=predictor.batch_size, extractors=remembered)

    def recognise(self, speech: Speech) -> list[LiveEvent]:
        """A closed turn transcribed, given a speaker and predicted with its context: its event and any revisions."""
        future = self._take_ahead((speech.start, speech.end))
        early = future is not None
        prepared = future.result() if future is not None else self._prepare(speech)
        stages = dict(prepared.stages)
        with self.lend() as predictor, self.lock:
            speakers = self.speakers.assign(prepared.embedding)
            start, end = speech.seconds
            self.turns.append(_Turn(start, end, speakers[-1], prepared.text, prepared.path))
            events: list[LiveEvent] = []
            for index, (turn, name) in enumerate(zip(self.turns[:-1], speakers, strict=False)):
                if name != turn.speaker:
                    previous, turn.speaker = turn.speaker, name
                    events.append(self._revision(index, "speaker", previous))
            events += self._predict(predictor, stages)
        turn = self.turns[-1]
        events.append(TurnEvent(
            turn=len(self.turns) - 1, start=start, end=end, speaker=turn.speaker, text=turn.text, label=turn.label,
            probabilities=turn.probabilities, uncertainty=turn.uncertainty, latency=round(self.clock() - speech.heard, 4),
            stages={name: round(value, 4) for name, value in stages.items()}, early=early,
        ))  # fmt: skip
        return events

    def _predict(self, predictor: Predictor, stages: dict[str, float]) -> list[LiveEvent]:
        """The model over the context window; the new turn's prediction stored, earlier turns' changes as revisions."""
        first = 0 if self.settings.context_turns is None else max(0, len(self.turns) - self.settings.context_turns)
        window = self.turns[first:]
        timer: dict[str, float] = {}
        began = time.perf_counter()
        result = self._view(predictor, timer, forget=True).predict({"dialogue_id": "live", "utterances": [
            {"utterance_id": str(first + i), "speaker": t.speaker, "text": t.text, "audio": str(t.audio)} for i, t in enumerate(window)
        ]})  # fmt: skip
        stages["features"] += timer.get("features", 0.0)
        stages["model"] = time.perf_counter() - began - timer.get("features", 0.0)
        events: list[LiveEvent] = []
        for offset, (turn, row) in enumerate(zip(window, result.utterances, strict=True)):
            changed = turn.label != row.label and turn is not window[-1]
            previous = turn.label
            turn.label, turn.probabilities, turn.uncertainty = row.label, row.probabilities, row.uncertainty
            if changed:
                events.append(self._revision(first + offset, "label", previous))
        return events

    def _revision(self, index: int, what: str, previous: Any) -> RevisionEvent:
        turn = self.turns[index]
        return RevisionEvent(turn=index, field=what, previous=previous, speaker=turn.speaker, label=turn.label,
                             probabilities=turn.probabilities, uncertainty=turn.uncertainty)  # fmt: skip

    # ---------------------------------------------------------------- together
    def feed(self, samples: np.ndarray, arrived: float | None = None) -> list[LiveEvent]:
        """:meth:`listen` then :meth:`recognise` each closed turn."""
        return [event for speech in self.listen(samples, arrived) for event in self.recognise(speech)]

    def stop(self) -> list[LiveEvent]:
        """:meth:`finish` then :meth:`recognise` the last turn."""
        return [event for speech in self.finish() for event in self.recognise(speech)]

    def timeline(self, model: str, labels: Sequence[str]) -> Timeline:
        """The conversation so far with each turn's latest label and a summary per speaker, as the offline
        :class:`~merkit.recording.Timeline`."""
        segments = [TimelineSegment(start=t.start, end=t.end, speaker=t.speaker, text=t.text, label=t.label,
                                    probabilities=t.probabilities, uncertainty=t.uncertainty) for t in self.turns]  # fmt: skip
        return Timeline(recording="live", model=model, labels=list(labels), speakers=self.speakers.source, segments=segments,
                        summary=speaker_summary(segments, labels), notes=list(self.notes))  # fmt: skip

    def close(self) -> None:
        """Wait for the early work still running (it cannot be interrupted), then delete the turns' audio."""
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
