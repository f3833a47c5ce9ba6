"""The classic strong baseline, in the same protocol as merkit's models: an RBF-SVM on the same features.

Utterance vectors of the chosen modalities are concatenated (absent rows become the training
mean, i.e. zeros after scaling), standardised on the training split (scikit-learn
``StandardScaler``), and an ``SVC(kernel="rbf", gamma="scale")`` is fitted for each ``C`` of
a grid; the ``C`` with the best validation weighted F1 is scored once on test. No context:
each utterance on its own, which is the speech-emotion baseline ("SVM on functionals").
``merkit baseline`` writes a ``results.json`` that ``merkit summary`` reads beside training runs
(with ``--folds``, the same speaker-independent folds as ``merkit train --folds``).
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
from merkit.metrics import headline, score_metrics, summarize

DEFAULT_C = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _matrix(corpus: Corpus, features: dict[str, FeatureSet], modalities: Sequence[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """``[N, ΣD]`` features (NaN where a modality is absent) and labels of the split's labelled utterances."""
    labelled = [(row, u) for row, u in corpus.split_rows([split]) if u.label is not None]
    rows = [row for row, _ in labelled]
    blocks = []
    for modality in modalities:
        values = np.array(features[modality].values[rows], dtype=np.float64)
        values[~np.asarray(features[modality].present[rows])] = np.nan
        blocks.append(values)
    return np.concatenate(blocks, axis=1), np.array([u.label for _, u in labelled])


def svm_split(bundle: DataBundle, modalities: Sequence[str], c_grid: Sequence[float] = DEFAULT_C) -> dict[str, Any]:
    """Fit on train, choose C on valid, score valid and test; the metrics of one run."""
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
    test = score_metrics(data["test"][1], np.eye(len(names))[model.predict(data["test"][0])], names, False)
    return {"C": c, "c_grid": list(c_grid), "valid": valid, "test": test}


def svm_baseline(
    bundle: DataBundle,
    modalities: Sequence[str],
    *,
    out: str | Path,
    folds: int | None = None,
    group_by: str = "speaker",
    assignment: str = "contiguous",
    c_grid: Sequence[float] = DEFAULT_C,
    source: str = "",
) -> dict[str, Any]:
    """The SVM on the fixed split (or on each of ``folds`` speaker-independent folds); writes ``OUT/results.json``."""
    started = time.time()
    plan = [] if folds is None else make_folds(bundle.corpus, folds, group_by, assignment)
    corpora = {f"fold{f.index}": f.corpus for f in plan} if plan else {"fixed": bundle.corpus}
    per_run = {name: svm_split(DataBundle(corpus, bundle.features), modalities, c_grid) for name, corpus in corpora.items()}
    summary = {
        split: {metric: summarize([headline(r[split])[metric] for r in per_run.values()]) for metric in headline(next(iter(per_run.values()))[split])}
        for split in ("valid", "test")
    }
    results = {
        "model": "svm",
        "preset": None,
        "modalities": list(modalities),
        "protocol": "honest",
        "protocol_label": "honest: C selected on the validation split",
        "data": {"corpus": bundle.corpus.name, "source": source, "features": {m: bundle.features[m].describe() for m in modalities}},
        "seeds": [0],
        "runs": len(per_run),
        "per_seed": {name: {"C": r["C"], "valid": headline(r["valid"]), "test": headline(r["test"])} for name, r in per_run.items()},
        "summary": summary,
        "wall_seconds": round(time.time() - started, 2),
    }
    if folds is not None:
        results["cross_validation"] = {"folds": folds, "group_by": group_by, "assignment": assignment}
        results["warnings"] = [f"fold{f.index}: {note}" for f in plan for note in f.notes]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    return results
