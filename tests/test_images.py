"""Still images and frame folders as the visual input: the image-folder reader, frame sampling, face detection
auto/on/off on real face crops, extraction with failures, and prediction from images.

The faces are real: scikit-image's astronaut photograph, a tight crop of its face (found by
MediaPipe) and a 48×48 grayscale copy of that crop, the size of CK+ and FER2013 images; the
shared CK+ crops when ``../shared/data/ckplus`` is there.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from merkit.data import open_store, read_data
from merkit.data.images import frame_files
from merkit.errors import MerkitError
from media_helpers import untrained_checkpoint, write_jsonl

PIL = pytest.importorskip("PIL", reason="images need Pillow (the video extra)")
from PIL import Image  # noqa: E402

CKPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ckplus"
CKPLUS_SUBJECT = r"^(S\d+)_"


def _png(path: Path, value: int = 128, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------ the image-folder reader
def test_class_folders_read_as_one_image_utterances_split_by_subject(tmp_path):
    root = tmp_path / "faces"
    for subject in range(1, 9):
        for label in ("happy", "sad"):
            for frame in (1, 2):
                _png(root / "images" / label / f"S{subject:03d}_001_{frame:02d}.png")
    (root / "README.txt").write_text("not an image")
    bundle = read_data(root, speaker_pattern=CKPLUS_SUBJECT, valid_fraction=0.25, test_fraction=0.25)
    corpus = bundle.corpus
    assert corpus.labels.names == ("happy", "sad") and corpus.num_utterances == 32
    first = corpus.dialogues[0].utterances[0]
    assert first.id == "happy/S001_001_01" and first.speaker == "S001" and first.text == ""
    assert Path(first.media["image"]).is_file() and len(corpus.dialogues[0]) == 1
    speakers = {s: {u.speaker for d in corpus.split_dialogues(s) for u in d.utterances} for s in ("train", "valid", "test")}
    assert all(speakers.values()) and not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"])
    assert not speakers["valid"] & speakers["test"]
    again = read_data(root, "image-folder", speaker_pattern=CKPLUS_SUBJECT, valid_fraction=0.25, test_fraction=0.25).corpus
    assert again.splits == corpus.splits  # seeded
    assert read_data(root, labels="sad,happy", speaker_pattern=CKPLUS_SUBJECT).corpus.labels.names == ("sad", "happy")

    with pytest.warns(UserWarning, match="speaker_pattern"):
        unnamed = read_data(root).corpus
    assert len({u.speaker for u in unnamed.utterances()}) == 32  # every image its own speaker
    with pytest.raises(MerkitError, match=r"does not match the file name 'S001_001_01'"):
        read_data(root, speaker_pattern=r"^P(\d+)")
    with pytest.raises(MerkitError, match="not a regular expression"):
        read_data(root, speaker_pattern="(")
    with pytest.raises(MerkitError, match="lacks the class folder"):
        read_data(root, labels="happy", speaker_pattern=CKPLUS_SUBJECT)


def test_split_folders_and_frame_folders(tmp_path):
    root = tmp_path / "fer"
    for split, subjects in (("train", (1, 2, 3, 4, 5, 6)), ("test", (7,))):
        for label in ("angry", "neutral"):
            for subject in subjects:
                _png(root / split / label / f"p{subject}-{label}.png")
    for frame in (1, 2, 10):  # a clip's frames as one utterance
        _png(root / "train" / "angry" / "p1-clip" / f"frame_{frame}.png")
    corpus = read_data(root, speaker_pattern=r"^p(\d+)").corpus
    assert sorted(corpus.splits) == ["test", "train", "valid"]
    assert {u.id.split("/")[0] for d in corpus.split_dialogues("test") for u in d.utterances} == {"test"}
    assert len(corpus.split_dialogues("valid")) > 0  # drawn from training, grouped by speaker
    clip = next(u for u in corpus.utterances() if "frames" in u.media)
    assert clip.id == "train/angry/p1-clip" and clip.speaker == "1"
    assert [p.name for p in frame_files(clip.media["frames"])] == ["frame_1.png", "frame_2.png", "frame_10.png"]


def _face_jpg(path: Path, smile: bool, shade: int) -> Path:
    """A 48×48 grey JPEG of a drawn face (head, eyes, a mouth curved up or down), as FER2013 crops look."""
    from PIL import ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", (48, 48), 30)
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 4, 42, 46), fill=shade)
    for x in (15, 28):
        draw.ellipse((x, 16, x + 5, 21), fill=20)
    draw.arc((14, 24 if smile else 32, 34, 38 if smile else 44), *((20, 160) if smile else (200, 340)), fill=20, width=2)
    image.save(path, quality=90)
    return path


@pytest.mark.parametrize("splits", [("test",), ("valid", "test")])
def test_evaluation_only_split_folders_are_read_as_they_are(tmp_path, capsys, splits):
    """No ``train/``: nothing to draw a split from, so ``test/`` (and ``valid/``) are the splits, whole."""
    from conftest import run_main

    root = tmp_path / "fer-test"
    for split in splits:
        for label, smile in (("happy", True), ("sad", False)):
            for i in range(3):
                _face_jpg(root / split / label / f"{split}-{label}-{i}.jpg", smile, 150 + 20 * i)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no split drawn, so no warning about speakers either
        corpus = read_data(root).corpus
    assert corpus.labels.names == ("happy", "sad")
    sizes = {s: len(corpus.split_dialogues(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 0, "valid": 6 if "valid" in splits else 0, "test": 6}
    assert {u.id.split("/")[0] for d in corpus.split_dialogues("test") for u in d.utterances} == {"test"}
    code, out, err = run_main(["data", "stats", str(root), "--json"], capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["splits"]["test"]["utterances"] == 6 and stats["splits"]["test"]["labels"] == {"happy": 3, "sad": 3}
    assert stats["splits"]["train"]["utterances"] == 0


@pytest.mark.skipif(not CKPLUS.is_dir(), reason=f"needs the shared CK+ crops at {CKPLUS}")
def test_ckplus_stats(capsys):
    from conftest import run_main

    code, out, err = run_main(["data", "stats", str(CKPLUS), "--format", "image-folder", "-o", f"speaker_pattern={CKPLUS_SUBJECT}", "--json"], capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["utterances"] == 981 and stats["speakers"] == 118
    assert stats["labels"] == {"anger": 135, "contempt": 54, "disgust": 177, "fear": 75, "happy": 207, "sadness": 84, "surprise": 249}
    splits = stats["splits"]
    assert sum(s["speakers"] for s in splits.values()) == 118  # no subject in two splits


# ------------------------------------------------------------------ frame folders
def test_frame_folders_are_sampled_like_video(tmp_path):
    from merkit.features.media import sample_frame_files

    files = [tmp_path / f"{i:04d}.png" for i in range(90)]  # 3 s at 30 frames per second
    picked = sample_frame_files(files, start=None, end=None, fps=2.0, max_frames=32, frame_rate=30.0)
    assert [f.name for _, f in picked] == ["0007.png", "0022.png", "0037.png", "0052.png", "0067.png", "0082.png"]
    cut = sample_frame_files(files, start=1.0, end=2.0, fps=2.0, max_frames=32, frame_rate=30.0)
    assert [f.name for _, f in cut] == ["0037.png", "0052.png"]
    assert len(sample_frame_files(files, start=None, end=None, fps=10.0, max_frames=4, frame_rate=30.0)) == 4
    with pytest.raises(MerkitError, match="no frames between 4.000 s and 3.000 s"):
        sample_frame_files(files, start=4.0, end=None, fps=2.0, max_frames=32, frame_rate=30.0)

    openface = tmp_path / "openface"
    for i in (1, 2, 11):
        _png(openface / "clip_aligned" / f"frame_det_00_{i:06d}.bmp")
    (openface / "clip.csv").write_text("frame, success\n1, 1\n")
    assert [p.name for p in frame_files(openface)][-1] == "frame_det_00_000011.bmp"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MerkitError, match="no image files"):
        frame_files(tmp_path / "empty")


# ------------------------------------------------------------------ real faces
@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """photo.png (the astronaut, 512×512), crop.png (its face, tight), crop48.png (48×48 grey), frames/, openface/,
    corrupt.png, empty/."""
    pytest.importorskip("mediapipe", reason="face features need MediaPipe 0.10.21 (see README)")
    pytest.importorskip("what_the_face_classification", reason="FER2013 CNN weights (see README)")
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image (dev extra)")
    from merkit.features.video import crop_square, face_box, find_landmarks

    root = tmp_path_factory.mktemp("faces")
    photo = skimage_data.astronaut()
    Image.fromarray(photo).save(root / "photo.png")
    left, top, side = face_box(find_landmarks(photo, 0.5), 0.05)
    crop = Image.fromarray(crop_square(photo, left, top, side))
    crop.save(root / "crop.png")
    crop.convert("L").resize((48, 48), Image.Resampling.BILINEAR).save(root / "crop48.png")
    (root / "frames").mkdir()
    for i, shift in enumerate((0, 4, 8)):
        Image.fromarray(crop_square(photo, left + shift, top, side)).save(root / "frames" / f"{i + 1}.jpg")
    (root / "openface" / "clip_aligned").mkdir(parents=True)
    for i in (1, 2):
        crop.save(root / "openface" / "clip_aligned" / f"frame_det_00_{i:06d}.bmp")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "empty").mkdir()
    return root


def _row(extractor, path: Path, kind: str = "image"):
    from merkit.features.media import Clip

    return extractor.encode_clip(Clip(str(path), kind=kind))


def test_detection_auto_takes_a_crop_as_the_face_and_finds_it_in_a_photo(faces):
    from merkit.features import get_extractor

    auto, on, off = (get_extractor("face-fer", detection=mode) for mode in ("auto", "on", "off"))
    photo = {mode: _row(e, faces / "photo.png") for mode, e in (("auto", auto), ("on", on), ("off", off))}
    np.testing.assert_array_equal(photo["auto"], photo["on"])  # a photograph: the detected face is cropped
    assert not np.allclose(photo["auto"], photo["off"])  # off embeds the whole photograph
    for name in ("crop.png", "crop48.png"):  # a face crop (RGB, or 48×48 grey like CK+): the whole image is the face
        np.testing.assert_array_equal(_row(auto, faces / name), _row(off, faces / name))
        assert _row(auto, faces / name).shape == (304,)
    grey, colour = _row(off, faces / "crop48.png"), _row(off, faces / "crop.png")
    assert np.corrcoef(grey, colour)[0, 1] > 0.9  # the same face at 48×48 grey: nearly the same embedding
    landmarks = _row(get_extractor("face-landmarks", detection="off"), faces / "crop48.png")
    assert landmarks.shape == (1434,)
    assert get_extractor("face-fer", detection="on").identity() != auto.identity()  # the choice is in the fingerprint


def test_images_and_frame_folders_through_extract_and_predict(faces, tmp_path, capsys):
    from conftest import run_main

    rows = [
        {"utterance_id": "photo", "image": "photo.png", "label": "joy"},
        {"utterance_id": "crop48", "image": "crop48.png", "label": "anger"},
        {"utterance_id": "frames", "frames": "frames", "label": "joy"},
        {"utterance_id": "openface", "frames": "openface", "label": "neutral"},
        {"utterance_id": "corrupt", "image": "corrupt.png", "label": "anger"},
        {"utterance_id": "empty", "frames": "empty", "label": "neutral"},
        {"utterance_id": "missing", "image": "missing.png", "label": "joy"},
    ]
    table = write_jsonl(faces / "faces.jsonl", [{"dialogue_id": r["utterance_id"], "split": "train", **r} for r in rows])
    store = tmp_path / "store"
    code, out, err = run_main(["extract", str(table), "--out", str(store), "-m", "visual", "-e", "face-fer", "--quiet"], capsys)
    assert code == 1 and "3 utterance(s) failed" in err, err
    features = open_store(store).features("visual")
    assert features.present.tolist() == [True, True, True, True, False, False, False]
    assert features.describe()["settings"]["detection"] == "auto"
    report = {r["utterance"]: r["reason"] for r in map(json.loads, (store / "failures" / "visual.jsonl").read_text().splitlines())}
    assert "unreadable image" in report["corrupt/corrupt"]
    assert "no image files" in report["empty/empty"] and report["missing/missing"] == "file not found"

    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"visual": "face-fer"})
    inputs = [{"image": str(faces / "crop48.png")}, {"frames": str(faces / "openface")}, {"image": str(faces / "corrupt.png")}]
    (tmp_path / "in.json").write_text(json.dumps(inputs))
    code, out, err = run_main(["predict", str(checkpoint), str(tmp_path / "in.json"), "--json"], capsys)
    assert code == 0, err
    predicted = json.loads(out)["utterances"]
    assert [u["modalities"] for u in predicted] == [["visual"], ["visual"], []]
    assert "unreadable image" in predicted[2]["notes"]["visual"]

    folder = tmp_path / "folder"  # a folder of media named after the transcript's utterances
    folder.mkdir()
    (folder / "0.png").write_bytes((faces / "crop.png").read_bytes())
    (folder / "1").mkdir()
    (folder / "1" / "a.png").write_bytes((faces / "crop.png").read_bytes())
    (folder / "transcript.csv").write_text("dialogue_id,utterance_id,speaker\nt,0,A\nt,1,B\n")
    code, out, err = run_main(["predict", str(checkpoint), str(folder), "--json"], capsys)
    assert code == 0, err
    assert [u["modalities"] for u in json.loads(out)["utterances"]] == [["visual"], ["visual"]]


@pytest.mark.skipif(not CKPLUS.is_dir(), reason=f"needs the shared CK+ crops at {CKPLUS}")
def test_the_demo_face_part_on_real_ckplus_crops(tmp_path):
    """The demo's CK+ part on 60 of its 118 subjects: FER-CNN conv features, an MLP and the SVM, a test image predicted."""
    pytest.importorskip("what_the_face_classification", reason="FER2013 CNN weights (see README)")
    from rich.console import Console

    from merkit.demo import CKPLUS_EXTRACTOR, CKPLUS_MODEL, _ckplus_part, _predict_image

    subjects = sorted({p.name.split("_")[0] for p in (CKPLUS / "images").glob("*/*.png")})[::2]
    folder = tmp_path / "ckplus"
    for image in (CKPLUS / "images").glob("*/*.png"):
        if image.name.split("_")[0] in subjects:
            (folder / "images" / image.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / "images" / image.parent.name / image.name).symlink_to(image)
    console = Console(record=True, width=200)
    rows = _ckplus_part(folder, tmp_path / "demo", console)
    assert set(rows) == {"ckplus", "ckplus (svm)"}
    mlp, svm = (rows[k]["summary"]["test"]["accuracy"]["mean"] for k in ("ckplus", "ckplus (svm)"))
    assert mlp > 0.6 and svm > 0.6, (mlp, svm)  # 7 classes, subjects unseen in training
    store = tmp_path / "demo" / "stores" / f"ckplus-{CKPLUS_EXTRACTOR}"
    _predict_image(tmp_path / "demo" / "runs" / f"ckplus-{CKPLUS_MODEL}" / "seed0" / "best", store, console)
    assert "(posed: happy)" in console.export_text()
