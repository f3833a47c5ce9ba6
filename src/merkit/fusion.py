"""The fused default for recordings: the words and the voice of every speech segment, one shared label set.

``merkit predict meeting.wav`` with no model loads the zoo's fused entry (``fused-meld-ravdess``): the text model
(``text-meld``) reads the transcript of every segment in its dialogue context, the voice model (``voice-ravdess``)
reads each segment's sound, both are mapped onto one shared label set, and a calibrated late fusion combines them
(each model's probabilities already temperature-calibrated on its own validation split):

    logit(c) = (α · s_words^γ · log p_words(c) + (1 − α) · s_voice^γ · log p_voice(c)) / T

a weighted geometric mean of the two tracks in which each track is also weighted by its *spread* over the recording,
``s`` = the entropy of the labels it gives the recording's segments, over its largest possible value (1 for a
recording of one segment). A track that says the same of every segment — the text model reading RAVDESS's two fixed
sentences — tells the segments apart no better than a constant, and with γ > 0 it gives way to the other track.
The voice is also *gated* by its typicality ``τ`` in the segment (:mod:`merkit.typicality`: how usual the segment's
Whisper vector is among held-out clips of the voice model's training actors): below the floor θ — speech unlike any
the voice model learnt from, such as a synthetic voice, which it answers with confident, wrong labels — the words
answer alone. γ = θ = 0 is the plain log-linear pool. α, γ, θ and T are chosen on validation data only
(``merkit zoo build --only fused-meld-ravdess``, :mod:`merkit.fusion_cases`) and stored in the entry's
``fusion.json`` with the label maps (the typicality reference in its ``typicality.safetensors``).

A class of a track with no counterpart in the shared set is dropped from that track (its probability renormalised
over the rest), and the output says so. Where a segment has no words (an empty transcript) the voice answers alone,
and where its audio gives nothing the words answer alone; each segment says which tracks answered, and both tracks
stay in the output ("words: joy 0.70 / voice: neutral 0.60").

[R] merkit's choices (fields of :class:`FusionSpec`, recorded in ``fusion.json`` and in every output): the rule
above; α, γ and θ chosen together on validation rows (:func:`merkit.fusion_cases.choose`); T by the validation
NLL; the typicality reference's PCA size and actors (``typicality``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from merkit.cli_options import set_torch_threads
from merkit.errors import MerkitError
from merkit.recording import RecordingSettings, Timeline, TimelineSegment, predict_recording
from merkit.typicality import Typicality
from merkit.zoo import fusion_spec, locate

TYPICALITY = "typicality.safetensors"

TRACKS = ("words", "voice")


class FusionSpec(BaseModel):
    """Which two zoo models, how their labels map onto the shared set, and the fusion's α, γ, θ and T."""

    model_config = ConfigDict(extra="forbid")

    words: str = Field(description="zoo model reading the transcript")
    voice: str = Field(description="zoo model reading the sound of each segment")
    labels: list[str] = Field(min_length=2, description="the shared label set")
    words_map: dict[str, str | None] = Field(description="words model label → shared label (null: no counterpart, dropped)")
    voice_map: dict[str, str | None] = Field(description="voice model label → shared label (null: no counterpart, dropped)")
    alpha: float = Field(0.5, ge=0, le=1, description="[R] weight of the words track (voice: 1 − alpha)")
    gamma: float = Field(0.0, ge=0, description="[R] power of each track's spread over the recording (0: a plain log-linear pool)")
    typicality_floor: float = Field(0.0, ge=0, le=1, description="[R] θ: below this typicality the voice is left out of a segment (0: never)")
    typicality: dict[str, Any] | None = Field(None, description="[R] how the voice's typicality reference was fitted (null: none)")
    temperature: float = Field(1.0, gt=0, description="[R] of the fused log-probabilities, fitted on validation NLL")
    selection: dict[str, Any] = Field(default_factory=dict, description="how alpha, gamma and T were chosen (validation only)")

    @model_validator(mode="after")
    def _maps_land_in_labels(self) -> "FusionSpec":
        for track, mapping in (("words", self.words_map), ("voice", self.voice_map)):
            stray = sorted({v for v in mapping.values() if v is not None} - set(self.labels))
            if stray:
                raise ValueError(f"{track}_map maps onto {stray}, which are not in the shared labels {self.labels}")
        return self


