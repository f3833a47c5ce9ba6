"""Feature scaling fitted on the training split: what it is fitted on, that it is stored and applied
everywhere, and that without it functionals of IS10-like scales break training."""

import json

import numpy as np
import pytest

from merkit.checkpoint import load_checkpoint
from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import FeatureSet, stack_rows
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.evaluation.evaluate import Evaluator
from merkit.normalization import auto_method, fit_scalers, resolve_methods
from merkit.training.engine import train_model


def _one_utterance_corpus(labels, splits, name="scales"):
    schema = LabelSchema(names=tuple(f"c{k}" for k in range(int(max(labels)) + 1)))
    dialogues = tuple(
        Dialogue(id=f"d{i}", utterances=(build_utterance(id=f"u{i}", speaker=f"s{i % 7}", label=int(y)),)) for i, y in enumerate(labels)
    )
    by_split = {s: tuple(f"d{i}" for i, owner in enumerate(splits) if owner == s) for s in ("train", "valid", "test")}
    return build_corpus(name=name, labels=schema, dialogues=dialogues, splits=by_split)


def _is10_like(n=480, classes=4, seed=0):
    """Utterance vectors like openSMILE functionals: the class shows in columns of scale ~1e-3 (energies),
    beside columns of scale ~1e4 (frequencies, durations) that carry only speaker-like noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, 16))
    informative = (means[labels] + 0.6 * rng.normal(size=(n, 16))) * 1e-3
    loud = rng.normal(size=(n, 24)) * 1e4 + 5e4
    values = np.concatenate([informative, loud], axis=1).astype(np.float32)
    splits = np.array(["train"] * (n * 3 // 4) + ["valid"] * (n // 8) + ["test"] * (n - n * 3 // 4 - n // 8))
    corpus = _one_utterance_corpus(labels, splits)
    audio = FeatureSet("audio", values, np.ones(n, dtype=bool), extractor="is10", settings={"extractor": "is10", "modality": "audio"})
    return DataBundle(corpus, {"audio": audio})


def test_scaler_fits_on_present_training_rows_only():
    labels = [0, 1] * 10
    splits = ["train"] * 12 + ["valid"] * 4 + ["test"] * 4
    corpus = _one_utterance_corpus(labels, splits)
    values = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    values[12:] = 1e6  # valid and test rows must not move the statistics
    values[:, 2] = 7.0  # a constant column keeps scale 1
    present = np.ones(20, dtype=bool)
    present[0] = False  # an absent training row is no data
    values[0] = -1e6
    features = {"audio": FeatureSet("audio", values, present)}
    (scaler,) = fit_scalers(features, corpus, ["train"], {"audio": "standard"}).values()
    rows = np.arange(1, 12, dtype=np.float64)
    np.testing.assert_allclose(scaler.center[:2], rows.mean(), rtol=1e-6)
    np.testing.assert_allclose(scaler.scale[:2], rows.std(), rtol=1e-6)
    assert scaler.scale[2] == 1.0
    robust = fit_scalers(features, corpus, ["train"], {"audio": "robust"})["audio"]
    np.testing.assert_allclose(robust.center[:2], np.median(rows))


def test_sequence_features_are_scaled_by_their_frames():
    corpus = _one_utterance_corpus([0, 1, 0, 1], ["train", "train", "valid", "test"])
    rows = [np.full((3, 2), 1.0), np.full((1, 2), 5.0), np.full((2, 2), 100.0), None]
    features = {"audio": stack_rows("audio", rows, ids=[u.id for u in corpus.utterances()], sequence=True)}
    scaler = fit_scalers(features, corpus, ["train"], {"audio": "standard"})["audio"]
    np.testing.assert_allclose(scaler.center, [2.0, 2.0])  # (1 + 1 + 1 + 5) / 4 frames


def test_auto_leaves_sentence_embeddings_and_scales_everything_else():
    text = FeatureSet("text", np.zeros((2, 3)), np.ones(2, bool), settings={"extractor": "minilm", "modality": "text", "normalize": True})
    external = FeatureSet("visual", np.zeros((2, 3)), np.ones(2, bool), extractor="external", settings={"columns": ["AU01_r"]})
    assert auto_method(text) == "none" and auto_method(external) == "standard"
    assert resolve_methods({"visual": "robust"}, {"text": text, "visual": external}, ["text", "visual"]) == {"text": "none", "visual": "robust"}
    with pytest.raises(MerkitError, match="audio"):
        resolve_methods({"audio": "standard"}, {"text": text}, ["text"])


def test_raw_functional_scales_break_training_and_standardising_fixes_it(tmp_path):
    bundle = _is10_like()
    scores = {}
    for method in ("none", "standard"):
        results = train_model(
            bundle, "mlp", out=tmp_path / method, overrides={"normalize": method, "epochs": 15, "patience": None}, progress=False
        )
        scores[method] = results["summary"]["test"]["accuracy"]["mean"]
    assert scores["standard"] > 0.8, scores  # 4 classes: chance is 0.25
    assert scores["none"] < 0.5, scores
    assert scores["standard"] - scores["none"] > 0.3, scores


def test_the_checkpoint_carries_the_scaling_and_evaluation_applies_it(tmp_path):
    bundle = _is10_like(n=160)
    train_model(bundle, "mlp", out=tmp_path / "run", overrides={"epochs": 2}, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "seed0" / "best")
    entry = checkpoint.meta["normalization"]["audio"]
    assert entry["method"] == "standard" and len(entry["center"]) == 40
    assert checkpoint.scalers["audio"].scale.min() > 0
    result = Evaluator(checkpoint, bundle).run("test", protocols=(), bootstrap=0)
    metrics = json.loads((tmp_path / "run" / "seed0" / "metrics.json").read_text())
    assert result["metrics"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
