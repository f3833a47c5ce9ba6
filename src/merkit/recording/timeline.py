"""A recording's emotion timeline and what it says per speaker, in every output format (JSON, CSV, SRT, HTML).

Every format carries the per-speaker summary: JSON and HTML in full, CSV as a second table
(:meth:`Timeline.summary_csv`, the command's ``<out>.speakers.csv``), SRT as one closing cue after the last
segment (players show it; the segments' cues are unchanged). A segment of a video whose frames gave the model no
face says so (``face`` false; "no face" in CSV, SRT and HTML).

[R] merkit's choices: labels that are no emotion to report as a "strong moment" (``CALM_LABELS``), how many
such moments each speaker gets (``MOMENTS``), how long the SRT's summary cue shows (``SUMMARY_CUE``).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from merkit.recording.segmentation import UNKNOWN_SPEAKER


class TimelineSegment(BaseModel):
    start: float
    end: float
    speaker: str
    text: str
    label: str | list[str]
    probabilities: dict[str, float]
    uncertainty: float | None = None
    face: bool | None = Field(None, description="whether the segment's video frames gave the model a face (null: no video, or a model without faces)")
    notes: dict[str, str] = Field(default_factory=dict, description="why an input of the model was not used for this segment, per modality")

    def label_text(self, separator: str = ", ") -> str:
        """The label, or a multi-label prediction's labels joined."""
        return separator.join(self.label) if isinstance(self.label, list) else self.label


# Labels that are no emotion to report as a "strong moment" ([R]), and how many such moments each speaker gets.
CALM_LABELS = frozenset({"neutral", "calm", "none", "other", "no emotion"})
MOMENTS = 3
SUMMARY_CUE = 10.0  # seconds the SRT's closing summary cue shows
NO_FACE = "no face"


class Moment(BaseModel):
    """One segment where a speaker's emotion was most confidently not neutral."""

    start: float
    end: float
    label: str
    probability: float
    text: str


class SpeakerSummary(BaseModel):
    """What one speaker said and felt over the recording."""

    speaker: str
    speaking_time: float = Field(description="seconds of this speaker's segments")
    share: float = Field(description="this speaker's part of all speech time")
    segments: int
    turns: int = Field(description="runs of consecutive segments (another speaker in between starts a new turn)")
    emotions: dict[str, float] = Field(description="each label's share of this speaker's speaking time (a multi-label segment counts for each label)")
    strongest: list[Moment] = Field(description=f"up to {MOMENTS} segments whose top non-neutral label was most probable")


def speaker_summary(segments: Sequence[TimelineSegment], labels: Sequence[str]) -> list[SpeakerSummary]:
    """Per speaker, most speech first: time, turns, emotion shares and strongest moments."""
    total = sum(s.end - s.start for s in segments) or 1.0
    out = []
    for name in dict.fromkeys(s.speaker for s in segments):
        own = [s for s in segments if s.speaker == name]
        time = sum(s.end - s.start for s in own)
        shares = dict.fromkeys(labels, 0.0)
        moments = []
        for s in own:
            said = s.label if isinstance(s.label, list) else [s.label]
            for label in said:
                shares[label] = shares.get(label, 0.0) + (s.end - s.start) / (time or 1.0)
            strong = [label for label in said if label.lower() not in CALM_LABELS]
            if strong:
                label = max(strong, key=lambda n: s.probabilities.get(n, 0.0))
                moments.append(Moment(start=s.start, end=s.end, label=label, probability=round(s.probabilities.get(label, 0.0), 6), text=s.text))
        turns = sum(1 for i, s in enumerate(segments) if s.speaker == name and (i == 0 or segments[i - 1].speaker != name))
        moments.sort(key=lambda m: (-m.probability, m.start))
        out.append(SpeakerSummary(speaker=name, speaking_time=round(time, 3), share=round(time / total, 6), segments=len(own), turns=turns,
                                  emotions={k: round(v, 6) for k, v in shares.items()}, strongest=moments[:MOMENTS]))  # fmt: skip
    return sorted(out, key=lambda row: -row.speaking_time)