def to_shared(probabilities: dict[str, float], mapping: dict[str, str | None], labels: list[str]) -> np.ndarray:
    """A track's probabilities summed onto the shared labels (classes without a counterpart dropped, the rest renormalised)."""
    shared = np.zeros(len(labels), dtype=np.float64)
    index = {name: i for i, name in enumerate(labels)}
    for name, value in probabilities.items():
        target = mapping.get(name)
        if target is not None:
            shared[index[target]] += value
    total = shared.sum()
    return shared / total if total > 0 else np.full(len(labels), 1 / len(labels))


def log_of(rows: np.ndarray) -> np.ndarray:
    return np.log(np.clip(rows, 1e-12, 1))


def spread(rows: list[np.ndarray | None]) -> float:
    """How much a track tells a recording's segments apart: the entropy of the labels it gives them (where it answered)
    over its largest possible value; 1 for fewer than two segments (no evidence either way)."""
    answered = [r for r in rows if r is not None]
    if len(answered) < 2:
        return 1.0
    counts = np.bincount([int(np.argmax(r)) for r in answered]).astype(float)
    share = counts[counts > 0] / len(answered)
    return float(-(share * np.log(share)).sum() / math.log(min(len(answered), len(answered[0]))))


def heard(spec: FusionSpec, typicality: float) -> bool:
    """Whether the voice counts in a segment: its typicality is at least the floor θ."""
    return typicality >= spec.typicality_floor


def weights(spec: FusionSpec, words_spread: float = 1.0, voice_spread: float = 1.0, typicality: float = 1.0) -> tuple[float, float]:
    """The words' and the voice's weights in the pool (before T); (1, 0) where the voice is gated out."""
    if not heard(spec, typicality):
        return 1.0, 0.0
    a = spec.alpha * words_spread**spec.gamma
    b = (1 - spec.alpha) * voice_spread**spec.gamma
    if a + b == 0:  # neither track tells the segments apart: no reason to prefer one
        return spec.alpha, 1 - spec.alpha
    return a, b


def pool(words: np.ndarray | None, voice: np.ndarray | None, spec: FusionSpec, words_spread: float = 1.0,
         voice_spread: float = 1.0, typicality: float = 1.0) -> np.ndarray:  # fmt: skip
    """The fused distribution over the shared labels (rows of ``[N, C]`` or one ``[C]``); a missing track leaves the other
    alone. ``*_spread``: the track's :func:`spread` over the recording (1: a segment on its own); ``typicality``: the
    voice's in this segment (1: not measured)."""
    if words is None and voice is None:
        raise MerkitError("nothing to fuse: neither track answered")
    if words is None or voice is None:
        return voice if words is None else words
    a, b = weights(spec, words_spread, voice_spread, typicality)
    logits = (a * log_of(words) + b * log_of(voice)) / spec.temperature
    logits = logits - logits.max(axis=-1, keepdims=True)
    fused = np.exp(logits)
    return fused / fused.sum(axis=-1, keepdims=True)


class Track(BaseModel):
    """One track's answer for a segment, on the shared labels (``label`` null when the track had no input)."""

    label: str | None
    probability: float | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    weight: float | None = Field(None, description="the track's share of the fused track's weight in this segment")
    typicality: float | None = Field(None, description="voice: how usual its sound is among the voice model's training speech (0–1)")
    note: str | None = None


class FusedSegment(TimelineSegment):
    tracks: dict[str, Track] = Field(description="words and voice, each on the shared labels")
    answered_by: list[str] = Field(description="the tracks the fused label comes from (one when the other had no input)")

    def label_text(self, separator: str = ", ") -> str:
        parts = [f"{name}: {t.label} {t.probability:.2f}" if t.label else f"{name}: –" for name, t in self.tracks.items()]
        return f"{self.label} ({' / '.join(parts)})"


