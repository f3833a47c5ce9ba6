"""Does the decision-threshold strategy cause LDDU's rare-class zeros on small multi-label corpora (#34 item 2)?

For each saved run, choose between ``per_class`` and ``global`` thresholds by 5-fold × 4 cross-validation inside
the validation split only, then score the test split once with the chosen strategy, printing micro/macro-F1 and
the per-class F1. Usage (the runs and stores of docs/results/multilabel.md's "LDDU on small multi-label corpora"):

    python benchmarks/lddu_threshold_strategy.py RUNS STORES   # RUNS/{A,B}/{lddu,sigmoid-mlp}/seed{0,1,2}/best, STORES/ge5k{A,B}
"""

import sys

import numpy as np

from merkit.evaluation.evaluate import Evaluator
from merkit.metrics import score_metrics
from merkit.thresholds import choose_thresholds


def cv_micro_f1(strategy, labels, scores, names, folds=5, repeats=4):
    values = []
    for repeat in range(repeats):
        parts = np.array_split(np.random.default_rng(repeat).permutation(len(labels)), folds)
        for k in range(folds):
            fit = np.concatenate([parts[j] for j in range(folds) if j != k])
            threshold = choose_thresholds(strategy, labels[fit], scores[fit])
            values.append(score_metrics(labels[parts[k]], scores[parts[k]], names, True, threshold)["micro_f1"])
    return float(np.mean(values))


def main(runs: str, stores: str) -> None:
    for subsample in "AB":
        for model in ("lddu", "sigmoid-mlp"):
            for seed in range(3):
                evaluator = Evaluator(f"{runs}/{subsample}/{model}/seed{seed}/best", f"{stores}/ge5k{subsample}")
                valid, test, names = evaluator.predict("valid"), evaluator.predict("test"), evaluator.labels.names
                cv = {s: cv_micro_f1(s, valid.labels, valid.scores, names) for s in ("per_class", "global")}
                chosen = max(cv, key=cv.get)
                scores = score_metrics(test.labels, test.scores, names, True, choose_thresholds(chosen, valid.labels, valid.scores))
                per_class = [round(100 * scores["per_class"][c]["f1"]) for c in names]
                print(subsample, model, seed, {k: round(100 * v, 2) for k, v in cv.items()}, chosen,
                      round(100 * scores["micro_f1"], 2), round(100 * scores["macro_f1"], 2), per_class, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
