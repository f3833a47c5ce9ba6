"""merkit.load → Predictor on raw conversations: text, espeak-ng speech with a transcript, a video of a real face.

The checkpoints are trained here on tiny corpora (two epochs); the strongest check is that
the predictor, starting from raw text and media, reproduces exactly the test-split scores
the training engine computed from the stored features.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO
from media_helpers import blank_video, face_video, speak, tone, untrained_checkpoint, write_jsonl
from typer.testing import CliRunner

import merkit
from merkit.errors import MerkitError

pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")

TURNS = {
    "joy": ["I got the job, this is the best day ever!", "We won the final, I am so happy!", "You remembered my birthday, how lovely."],
    "anger": ["You broke my phone and lied about it!", "Stop interrupting me, I am furious.", "This is the third time you are late!"],
    "neutral": ["The train leaves at nine.", "The keys are on the table.", "We need milk and bread."],
}  # fmt: skip


def _training(root, rows, modalities):
    """Extract ``modalities`` ({modality: extractor}) for the table ``rows`` and train late-fusion for two epochs."""
    from merkit.data import read_data
    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction
    from merkit.training.engine import train_model

    table = write_jsonl(root / "talk.jsonl", rows)
    corpus = read_data(table).corpus
    for modality, name in modalities.items():
        extractor = get_extractor(name, modality=modality)
        try:
            run_extraction(corpus, extractor, out=root / "store", use_cache=False, progress=False, log=None)
        finally:
            extractor.close()
    run = root / "run"
    train_model(str(root / "store"), "late-fusion", out=run, overrides=["epochs=2", "batch_size=4"], seeds=[0], progress=False)
    engine = {}
    for line in (run / "seed0" / "predictions-test.jsonl").read_text().splitlines():
        row = json.loads(line)
        engine[row["id"]] = np.asarray(row["scores"])
    return SimpleNamespace(table=table, run=run, checkpoint=run / "seed0" / "best", engine=engine)


def _probabilities(result, labels):
    return {f"{u.dialogue_id}/{u.utterance_id}": np.array([u.probabilities[n] for n in labels]) for u in result.utterances}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """Six three-turn dialogues (train 4, valid 1, test 1) with frozen MiniLM features; late-fusion, two epochs."""
    rows = []
    for d in range(6):
        split = "train" if d < 4 else "valid" if d == 4 else "test"
        for turn, (label, texts) in enumerate(TURNS.items()):
            rows.append({"dialogue_id": f"d{d}", "utterance_id": str(turn), "speaker": "AB"[turn % 2],
                         "text": texts[d % 3], "label": label, "split": split})  # fmt: skip
    return _training(tmp_path_factory.mktemp("text"), rows, {"text": "minilm"})


@pytest.fixture(scope="module")
def text_predictor(text_run):
    with merkit.load(text_run.checkpoint) as predictor:
        yield predictor


# ------------------------------------------------------------------ text
def test_predictions_from_raw_text_equal_the_training_engine_scores(text_run, text_predictor):
    result = text_predictor.predict(text_run.table)
    assert result.labels == ["anger", "joy", "neutral"] and result.modalities == ["text"]
    assert len(result.utterances) == 18 and result.utterances[0].dialogue_id == "d0"
    ours = _probabilities(result, result.labels)
    assert set(text_run.engine) == {"d5/0", "d5/1", "d5/2"}
    for utterance_id, scores in text_run.engine.items():
        np.testing.assert_allclose(ours[utterance_id], scores, atol=2e-5)
    for u in result.utterances:
        assert u.label == max(u.probabilities, key=u.probabilities.get)
        assert abs(sum(u.probabilities.values()) - 1) < 1e-4
        assert u.modalities == ["text"] and u.notes == {} and u.uncertainty is None
        assert u.expert_weights == {"text": 1.0}


def test_every_input_form_gives_the_same_predictions(text_predictor, tmp_path):
    turns = [{"speaker": "Ana", "text": "I got the job, this is the best day ever!"}, {"speaker": "Ben", "text": "The keys are on the table."}]
    reference = text_predictor.predict(turns)
    assert [(u.utterance_id, u.speaker) for u in reference.utterances] == [("0", "Ana"), ("1", "Ben")]
    (tmp_path / "talk.json").write_text(json.dumps({"dialogue_id": "talk", "utterances": turns}))
    (tmp_path / "talk.txt").write_text("Ana: I got the job, this is the best day ever!\n\nBen: The keys are on the table.\n")
    (tmp_path / "talk.csv").write_text(
        "dialogue_id,utterance_id,speaker,text\ntalk,0,Ana,\"I got the job, this is the best day ever!\"\ntalk,1,Ben,The keys are on the table.\n"
    )
    inputs = [
        {"dialogue_id": "talk", "utterances": turns},
        {"dialogues": [{"dialogue_id": "talk", "utterances": turns}]},
        [{**t, "label": "joy", "split": "test"} for t in turns],  # gold annotations are ignored
        tmp_path / "talk.json",
        tmp_path / "talk.txt",
        str(tmp_path / "talk.csv"),
    ]
    for conversation in inputs:
        result = text_predictor.predict(conversation)
        assert [u.speaker for u in result.utterances] == ["Ana", "Ben"], conversation
        for ours, theirs in zip(result.utterances, reference.utterances, strict=True):
            assert ours.probabilities == pytest.approx(theirs.probabilities, abs=1e-6), conversation


def test_dialogues_keep_their_order_and_context(text_predictor):
    first = [{"text": "We won the final, I am so happy!"}, {"text": "Stop interrupting me, I am furious."}]
    result = text_predictor.predict({"dialogues": [
        {"dialogue_id": "b", "utterances": first},
        {"dialogue_id": "a", "utterances": [{"utterance_id": "x", "text": "The train leaves at nine."}]},
    ]})  # fmt: skip
    assert [(u.dialogue_id, u.utterance_id) for u in result.utterances] == [("b", "0"), ("b", "1"), ("a", "x")]
    alone = text_predictor.predict(first[1:])
    # the BiGRU reads the whole dialogue: the same turn scores differently with and without its context
    assert alone.utterances[0].probabilities != result.utterances[1].probabilities


def test_a_flat_list_of_interleaved_dialogues_comes_back_in_its_order(text_predictor):
    turns = [
        {"dialogue_id": "a", "text": "We won the final, I am so happy!"},
        {"dialogue_id": "b", "text": "The train leaves at nine."},
        {"dialogue_id": "a", "text": "Stop interrupting me, I am furious."},
    ]
    flat = text_predictor.predict(turns)
    assert [(u.dialogue_id, u.utterance_id, u.text) for u in flat.utterances] == [
        ("a", "0", turns[0]["text"]), ("b", "0", turns[1]["text"]), ("a", "1", turns[2]["text"]),
    ]  # fmt: skip
    grouped = text_predictor.predict({"dialogues": [
        {"dialogue_id": "a", "utterances": [turns[0], turns[2]]}, {"dialogue_id": "b", "utterances": [turns[1]]},
    ]})  # fmt: skip
    assert flat.utterances[2].probabilities == grouped.utterances[1].probabilities  # dialogue a was read as one context
    wrapped = text_predictor.predict({"utterances": turns})  # the turns' own dialogue_ids group them here too
    assert [(u.dialogue_id, u.text) for u in wrapped.utterances] == [(u.dialogue_id, u.text) for u in flat.utterances]


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([], "empty"),
        ({"utterances": []}, "empty"),
        ([{"text": "hi", "thermal": "a.bin"}], "unknown field 'thermal'"),
        ([{"text": "hi", "media": {"eeg": "a.edf"}}], "unknown modality 'eeg'"),
        ([{"text": 5}], "valid string"),
        ([{"text": "hi", "start": 2.0, "end": 1.0}], "before start"),
        ([{"utterance_id": "1", "text": "a"}, {"utterance_id": "1", "text": "b"}], "utterances 0 and 1 are both named '1'; give"),
        ([{"utterance_id": "1", "text": "a"}, {"text": "b"}], r"both named '1' \(a turn without an utterance_id is named by its position"),
        ({"dialogue_id": "q", "utterances": [{"dialogue_id": "x", "text": "a"}]}, "utterances.0.dialogue_id 'x' is not the conversation's"),
        ("not a path", "no such file"),
        (42, "not int"),
    ],
)
def test_bad_input_is_a_clear_error(text_predictor, conversation, message):
    with pytest.raises(MerkitError, match=message):
        text_predictor.predict(conversation)


def test_a_folder_needs_exactly_one_transcript(text_predictor, tmp_path):
    (tmp_path / "a.txt").write_text("Ana: hi\n")
    (tmp_path / "b.txt").write_text("Ben: hi\n")
    with pytest.raises(MerkitError, match="exactly one transcript"):
        text_predictor.predict(tmp_path)


def test_an_extractor_that_differs_from_the_recorded_one_is_refused(text_run, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(text_run.checkpoint, changed)
    meta = json.loads((changed / "model.json").read_text())
    meta["features"]["text"]["settings"]["pooling"] = "cls"  # other settings than those that made the features
    (changed / "model.json").write_text(json.dumps(meta))
    with pytest.raises(MerkitError, match="not the one the model was trained with"):
        merkit.load(changed)
    meta["features"]["text"]["settings"]["pooling"] = "mean"
    meta["features"]["text"]["settings"]["fingerprint"] = "0" * 64  # as if trained with other weights
    (changed / "model.json").write_text(json.dumps(meta))
    with pytest.raises(MerkitError, match="fingerprint"):
        merkit.load(changed)


def test_features_merkit_cannot_recompute_are_refused(tmp_path):
    from merkit.checkpoint import save_checkpoint
    from merkit.data import read_data
    from merkit.models.base import DataSpec
    from merkit.models.registry import get_model

    bundle = read_data("synthetic", dialogues=4)
    features = {m: f.describe() for m, f in bundle.features.items()}
    spec = DataSpec(modalities={m: f.dim for m, f in bundle.features.items()}, num_classes=bundle.corpus.labels.num_classes)
    entry = get_model("mlp")
    save_checkpoint(tmp_path, entry.model_class(entry.config_class(), spec), model_name="mlp", labels=bundle.corpus.labels, features=features)
    with pytest.raises(MerkitError, match="cannot compute from raw input"):
        merkit.load(tmp_path)


def test_multi_label_predictions_use_the_checkpoint_thresholds(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", {"text": "minilm"}, model="mlp", labels=("joy", "anger", "fear"), multi_label=True)
    meta = json.loads((checkpoint / "model.json").read_text())
    meta["thresholds"] = {"joy": 0.0, "anger": 1.0, "fear": 0.0}  # as the engine records them: per class
    (checkpoint / "model.json").write_text(json.dumps(meta))
    with merkit.load(checkpoint) as predictor:
        result = predictor.predict([{"text": "I am scared and happy at once."}, {"text": "Fine."}])
    assert result.multi_label
    for u in result.utterances:
        assert u.label == ["joy", "fear"]
        assert all(0 < p < 1 for p in u.probabilities.values())


def test_predict_and_export_commands(text_run, tmp_path):
    from merkit.cli import app

    out = tmp_path / "predictions.csv"
    ran = CliRunner().invoke(app, ["predict", str(text_run.checkpoint), str(text_run.table), "--csv", "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 18 and rows[15]["dialogue_id"] == "d5" and rows[15]["modalities"] == "text"
    scores = np.array([float(rows[15][f"p_{n}"]) for n in ("anger", "joy", "neutral")])
    np.testing.assert_allclose(scores, text_run.engine["d5/0"], atol=2e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary file left

    both = CliRunner().invoke(app, ["predict", str(text_run.checkpoint), str(text_run.table), "--csv", "--json"])
    assert both.exit_code != 0 and "one of --json and --csv" in str(both.exception)

    folder = tmp_path / "model"
    exported = CliRunner().invoke(app, ["export", str(text_run.checkpoint), "--out", str(folder)])
    assert exported.exit_code == 0, exported.output
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "model.json", "labels.json", "features.json", "metrics.json", "results.json", "README.md"} <= names
    card = (folder / "README.md").read_text()
    for part in ("## Intended use", "## Data", "## Metrics", "## Limitations", "honest: epoch selected on the validation split", "minilm"):
        assert part in card
    assert json.loads((folder / "labels.json").read_text())["names"] == ["anger", "joy", "neutral"]
    for written in folder.iterdir():  # shareable: none of the builder's absolute paths (venv, store, home)
        text = written.read_text(errors="replace")
        assert str(REPO) not in text and str(tmp_path) not in text and "site-packages" not in text, written.name
    assert json.loads((folder / "features.json").read_text())["text"]["settings"]["weights"]["path"].endswith("/model")
    with merkit.load(folder) as predictor:  # the exported folder is a checkpoint itself
        again = predictor.predict(text_run.table)
    np.testing.assert_allclose(_probabilities(again, again.labels)["d5/2"], text_run.engine["d5/2"], atol=2e-5)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Atomic writes go through ``mkstemp`` (mode 0600); the renamed file gets what ``open()`` would give."""
    import subprocess
    import sys

    script = "import os, sys; from merkit.io import atomic_write_text; atomic_write_text(sys.argv[1], 'x')"
    previous = os.umask(umask)
    try:
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "f.txt")], check=True)
    finally:
        os.umask(previous)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_large_inputs_show_a_progress_bar_unless_quiet(text_run, tmp_path):
    from merkit.cli import app
    from merkit.predict_commands import PROGRESS_FROM

    rows = [{"dialogue_id": f"p{i // 10}", "speaker": "AB"[i % 2], "text": f"Sentence number {i}."} for i in range(PROGRESS_FROM)]
    table = write_jsonl(tmp_path / "many.jsonl", rows)
    command = ["predict", str(text_run.checkpoint), str(table), "--out", str(tmp_path / "p.json")]
    shown = CliRunner().invoke(app, command)
    assert shown.exit_code == 0, shown.output
    assert "minilm text" in shown.stderr and f"{PROGRESS_FROM} utterance predictions" in shown.stderr
    quiet = CliRunner().invoke(app, [*command, "--quiet"])
    assert quiet.exit_code == 0 and "minilm text" not in quiet.stderr
    assert len(json.loads((tmp_path / "p.json").read_text())["utterances"]) == PROGRESS_FROM


