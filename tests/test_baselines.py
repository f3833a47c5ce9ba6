"""The RBF-SVM baseline: C chosen on valid only, results readable beside training runs."""

import json

import numpy as np
import pytest

from merkit.data import write_store
from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import FeatureSet
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.evaluation.baselines import svm_baseline, svm_split

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
    result = svm_split(_bundle(), ["audio", "visual"], grid)
    assert result["C"] in grid and result["test"]["accuracy"] > 0.6
    shuffled = svm_split(_bundle(test_labels=np.zeros(60, dtype=int)), ["audio", "visual"], grid)
    assert shuffled["C"] == result["C"] and shuffled["valid"] == result["valid"]
    with pytest.raises(MerkitError, match="no text features"):
        svm_split(_bundle(), ["text"])


def test_baseline_command_writes_results_that_summary_reads_as_a_baseline(tmp_path):
    bundle = _bundle()
    write_store(tmp_path / "store", bundle.corpus, bundle.features)
    result = run_cli("baseline", str(tmp_path / "store"), "--modalities", "audio,visual", "--out", str(tmp_path / "svm"), "--c", "1,10")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "svm" / "results.json").read_text())
    assert saved["model"] == "svm" and saved["per_seed"]["fixed"]["C"] in (1.0, 10.0)
    table = run_cli("summary", str(tmp_path / "svm"), "--metrics", "accuracy", "--splits", "test", "--baseline", str(tmp_path / "svm"))
    assert table.returncode == 0, table.stderr
    assert "÷ svm" in table.stdout and "| 1.000 |" in table.stdout
    bad = run_cli("baseline", str(tmp_path / "store"), "--modalities", "audio", "--out", str(tmp_path / "x"), "--c", "one")
    assert bad.returncode == 2 and "--c" in bad.stderr and "Traceback" not in bad.stderr


def test_baseline_on_folds(tmp_path):
    results = svm_baseline(_bundle(), ["audio"], out=tmp_path / "cv", folds=3, c_grid=(1.0,))
    assert results["runs"] == 3 and set(results["per_seed"]) == {"fold0", "fold1", "fold2"}
    assert results["summary"]["test"]["accuracy"]["n"] == 3