class Timeline(BaseModel):
    """The emotion of every speech segment of a recording, in time order, and a summary per speaker."""

    recording: str
    sha256: str | None = Field(None, description="the recording's SHA-256 (a folder run skips a file whose timeline holds it)")
    model: str
    labels: list[str]
    speakers: str = Field(description="where the speakers come from: diarization, an RTTM file, or 'unknown' (one unknown speaker)")
    diarization: dict[str, Any] | None = Field(None, description="the diarization settings, when the speakers come from it")
    settings: dict[str, Any] | None = Field(None, description="the recording settings (RecordingSettings: cutting, transcription, faces)")
    segments: list[TimelineSegment]
    summary: list[SpeakerSummary] = Field(default_factory=list, description="per speaker, most speech first")
    notes: list[str] = Field(default_factory=list, description="what to know before trusting the track")

    def summary_csv(self) -> str:
        """One row per speaker: time, share, segments, turns, each label's share, the strongest moment."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["speaker", "speaking_time", "share", "segments", "turns", *(f"share_{n}" for n in self.labels),
                         "strongest_start", "strongest_label", "strongest_probability"])  # fmt: skip
        for row in self.summary:
            top = row.strongest[0] if row.strongest else None
            writer.writerow([row.speaker, row.speaking_time, row.share, row.segments, row.turns, *(row.emotions.get(n, 0.0) for n in self.labels),
                             *((top.start, top.label, top.probability) if top else ("", "", ""))])  # fmt: skip
        return buffer.getvalue()

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["start", "end", "speaker", "text", "label", *(f"p_{n}" for n in self.labels), "uncertainty", "face", "notes"])
        for s in self.segments:
            writer.writerow([s.start, s.end, s.speaker, s.text, s.label_text(";"), *(round(s.probabilities[n], 6) for n in self.labels),
                             "" if s.uncertainty is None else round(s.uncertainty, 6), _face_text(s.face),
                             "; ".join(f"{k}: {v}" for k, v in s.notes.items())])  # fmt: skip
        return buffer.getvalue()

    def to_srt(self) -> str:
        def stamp(seconds: float) -> str:
            millis = int(round(seconds * 1000))
            return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"

        blocks = []
        for i, s in enumerate(self.segments, start=1):
            who = "" if s.speaker == UNKNOWN_SPEAKER else f"{s.speaker}: "
            face = f" [{NO_FACE}]" if s.face is False else ""
            blocks.append(f"{i}\n{stamp(s.start)} --> {stamp(s.end)}\n{who}{s.text} [{s.label_text()}]{face}\n")
        if self.summary and self.segments:
            end = max(s.end for s in self.segments)
            lines = "\n".join(self._summary_line(row) for row in self.summary)
            blocks.append(f"{len(self.segments) + 1}\n{stamp(end)} --> {stamp(end + SUMMARY_CUE)}\n{lines}\n")
        return "\n".join(blocks)

    @staticmethod
    def _summary_line(row: SpeakerSummary) -> str:
        """One speaker in a line: time, share, turns and the emotions that took a share of their time."""
        return f"{row.speaker}: {row.speaking_time:.1f} s ({100 * row.share:.0f} %), {row.turns} turn(s); {_shares_text(row)}"

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
        video = any(s.face is not None for s in self.segments)
        rows = "".join(
            f"<tr><td>{s.start:.2f}</td><td>{s.end:.2f}</td><td>{html.escape(s.speaker)}</td><td>{html.escape(s.text)}</td>"
            f"<td>{html.escape(s.label_text())}</td>"
            f"<td>{'' if s.uncertainty is None else f'{s.uncertainty:.3f}'}</td>" + (f"<td>{_face_text(s.face)}</td>" if video else "") + "</tr>"
            for s in self.segments
        )
        return (
            f"<!doctype html><meta charset='utf-8'><title>merkit timeline — {html.escape(Path(self.recording).name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
            f"<h1>Emotion timeline of {html.escape(Path(self.recording).name)}</h1><p>speakers: {html.escape(self.speakers)}</p>"
            + "".join(f"<p><b>note:</b> {html.escape(n)}</p>" for n in self.notes)
            + self._summary_html()
            + f"<img alt='timeline' src='data:image/png;base64,{encoded}'>"
            f"<table><tr><th>start</th><th>end</th><th>speaker</th><th>text</th><th>label</th><th>uncertainty</th>{'<th>face</th>' if video else ''}</tr>{rows}</table>"
        )

    def _summary_html(self) -> str:
        if not self.summary:
            return ""
        rows = "".join(
            f"<tr><td>{html.escape(r.speaker)}</td><td>{r.speaking_time:.1f} s ({100 * r.share:.0f} %)</td><td>{r.turns}</td>"
            f"<td>{html.escape(_shares_text(r))}</td>"
            f"<td>{html.escape('; '.join(f'{m.start:.1f} s {m.label} ({m.probability:.2f})' for m in r.strongest))}</td></tr>"
            for r in self.summary
        )
        return ("<h2>Speakers</h2><table><tr><th>speaker</th><th>speaking time</th><th>turns</th><th>emotions (share of time)</th>"
                f"<th>strongest moments</th></tr>{rows}</table>")  # fmt: skip


def _shares_text(row: SpeakerSummary) -> str:
    """The emotions that took a share of a speaker's time, largest first (``joy 60 %, neutral 40 %``)."""
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(row.emotions.items(), key=lambda kv: -kv[1]) if v > 0)


def _face_text(face: bool | None) -> str:
    """A segment's face in a table: ``yes``, ``no face``, or empty (no video, or a model without faces)."""
    return "" if face is None else ("yes" if face else NO_FACE)
