"""Speaker-independent K-fold cross-validation: grouping, parts, and the gathered results."""

import json

import numpy as np
import pytest

from merkit.data import read_data, write_store
from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.external import add_features
from merkit.data.folds import dialogue_groups, make_folds
from merkit.data.formats import DataBundle
from merkit.data.features import FeatureSet
from merkit.errors import MerkitError
from merkit.training.crossval import cross_validate

from conftest import run_cli, shared


def _actor_corpus(actors=12, clips=5, seed=0, first_actor_clips=None):
    """One-utterance dialogues of ``actors`` speakers, with audio vectors that carry the label
    (``first_actor_clips``: Actor_01 has that many clips, the others ``clips``)."""
    rng = np.random.default_rng(seed)
    dialogues, labels = [], []
    for a in range(1, actors + 1):
        for c in range(first_actor_clips if a == 1 and first_actor_clips else clips):
            label = int(rng.integers(0, 3))
            labels.append(label)
            utterance = build_utterance(id=f"a{a:02d}c{c}", speaker=f"Actor_{a:02d}", label=label)
            dialogues.append(Dialogue(id=utterance.id, utterances=(utterance,)))
    ids = tuple(d.id for d in dialogues)
    corpus = build_corpus(name="actors", labels=LabelSchema(names=("a", "b", "c")), dialogues=tuple(dialogues), splits={"train": ids})
    values = (np.eye(3)[labels] * 3 + rng.normal(size=(len(labels), 3))).astype(np.float32)
    return DataBundle(corpus, {"audio": FeatureSet("audio", values, np.ones(len(labels), bool))})


def _speakers(corpus, split):
    return {u.speaker for d in corpus.split_dialogues(split) for u in d.utterances}


