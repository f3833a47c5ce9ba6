"""A live session: closed turns transcribed, given a speaker and predicted with the conversation so far as context.

:class:`LiveSession` joins the stages (:mod:`merkit.live.stream`'s voice activity, :mod:`merkit.live.speakers`,
the recording pipeline's Whisper and the checkpoint's :class:`~merkit.inference.Predictor`) and speaks in events
(:class:`TurnEvent`, :class:`RevisionEvent`). Each turn's features are computed once; later turns reuse them
(:class:`_Remembered`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_serializer

from merkit.features.registry import WorkItem
from merkit.live.speakers import SpeakerAssigner, voice_speakers
from merkit.live.stream import Speech, StreamingVad
from merkit.recording import SAMPLE_RATE, RecordingSettings, Timeline, TimelineSegment, TurnSettings, load_asr, speaker_summary, transcribe

if TYPE_CHECKING:
    from merkit.inference import Predictor


class LiveSettings(TurnSettings):
    """How a live stream is cut, transcribed and given context ([R]: merkit's defaults; the cutting and
    transcription fields are :class:`~merkit.recording.TurnSettings`', a recording's too, so a live turn is cut as
    the offline timeline cuts it). Two defaults differ from a recording's, because Whisper is most of a turn's
    latency: its ``compute_type`` is int8, 1.4x faster than float32 on one CPU thread (0.50 against 0.69 s a turn on
    RAVDESS and espeak-ng turns, ``benchmarks/live_whisper_settings.py``; its words match float32's on 31 turns in 32
    and may differ between CPUs, float32 gives the offline timeline's words); and it decodes each turn once
    (``temperature_fallback`` false): the fallback's sampling took one turn of the 10-minute stream 1.6 to 3.1 s
    instead of 0.5, and changed no label there (``benchmarks/live_latency.py``)."""

    compute_type: Literal["float32", "int8"] = Field(
        "int8", description="Whisper's CTranslate2 compute type: int8 (live's default, for latency) or float32 (the offline words)"
    )
    temperature_fallback: bool = Field(
        False, description="Whisper decodes a turn it is unsure of again at rising temperatures, by sampling: often better "
        "words on a hard turn, but three to six times the time; false (live's default, for a bounded latency) decodes once",
    )
    context_turns: int | None = Field(
        None, ge=1, description="turns the model reads for each new turn, the new one included (None: the whole conversation)"
    )
    early_asr: float | None = Field(
        0.2, ge=0, description="seconds of silence after which the turn in progress is transcribed and featurised ahead, "
        "while the pause may still turn out shorter than min_pause (the work is dropped if it does); None: only once closed",
    )

    def recording(self) -> RecordingSettings:
        """The offline pipeline's settings that cut and transcribe as this live session does (to compare the two)."""
        return RecordingSettings(**self.model_dump(include=set(TurnSettings.model_fields)))


# ------------------------------------------------------------------ events
class TurnEvent(TimelineSegment):
    """A turn that ended: its timeline segment (seconds from the stream's start, speaker, text, emotion with the
    earlier turns as context), its number, latency and the cost of its stages. In JSON ``type`` and ``turn`` come
    first, as in a :class:`RevisionEvent`."""

    type: Literal["turn"] = "turn"
    turn: int = Field(description="the turn's number, from 0")
    latency: float = Field(description="seconds from when the turn's end of speech arrived to this event")
    stages: dict[str, float] = Field(description="seconds of this turn's work: asr, speaker, features, model")
    early: bool = Field(False, description="whether the transcript and features were made during the pause (early_asr)")

    @model_serializer(mode="wrap")
    def _event_first(self, handler: Any) -> dict[str, Any]:
        fields = handler(self)
        return {"type": fields.pop("type"), "turn": fields.pop("turn"), **fields}


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


class _Turn(TimelineSegment):
    """A turn of the conversation so far, with its latest prediction and the audio file its extractors read."""

    audio: Path = Field(exclude=True)


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
            self.turns.append(_Turn(start=start, end=end, speaker=speakers[-1], text=prepared.text, label="", probabilities={}, audio=prepared.path))
            events: list[LiveEvent] = []
            for index, (turn, name) in enumerate(zip(self.turns[:-1], speakers, strict=False)):
                if name != turn.speaker:
                    previous, turn.speaker = turn.speaker, name
                    events.append(self._revision(index, "speaker", previous))
            events += self._predict(predictor, stages)
        turn = self.turns[-1]
        events.append(TurnEvent(
            **self.turns[-1].model_dump(), turn=len(self.turns) - 1, latency=round(self.clock() - speech.heard, 4),
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
            turn.label, turn.probabilities, turn.uncertainty, turn.notes = row.label, row.probabilities, row.uncertainty, row.notes
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
        :class:`~merkit.recording.Timeline`, with the live settings that made it."""
        segments = [TimelineSegment(**turn.model_dump()) for turn in self.turns]
        return Timeline(recording="live", model=model, labels=list(labels), speakers=self.speakers.source, segments=segments,
                        summary=speaker_summary(segments, labels), notes=list(self.notes),
                        settings={**self.settings.model_dump(), "asr": Path(self.settings.asr).name})  # fmt: skip

    def close(self) -> None:
        """Wait for the early work still running (it cannot be interrupted), then delete the turns' audio."""
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
