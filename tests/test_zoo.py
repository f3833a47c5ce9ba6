"""The bundled zoo (issue #38): every shipped model loads by name and predicts from raw input, its card is complete
and its test score is what a fresh evaluation gives; ``merkit zoo build`` reproduces an entry; an unknown name is
refused with the known ones; ``merkit serve`` alone serves the defaults. The fused recording default: test_fusion.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from merkit.cli import app
from merkit.errors import MerkitError
from merkit.zoo import CARD, FUSION, ZOO_DIR, card, locate, names, resolve, size_bytes

SHARED = Path(os.environ.get("MERKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHECKPOINTS = [n for n in names() if card(n).kind == "checkpoint"]
runner = CliRunner()


def test_the_zoo_ships_the_promised_models_within_40_mb():
    assert {"text-meld", "text-iemocap", "voice-ravdess", "face-fer2013", "fused-meld-ravdess"} <= set(names())
    total = sum(size_bytes(n) for n in names())
    assert total <= 40e6, f"the zoo is {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", names())
def test_every_card_is_complete_and_matches_its_model(name):
    entry = card(name)  # every field required: an incomplete card does not validate
    folder = locate(name)
    assert entry.name == name and (folder / "recipe.yaml").is_file() and (folder / "README.md").is_file()
    assert entry.scores and all(values for values in entry.scores.values())
    if entry.kind == "checkpoint":
        meta = json.loads((folder / "model.json").read_text())
        assert list(meta["labels"]["names"]) == entry.labels
        assert all(entry.headline in entry.scores[reported] for reported in entry.reported)
        assert not any(str(Path.home()) in text or "/work/" in text for text in map(lambda p: p.read_text("utf-8"), folder.glob("*.json")))
    else:
        spec = json.loads((folder / FUSION).read_text())
        assert spec["words"] in names() and spec["voice"] in names()
        assert card(spec["words"]).labels == entry.labels  # the shared set is the words model's


def test_an_unknown_name_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(MerkitError, match="no zoo model named 'text-mled'.*text-meld.*voice-ravdess"):
        resolve("text-mled")
    talk = tmp_path / "talk.txt"
    talk.write_text("Ana: hello\n")
    result = runner.invoke(app, ["predict", "text-mled", str(talk)])
    assert result.exit_code != 0 and "text-meld" in str(result.exception)
    assert resolve(tmp_path) == tmp_path  # an existing folder is a folder, whatever its name


@pytest.mark.parametrize("name", [n for n in CHECKPOINTS if "text" in card(n).modalities])
def test_text_models_predict_from_raw_text_by_name(name):
    import merkit

    with merkit.load(name, threads=1) as predictor:
        result = predictor.predict([{"speaker": "Ana", "text": "I got the job, I am so happy!"},
                                    {"speaker": "Ben", "text": "That's wonderful news, congratulations!"}])  # fmt: skip
    assert result.labels == card(name).labels and result.model == name  # the entry's name, not its architecture
    for utterance in result.utterances:
        assert utterance.label in card(name).labels and utterance.modalities == ["text"]
        assert sum(utterance.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_the_voice_model_predicts_from_a_raw_audio_file(tmp_path):
    from media_helpers import speak

    import merkit

    clip = speak("Dogs are sitting by the door.", tmp_path / "said.wav")
    with merkit.load("voice-ravdess", threads=1) as predictor:
        result = predictor.predict([{"audio": str(clip)}])
    (utterance,) = result.utterances
    assert utterance.modalities == ["audio"] and utterance.label in card("voice-ravdess").labels


def test_the_face_model_predicts_from_a_raw_image(tmp_path):
    pytest.importorskip("mediapipe", reason="face detection needs MediaPipe 0.10.21 (see README)")
    from PIL import Image
    from skimage import data

    import merkit

    face = Image.fromarray(data.astronaut()[25:205, 130:310]).convert("L").resize((48, 48), Image.Resampling.BILINEAR)  # as test_face_cnn
    face.save(tmp_path / "face.png")
    with merkit.load("face-fer2013", threads=1) as predictor:
        (utterance,) = predictor.predict([{"image": str(tmp_path / "face.png")}]).utterances
    assert utterance.label in card("face-fer2013").labels and utterance.modalities == ["visual"]


def test_predict_and_info_take_a_zoo_name_and_predict_defaults_to_text_meld(tmp_path):
    talk = tmp_path / "talk.txt"
    talk.write_text("Ana: I can't believe you did that, I'm furious!\nBen: I'm sorry.\n")
    named = runner.invoke(app, ["predict", "text-meld", str(talk), "--threads", "1", "-q"])
    default = runner.invoke(app, ["predict", str(talk), "--threads", "1", "-q"])
    assert named.exit_code == 0 and default.exit_code == 0, named.output + default.output
    assert json.loads(named.stdout)["utterances"] == json.loads(default.stdout)["utterances"]
    assert json.loads(named.stdout)["model"] == json.loads(default.stdout)["model"] == "text-meld"
    info = runner.invoke(app, ["info", "text-meld"])
    assert info.exit_code == 0 and "GPL-3.0" in info.stdout and "ensemble" in info.stdout, info.output


def test_zoo_list_names_every_model_with_its_size():
    result = runner.invoke(app, ["zoo", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [row["name"] for row in listed["models"]] == names()
    assert listed["bytes"] == sum(size_bytes(n) for n in names())
    for row in listed["models"]:
        assert row["licence"] and row["training_data"] and row["labels"] and row["test"]


# ------------------------------------------------------------------ against the shared data
needs_data = pytest.mark.skipif(not (SHARED / "meld").is_dir(), reason=f"the shared corpora are not at {SHARED} (set MERKIT_SHARED_DATA)")


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", [n for n in CHECKPOINTS if "test" in card(n).scores])  # face-fer2013: tests/test_face_cnn.py
def test_each_card_test_score_is_a_fresh_evaluation_on_the_shared_test_split(name):
    """The shipped model on the raw test split (features made now) scores what its card says, within 0.5 points
    (the encoders' float sums may differ between CPUs)."""
    from sklearn.metrics import accuracy_score, f1_score

    import merkit
    from merkit.data.corpus import build_corpus
    from merkit.data.formats import read_data
    from merkit.zoo_build import Recipe, read_recipe

    recipe = Recipe.model_validate(read_recipe(locate(name) / "recipe.yaml"))
    corpus = read_data(SHARED / recipe.corpus, **recipe.reader_options).corpus
    test = [d for d in corpus.dialogues if d.id in set(corpus.splits["test"])]
    only_test = build_corpus(name=corpus.name, labels=corpus.labels, dialogues=tuple(test), splits={"test": tuple(d.id for d in test)})
    truth = [corpus.labels.names[u.label] for d in test for u in d.utterances]
    with merkit.load(name, threads=1) as predictor:
        predicted = [u.label for u in predictor.predict(only_test).utterances]
    fresh = {"accuracy": 100 * accuracy_score(truth, predicted), "weighted_f1": 100 * f1_score(truth, predicted, average="weighted"),
             "macro_f1": 100 * f1_score(truth, predicted, average="macro")}  # fmt: skip
    for metric, value in card(name).scores["test"].items():
        assert fresh[metric] == pytest.approx(value, abs=0.5), f"{name} test {metric}: card {value}, fresh {fresh[metric]:.2f}"


@pytest.mark.slow
@needs_data
def test_zoo_build_on_a_reduced_budget_reproduces_the_voice_model(tmp_path):
    """Two seeds instead of five, from raw clips: the same label set, and test macro F1 within 5 points of the shipped card."""
    from merkit.zoo_build import build_zoo

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "zoo"
    built = build_zoo(SHARED, out=tmp_path / "zoo", work=tmp_path / "work", only=["voice-ravdess"], budget="reduced", recipes=recipes, progress=False)
    shipped = card("voice-ravdess")
    assert built["voice-ravdess"].labels == shipped.labels
    assert (tmp_path / "zoo" / "voice-ravdess" / CARD).is_file() and (tmp_path / "zoo" / "voice-ravdess" / "model.safetensors").is_file()
    assert built["voice-ravdess"].scores["test"]["macro_f1"] == pytest.approx(shipped.scores["test"]["macro_f1"], abs=5.0)
    assert ZOO_DIR not in (tmp_path / "zoo").parents


def test_serve_without_a_checkpoint_serves_the_default_zoo_model():
    import socket
    import subprocess
    import sys

    from conftest import poll_json

    pytest.importorskip("uvicorn")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "merkit", "serve", "--port", str(port), "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        answer = poll_json(process, f"http://127.0.0.1:{port}/model", 180)
        assert answer is not None, process.stderr.read() if process.poll() is not None else "no answer"
        assert answer["labels"] == card("text-meld").labels and answer["modalities"]["text"]["extractor"] == "mpnet"
        assert answer["model"] == "text-meld" and answer["architecture"] == "ensemble"
        if answer["recording"] is not None:  # recordings get the fused default, as `merkit predict RECORDING` does
            assert answer["recording"]["model"] == "fused-meld-ravdess"
    finally:
        process.terminate()
        process.wait(timeout=30)
