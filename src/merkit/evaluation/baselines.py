"""The classic strong baseline, in the same protocol as merkit's models: an RBF-SVM on the same features.

Utterance vectors of the chosen modalities are concatenated (absent rows become the training
mean, i.e. zeros after scaling), standardised on the training split (scikit-learn
``StandardScaler``), and an ``SVC(kernel="rbf", gamma="scale")`` is fitted for each ``C`` of
a grid; the ``C`` with the best validation weighted F1 is scored once on test. No context:
each utterance on its own, which is the speech-emotion baseline ("SVM on functionals").
``merkit baseline`` writes what ``merkit train`` writes for one seed, so ``merkit summary`` reads it
beside training runs: ``OUT/seed0/metrics.json`` (the chosen ``C`` and every metric, per class
too), ``OUT/seed0/predictions-test.jsonl`` and ``OUT/results.json``. With ``--folds``, each fold is
such a run in ``OUT/fold<i>/`` on the same speaker-independent folds as ``merkit train --folds``,
and ``OUT/results.json`` gathers them as cross-validation does (which groups each fold tested).
An SVC gives no probabilities (that takes a second, cross-validated fit), so a prediction's
``scores`` are 1 for the predicted class and 0 elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet
from merkit.data.folds import make_folds
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.io import atomic_write_json
from merkit.metrics import headline, score_metrics
from merkit.prediction import Predictions
from merkit.training.crossval import fold_layout, gather_folds, summarise_rows
from merkit.training.engine import environment, write_predictions

DEFAULT_C = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _matrix(corpus: Corpus, features: dict[str, FeatureSet], modalities: Sequence[str], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``[N, ΣD]`` features (NaN where a modality is absent), labels and ids of the split's labelled utterances."""
    labelled = [(row, u) for row, u in corpus.split_rows([split]) if u.label is not None]
    rows = [row for row, _ in labelled]
    blocks = []
    for modality in modalities:
        values = np.array(features[modality].values[rows], dtype=np.float64)
        values[~np.asarray(features[modality].present[rows])] = np.nan
        blocks.append(values)
    return np.concatenate(blocks, axis=1), np.array([u.label for _, u in labelled]), [u.id for _, u in labelled]


def svm_split(bundle: DataBundle, modalities: Sequence[str], c_grid: Sequence[float] = DEFAULT_C) -> tuple[dict[str, Any], Predictions]:
    """Fit on train, choose C on valid, score valid and test: the metrics of one run and its test predictions."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    corpus = bundle.corpus
    if corpus.labels.multi_label:
        raise MerkitError("the SVM baseline is for single-label corpora")
    for modality in modalities:
        if modality not in bundle.features:
            raise MerkitError(f"the data has no {modality} features (it has: {', '.join(bundle.features) or 'none'})")
        if bundle.features[modality].level != "utterance":
            raise MerkitError(f"{modality} features are frame sequences; the SVM needs one vector per utterance")
    data = {split: _matrix(corpus, bundle.features, modalities, split) for split in ("train", "valid", "test")}
    names = corpus.labels.names
    best = None
    for c in c_grid:
        model = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale"))
        model.fit(data["train"][0], data["train"][1])
        valid = score_metrics(data["valid"][1], np.eye(len(names))[model.predict(data["valid"][0])], names, False)
        if best is None or valid["weighted_f1"] > best[0]:
            best = (valid["weighted_f1"], c, model, valid)
    _, c, model, valid = best
    features, labels, ids = data["test"]
    scores = np.eye(len(names))[model.predict(features)]
    metrics = {"C": c, "c_grid": list(c_grid), "valid": valid, "test": score_metrics(labels, scores, names, False)}
    return metrics, Predictions(ids, labels, scores)


def svm_baseline(
    bundle: DataBundle,
    modalities: Sequence[str],
    *,
    out: str | Path,
    folds: int | str | None = None,
    group_by: str = "speaker",
    assignment: str = "contiguous",
    c_grid: Sequence[float] = DEFAULT_C,
    source: str = "",
) -> dict[str, Any]:
    """The SVM on the fixed split (or on each of ``folds``, K or ``"loso"``, speaker-independent folds);
    writes and returns ``OUT/results.json``'s content."""
    out = Path(out)
    description = {
        "model": "svm",
        "preset": None,
        "modalities": list(modalities),
        "protocol": "honest",
        "protocol_label": "honest: C selected on the validation split",
        "data": {"corpus": bundle.corpus.name, "source": source, "features": {m: bundle.features[m].describe() for m in modalities}},
    }
    if folds is None:
        return _svm_run(bundle, modalities, c_grid, out, description)
    started = time.time()
    plan = make_folds(bundle.corpus, folds, group_by, assignment)
    per_fold = {
        f"fold{f.index}": _svm_run(DataBundle(f.corpus, bundle.features), modalities, c_grid, out / f"fold{f.index}", description) for f in plan
    }
    results = gather_folds(plan, fold_layout(plan, folds, group_by, assignment), per_fold, [0], time.time() - started)
    atomic_write_json(out / "results.json", results)
    return results


def _svm_run(bundle: DataBundle, modalities: Sequence[str], c_grid: Sequence[float], out: Path, description: dict[str, Any]) -> dict[str, Any]:
    """One run in ``out``, laid out as ``merkit train`` lays out seed 0 (see the module doc); returns its results."""
    started = time.time()
    metrics, predictions = svm_split(bundle, modalities, c_grid)
    atomic_write_json(out / "seed0" / "metrics.json", {"seed": 0, "protocol": "honest", **metrics, "wall_seconds": round(time.time() - started, 2)})
    write_predictions(out / "seed0" / "predictions-test.jsonl", predictions)
    per_seed = {"0": {"valid": headline(metrics["valid"]), "test": headline(metrics["test"]), "C": metrics["C"]}}
    results = {
        **description,
        "seeds": [0],
        "per_seed": per_seed,
        "summary": summarise_rows(list(per_seed.values())),
        "warnings": [f"seed 0 {split}: {w}" for split in ("valid", "test") for w in metrics[split]["warnings"]],
        "environment": environment(),
        "wall_seconds": round(time.time() - started, 2),
    }
    atomic_write_json(out / "results.json", results)
    return results
