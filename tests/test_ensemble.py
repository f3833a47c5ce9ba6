"""``merkit ensemble``: exact averaging of calibrated member probabilities, fitted on validation only, refusals,
and an ensemble run that loads, predicts from raw text and evaluates like any checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from merkit.checkpoint import load_checkpoint
from merkit.cli import app
from merkit.data import read_data
from merkit.data.store import write_store
from merkit.errors import MerkitError
from merkit.calibration import apply_temperature, fit_temperature
from merkit.prediction import make_loader, predict
from merkit.training.engine import train_model
from merkit.training.ensemble import build_ensemble

SYNTHETIC = {"dialogues": 30, "max_turns": 6, "text_dim": 8, "audio_dim": 6, "visual_dim": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    bundle = read_data("synthetic", **SYNTHETIC)
    for model, settings in (("bigru", ["hidden=16"]), ("mlp", [])):
        train_model(bundle, model, out=root / model, overrides=[*settings, "epochs=3"], seeds=[0, 1], progress=False, accelerator="cpu")
    return root, bundle


def _member_scores(folder, bundle, split):
    checkpoint = load_checkpoint(folder)
    return predict(checkpoint.model, make_loader(checkpoint.dataset(bundle.corpus, bundle.features, [split]), 8), prior=checkpoint.prior)


def _test_rows(run):
    return [json.loads(line) for line in (run / "seed0" / "predictions-test.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("weights", ["uniform", "fit"])
def test_probabilities_are_the_weighted_mean_of_the_tempered_members(runs, tmp_path, weights):
    root, bundle = runs
    result = build_ensemble([root / "bigru", root / "mlp"], tmp_path / "ens", data=bundle, weights=weights)
    members = [root / "bigru/seed0/best", root / "bigru/seed1/best", root / "mlp/seed0/best", root / "mlp/seed1/best"]
    assert [m["checkpoint"] for m in result["members"]] == [str(m) for m in members]
    expected, total = 0.0, 0.0
    for folder, member in zip(members, result["members"], strict=True):
        valid = _member_scores(folder, bundle, "valid")
        assert member["temperature"] == pytest.approx(fit_temperature(valid.scores, valid.labels), rel=1e-4)  # fitted on valid
        test = _member_scores(folder, bundle, "test")
        expected = expected + member["weight"] * apply_temperature(test.scores, member["temperature"])
        total += member["weight"]
    rows = _test_rows(tmp_path / "ens")
    assert [row["id"] for row in rows] == test.utterance_ids
    np.testing.assert_allclose(np.array([row["scores"] for row in rows]), expected / total, atol=2e-6)
    weights_found = [m["weight"] for m in result["members"]]
    if weights == "uniform":
        assert weights_found == [0.25] * 4
    else:
        assert sum(weights_found) == pytest.approx(1.0, abs=1e-5) and len(set(weights_found)) > 1
    metrics = json.loads((tmp_path / "ens" / "seed0" / "metrics.json").read_text())
    assert result["summary"]["test"]["weighted_f1"]["mean"] == pytest.approx(metrics["test"]["weighted_f1"])


def test_cli_prints_each_uniform_members_share(runs, tmp_path):
    """Uniform members were recorded, and printed, with weight 1 each rather than their share of the mean."""
    root, bundle = runs
    write_store(tmp_path / "store", bundle.corpus, bundle.features)
    members = [str(root / "bigru"), str(root / "mlp" / "seed0" / "best")]
    cli = CliRunner().invoke(app, ["ensemble", *members, "--out", str(tmp_path / "ens"), "--data", str(tmp_path / "store")], env={"COLUMNS": "300"})
    assert cli.exit_code == 0, cli.output
    rows = [line.split("│") for line in cli.output.splitlines() if "/best" in line]
    assert [row[4].strip() for row in rows] == ["0.333"] * 3
    assert [m["weight"] for m in json.loads((tmp_path / "ens" / "results.json").read_text())["members"]] == pytest.approx([1 / 3] * 3)


def test_fitted_weights_lower_the_validation_nll(runs, tmp_path):
    root, bundle = runs
    nll = {}
    for weights in ("uniform", "fit"):
        build_ensemble([root / "bigru", root / "mlp"], tmp_path / weights, data=bundle, weights=weights)
        valid = _member_scores(tmp_path / weights / "seed0" / "best", bundle, "valid")
        nll[weights] = -np.log(valid.scores[np.arange(len(valid.labels)), valid.labels]).mean()
    assert nll["fit"] <= nll["uniform"] + 1e-6, nll


def test_refuses_other_labels_other_features_paper_compat_and_repeats(runs, tmp_path):
    root, bundle = runs
    other_labels = read_data("synthetic", **{**SYNTHETIC, "classes": 4})
    train_model(other_labels, "mlp", out=tmp_path / "labels", overrides=["epochs=1"], progress=False, accelerator="cpu")
    other_store = read_data("synthetic", **{**SYNTHETIC, "text_dim": 10})
    train_model(other_store, "mlp", out=tmp_path / "store", overrides=["epochs=1"], progress=False, accelerator="cpu")
    train_model(bundle, "mlp", out=tmp_path / "paper", overrides=["epochs=1"], protocol="paper-compat", progress=False, accelerator="cpu")
    cases = {
        "labels": "labels ['neutral', 'joy', 'sadness', 'anger'] differ",
        "store": "text features come from another feature store",
        "paper": "trained under paper-compat",
    }
    for name, message in cases.items():
        with pytest.raises(MerkitError, match=r"cannot be ensembled: .*" + message.replace("[", r"\[").replace("]", r"\]")):
            build_ensemble([root / "mlp", tmp_path / name], tmp_path / f"out-{name}", data=bundle)
    with pytest.raises(MerkitError, match="named twice"):
        build_ensemble([root / "mlp", root / "mlp/seed0/best"], tmp_path / "twice", data=bundle)
    with pytest.raises(MerkitError, match="at least two"):
        build_ensemble([root / "mlp/seed0/best"], tmp_path / "one", data=bundle)
    with pytest.raises(MerkitError, match="neither a checkpoint"):
        build_ensemble([root / "mlp", tmp_path], tmp_path / "none", data=bundle)
    with pytest.raises(MerkitError, match="ensemble model is not trained"):
        train_model(bundle, "ensemble", out=tmp_path / "trained", progress=False)


def test_an_ensemble_run_loads_predicts_from_raw_text_and_evaluates(tmp_path):
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    import merkit
    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction

    texts = {
        "joy": ["I got the job, this is the best day ever!", "We won the final, I am so happy!"],
        "anger": ["You broke my phone and lied about it!", "Stop interrupting me, I am furious."],
        "neutral": ["The train leaves at nine.", "The keys are on the table."],
    }
    table = tmp_path / "talk.jsonl"
    with table.open("w") as handle:
        for d in range(6):
            split = "train" if d < 4 else "valid" if d == 4 else "test"
            for turn, (label, options) in enumerate(texts.items()):
                row = {"dialogue_id": f"d{d}", "utterance_id": str(turn), "speaker": "AB"[turn % 2], "text": options[d % 2], "label": label, "split": split}
                handle.write(json.dumps(row) + "\n")
    extractor = get_extractor("minilm", modality="text")
    try:
        run_extraction(read_data(table).corpus, extractor, out=tmp_path / "store", use_cache=False, progress=False, log=None)
    finally:
        extractor.close()
    for model in ("late-fusion", "mlp"):
        train_model(str(tmp_path / "store"), model, out=tmp_path / model, overrides=["epochs=2", "batch_size=4"], seeds=[0], progress=False)
    cli = CliRunner().invoke(app, ["ensemble", str(tmp_path / "late-fusion"), str(tmp_path / "mlp"), "--out", str(tmp_path / "ens"), "--weights", "fit"])
    assert cli.exit_code == 0, cli.output
    assert "ensemble test" in cli.output
    engine = {row["id"]: np.array(row["scores"]) for row in _test_rows(tmp_path / "ens")}
    with merkit.load(tmp_path / "ens" / "seed0" / "best") as predictor:
        assert predictor.describe()["model"] == "ensemble"
        result = predictor.predict(table)
    found = {f"{u.dialogue_id}/{u.utterance_id}": np.array([u.probabilities[n] for n in result.labels]) for u in result.utterances}
    for utterance_id, scores in engine.items():
        np.testing.assert_allclose(found[utterance_id], scores, atol=2e-5)
    evaluated = CliRunner().invoke(app, ["evaluate", str(tmp_path / "ens" / "seed0" / "best"), "--data", str(tmp_path / "store"), "--bootstrap", "10"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "uncertainty ranks errors" in evaluated.output


def test_logit_adjustment_is_chosen_on_validation_and_applied_exactly(runs, tmp_path):
    root, bundle = runs
    plain = build_ensemble([root / "bigru", root / "mlp"], tmp_path / "plain", data=bundle)
    result = build_ensemble([root / "bigru", root / "mlp"], tmp_path / "adjusted", data=bundle, adjust="macro_f1")
    adjustment = result["adjustment"]
    assert adjustment["metric"] == "macro_f1" and adjustment["valid"][str(adjustment["tau"])] == max(adjustment["valid"].values())
    prior = np.asarray(load_checkpoint(root / "bigru/seed0/best").meta["label_prior"])
    mean = np.array([row["scores"] for row in _test_rows(tmp_path / "plain")])
    expected = mean * prior ** -adjustment["tau"]
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.array([row["scores"] for row in _test_rows(tmp_path / "adjusted")]), expected, atol=2e-6)
    assert plain["adjustment"] == {"metric": "none", "tau": 0.0}
