"""Metrics against scikit-learn on random inputs, and on hand-computable cases."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from merkit.metrics import classification_metrics, confusion_matrix, summarize


@pytest.mark.parametrize("seed", range(20))
def test_matches_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 9))
    n = int(rng.integers(1, 300))
    # Skewed distributions so that some classes are rare or absent from gold or prediction.
    p = rng.dirichlet(np.full(classes, 0.5))
    y_true, y_pred = rng.choice(classes, n, p=p), rng.choice(classes, n, p=rng.dirichlet(np.ones(classes)))
    names = [f"c{i}" for i in range(classes)]
    ours = classification_metrics(y_true, y_pred, names)
    labels = list(range(classes))
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert ours["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "y_pred contains classes not in y_true"
        assert ours["uar"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for c, name in enumerate(names):
        assert ours["per_class"][name]["precision"] == pytest.approx(precision[c])
        assert ours["per_class"][name]["recall"] == pytest.approx(recall[c])
        assert ours["per_class"][name]["f1"] == pytest.approx(f1[c])
        assert ours["per_class"][name]["support"] == support[c]
    np.testing.assert_array_equal(ours["confusion_matrix"], skm.confusion_matrix(y_true, y_pred, labels=labels))


def test_hand_computed_case_and_zero_f1_warning():
    # gold: a a b c ; predicted: a b b a  → class c never predicted correctly
    result = classification_metrics([0, 0, 1, 2], [0, 1, 1, 0], ["a", "b", "c"])
    assert result["accuracy"] == 0.5
    f1_a, f1_b = 2 * 0.5 * 0.5 / 1.0, 2 * 0.5 * 1.0 / 1.5
    assert result["weighted_f1"] == pytest.approx((2 * f1_a + f1_b) / 4)
    assert result["warnings"] == ["class 'c' has F1 = 0 (never predicted correctly)"]
    assert result["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert classification_metrics([0, 0], [0, 0], ["a", "b", "c"])["uar"] == 1.0  # classes absent from gold do not count
    assert classification_metrics([], [], ["a", "b"])["uar"] == 0.0
    assert confusion_matrix(np.array([0, 1]), np.array([1, 1]), 2).tolist() == [[0, 1], [0, 1]]


def test_summarize_uses_sample_std():
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2)), "n": 2}
    assert summarize([5.0])["std"] == 0.0