# ------------------------------------------------------------------ speech and faces
SENTENCES = ["I cannot believe you did that to me!", "This is the happiest day of my life.", "The report is on your desk."]


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    """espeak-ng speech and an mp4 of the astronaut photograph speaking; text (MiniLM), audio (eGeMAPS),
    visual (FER CNN face embeddings); late-fusion, two epochs."""
    pytest.importorskip("opensmile", reason="eGeMAPS features need the audio extra")
    pytest.importorskip("mediapipe", reason="face features need MediaPipe 0.10.21 (see README)")
    root = tmp_path_factory.mktemp("media")
    wavs = [speak(sentence, root / f"speech{i}.wav") for i, sentence in enumerate(SENTENCES)]
    video = face_video(root / "face.mp4", soundtrack=wavs[1])
    labels = ["anger", "joy", "neutral"]
    rows = []
    for d in range(4):
        split = "train" if d < 2 else "valid" if d == 2 else "test"
        rows += [
            {"dialogue_id": f"m{d}", "utterance_id": "0", "speaker": "A", "text": SENTENCES[d % 3], "audio": wavs[d % 3].name,
             "label": labels[d % 3], "split": split},
            {"dialogue_id": f"m{d}", "utterance_id": "1", "speaker": "B", "text": SENTENCES[1], "video": video.name,
             "start": 0.2 * d, "end": 0.2 * d + 1.5, "label": "joy", "split": split},
            {"dialogue_id": f"m{d}", "utterance_id": "2", "speaker": "A", "text": "Okay.", "label": "neutral", "split": split},
        ]  # fmt: skip
    run = _training(root, rows, {"text": "minilm", "audio": "egemaps", "visual": "face-fer"})
    run.root, run.wavs, run.video = root, wavs, video
    return run


