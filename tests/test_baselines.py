"""The RBF-SVM baseline: C chosen on valid only, results readable beside training runs."""

import json

import numpy as np
import pytest

from merkit.data import write_store
from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import FeatureSet
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.data.folds import make_folds
from merkit.evaluation.baselines import svm_baseline, svm_split
from merkit.metrics import score_metrics
from merkit.training.engine import train_model

from conftest import run_cli


def _bundle(n=240, seed=0, test_labels=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    split_of = ["train"] * (n // 2) + ["valid"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    if test_labels is not None:
        labels[n // 2 + n // 4 :] = test_labels
    dialogues = tuple(
        Dialogue(id=f"d{i}", utterances=(build_utterance(id=f"u{i}", speaker=f"s{i % 12}", label=int(y)),)) for i, y in enumerate(labels)
    )
    splits = {s: tuple(f"d{i}" for i, owner in enumerate(split_of) if owner == s) for s in ("train", "valid", "test")}
    corpus = build_corpus(name="svm", labels=LabelSchema(names=("a", "b", "c")), dialogues=dialogues, splits=splits)
    audio = (np.eye(3)[labels] * 2 + rng.normal(size=(n, 3))) * np.array([1e-3, 1e-3, 1e-3])  # tiny scale: scaled inside
    visual = rng.normal(size=(n, 4))
    present = np.ones(n, bool)
    present[::7] = False  # absent rows are imputed, not read as zeros
    return DataBundle(corpus, {"audio": FeatureSet("audio", audio.astype(np.float32), np.ones(n, bool)), "visual": FeatureSet("visual", visual.astype(np.float32), present)})


def test_c_is_chosen_on_valid_and_test_labels_play_no_part():
    grid = (0.01, 1.0, 100.0)
    result, _ = svm_split(_bundle(), ["audio", "visual"], grid)
    assert result["C"] in grid and result["test"]["accuracy"] > 0.6
    shuffled, _ = svm_split(_bundle(test_labels=np.zeros(60, dtype=int)), ["audio", "visual"], grid)
    assert shuffled["C"] == result["C"] and shuffled["valid"] == result["valid"]
    with pytest.raises(MerkitError, match="no text features"):
        svm_split(_bundle(), ["text"])


def test_baseline_command_writes_results_that_summary_reads_as_a_baseline(tmp_path):
    bundle = _bundle()
    write_store(tmp_path / "store", bundle.corpus, bundle.features)
    result = run_cli("baseline", str(tmp_path / "store"), "--modalities", "audio,visual", "--out", str(tmp_path / "svm"), "--c", "1,10")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "svm" / "results.json").read_text())
    assert saved["model"] == "svm" and saved["per_seed"]["0"]["C"] in (1.0, 10.0)
    table = run_cli("summary", str(tmp_path / "svm"), "--metrics", "accuracy", "--splits", "test", "--baseline", str(tmp_path / "svm"))
    assert table.returncode == 0, table.stderr
    assert "÷ svm" in table.stdout and "| 1.000 |" in table.stdout
    bad = run_cli("baseline", str(tmp_path / "store"), "--modalities", "audio", "--out", str(tmp_path / "x"), "--c", "one")
    assert bad.returncode == 2 and "--c" in bad.stderr and "Traceback" not in bad.stderr


def _predictions(run):
    return {row["id"]: row for row in map(json.loads, (run / "seed0" / "predictions-test.jsonl").read_text().splitlines())}


def test_baseline_writes_what_a_training_run_writes(tmp_path):
    """results.json, per-class metrics in seed0/metrics.json, and test predictions in the same format as train's."""
    bundle = _bundle()
    svm = svm_baseline(bundle, ["audio"], out=tmp_path / "svm", c_grid=(1.0,))
    trained = train_model(bundle, "mlp", out=tmp_path / "mlp", modalities=["audio"], overrides={"epochs": 1}, progress=False)
    assert set(svm) <= set(trained) and set(svm["per_seed"]) == set(trained["per_seed"]) == {"0"}
    assert {s: set(m) for s, m in svm["summary"].items()} == {s: set(m) for s, m in trained["summary"].items()}
    svm_metrics, mlp_metrics = (json.loads((tmp_path / run / "seed0" / "metrics.json").read_text()) for run in ("svm", "mlp"))
    for split in ("valid", "test"):
        assert set(svm_metrics[split]) == set(mlp_metrics[split])
        assert {c: (set(m), m["support"]) for c, m in svm_metrics[split]["per_class"].items()} == {
            c: (set(m), m["support"]) for c, m in mlp_metrics[split]["per_class"].items()
        }
    rows, mlp_rows = _predictions(tmp_path / "svm"), _predictions(tmp_path / "mlp")
    assert rows.keys() == mlp_rows.keys() and all(rows[i].keys() == mlp_rows[i].keys() and rows[i]["label"] == mlp_rows[i]["label"] for i in rows)
    labels, scores = np.array([r["label"] for r in rows.values()]), np.array([r["scores"] for r in rows.values()])
    assert score_metrics(labels, scores, bundle.corpus.labels.names, False)["accuracy"] == svm_metrics["test"]["accuracy"]


def test_baseline_on_folds_reports_the_groups_each_fold_tested(tmp_path):
    bundle = _bundle()
    results = svm_baseline(bundle, ["audio"], out=tmp_path / "cv", folds=3, c_grid=(1.0,))
    assert results["runs"] == 3 and set(results["per_seed"]) == {"fold0/seed0", "fold1/seed0", "fold2/seed0"}
    assert results["summary"]["test"]["accuracy"]["n"] == 3 and set(results["per_fold"]) == {"fold0", "fold1", "fold2"}
    plan = make_folds(bundle.corpus, 3)
    assert results["cross_validation"]["parts"] == {f"fold{f.index}": f.groups for f in plan}
    assert json.loads((tmp_path / "cv" / "results.json").read_text())["cross_validation"] == results["cross_validation"]
    for fold in plan:
        run = tmp_path / "cv" / f"fold{fold.index}"
        tested = [u.id for d in fold.corpus.split_dialogues("test") for u in d.utterances]
        assert sorted(_predictions(run)) == sorted(tested)
        assert "per_class" in json.loads((run / "seed0" / "metrics.json").read_text())["test"]
    loso = svm_baseline(bundle, ["audio"], out=tmp_path / "loso", folds="loso", c_grid=(1.0,))
    assert loso["runs"] == 12 and loso["cross_validation"]["parts"]["fold0"]["test"] == ["s0"]