class FusedTimeline(Timeline):
    """A recording's timeline with the words track, the voice track and the fused track of every segment."""

    segments: list[FusedSegment]
    fusion: dict[str, Any] = Field(description="the fused entry, its two models, label maps, alpha and temperature")

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["start", "end", "speaker", "text", "label", *(f"p_{n}" for n in self.labels),
                         *(f"{t}_{k}" for t in TRACKS for k in ("label", "p")), "answered_by"])  # fmt: skip
        for s in self.segments:
            tracks = [value for t in TRACKS for value in (s.tracks[t].label or "", "" if s.tracks[t].probability is None else s.tracks[t].probability)]
            writer.writerow([s.start, s.end, s.speaker, s.text, s.label, *(round(s.probabilities[n], 6) for n in self.labels), *tracks,
                             "+".join(s.answered_by)])  # fmt: skip
        return buffer.getvalue()


def _track(shared: np.ndarray | None, labels: list[str], weight: float, note: str | None = None, typicality: float | None = None) -> Track:
    if shared is None:
        return Track(label=None, note=note)
    best = int(shared.argmax())
    return Track(label=labels[best], probability=round(float(shared[best]), 6), probabilities=dict(zip(labels, np.round(shared, 6).tolist())),
                 weight=round(weight, 6), typicality=typicality, note=note)  # fmt: skip


@dataclass
class Tracks:
    """A recording's words timeline and, per segment, each track on the shared labels (None: the track had no input),
    the voice track's reason where its audio gave nothing, and the voice's typicality (None: not measured)."""

    timeline: Timeline
    words: list[np.ndarray | None]
    voice: list[np.ndarray | None]
    voice_notes: list[str | None]
    typicality: list[float | None]