@pytest.fixture(scope="module")
def media_predictor(media_run):
    with merkit.load(media_run.checkpoint) as predictor:
        yield predictor


def test_speech_and_face_video_from_raw_files_equal_the_training_engine(media_run, media_predictor):
    result = media_predictor.predict(media_run.table)
    assert result.modalities == ["text", "audio", "visual"]
    by_id = {f"{u.dialogue_id}/{u.utterance_id}": u for u in result.utterances}
    assert by_id["m3/0"].modalities == ["text", "audio"]  # a wav with its transcript
    assert by_id["m3/1"].modalities == ["text", "audio", "visual"]  # the video: its face and its sound track
    assert by_id["m3/2"].modalities == ["text"]
    ours = _probabilities(result, result.labels)
    for utterance_id, scores in media_run.engine.items():
        np.testing.assert_allclose(ours[utterance_id], scores, atol=2e-5)
    weights = by_id["m3/2"].expert_weights
    assert weights["audio"] == 0 and weights["visual"] == 0  # masked modalities take no part in the mix


def test_a_wav_with_a_transcript_and_a_face_video_as_python_objects(media_run, media_predictor):
    result = media_predictor.predict(
        [
            {"speaker": "Ana", "text": SENTENCES[0], "audio": media_run.wavs[0].name},
            {"speaker": "Ben", "video": media_run.video.name, "start": 0.0, "end": 2.0},
        ],
        base_dir=media_run.root,
    )
    speech, video = result.utterances
    assert speech.modalities == ["text", "audio"]
    assert video.modalities == ["audio", "visual"] and video.text == ""
    assert abs(sum(video.probabilities.values()) - 1) < 1e-4


