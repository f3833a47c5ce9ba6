"""The multi-label path: input files, metrics against scikit-learn, threshold tuning, sequence batches, engine defaults."""

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from merkit.batching import DialogueDataset
from merkit.checkpoint import load_checkpoint
from merkit.data import read_data
from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import stack_rows
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.metrics import multilabel_metrics, score_metrics
from merkit.prediction import make_loader, predict
from merkit.thresholds import LDDU_GRID, choose_thresholds, tune_global, tune_per_class, tune_per_class_f1
from merkit.training import engine
from merkit.training.engine import train_model


def _random_multilabel(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 200)), int(rng.integers(2, 8))
    # Per-label rates from very rare to common, so some labels are absent from gold or prediction,
    # and many rows are empty on both sides (the Jaccard convention matters).
    y_true = rng.random((n, k)) < rng.uniform(0.0, 0.5, size=k)
    y_pred = rng.random((n, k)) < rng.uniform(0.0, 0.5, size=k)
    return y_true.astype(int), y_pred.astype(int)


@pytest.mark.parametrize("seed", range(25))
def test_multilabel_metrics_match_sklearn(seed):
    y_true, y_pred = _random_multilabel(seed)
    names = [f"c{i}" for i in range(y_true.shape[1])]
    ours = multilabel_metrics(y_true, y_pred, names)
    one = multilabel_metrics(y_true, y_pred, names, empty_match_scores_one=True)
    # LDDU's convention (empty gold and empty prediction score 0) is sklearn's zero_division=0.
    assert ours["jaccard_accuracy"] == pytest.approx(skm.jaccard_score(y_true, y_pred, average="samples", zero_division=0))
    assert one["jaccard_accuracy"] == pytest.approx(skm.jaccard_score(y_true, y_pred, average="samples", zero_division=1))
    assert ours["micro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert ours["micro_precision"] == pytest.approx(skm.precision_score(y_true, y_pred, average="micro", zero_division=0))
    assert ours["micro_recall"] == pytest.approx(skm.recall_score(y_true, y_pred, average="micro", zero_division=0))
    assert ours["hamming_loss"] == pytest.approx(skm.hamming_loss(y_true, y_pred))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for c, name in enumerate(names):
        assert ours["per_class"][name] == pytest.approx(
            {"precision": precision[c], "recall": recall[c], "f1": f1[c], "support": support[c]}
        )


def test_empty_gold_and_prediction_convention_by_hand():
    y_true = np.array([[0, 0], [1, 0], [1, 1]])
    y_pred = np.array([[0, 0], [1, 1], [1, 1]])
    assert multilabel_metrics(y_true, y_pred, ["a", "b"])["jaccard_accuracy"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert multilabel_metrics(y_true, y_pred, ["a", "b"], empty_match_scores_one=True)["jaccard_accuracy"] == pytest.approx(2.5 / 3)


def _scores(seed: int, n: int = 300, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random((n, k)) < rng.uniform(0.03, 0.4, size=k)
    scores = np.clip(0.35 * labels + rng.uniform(0, 0.65, size=(n, k)) * rng.uniform(0.3, 1.0, size=k), 0, 1)
    return labels.astype(int), scores


def _micro(labels, scores, thresholds) -> float:
    return skm.f1_score(labels, scores > thresholds, average="micro", zero_division=0)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_tuning_finds_the_best_on_the_data_it_is_given(seed):
    labels, scores = _scores(seed)
    grid = np.round(np.arange(0.01, 0.991, 0.01), 2)
    best_global = max(_micro(labels, scores, t) for t in grid)
    assert _micro(labels, scores, tune_global(labels, scores)) == pytest.approx(best_global)
    lddu = tune_global(labels, scores, LDDU_GRID)
    assert 0.15 <= lddu <= 0.295 and _micro(labels, scores, lddu) == pytest.approx(max(_micro(labels, scores, t) for t in LDDU_GRID))
    # Per class for micro-F1: never below the global search, which is never below a fixed 0.5.
    per_class = tune_per_class(labels, scores)
    assert _micro(labels, scores, per_class) >= best_global - 1e-12 >= _micro(labels, scores, 0.5) - 1e-12
    # Per class for each class's own F1: every class at its own optimum.
    own = tune_per_class_f1(labels, scores)
    for k in range(labels.shape[1]):
        f1 = [skm.f1_score(labels[:, k], scores[:, k] > t, zero_division=0) for t in grid]
        assert skm.f1_score(labels[:, k], scores[:, k] > own[k], zero_division=0) == pytest.approx(max(f1))


def test_threshold_strategies_and_errors():
    labels, scores = _scores(0)
    assert choose_thresholds(0.21, labels, scores).tolist() == [0.21] * 5
    assert len(set(choose_thresholds("global", labels, scores))) == 1
    no_positive = labels.copy()
    no_positive[:, 2] = 0
    assert tune_per_class_f1(no_positive, scores)[2] == 0.5  # nothing to tune on: keep the default
    with pytest.raises(MerkitError, match="unknown threshold strategy"):
        choose_thresholds("best", labels, scores)
    with pytest.raises(MerkitError, match=r"\[0, 1\)"):
        choose_thresholds(1.5, labels, scores)


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    bundle = read_data("synthetic", multi_label=True, dialogues=40, max_turns=8)
    out = tmp_path_factory.mktemp("runs") / "mlp"
    calls = []
    original = engine.choose_thresholds

    def spy(strategy, labels, scores):
        calls.append(np.asarray(labels).copy())
        return original(strategy, labels, scores)

    engine.choose_thresholds = spy
    try:
        results = train_model(bundle, "sigmoid-mlp", out=out, overrides=["epochs=3"], seeds=[0], progress=False)
    finally:
        engine.choose_thresholds = original
    return bundle, out, results, calls


def test_thresholds_are_tuned_on_valid_only_and_stored(multilabel_run):
    bundle, out, results, calls = multilabel_run
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["monitor"] == "micro_f1"  # auto for a multi-label corpus
    metrics = json.loads((out / "seed0" / "metrics.json").read_text())
    checkpoint = load_checkpoint(out / "seed0" / "best")
    assert checkpoint.meta["thresholds"] == metrics["thresholds"] and metrics["threshold_strategy"] == "per_class"
    valid = checkpoint.dataset(bundle.corpus, bundle.features, ["valid"])
    test = checkpoint.dataset(bundle.corpus, bundle.features, ["test"])
    on_valid = predict(checkpoint.model, make_loader(valid, 16))
    on_test = predict(checkpoint.model, make_loader(test, 16))
    # Exactly one tuning call after training, and it saw the validation labels, never the test ones.
    assert len(calls) == 1 and calls[0].shape == on_valid.labels.shape and (calls[0] == on_valid.labels).all()
    expected = choose_thresholds("per_class", on_valid.labels, on_valid.scores)
    assert list(metrics["thresholds"].values()) == pytest.approx(expected.tolist())
    names = bundle.corpus.labels.names
    reported = score_metrics(on_test.labels, on_test.scores, names, True, threshold=expected)
    assert metrics["test"]["micro_f1"] == pytest.approx(reported["micro_f1"])
    assert metrics["test_threshold_0.5"]["micro_f1"] == pytest.approx(score_metrics(on_test.labels, on_test.scores, names, True)["micro_f1"])
    assert {"micro_f1", "macro_f1", "jaccard_accuracy", "hamming_loss"} <= set(results["summary"]["test"])


def test_single_label_metric_on_multilabel_corpus_is_refused(tmp_path):
    bundle = read_data("synthetic", multi_label=True, dialogues=12, min_turns=2, max_turns=4)
    with pytest.raises(MerkitError, match="monitor=weighted_f1 is not a multi-label metric"):
        train_model(bundle, "sigmoid-mlp", out=tmp_path / "run", overrides=["monitor=weighted_f1"], progress=False)


def _sequence_bundle() -> DataBundle:
    """Three one-utterance dialogues: frame sequences of lengths 3, 1, 0 (absent) and one utterance vector each."""
    schema = LabelSchema(names=("a", "b", "c"), multi_label=True)
    labels = [(0, 2), (), (1,)]
    dialogues = tuple(Dialogue(id=f"d{i}", utterances=(build_utterance(id=f"u{i}", label=label),)) for i, label in enumerate(labels))
    corpus = build_corpus(name="toy", labels=schema, dialogues=dialogues, splits={"train": ("d0", "d1", "d2")})
    ids = ["u0", "u1", "u2"]
    frames = [np.arange(6, dtype=np.float32).reshape(3, 2), np.full((1, 2), 7.0, np.float32), None]
    vectors = [np.full(4, float(i), np.float32) for i in range(3)]
    return DataBundle(
        corpus,
        {"audio": stack_rows("audio", frames, ids=ids, sequence=True), "text": stack_rows("text", vectors, ids=ids)},
    )


def test_sequence_batches_pad_frames_and_mask_by_stored_length():
    bundle = _sequence_bundle()
    with pytest.raises(MerkitError, match="frame sequences"):
        DialogueDataset(bundle.corpus, bundle.features, ["train"], ["audio", "text"])  # an utterance-level model
    dataset = DialogueDataset(bundle.corpus, bundle.features, ["train"], ["audio", "text"], sequence_modalities=["audio", "text"])
    batch = dataset.collate([dataset[i] for i in range(3)])
    assert batch.sequences["audio"].shape == (3, 1, 3, 2) and batch.sequences["text"].shape == (3, 1, 1, 4)
    assert batch.sequence_mask["audio"][:, 0].tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert batch.present["audio"][:, 0].tolist() == [True, True, False]
    assert torch.equal(batch.features["audio"][:, 0], torch.tensor([[2.0, 3.0], [7.0, 7.0], [0.0, 0.0]]))  # frame means
    assert torch.equal(batch.sequences["text"][:, 0, 0], batch.features["text"][:, 0])  # vectors as one-frame sequences
    assert batch.labels[:, 0].tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


# ---------------------------------------------------------------- multi-label input files (#34 item 6)
def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return path


def test_empty_list_is_no_emotion_and_missing_or_null_is_unlabelled(tmp_path, recwarn):
    rows = [
        {"dialogue_id": "d1", "text": "great and scary", "label": ["joy", "fear"], "split": "train"},
        {"dialogue_id": "d1", "text": "ok", "label": [], "split": "train"},
        {"dialogue_id": "d2", "text": "hm", "label": None, "split": "test"},
        {"dialogue_id": "d2", "text": "?", "split": "test"},
        {"dialogue_id": "d2", "text": "yay", "label": ["joy"], "split": "test"},
    ]
    corpus = read_data(_jsonl(tmp_path / "mine.jsonl", rows)).corpus
    assert corpus.labels.multi_label and corpus.labels.names == ("fear", "joy")
    assert [u.label for u in corpus.utterances()] == [(0, 1), (), None, None, (1,)]
    assert not recwarn.list  # a row holds two labels: nothing to note
    stats = corpus.stats()
    assert stats["no_emotion_utterances"] == 1
    assert [stats["splits"][s]["no_emotion_utterances"] for s in ("train", "valid", "test")] == [1, 0, 0]


def test_lists_of_one_label_at_most_are_noted_not_switched_silently(tmp_path):
    rows = [
        {"dialogue_id": "d1", "label": ["joy"], "split": "train"},
        {"dialogue_id": "d1", "label": [], "split": "train"},
        {"dialogue_id": "d2", "label": ["anger"], "split": "test"},
    ]
    path = _jsonl(tmp_path / "single.jsonl", rows)
    with pytest.warns(UserWarning, match=r"single\.jsonl: labels are written as lists but no row holds more than one.*-o multi_label=true"):
        noted = read_data(path).corpus
    assert noted.labels.multi_label and [u.label for u in noted.utterances()] == [(1,), (), (0,)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # saying it silences the note
        assert read_data(path, multi_label=True).corpus == noted
        single = read_data(path, multi_label=False).corpus
    assert not single.labels.multi_label and [u.label for u in single.utterances()] == [1, None, 0]


def test_csv_of_single_labels_is_multi_label_when_declared(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("dialogue_id,text,label,split\nd1,hi,joy,train\nd1,meh,,train\nd2,grr,anger,test\n")
    assert [u.label for u in read_data(path).corpus.utterances()] == [1, None, 0]  # undeclared: single-label
    corpus = read_data(path, multi_label=True).corpus
    assert corpus.labels.multi_label and [u.label for u in corpus.utterances()] == [(1,), (), (0,)]


def test_data_stats_counts_no_emotion_rows_in_table_and_json(tmp_path, capsys):
    from conftest import run_main

    path = tmp_path / "mine.csv"
    path.write_text("dialogue_id,text,label,split\nd1,hi,joy,train\nd1,meh,,train\nd2,so-so,,test\nd2,grr,anger,test\n")
    code, out, err = run_main(["data", "stats", str(path), "-o", "multi_label=true", "--json"], capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["no_emotion_utterances"] == 2 and stats["splits"]["test"]["no_emotion_utterances"] == 1
    code, out, _ = run_main(["data", "stats", str(path), "-o", "multi_label=true"], capsys)
    row = next(line for line in out.splitlines() if "(no emotion)" in line)
    assert [cell.strip() for cell in row.split("│")[2:6]] == ["1", "0", "1", "2"]  # train, valid, test, all


def test_the_docs_say_how_to_declare_multi_label_and_write_no_emotion():
    from conftest import REPO

    guide = (REPO / "docs" / "guides" / "data.md").read_text("utf-8")
    own_data = guide[guide.index("## Your own data") :]
    own_data = own_data[: own_data.index("\n## ")]
    assert "-o multi_label=true" in own_data
    assert '"label": []' in own_data and "no emotion" in own_data and '"label": null' in own_data