@pytest.mark.parametrize("k", [3, 4, 6])
def test_no_speaker_is_in_two_parts_and_every_dialogue_is_tested_once(k):
    corpus = _actor_corpus().corpus
    folds = make_folds(corpus, k)
    tested = [d for fold in folds for d in fold.corpus.splits["test"]]
    assert sorted(tested) == sorted(d.id for d in corpus.dialogues)
    for fold in folds:
        parts = [_speakers(fold.corpus, s) for s in ("train", "valid", "test")]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert fold.groups["test"] == sorted(parts[2]) and fold.groups["valid"] == sorted(parts[1])
    assert folds[0].groups["test"] == [f"Actor_{a:02d}" for a in range(1, 12 // k + 1)]  # contiguous actors


def test_dialogues_sharing_a_speaker_stay_together():
    rows = [("d1", "ann"), ("d1", "bob"), ("d2", "bob"), ("d2", "cid"), ("d3", "dan"), ("d4", "eve"), ("d5", "fay")]
    by_dialogue: dict[str, list] = {}
    for i, (d, s) in enumerate(rows):
        by_dialogue.setdefault(d, []).append(build_utterance(id=f"u{i}", speaker=s, label=0))
    dialogues = tuple(Dialogue(id=d, utterances=tuple(u)) for d, u in by_dialogue.items())
    corpus = build_corpus(name="c", labels=LabelSchema(names=("x",)), dialogues=dialogues, splits={"train": tuple(by_dialogue)})
    groups = sorted(sorted(g) for g in dialogue_groups(corpus, "speaker"))
    assert groups == [["d1", "d2"], ["d3"], ["d4"], ["d5"]]
    assert len(dialogue_groups(corpus, "dialogue")) == 5
    with pytest.raises(MerkitError, match="at least 5 speaker groups"):
        make_folds(corpus, 5)
    assert [f.groups["test"] for f in make_folds(corpus, "loso")] == [["ann"], ["dan"], ["eve"], ["fay"]]  # d1 + d2 together
    assert [f.groups["test"] for f in make_folds(corpus, "loso", "dialogue")] == [["d1"], ["d2"], ["d3"], ["d4"], ["d5"]]
    with pytest.raises(MerkitError, match="choose one of"):
        dialogue_groups(corpus, "session")


def test_cross_validation_trains_every_fold_and_gathers_folds_times_seeds(tmp_path):
    bundle = _actor_corpus()
    out = tmp_path / "cv"
    results = cross_validate(bundle, "mlp", out=out, folds=3, seeds=[0, 1], overrides={"epochs": 3}, progress=False)
    assert results["runs"] == 6 and set(results["per_seed"]) == {f"fold{f}/seed{s}" for f in range(3) for s in (0, 1)}
    tests = [r["test"]["accuracy"] for r in results["per_seed"].values()]
    assert results["summary"]["test"]["accuracy"]["mean"] == pytest.approx(np.mean(tests))
    assert (out / "fold2" / "seed1" / "best" / "model.json").is_file()
    assert results["cross_validation"]["parts"]["fold0"]["test"] == ["Actor_01", "Actor_02", "Actor_03", "Actor_04"]
    assert json.loads((out / "results.json").read_text())["runs"] == 6
    with pytest.raises(MerkitError, match="already holds a run"):
        cross_validate(bundle, "mlp", out=out, folds=3, overrides={"epochs": 3}, progress=False)
    again = cross_validate(bundle, "mlp", out=out, folds=3, seeds=[0, 1], overrides={"epochs": 3}, progress=False, resume=True)
    assert again["summary"] == results["summary"]


def test_train_folds_from_the_command_line(tmp_path):
    corpus = tmp_path / "talk.jsonl"
    lines = [
        {"dialogue_id": f"d{i}", "speaker": f"s{i % 4}", "text": "hi", "label": "ab"[i % 2], "split": "train"} for i in range(16)
    ]
    corpus.write_text("\n".join(json.dumps(line) for line in lines))
    bundle = read_data(corpus)
    assert len(dialogue_groups(bundle.corpus)) == 4
    result = run_cli("train", str(corpus), "--model", "mlp", "--folds", "4", "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode != 0 and "no features" in result.stderr  # a corpus without features: one clear line
    assert "Traceback" not in result.stderr


def _bunched_corpus(speakers=20, posing_c=4):
    """Like CK+: the last ``posing_c`` speakers posed only class 'c', the others 'a' and 'b' (4 clips each)."""
    dialogues = []
    for s in range(1, speakers + 1):
        for c in range(4):
            label = 2 if s > speakers - posing_c else c % 2
            utterance = build_utterance(id=f"s{s:02d}c{c}", speaker=f"S{s:03d}", label=label)
            dialogues.append(Dialogue(id=utterance.id, utterances=(utterance,)))
    return build_corpus(name="bunched", labels=LabelSchema(names=("a", "b", "c")), dialogues=tuple(dialogues),
                        splits={"train": tuple(d.id for d in dialogues)})  # fmt: skip


def test_stratified_assignment_spreads_a_class_that_sorted_speakers_bunch():
    """Contiguous parts put the speakers of class 'c' in one part, with a note; stratified spreads them."""
    corpus = _bunched_corpus()
    contiguous = make_folds(corpus, 5)
    assert any("'c' items" in note and "stratified" in note for f in contiguous for note in f.notes)
    stratified = make_folds(corpus, 5, assignment="stratified")
    assert not any(f.notes for f in stratified)
    for fold in stratified:
        assert not _speakers(fold.corpus, "train") & (_speakers(fold.corpus, "test") | _speakers(fold.corpus, "valid"))
    tested = [sum(u.label == 2 for d in f.corpus.split_dialogues("test") for u in d.utterances) for f in stratified]
    assert sum(tested) == 16 and max(tested) <= 8  # contiguous: all 16 in the last part
    assert make_folds(corpus, 5, assignment="stratified")[0].corpus.splits == stratified[0].corpus.splits  # seeded
    with pytest.raises(MerkitError, match="--fold-assignment 'random'"):
        make_folds(corpus, 5, assignment="random")


def test_uneven_speakers_cannot_fill_k_parts_and_the_error_names_the_ways_out():
    """Like a 10-speaker speech corpus where one speaker recorded half the clips: 10 contiguous parts leave some empty."""
    corpus = _actor_corpus(actors=10, first_actor_clips=40).corpus
    ways_out = r"Actor_01 alone holds 40 of the 85 utterances\); use --folds loso .*, or --fold-assignment stratified, or fewer folds"
    with pytest.raises(MerkitError, match=ways_out):
        make_folds(corpus, 10)
    with pytest.raises(MerkitError, match="give a number of parts .* or loso"):
        make_folds(corpus, "ten")
    with pytest.raises(MerkitError, match="stratified has nothing to deal"):
        make_folds(corpus, "loso", assignment="stratified")


def test_leave_one_speaker_out_tests_each_speaker_once_and_selects_on_the_next():
    corpus = _actor_corpus(actors=10, first_actor_clips=40).corpus
    folds = make_folds(corpus, "loso")
    actors = [f"Actor_{a:02d}" for a in range(1, 11)]
    assert [f.groups["test"] for f in folds] == [[a] for a in actors]
    assert [f.groups["valid"] for f in folds] == [[actors[(i + 1) % 10]] for i in range(10)]
    for fold in folds:
        assert sorted(_speakers(fold.corpus, "train")) == sorted(set(actors) - set(fold.groups["test"]) - set(fold.groups["valid"]))
    assert make_folds(corpus, "10", assignment="stratified")[0].corpus.splits  # digits from the command line work too
    notes = [f.notes for f in make_folds(_bunched_corpus(speakers=5, posing_c=1), "loso")]
    assert notes[4] == ("training holds 0 of the 4 'c' items",)  # S005 tested: no stratified hint, loso has none to give
    two = _actor_corpus(actors=2).corpus
    with pytest.raises(MerkitError, match="--folds loso needs at least 3 speaker groups; the labelled data has 2"):
        make_folds(two, "loso")


RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


@pytest.fixture(scope="module")
def uneven_ravdess_store(tmp_path_factory):
    """Real RAVDESS clips with their OpenFace action units: Actor_01's 60 clips, 10 of each of Actors 2-10."""
    table = shared("ravdess") / "face_action_units.csv"
    clips = sorted(line.split(",", 1)[0] for line in table.read_text().splitlines()[1:])
    chosen = [c for c in clips if c.endswith("-01")] + [c for a in range(2, 11) for c in [c for c in clips if c.endswith(f"-{a:02d}")][::6]]
    dialogues = tuple(
        Dialogue(id=c, utterances=(build_utterance(id=c, speaker=f"Actor_{c[-2:]}", label=int(c.split("-")[2]) - 1),)) for c in chosen
    )
    corpus = build_corpus(name="ravdess-uneven", labels=LabelSchema(names=RAVDESS_EMOTIONS), dialogues=dialogues, splits={"train": chosen})
    store = tmp_path_factory.mktemp("ravdess") / "store"
    write_store(store, corpus)
    with pytest.warns(UserWarning, match="match no utterance"):  # the other actors' clips
        add_features(store, "visual", table, columns="AU*_r,AU*_c")
    return store


def test_leave_one_speaker_out_on_real_uneven_speakers_in_train_and_baseline(uneven_ravdess_store, tmp_path):
    store = str(uneven_ravdess_store)
    refused = run_cli("train", store, "--model", "mlp", "--folds", "10", "--out", str(tmp_path / "k10"), "--quiet")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "too uneven" in refused.stderr and "--folds loso" in refused.stderr and "--fold-assignment stratified" in refused.stderr
    train = run_cli("train", store, "--model", "mlp", "--folds", "loso", "--set", "epochs=2", "--out", str(tmp_path / "mlp"), "--quiet")
    assert train.returncode == 0, train.stderr
    baseline = run_cli("baseline", store, "--modalities", "visual", "--folds", "loso", "--c", "1,10", "--out", str(tmp_path / "svm"))
    assert baseline.returncode == 0, baseline.stderr
    trained, svm = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("mlp", "svm"))
    assert trained["runs"] == svm["runs"] == 10
    layout = trained["cross_validation"]
    assert layout["folds"] == 10 and layout["loso"] is True
    assert [layout["parts"][f"fold{i}"]["test"] for i in range(10)] == [[f"Actor_{a:02d}"] for a in range(1, 11)]
    assert svm["cross_validation"] == layout  # the baseline reports the same per-fold groups