def test_media_that_give_nothing_are_masked_with_the_reason(media_run, media_predictor, tmp_path):
    silent = tone(tmp_path / "silent.wav", 1.0, frequency=0.0)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    result = media_predictor.predict(
        [
            {"text": "Hello there.", "audio": "silent.wav"},
            {"text": "Hello there.", "audio": "corrupt.wav"},
            {"text": "Hello there.", "video": blank_video(tmp_path / "blank.mp4").name},
            {"text": "Hello there.", "audio": "missing.wav"},
        ],
        base_dir=tmp_path,
    )
    assert silent.is_file()
    notes = [u.notes for u in result.utterances]
    assert "silent" in notes[0]["audio"]
    assert "unreadable" in notes[1]["audio"] or "corrupt" in notes[1]["audio"]
    assert "no face" in notes[2]["visual"] and "no audio track" in notes[2]["audio"]
    assert notes[3]["audio"] == "file not found"
    assert all(u.modalities == ["text"] for u in result.utterances)


def test_a_folder_of_media_with_one_transcript(media_run, media_predictor, tmp_path):
    shutil.copy(media_run.wavs[0], tmp_path / "1.wav")
    shutil.copy(media_run.video, tmp_path / "2.mp4")
    (tmp_path / "transcript.csv").write_text(
        f"dialogue_id,utterance_id,speaker,text\ncall,1,Ana,{SENTENCES[0]}\ncall,2,Ben,{SENTENCES[1]}\ncall,3,Ana,Okay.\n"
    )
    result = media_predictor.predict(tmp_path)
    assert [u.modalities for u in result.utterances] == [["text", "audio"], ["text", "audio", "visual"], ["text"]]


