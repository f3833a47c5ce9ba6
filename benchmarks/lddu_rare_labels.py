"""Where do LDDU's rare-label zeros on small multi-label corpora come from (#34's last acceptance point)?

For each saved run and seed, re-score the selected epoch with thresholds tuned on the validation split for micro-F1
(``per_class``, what the runs use) and for each class's own F1 (``per_class_f1``), and print, per split, micro- and
macro-F1 and the classes at F1 0, with each class's average precision (threshold-free: how well the model ranks it).
Nothing is chosen here; the test split is only scored. Usage (docs/results/multilabel.md, "Rare labels"):

    python benchmarks/lddu_rare_labels.py STORE RUN [RUN ...]   # RUN/seed*/best, trained on STORE
"""

import glob
import sys

from sklearn.metrics import average_precision_score

from merkit.evaluation.evaluate import Evaluator
from merkit.metrics import score_metrics
from merkit.thresholds import choose_thresholds


def main(store: str, runs: list[str]) -> None:
    for run in runs:
        for best in sorted(glob.glob(f"{run}/seed*/best")):
            evaluator = Evaluator(best, store)
            names = evaluator.labels.names
            predictions = {split: evaluator.predict(split) for split in ("valid", "test")}
            for strategy in ("per_class", "per_class_f1"):
                thresholds = choose_thresholds(strategy, predictions["valid"].labels, predictions["valid"].scores)
                for split, p in predictions.items():
                    scores = score_metrics(p.labels, p.scores, names, True, thresholds)
                    zeros = [c for c in names if scores["per_class"][c]["f1"] == 0]
                    print(best, strategy, split, f"micro {100 * scores['micro_f1']:.2f} macro {100 * scores['macro_f1']:.2f}", "at 0:", zeros)
            for split, p in predictions.items():
                ap = {c: round(100 * average_precision_score(p.labels[:, k], p.scores[:, k])) for k, c in enumerate(names)}
                print(best, "average precision", split, ap, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
