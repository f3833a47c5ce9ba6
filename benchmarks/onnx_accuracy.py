"""What the ONNX graphs change on a real test split: weighted F1, label agreement, probability difference, time.

    python benchmarks/onnx_accuracy.py --checkpoint runs/demo/runs/iemocap-bigru/seed0/best --data ../shared/data/iemocap

Exports the checkpoint (``merkit export --onnx``, fp32, and ``--quantize int8``) into a temporary
folder, then predicts the ``--split`` dialogues of ``--data`` from their raw text with the torch
predictor, the fp32 graphs and the int8 text encoder, all with one CPU thread, and scores each
against the gold labels (the same utterances, the same metric code as ``merkit evaluate``).
Prints one JSON object and a Markdown table; ``--out`` also writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a text checkpoint (RUN/seed0/best)")
    parser.add_argument("--data", type=Path, required=True, help="the corpus it was trained on (anything merkit reads)")
    parser.add_argument("--split", default="test", help="the split to score (default test)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()

    import torch

    import merkit
    from merkit.data import read_data
    from merkit.metrics import classification_metrics
    from merkit.onnx_export import export_onnx

    torch.set_num_threads(1)
    corpus = read_data(args.data).corpus
    dialogues = [d for d in corpus.dialogues if d.id in set(corpus.splits[args.split])]
    part = corpus.model_copy(update={"dialogues": tuple(dialogues), "splits": {args.split: tuple(d.id for d in dialogues)}})
    gold_names = [corpus.labels.names[u.label] for d in dialogues for u in d.utterances]
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="merkit-onnx-accuracy-") as scratch:
        folders = {kind: Path(scratch) / kind for kind in ("fp32", "int8")}
        for kind, folder in folders.items():
            export_onnx(args.checkpoint, folder, quantize="int8" if kind == "int8" else "none")
        for path, folder, backend in (("torch", folders["fp32"], "torch"), ("onnx fp32", folders["fp32"], "onnx"), ("onnx int8", folders["int8"], "onnx")):
            with merkit.load(folder, backend=backend, device="cpu", threads=1) as predictor:
                names = list(predictor.labels.names)
                started = time.perf_counter()
                result = predictor.predict(predictor.corpus(part))
                seconds = time.perf_counter() - started
            probabilities = np.array([[u.probabilities[n] for n in names] for u in result.utterances])
            predicted = probabilities.argmax(1)
            metrics = classification_metrics([names.index(g) for g in gold_names], predicted, names)
            row = {"path": path, "utterances": len(predicted), "weighted_f1": round(100 * metrics["weighted_f1"], 2),
                   "accuracy": round(100 * metrics["accuracy"], 2), "seconds": round(seconds, 2)}  # fmt: skip
            if reference is None:
                reference = (probabilities, predicted)
            else:
                row["label_agreement"] = round(100 * float((predicted == reference[1]).mean()), 2)
                row["max_abs_probability_difference"] = float(np.abs(probabilities - reference[0]).max())
                row["weighted_f1_change"] = round(row["weighted_f1"] - rows[0]["weighted_f1"], 2)
            rows.append(row)
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split, "threads": 1, "paths": rows}
    print(json.dumps(report, indent=2))
    print("\n| path | weighted F1 | Δ vs torch | accuracy | same label as torch | max abs Δ probability | seconds |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['weighted_f1']} | {row.get('weighted_f1_change', '')} | {row['accuracy']} | "
              f"{row.get('label_agreement', '')} | {row.get('max_abs_probability_difference', ''):.2g} | {row['seconds']} |"
              if "label_agreement" in row else
              f"| {row['path']} | {row['weighted_f1']} | | {row['accuracy']} | | | {row['seconds']} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
