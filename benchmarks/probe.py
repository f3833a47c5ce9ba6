"""Per-utterance logistic-regression probe of a store's features (the frozen vs fine-tuned comparison).

    python benchmarks/probe.py stores/iemocap-minilm stores/iemocap-minilm-ft [--modality text] [--json out.json]

For each store: standardise the features (statistics of the train split), fit a multinomial
logistic regression on the train split for each C in the grid, select C on the valid
split's weighted F1, and score the test split once with the selected C. Prints valid and
test weighted F1 and test accuracy (percent). Single-label corpora only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from merkit.data import open_store

GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0)


def split_arrays(store, modality: str):
    corpus = store.corpus
    if corpus.labels.multi_label:
        raise SystemExit(f"{store.root}: the probe handles single-label corpora only")
    features = store.features(modality)
    if features.level != "utterance":
        raise SystemExit(f"{store.root}: the probe needs utterance-level features")
    values = np.asarray(features.values, dtype=np.float32)
    owner = {d: s for s, ids in corpus.splits.items() for d in ids}
    rows: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    labels = []
    index = 0
    for dialogue in corpus.dialogues:
        for utterance in dialogue.utterances:
            labels.append(-1 if utterance.label is None else utterance.label)
            split = owner.get(dialogue.id)
            if split in rows and utterance.label is not None and features.present[index]:
                rows[split].append(index)
            index += 1
    y = np.asarray(labels)
    return {s: (values[r], y[r]) for s, r in rows.items()}


def probe(path: str, modality: str = "text", grid=GRID, seed: int = 0) -> dict:
    store = open_store(path)
    data = split_arrays(store, modality)
    scaler = StandardScaler().fit(data["train"][0])
    x = {s: scaler.transform(v[0]) for s, v in data.items()}
    y = {s: v[1] for s, v in data.items()}
    scores = {}
    for c in grid:
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x["train"], y["train"])
        scores[c] = (f1_score(y["valid"], model.predict(x["valid"]), average="weighted"), model)
    best_c = max(grid, key=lambda c: scores[c][0])
    model = scores[best_c][1]
    predicted = model.predict(x["test"])
    entry = store.describe(modality)
    return {
        "store": str(path),
        "extractor": entry["extractor"],
        "corpus": store.corpus.name,
        "C": best_c,
        "valid_wf1": 100 * scores[best_c][0],
        "test_wf1": 100 * f1_score(y["test"], predicted, average="weighted"),
        "test_acc": 100 * accuracy_score(y["test"], predicted),
        "train_acc": 100 * accuracy_score(y["train"], model.predict(x["train"])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--modality", default="text")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    print("| store | extractor | C | valid wF1 | test wF1 | test acc | train acc |")
    print("|---|---|---|---|---|---|---|")
    for path in args.stores:
        started = time.perf_counter()
        row = probe(path, args.modality)
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(
            f"| {path} | {row['extractor']} | {row['C']:g} | {row['valid_wf1']:.2f} | {row['test_wf1']:.2f} "
            f"| {row['test_acc']:.2f} | {row['train_acc']:.2f} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    sys.exit(main())
