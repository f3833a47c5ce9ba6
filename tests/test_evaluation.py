"""Evaluation: calibration metrics (hand cases, torchmetrics, sklearn), robustness, reports, comparisons."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss

from merkit.data import read_data
from merkit.errors import MerkitError
from merkit import calibration
from merkit.evaluation import robustness
from merkit.evaluation.evaluate import Evaluator, bootstrap_intervals
from merkit.evaluation.report import compare_runs, markdown_table, summarize_runs, write_report
from merkit.prediction import Predictions
from merkit.training.engine import train_model


def _random_probs(seed, n=400, classes=5, sharpness=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * sharpness
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return probs, labels


def test_ece_and_mce_on_a_hand_computed_case():
    # Two items at confidence 0.8 (one right, one wrong) and two at 0.6 (both right), 2 classes, 5 bins.
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    # bin (0.6, 0.8]: conf 0.8 acc 0.5 (gap .3, n=2); bin (0.4, 0.6]: conf 0.6 acc 1.0 (gap .4, n=2)
    assert calibration.expected_calibration_error(probs, labels, num_bins=5) == pytest.approx(0.5 * 0.3 + 0.5 * 0.4)
    assert calibration.maximum_calibration_error(probs, labels, num_bins=5) == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(5))
def test_calibration_metrics_match_reference_implementations(seed):
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = _random_probs(seed)
    p, y = torch.tensor(probs), torch.tensor(labels)
    for norm, ours in (("l1", calibration.expected_calibration_error), ("max", calibration.maximum_calibration_error)):
        reference = multiclass_calibration_error(p, y, num_classes=5, n_bins=15, norm=norm).item()
        assert ours(probs, labels) == pytest.approx(reference, abs=1e-6)
    assert calibration.negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs, labels=range(5)))
    assert calibration.brier_score(probs, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(5)))


def test_temperature_scaling_recovers_an_overconfident_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3000, 4)) * 2
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in true_probs])
    overconfident = calibration.apply_temperature(true_probs, 1 / 2.5)  # sharpened 2.5×
    temperature = calibration.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    fixed = calibration.apply_temperature(overconfident, temperature)
    assert calibration.expected_calibration_error(fixed, labels) < calibration.expected_calibration_error(overconfident, labels) / 2


def test_selective_prediction_and_relative_robustness_by_hand():
    labels, predicted = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    curve = calibration.selective_prediction(labels, predicted, uncertainty=np.array([0.1, 0.9, 0.2, 0.8]))
    np.testing.assert_allclose(curve["accuracy"], [1.0, 1.0, 2 / 3, 0.5])
    assert curve["area"] == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)
    assert robustness.relative_robustness([0, 1, 2], [0.8, 0.8, 0.8]) == pytest.approx(1.0)
    assert robustness.relative_robustness([0, 1], [0.8, 0.4]) == pytest.approx(0.75)


def test_cross_corpus_mapping_sums_shared_probabilities():
    meld = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    iemocap = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    scores = np.zeros((3, 7))
    scores[0, [4]] = 1.0  # joy  → gold happy  (joy) ✓
    scores[1, [1, 6]] = [0.3, 0.7]  # anger → gold angry ✓ (surprise is unmapped, dropped)
    scores[2, [0]] = 1.0  # neutral → gold frustrated: skipped (no shared class)
    predictions = Predictions(["a", "b", "c"], np.array([0, 3, 5]), scores)
    m = robustness.MELD_IEMOCAP_SHARED
    result = robustness.cross_corpus(predictions, meld, iemocap, m["meld"], m["iemocap"])
    assert result["shared_classes"] == ["anger", "joy", "neutral", "sadness"]
    assert (result["utterances"], result["skipped"], result["accuracy"]) == (2, 1, 1.0)


def test_bootstrap_interval_brackets_the_estimate():
    probs, labels = _random_probs(1, n=300)
    predictions = Predictions([str(i) for i in range(300)], labels, probs)
    groups = np.repeat(np.arange(60), 5)
    ci = bootstrap_intervals(predictions, groups, [f"c{i}" for i in range(5)], False, samples=200)
    accuracy = (probs.argmax(1) == labels).mean()
    assert ci["accuracy"]["low"] < accuracy < ci["accuracy"]["high"]


@pytest.fixture(scope="module")
def informative_run(tmp_path_factory):
    """A late-fusion model on synthetic data where text is strong and visual weak (its probability
    mixture is underconfident, so temperature scaling has something to fix)."""
    options = {"dialogues": 160, "text_signal": 1.2, "audio_signal": 0.5, "visual_signal": 0.15, "ambiguous": 0.1}
    bundle = read_data("synthetic", **options)
    out = tmp_path_factory.mktemp("runs") / "late"
    train_model(bundle, "late-fusion", out=out, overrides=["epochs=25", "patience=null", "dropout=0.0"], progress=False)
    return bundle, out


def test_dropping_the_most_informative_modality_hurts_most_and_temperature_helps(informative_run):
    bundle, out = informative_run
    result = Evaluator(out / "seed0" / "best", bundle).run("test", bootstrap=0)
    drops = {tuple(r["dropped"]): r["weighted_f1"] for r in result["missing_modality"]["mask"]["combinations"]}
    assert drops[("text",)] < drops[("visual",)] - 0.1
    rates = result["missing_modality"]["mask"]["random_drop"]
    assert rates[-1]["weighted_f1"] < rates[0]["weighted_f1"]
    assert rates[-1]["from_prior"] > 0 and rates[0]["from_prior"] == 0  # at 90 % many utterances lose everything
    zeroed = result["missing_modality"]["zero"]
    assert zeroed["drop_mode"] == "zero" and all(r["from_prior"] == 0 for r in zeroed["random_drop"])  # never told
    zero_drops = {tuple(r["dropped"]): r["weighted_f1"] for r in zeroed["combinations"]}
    assert zero_drops[()] == drops[()] and zero_drops[("text",)] != drops[("text",)]  # late fusion's weights see the mask
    noise = result["noise"]
    assert noise["text"]["relative_robustness"] < noise["visual"]["relative_robustness"]
    calibrated = result["calibration"]
    assert calibrated["fitted_on"] == "valid" and calibrated["temperature"] != pytest.approx(1.0, abs=0.05)
    assert calibrated["after"]["ece"] < calibrated["before"]["ece"]


def test_report_and_compare(informative_run, tmp_path):
    bundle, out = informative_run
    evaluation = Evaluator(out / "seed0" / "best", bundle).run("test", bootstrap=50)
    results = json.loads((out / "results.json").read_text())
    page = write_report(out, results, evaluation, tmp_path / "report")
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4 and "Per class" in html
    assert (tmp_path / "report" / "report.md").read_text().count(".png)") == 4
    other = tmp_path / "mlp"
    train_model(bundle, "mlp", out=other, overrides=["epochs=5"], progress=False)
    comparison = compare_runs([out, other], samples=200)
    pair = comparison["paired_bootstrap"][0]
    assert pair["ci95"][0] <= pair["difference"] <= pair["ci95"][1] and 0 <= pair["p_value"] <= 1
    assert comparison["utterances"] == evaluation["metrics"]["count"]


def _fake_results(folder, model, test_scores):
    folder.mkdir(parents=True)
    summary = {"mean": float(np.mean(test_scores)), "std": float(np.std(test_scores, ddof=1)), "n": len(test_scores)}
    results = {"model": model, "preset": None, "seeds": list(range(len(test_scores))), "summary": {"test": {"weighted_f1": summary}}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_summary_table_reads_mean_and_std_of_each_run(tmp_path):
    a = _fake_results(tmp_path / "a", "bigru", [0.61, 0.63, 0.62])
    b = _fake_results(tmp_path / "b", "sure", [0.70, 0.60])
    rows = summarize_runs([a, b], ["weighted_f1"], ["test"])
    assert rows[0]["test weighted_f1"] == pytest.approx((62.0, 1.0))
    assert rows[1]["test weighted_f1"] == pytest.approx((65.0, 7.0710678))
    table = markdown_table(rows).splitlines()
    assert table[2].endswith("| bigru | 3 | 62.00 ± 1.00 |") and table[3].endswith("| sure | 2 | 65.00 ± 7.07 |")
    with pytest.raises(MerkitError, match="no valid weighted_f1"):
        summarize_runs([a], ["weighted_f1"], ["valid"])
    with pytest.raises(MerkitError, match="no results.json") as error:
        summarize_runs([tmp_path], ["weighted_f1"])
    assert str(tmp_path) in str(error.value)


def test_expert_summary_gives_mean_weight_and_uncertainty_per_modality():
    from merkit.evaluation.evaluate import expert_summary

    weights = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    uncertainty = np.array([[0.1, 0.4, 0.9], [0.3, 0.2, 0.7]])
    predictions = Predictions(["a", "b"], np.array([0, 1]), np.full((2, 2), 0.5), uncertainty, weights, ("audio", "visual", "text"))
    summary = expert_summary(predictions, ["audio", "visual", "text"])
    assert summary["text"] == pytest.approx({"weight": 0.15, "uncertainty": 0.8})
    assert summary["audio"]["weight"] == pytest.approx(0.6)
    assert expert_summary(Predictions(["a"], np.array([0]), np.ones((1, 2))), ["audio"]) == {}


def test_an_utterance_with_no_modality_gets_the_label_prior_not_class_zero(informative_run):
    from merkit.evaluation.robustness import drop_modalities

    bundle, out = informative_run
    evaluator = Evaluator(out / "seed0" / "best", bundle)
    prior = evaluator.checkpoint.prior
    train = [u.label for d in bundle.corpus.split_dialogues("train") for u in d.utterances]
    assert prior == pytest.approx(np.bincount(train, minlength=len(prior)) / len(train), abs=1e-6)
    nothing = evaluator.predict("test", drop_modalities(evaluator.checkpoint.modalities))
    assert nothing.from_prior.all()
    assert np.allclose(nothing.scores, prior)
    assert not evaluator.predict("test").from_prior.any()