def test_a_media_folder_numbered_from_one_and_files_named_after_no_utterance(tmp_path):
    from merkit.data.corpus import LabelSchema
    from merkit.inference import read_input

    (tmp_path / "talk.txt").write_text("Ana: Hello.\nBen: Hi.\nAna: Bye.\n")  # lines are utterances 0, 1, 2
    for name in ("1.wav", "2.wav", "3.wav"):
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(UserWarning, match="numbered 1-3 and the utterances 0-2"):
        corpus = read_input(tmp_path, LabelSchema(names=("joy", "anger")))
    assert [Path(u.media["audio"]).name for u in corpus.utterances()] == ["1.wav", "2.wav", "3.wav"]

    (tmp_path / "4.wav").write_bytes(b"")
    (tmp_path / "intro.mp4").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"3 media file\(s\) named after no utterance, not used: 3.wav, 4.wav, intro.mp4"):
        corpus = read_input(tmp_path, LabelSchema(names=("joy", "anger")))  # 1..4 for 0..2: no longer a shift
    assert [Path(u.media.get("audio", "-")).name for u in corpus.utterances()] == ["-", "1.wav", "2.wav"]


@pytest.mark.parametrize("start", [1e308, float("inf"), float("nan"), -1.0])
def test_media_times_out_of_range_are_a_clear_error(start, tmp_path):
    from merkit.inference import read_conversations

    with pytest.raises(MerkitError, match="start"):
        read_conversations([{"text": "Hi.", "audio": "a.wav", "start": start}])
    table = tmp_path / "t.csv"
    table.write_text(f"dialogue_id,text,start\nd,Hi.,{start}\n")
    from merkit.data import read_data

    with pytest.raises(MerkitError, match=r"t.csv, line 2: start .* is not a time in seconds between 0 and 1e\+07"):
        read_data(table)


