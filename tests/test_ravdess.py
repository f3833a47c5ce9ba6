"""The RAVDESS reader: the shared 16 kHz copy, and the layout of the original download."""

import json

import pytest

from merkit.data import read_data
from merkit.data.formats import Source, detect_format
from merkit.errors import MerkitError

from conftest import run_cli, shared


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_the_shared_copy_reads_as_the_readme_says():
    ravdess = shared("ravdess")
    result = run_cli("data", "stats", str(ravdess), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["utterances"] == 1440 and stats["dialogues"] == 1440
    assert [stats["splits"][s]["utterances"] for s in ("train", "valid", "test")] == [960, 120, 360]
    assert stats["labels"] == {"neutral": 96} | {e: 192 for e in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")}
    corpus = read_data(ravdess).corpus
    speakers = {split: {u.speaker for d in corpus.split_dialogues(split) for u in d.utterances} for split in ("train", "valid", "test")}
    assert speakers["valid"] == {"Actor_17", "Actor_18"} and len(speakers["test"]) == 6 and len(speakers["train"]) == 16
    first = next(corpus.utterances())
    assert first.id == "03-01-01-01-01-01-01" and first.media["audio"].endswith(".flac")
    assert first.text == "Kids are talking by the door"
    assert dict(first.meta) == {
        "actor": "01", "gender": "male", "intensity": "normal", "statement": "01", "repetition": "01", "vocal_channel": "speech",
    }  # fmt: skip


def test_the_original_download_layout_merges_audio_and_video_of_one_recording(tmp_path):
    root = tmp_path / "RAVDESS"
    _touch(root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-05-02-01-01-01.wav")
    _touch(root / "Video_Speech_Actor_01" / "Actor_01" / "01-01-05-02-01-01-01.mp4")
    _touch(root / "Video_Speech_Actor_01" / "Actor_01" / "02-01-05-02-01-01-01.mp4")
    _touch(root / "Video_Speech_Actor_20" / "Actor_20" / "01-01-08-01-02-02-20.mp4")  # no audio-only file
    _touch(root / "Video_Speech_Actor_20" / "Actor_20" / "02-01-03-01-02-02-20.mp4")  # video only
    _touch(root / "Audio_Song_Actors_01-24" / "Actor_18" / "03-02-04-01-01-01-18.wav")  # song: left out by default
    _touch(root / "Audio_Speech_Actors_01-24" / "Actor_01" / "notes.txt")
    assert detect_format(Source(root)) == "ravdess"
    corpus = read_data(root).corpus
    by_id = {u.id: u for u in corpus.utterances()}
    assert set(by_id) == {"03-01-05-02-01-01-01", "01-01-08-01-02-02-20", "02-01-03-01-02-02-20"}
    merged = by_id["03-01-05-02-01-01-01"]
    assert corpus.labels.names[merged.label] == "angry" and merged.meta["intensity"] == "strong"
    assert merged.media["audio"].endswith("03-01-05-02-01-01-01.wav") and merged.media["video"].endswith("01-01-05-02-01-01-01.mp4")
    audiovisual = by_id["01-01-08-01-02-02-20"]
    assert audiovisual.media == {"audio": audiovisual.media["video"], "video": audiovisual.media["video"]}
    assert audiovisual.text == "Dogs are sitting by the door" and audiovisual.meta["gender"] == "female"
    assert "audio" not in by_id["02-01-03-01-02-02-20"].media
    assert corpus.splits["train"] == ("03-01-05-02-01-01-01",) and len(corpus.splits["test"]) == 2
    both = read_data(root, vocal="both", valid_actors="18", test_actors="20").corpus
    song = next(u for u in both.utterances() if u.meta["vocal_channel"] == "song")
    assert song.id in both.splits["valid"] and both.labels.names[song.label] == "sad"


def test_bad_options_and_empty_folders_are_clear_errors(tmp_path):
    _touch(tmp_path / "Actor_03" / "03-01-02-01-01-01-03.flac")
    with pytest.raises(MerkitError, match="valid_actors and test_actors"):
        read_data(tmp_path, valid_actors="3", test_actors="3")
    with pytest.raises(MerkitError, match="no RAVDESS song clips"):
        read_data(tmp_path, vocal="song")
    with pytest.raises(MerkitError, match="not a comma-separated list"):
        read_data(tmp_path, test_actors="x,y")
