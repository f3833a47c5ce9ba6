"""A recording → one conversation of its speech segments → the predictor → an emotion :class:`Timeline`.

Each turn of the conversation points at its span of the file, so the checkpoint's own extractors make its
features (text from the transcript, audio from the span, faces from a video's frames). Diarized speakers are the
conversation's speakers (SDT/SURE speaker indices, a dialogue model's turns), and the timeline sums up each
speaker (time, turns, emotion shares, strongest moments).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merkit.diarization import DiarizationSettings
from merkit.recording.faces import VISUAL, face_choice, face_notes, reads_faces
from merkit.recording.segmentation import UNKNOWN_SPEAKER, RecordingSettings, Segment, SpeakersOption, segment_recording, speaker_mode
from merkit.recording.timeline import Timeline, TimelineSegment, speaker_summary

if TYPE_CHECKING:
    from merkit.inference import Predictor


def conversation_of(path: Path, segments: Sequence[Segment], video: bool) -> dict[str, Any]:
    """The segments as one conversation whose turns point at their span of the recording."""
    medium = "video" if video else "audio"
    turns = [{"utterance_id": str(i), "speaker": s.speaker, "text": s.text, medium: str(path.resolve()), "start": s.start, "end": s.end}
             for i, s in enumerate(segments)]  # fmt: skip
    return {"dialogue_id": path.stem or "recording", "utterances": turns}


def timeline_of(path: Path, segments: Sequence[Segment], result: Any, speakers: str, faces: bool = False) -> Timeline:
    """The model's per-utterance predictions (``PredictionResult``) joined to the segments' times; ``faces``: the
    model read the video's faces, so each segment says whether it had one."""
    rows = [
        TimelineSegment(start=s.start, end=s.end, speaker=s.speaker, text=s.text, label=u.label, probabilities=u.probabilities,
                        uncertainty=u.uncertainty, face=(VISUAL in u.modalities) if faces else None, notes=u.notes)  # fmt: skip
        for s, u in zip(segments, result.utterances, strict=True)
    ]
    return Timeline(recording=str(path), model=result.model, labels=result.labels, speakers=speakers, segments=rows,
                    summary=speaker_summary(rows, result.labels))  # fmt: skip


def predict_recording(
    predictor: Predictor, path: str | Path, settings: RecordingSettings | None = None, *, speakers: SpeakersOption | None = "none",
    diarization: DiarizationSettings | None = None, progress: bool = False, log: Callable[[str], None] = lambda line: None,
    cache: bool = True, deadline: float | None = None,
) -> Timeline:  # fmt: skip
    """An emotion :class:`Timeline` for a raw recording: its speech segments (VAD + Whisper, ``settings`` a
    :class:`RecordingSettings`), their speakers (``speakers``: ``auto`` diarizes with ``diarization``, ``none`` is one
    unknown speaker, the default here; the CLI and the server default to ``auto``; or an RTTM file), then the ``predictor``'s :meth:`~merkit.inference.Predictor.predict` over the
    whole recording as one conversation whose speakers are the turns' (the checkpoint's own extractors).
    A video's faces go to a model that reads them (:mod:`merkit.recording.faces`): each segment says whether it had one.
    ``cache``: keep and reuse the transcript; ``deadline`` as for ``predict``."""
    from merkit.inference import MEDIA_SUFFIXES

    path, settings, diarization = Path(path), settings or RecordingSettings(), diarization or DiarizationSettings()
    mode, rttm = speaker_mode(speakers)
    segments = segment_recording(path, settings, speakers=speakers, diarization=diarization, progress=progress, log=log, cache=cache, deadline=deadline)
    source = {"auto": f"diarization ({diarization.embedding})", "none": UNKNOWN_SPEAKER}.get(mode) or f"RTTM {rttm.name}"
    video = path.suffix.lower() in MEDIA_SUFFIXES["video"]
    faces = video and reads_faces(predictor)
    with face_choice(predictor, settings.face) if faces else nullcontext():
        result = predictor.predict(conversation_of(path, segments, video), progress=progress, deadline=deadline)
    timeline = timeline_of(path, segments, result, source, faces)
    timeline.settings = {**settings.model_dump(), "asr": Path(settings.asr).name}  # a Whisper folder by its name: no server path
    if mode == "auto":
        timeline.diarization = diarization.model_dump()
    if faces:
        timeline.notes += face_notes(path, timeline.segments)
    elif video:
        timeline.notes.append(f"the model reads no faces: the frames of {path.name} were not used")
    if rttm is not None:
        if all(s.speaker == UNKNOWN_SPEAKER for s in segments):
            timeline.notes.append(f"no turn of {rttm.name} overlaps the recording's speech: every segment's speaker is unknown")
    audio = predictor.extractors.get("audio")
    if audio is not None and getattr(audio.settings, "trim_db", 0) is None:
        timeline.notes.append(
            "the model's audio features were made without trim_db: if its training clips had silence around the speech, "
            "the voice-activity segments read differently (on RAVDESS 34 % instead of 58 %); extract the training audio with `merkit extract ... --set trim_db=40` and train again"
        )
    for note in timeline.notes:
        log(f"note: {note}")
    return timeline
