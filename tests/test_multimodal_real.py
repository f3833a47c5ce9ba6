"""The multimodal path end to end on real signals: RAVDESS speech + OpenFace action units.

Clips of 12 actors → eGeMAPS from the audio → AUs imported from the OpenFace table → a fusion
model trained (features standardised on train) → a raw clip predicted, the imported modality
masked and said so.
"""

import json

import pytest

from conftest import run_cli, shared

EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


@pytest.fixture(scope="module")
def ravdess_store(tmp_path_factory):
    ravdess = shared("ravdess")
    root = tmp_path_factory.mktemp("ravdess")
    rows = []
    for actor in range(1, 13):
        for code, emotion in EMOTIONS.items():
            stem = f"03-01-{code}-01-01-01-{actor:02d}"
            split = "test" if actor > 10 else "valid" if actor > 8 else "train"
            rows.append({"dialogue_id": stem, "utterance_id": stem, "speaker": f"Actor_{actor:02d}", "label": emotion, "split": split,
                         "audio": str(ravdess / "audio" / f"Actor_{actor:02d}" / f"{stem}.flac")})  # fmt: skip
    corpus = root / "clips.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = root / "store"
    result = run_cli("extract", str(corpus), "--modality", "audio", "--extractor", "egemaps", "--out", str(store), "--quiet")
    assert result.returncode == 0, result.stderr
    table = ravdess / "face_action_units.csv"
    result = run_cli("data", "add-features", str(store), "--modality", "visual", str(table), "--columns", "AU*_r,AU*_c")
    assert result.returncode == 0, result.stderr
    return store, rows


def test_a_fusion_model_trains_on_real_audio_and_action_units_and_predicts_a_raw_clip(ravdess_store, tmp_path):
    store, rows = ravdess_store
    out = tmp_path / "run"
    result = run_cli("train", str(store), "--model", "late-fusion", "--modalities", "audio,visual", "--set", "epochs=5", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "seed0" / "best" / "model.json").read_text())
    assert {m: e["method"] for m, e in meta["normalization"].items()} == {"audio": "standard", "visual": "standard"}
    assert meta["features"]["visual"]["extractor"] == "external"
    clip = tmp_path / "one.jsonl"
    clip.write_text(json.dumps({"dialogue_id": "x", "speaker": "A", "audio": rows[-1]["audio"]}) + "\n")
    predicted = run_cli("predict", str(out / "seed0" / "best"), str(clip), "--json", "--quiet")
    assert predicted.returncode == 0, predicted.stderr
    (utterance,) = json.loads(predicted.stdout)["utterances"]
    assert utterance["label"] in EMOTIONS.values() and utterance["modalities"] == ["audio"]
    assert "imported" in utterance["notes"]["visual"]


@pytest.mark.filterwarnings("ignore:.*match no utterance")  # the whole table against a few actors' clips
def test_the_demo_multimodal_part_on_a_few_actors(tmp_path):
    from rich.console import Console

    from merkit.demo import RAVDESS_MODEL, _predict_clip, _ravdess_part

    ravdess = shared("ravdess")
    folder = tmp_path / "ravdess"
    for actor in ("01", "02", "17", "19"):
        (folder / "audio" / f"Actor_{actor}").mkdir(parents=True)
        for clip in sorted((ravdess / "audio" / f"Actor_{actor}").glob("*.flac"))[::4]:
            (folder / "audio" / f"Actor_{actor}" / clip.name).symlink_to(clip)
    (folder / "face_action_units.csv").symlink_to(ravdess / "face_action_units.csv")
    console = Console(record=True, width=200)
    results = _ravdess_part(folder, tmp_path / "demo", console)
    assert results["modalities"] == ["audio", "visual"] and results["protocol"] == "honest"
    assert set(results["data"]["features"]) == {"audio", "visual"}
    _predict_clip(tmp_path / "demo" / "runs" / f"ravdess-{RAVDESS_MODEL}" / "seed0" / "best", folder, console)
    assert "predicted from the raw audio of 03-01-05-02-" in console.export_text()