@pytest.mark.parametrize(
    "conversation",
    [
        [{"text": "a"}, {"text": "b", "start": "soon"}],
        [{"text": "a", "dialogue_id": "x"}, {"text": "b", "dialogue_id": "y", "start": "soon"}],
        {"utterances": [{"text": "a"}, {"text": "b", "start": "soon"}]},
        {"utterances": [{"text": "a", "dialogue_id": "x"}, {"text": "b", "dialogue_id": "x", "start": "soon"}]},
    ],
    ids=["flat list", "flat list with dialogue_ids", "utterances", "utterances with dialogue_ids"],
)
def test_a_wrong_field_has_one_name_in_every_form(conversation):
    """Turns grouped by their dialogue_ids are validated as ``utterances`` too: ``utterances.1.start``, never ``1.start``."""
    from merkit.inference import read_conversations

    with pytest.raises(MerkitError, match=r"^utterances\.1\.start: Input should be a valid number"):
        read_conversations(conversation)


def test_a_lone_surrogate_is_a_clear_error():
    from merkit.inference import read_conversations

    for field in ("text", "speaker"):
        with pytest.raises(MerkitError, match=r"not valid Unicode text: '\\ud800' at character 2"):
            read_conversations(json.loads('[{"%s": "ab\\ud800c"}]' % field))


def test_predictions_from_nothing_and_unread_media_say_so(text_predictor, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "f.png").write_bytes(b"")
    result = text_predictor.predict(
        [{"text": ""}, {"text": "Hello.", "audio": "a.wav"}, {"audio": "a.wav"}, {"text": "Hi.", "image": "f.png"}], base_dir=tmp_path
    )
    empty, spoken, audio_only, pictured = result.utterances
    assert empty.modalities == [] and "nothing this model reads (text) was usable" in empty.notes["input"]
    assert empty.expert_weights is None  # no weights invented for a turn with no input
    prior = text_predictor.checkpoint.meta["label_prior"]
    assert [empty.probabilities[n] for n in result.labels] == pytest.approx(prior, abs=1e-6)  # not the model's output on nothing
    assert "the training split's label frequencies" in empty.notes["input"]
    assert spoken.modalities == ["text"] and spoken.notes == {"audio": "the model does not read audio; the audio file was not used"}
    assert "input" in audio_only.notes and "audio" in audio_only.notes
    assert pictured.notes == {"visual": "the model does not read visual; the image file was not used"}


def test_a_media_file_alone_and_a_run_folder_get_a_hint(text_run, tmp_path):
    from merkit.data.corpus import LabelSchema
    from merkit.inference import read_input

    (tmp_path / "x.wav").write_bytes(b"x")
    with pytest.raises(MerkitError, match=r'an audio file alone is not a conversation: give JSON naming it \(\[\{"audio": "x.wav"\}\]\)'):
        read_input(tmp_path / "x.wav", LabelSchema(names=("joy",)))
    with pytest.raises(MerkitError, match=r"not a merkit checkpoint \(no model.json\); a run folder: its checkpoints are .*seed0/best"):
        merkit.load(text_run.run)


def test_quiet_predict_prints_nothing_but_the_answer(text_run, tmp_path):
    from conftest import run_cli

    (tmp_path / "talk.txt").write_text("Ana: I got the job!\nBen: No way.\n")
    quiet = run_cli("predict", str(text_run.checkpoint), str(tmp_path / "talk.txt"), "-q", timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # no weight-loading bar of transformers either
    assert len(json.loads(quiet.stdout)["utterances"]) == 2