class _Remembering:
    """An extractor that keeps what it encodes, keyed by the input's content, so the fusion reads the very vectors the
    voice model read (no second pass over the audio)."""

    def __init__(self, inner: Any):
        self.inner, self.rows, self._content = inner, {}, {}

    def plan(self, corpus: Any) -> list[Any]:
        items = self.inner.plan(corpus)
        self._content = {id(item.payload): item.content for item in items if item is not None}
        return items

    def encode(self, payloads: list[Any]) -> list[Any]:
        rows = self.inner.encode(payloads)
        self.rows.update({self._content[id(p)]: row for p, row in zip(payloads, rows, strict=True)})
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FusedPredictor:
    """The fused zoo entry's two predictors; :meth:`predict_recording` gives a :class:`FusedTimeline`."""

    def __init__(self, name: str, spec: FusionSpec, *, root: Path | None = None, typicality: Typicality | None = None, device: str = "auto",
                 workers: int = 1, threads: int | None = None):  # fmt: skip
        """``root``: the folder holding the two entries (default: the installed zoo); ``typicality``: the voice's
        reference (needed when the spec weighs the voice by it)."""
        from merkit.loading import load

        if spec.typicality_floor > 0 and typicality is None:
            raise MerkitError(f"{name} weighs the voice by its typicality, but no typicality reference was given")
        self.name, self.spec, self.typicality = name, spec, typicality
        words, voice = (spec.words, spec.voice) if root is None else (Path(root) / spec.words, Path(root) / spec.voice)
        self.words = load(words, device=device, workers=workers, threads=threads)
        try:
            self.voice = load(voice, device=device, workers=workers, threads=threads)
        except BaseException:
            self.words.close()
            raise
        for track, predictor, mapping in (("words", self.words, self.spec.words_map), ("voice", self.voice, self.spec.voice_map)):
            if sorted(mapping) != sorted(predictor.labels.names):
                raise MerkitError(f"{name}: the {track} map covers {sorted(mapping)}, but {getattr(self.spec, track)} predicts {list(predictor.labels.names)}")
        self._remembered = _Remembering(self.voice.extractors["audio"]) if typicality is not None else None
        if self._remembered is not None:
            self.voice.extractors["audio"] = self._remembered

    def tracks(self, path: str | Path, settings: RecordingSettings | None = None, *, progress: bool = False,
               deadline: float | None = None, **options: Any) -> Tracks:  # fmt: skip
        """Both tracks of every segment of a recording (the words timeline: VAD + Whisper + the text model; ``options``
        as for :func:`merkit.recording.predict_recording`: speakers, diarization, log, cache)."""
        from merkit.inference import MEDIA_SUFFIXES

        path = Path(path)
        words = predict_recording(self.words, path, settings, progress=progress, deadline=deadline, **options)
        medium = "video" if path.suffix.lower() in MEDIA_SUFFIXES["video"] else "audio"
        turns = [{"utterance_id": str(i), "speaker": s.speaker, medium: str(path.resolve()), "start": s.start, "end": s.end}
                 for i, s in enumerate(words.segments)]  # fmt: skip
        corpus = self.voice.corpus({"dialogue_id": path.stem or "recording", "utterances": turns})
        voice = self.voice.predict(corpus, progress=progress, deadline=deadline)
        labels = self.spec.labels
        word_rows = [to_shared(s.probabilities, self.spec.words_map, labels) if s.text.strip() else None for s in words.segments]
        voice_rows, voice_notes = [], []
        for u in voice.utterances:
            heard = "audio" in u.modalities
            voice_rows.append(to_shared(u.probabilities, self.spec.voice_map, labels) if heard else None)
            voice_notes.append(None if heard else "; ".join(u.notes.values()) or "no audio features")
        return Tracks(words, word_rows, voice_rows, voice_notes, self._typicality(corpus, voice_rows))

    def _typicality(self, corpus: Any, voice_rows: list[np.ndarray | None]) -> list[float | None]:
        """Each segment's voice typicality (None where the voice had no input or none is measured)."""
        if self._remembered is None or self.typicality is None:
            return [None] * len(voice_rows)
        vectors = []
        for item, answered in zip(self._remembered.inner.plan(corpus), voice_rows, strict=True):
            row = self._remembered.rows.get(item.content) if item is not None and answered is not None else None
            vectors.append(row if isinstance(row, np.ndarray) else None)  # an Absent row: the voice had no input
        self._remembered.rows.clear()
        present = [v for v in vectors if v is not None]
        scores = iter(self.typicality(np.stack(present)).tolist() if present else [])
        return [None if v is None else round(next(scores), 6) for v in vectors]

    def predict_recording(self, path: str | Path, settings: RecordingSettings | None = None, **options: Any) -> FusedTimeline:
        """The fused timeline of a recording (``options`` as for :func:`merkit.recording.predict_recording`)."""
        return fused_timeline(self.name, self.spec, self.tracks(path, settings, **options))

    def close(self) -> None:
        self.words.close()
        self.voice.close()

    def __enter__(self) -> "FusedPredictor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def fused_timeline(name: str, spec: FusionSpec, tracks: Tracks) -> FusedTimeline:
    """The words timeline's segments with both tracks (shared labels; None: no input) and their fusion."""
    labels, segments, words = spec.labels, [], tracks.timeline
    words_spread, voice_spread = spread(tracks.words), spread(tracks.voice)
    for s, w, v, why, typical in zip(words.segments, tracks.words, tracks.voice, tracks.voice_notes, tracks.typicality, strict=True):
        typicality = 1.0 if typical is None else typical
        gated = w is not None and v is not None and not heard(spec, typicality)
        voice_note = f"{why or 'no audio features'}: the words answer alone" if v is None else None
        if gated:
            voice_note = (f"its sound is unlike the speech the voice model learnt from (typicality {typicality:.4f} below "
                          f"{spec.typicality_floor}): the words answer alone")  # fmt: skip
        a, b = weights(spec, words_spread, voice_spread, typicality)
        share = {"words": a / (a + b) if v is not None else 1.0, "voice": b / (a + b) if w is not None else 1.0}
        if w is None and v is None:
            fused, answered = np.full(len(labels), 1 / len(labels)), []
        else:
            fused = pool(w, v, spec, words_spread, voice_spread, typicality)
            answered = ["words"] if gated else [track for track, row in zip(TRACKS, (w, v), strict=True) if row is not None]
        entropy = float(-(fused * np.log(np.clip(fused, 1e-12, 1))).sum())
        segments.append(FusedSegment(
            start=s.start, end=s.end, speaker=s.speaker, text=s.text, label=labels[int(fused.argmax())],
            probabilities=dict(zip(labels, np.round(fused, 6).tolist())), uncertainty=round(entropy, 6),
            tracks={"words": _track(w, labels, share["words"], None if w is not None else "no words in this segment: the voice answers alone"),
                    "voice": _track(v, labels, share["voice"], voice_note, typical)},
            answered_by=answered,
        ))  # fmt: skip
    notes = list(words.notes)
    gated = sum(s.tracks["voice"].label is not None and s.answered_by == ["words"] for s in segments)
    if gated:
        notes.append(f"{gated} of {len(segments)} segments sound unlike the speech the voice model learnt from: their words answer alone")
    for track in TRACKS:
        alone = sum(s.answered_by == [track] and s.tracks[other].label is None for s in segments for other in TRACKS if other != track)
        if alone:
            notes.append(f"{alone} of {len(segments)} segments had only the {track} track (the other had no input)")
        dropped = sorted(k for k, v in getattr(spec, f"{track}_map").items() if v is None)
        if dropped:
            notes.append(f"the {track} model's {', '.join(dropped)} have no counterpart in the shared labels and are left out")
    merged = {v: sorted(k for k, t in spec.voice_map.items() if t == v) for v in set(spec.voice_map.values()) if v is not None}
    notes += [f"the voice model's {' and '.join(names)} are read as {target}" for target, names in sorted(merged.items()) if len(names) > 1]
    return FusedTimeline(
        recording=words.recording, model=name, labels=labels,
        speakers=words.speakers, segments=segments, notes=notes,
        fusion={"entry": name, **spec.model_dump(mode="json", exclude={"selection"}), "words_spread": round(words_spread, 4),
                "voice_spread": round(voice_spread, 4)},
    )  # fmt: skip


