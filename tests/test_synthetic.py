"""The synthetic generator: seeded, and its features carry the structure its options promise."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from merkit.data import read_data
from merkit.errors import MerkitError


def _split_xy(bundle, modalities, split):
    corpus = bundle.corpus
    wanted = set(corpus.splits[split])
    rows = [i for i, d in enumerate(d for d in corpus.dialogues for _ in d.utterances) if d.id in wanted]
    labels = np.array([u.label for u in corpus.utterances()])[rows]
    features = np.concatenate([bundle.features[m].values[rows] for m in modalities], axis=1)
    return features, labels


def _probe_accuracy(bundle, modalities):
    x, y = _split_xy(bundle, modalities, "train")
    xt, yt = _split_xy(bundle, modalities, "test")
    return LogisticRegression(max_iter=500).fit(x, y).score(xt, yt)


def test_same_seed_same_corpus_other_seed_other_corpus():
    a, b, c = read_data("synthetic", seed=3), read_data("synthetic", seed=3), read_data("synthetic", seed=4)
    assert a.corpus == b.corpus
    np.testing.assert_array_equal(a.features["audio"].values, b.features["audio"].values)
    assert a.corpus != c.corpus


def test_noise_modality_carries_no_signal_and_informative_ones_do():
    bundle = read_data("synthetic", dialogues=200, noise_modalities="audio", ambiguous=0.0)
    chance = max(np.bincount([u.label for u in bundle.corpus.utterances()])) / bundle.corpus.num_utterances
    assert _probe_accuracy(bundle, ["text"]) > 0.8
    assert _probe_accuracy(bundle, ["audio"]) < chance + 0.08


def test_complementary_modalities_only_identify_the_class_together():
    bundle = read_data("synthetic", dialogues=200, complementary=True, ambiguous=0.0, audio_signal=1.0, visual_signal=0.0)
    text, audio, both = (_probe_accuracy(bundle, m) for m in (["text"], ["audio"], ["text", "audio"]))
    assert both > max(text, audio) + 0.25


def test_multi_label_and_missing_modalities():
    bundle = read_data("synthetic", multi_label=True, missing_visual=0.3)
    assert bundle.corpus.labels.multi_label
    assert any(len(u.label) > 1 for u in bundle.corpus.utterances())
    present = bundle.features["visual"].present
    assert 0.2 < 1 - present.mean() < 0.4
    assert not bundle.features["visual"].values[~present].any()


def test_bad_option_is_a_clear_error():
    with pytest.raises(MerkitError, match="noise_modalities"):
        read_data("synthetic", noise_modalities="smell")
    with pytest.raises(MerkitError, match="option not understood|synthetic option"):
        read_data("synthetic", colour="blue")
