"""Faces from a video recording (issue #35): the checkpoint's own face extractor reads each segment's frames,
taking the face that :attr:`RecordingSettings.face <merkit.recording.segmentation.RecordingSettings.face>`
names in a frame with several; a frame without a face gives no row (the segment's row is the mean of the
frames that have one), and a segment with no face at all has its visual modality masked, as the models'
masks allow. :func:`face_notes` says which segments had none, and when the video track could not be read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from merkit.recording.timeline import NO_FACE, TimelineSegment

if TYPE_CHECKING:
    from merkit.inference import Predictor

VISUAL = "visual"


@contextmanager
def face_choice(predictor: Predictor, face: str) -> Iterator[None]:
    """For the duration: the predictor's face extractor taking ``face`` (``largest`` or ``most-confident``, what the
    extractor does on its own) of a frame's faces; everything else about it (weights, crop, frames) stays the
    checkpoint's."""
    from merkit.features.video import FaceExtractor

    own = predictor.extractors.get(VISUAL)
    wanted = None if face == "most-confident" else face
    if not isinstance(own, FaceExtractor) or own.settings.face == wanted:
        yield
        return
    chosen = type(own)(device=own.device, **{**own.settings.model_dump(), "face": wanted})
    chosen.record_name = own.record_name
    predictor.extractors[VISUAL] = chosen
    try:
        yield
    finally:
        predictor.extractors[VISUAL] = own
        chosen.close()


def reads_faces(predictor: Predictor) -> bool:
    """Whether the predictor computes a visual modality from raw frames."""
    return VISUAL in predictor.modalities and VISUAL in predictor.extractors


def _spans(segments: Sequence[TimelineSegment]) -> str:
    shown = ", ".join(f"{s.start:.1f}–{s.end:.1f} s" for s in segments[:5])
    return shown + (f" and {len(segments) - 5} more" if len(segments) > 5 else "")


def face_notes(path: Path, segments: Sequence[TimelineSegment]) -> list[str]:
    """The timeline's notes on faces: the segments with none, and a video track that could not be read."""
    missing: dict[str, list[TimelineSegment]] = {}
    for segment in segments:
        if segment.face is False:
            missing.setdefault(segment.notes.get(VISUAL, "no visual features"), []).append(segment)
    notes = []
    for reason, where in missing.items():
        if reason.startswith(NO_FACE):  # the face extractors' reason: "no face found in the sampled frames"
            notes.append(f"no face in {len(where)} of {len(segments)} segment(s) ({_spans(where)}): their visual input is masked, "
                         "so they are predicted from the other modalities")  # fmt: skip
        else:
            notes.append(f"the video track of {path.name} could not be read for {len(where)} of {len(segments)} segment(s) ({reason}): "
                         "their visual input is masked")  # fmt: skip
    return notes