def load_fused(name: str, **options: Any) -> FusedPredictor:
    """The fused zoo entry ``name`` (``merkit.fusion.load_fused("fused-meld-ravdess")``)."""
    spec = FusionSpec.model_validate(fusion_spec(name))
    reference = locate(name) / TYPICALITY
    return FusedPredictor(name, spec, typicality=Typicality.load(reference) if reference.is_file() else None, **options)


def predict_fused_command(name: str, input: Path, *, recording: bool, asr: str, language: str | None, device: str, workers: int,
                          threads: int | None, quiet: bool, **options: Any) -> FusedTimeline:  # fmt: skip
    """``merkit predict [fused entry] RECORDING``: the fused timeline (``options``: speakers, diarization), or a clear
    error for other input."""
    if not recording:
        raise MerkitError(f"{name} fuses the words and the voice of a recording; give an audio or video file, or a text model "
                          "(e.g. `merkit predict text-meld FILE`) for a transcript", path=input)  # fmt: skip
    set_torch_threads(threads)
    log: Callable[[str], None] = (lambda line: None) if quiet else (lambda line: print(f"merkit: {line}", file=sys.stderr))
    with load_fused(name, device=device, workers=workers, threads=threads) as fused:
        return fused.predict_recording(input, RecordingSettings(asr=asr, language=language), progress=not quiet, log=log, **options)


def fit_temperature(words: np.ndarray, voice: np.ndarray, context: np.ndarray, truth: np.ndarray, spec: FusionSpec) -> float:
    """T minimising the NLL of the pool (``spec``'s α, γ and δ) on (validation) rows with both tracks; ``context`` ``[N, 3]``:
    each row's words spread, voice spread and voice typicality."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        trial = spec.model_copy(update={"temperature": math.exp(log_t)})
        fused = np.stack([pool(w, v, trial, *c) for w, v, c in zip(words, voice, context, strict=True)])
        return float(-np.log(np.clip(fused[np.arange(len(truth)), truth], 1e-12, 1)).mean())

    return round(math.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x), 6)
