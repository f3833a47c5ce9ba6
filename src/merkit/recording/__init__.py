"""A raw recording → an emotion timeline (issues #18, #35): one module per job.

:mod:`~merkit.recording.segmentation` cuts, transcribes and diarizes the file; :mod:`~merkit.recording.pipeline`
makes the segments one conversation for a predictor; :mod:`~merkit.recording.timeline` holds the result and
writes it as JSON, CSV, SRT and HTML.
"""

from merkit.recording.pipeline import conversation_of, predict_recording, timeline_of
from merkit.recording.segmentation import (
    EXTRA,
    SAMPLE_RATE,
    UNKNOWN_SPEAKER,
    RecordingSettings,
    Segment,
    SpeakersOption,
    TurnSettings,
    _faster_whisper,
    asr_folder,
    chunks,
    diarize_recording,
    load_asr,
    read_rttm,
    segment_recording,
    speaker_mode,
    speech_chunks,
    speech_spans,
    transcribe,
)
from merkit.recording.timeline import CALM_LABELS, MOMENTS, Moment, SpeakerSummary, Timeline, TimelineSegment, speaker_summary

__all__ = [
    "CALM_LABELS", "EXTRA", "MOMENTS", "SAMPLE_RATE", "UNKNOWN_SPEAKER", "Moment", "RecordingSettings", "Segment", "SpeakerSummary",
    "SpeakersOption", "Timeline", "TimelineSegment", "TurnSettings", "asr_folder", "chunks", "conversation_of", "diarize_recording", "load_asr",
    "predict_recording", "read_rttm", "segment_recording", "speaker_mode", "speaker_summary", "speech_chunks", "speech_spans",
    "timeline_of", "transcribe",
]  # fmt: skip
