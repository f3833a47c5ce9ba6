"""Which of LDDU's per-label quantities rises with its errors (issue #17 item 4), on a validation split.

    python benchmarks/lddu_uncertainty.py runs/lddu-unc/lddu-code runs/lddu-unc/lddu-per_sample_inverse \
        --data stores/goemotions-minilm

For every seed of every run: the decisions ``s_k ≥ t_k`` (the run's own thresholds, tuned on validation) of
each (utterance, label) of ``--split`` are marked right or wrong, and each candidate uncertainty is scored by
its AUROC for detecting the wrong ones (0.5 = chance, below = it falls as errors rise): ‖[σ_m]_m‖ per label,
the binary entropy of s_k, and the distance to the threshold −|s_k − t_k|. Also the Spearman correlation of
‖σ_k‖ with the semantic confidence c_k (positive = the code's L_crl pairs large σ with large confidence).
Prints a Markdown table (mean ± std over seeds) and one JSON object; ``--out`` also writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CANDIDATES = ("sigma_norm", "score_entropy", "threshold_distance")


def seed_statistics(checkpoint: Path, data, split: str) -> dict[str, float]:
    import torch
    from scipy.stats import spearmanr

    from merkit.calibration import error_auroc
    from merkit.evaluation.evaluate import Evaluator
    from merkit.models.lddu import binary_entropy
    from merkit.prediction import make_loader

    evaluator = Evaluator(checkpoint, data)
    model = evaluator.checkpoint.model.eval()
    collected: dict[str, list[np.ndarray]] = {name: [] for name in ("score", "confidence", "sigma_norm", "labels")}
    with torch.no_grad():
        for batch in make_loader(evaluator.dataset(split), 64):
            parts = model.parts(batch)
            labelled = batch.label_mask[batch.utterance_mask]
            for name in ("score", "confidence", "sigma_norm"):
                collected[name].append(getattr(parts, name)[labelled].float().numpy())
            collected["labels"].append(batch.labels[batch.label_mask].numpy())
    score, confidence, sigma_norm, labels = (np.concatenate(collected[n]) for n in ("score", "confidence", "sigma_norm", "labels"))
    threshold = np.broadcast_to(np.asarray(evaluator.threshold, dtype=float), score.shape)
    wrong = (score >= threshold) != labels.astype(bool)
    candidates = {
        "sigma_norm": sigma_norm,
        "score_entropy": binary_entropy(torch.from_numpy(score)).numpy(),
        "threshold_distance": -np.abs(score - threshold),
    }
    result = {f"auroc_{name}": error_auroc(wrong, values) for name, values in candidates.items()}
    result["spearman_sigma_confidence"] = float(spearmanr(sigma_norm.ravel(), confidence.ravel()).statistic)
    result["error_rate"] = float(wrong.mean())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="LDDU training runs (folders with seed*/best)")
    parser.add_argument("--data", required=True, help="the data they were trained on")
    parser.add_argument("--split", default="valid", help="the split to measure on (default valid)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()

    import torch

    from merkit.data import read_data

    torch.set_num_threads(1)
    data = read_data(args.data)
    report: dict[str, dict] = {}
    for run in args.runs:
        config = json.loads((run / "results.json").read_text())["model_config"]
        seeds = {p.parent.name: seed_statistics(p, data, args.split) for p in sorted(run.glob("seed*/best"))}
        keys = next(iter(seeds.values())).keys()
        summary = {k: {"mean": float(np.mean([s[k] for s in seeds.values()])), "std": float(np.std([s[k] for s in seeds.values()], ddof=1)) if len(seeds) > 1 else 0.0} for k in keys}
        report[str(run)] = {"crl_mode": config["crl_mode"], "seeds": seeds, "summary": summary}
    columns = [*(f"auroc_{c}" for c in CANDIDATES), "spearman_sigma_confidence", "error_rate"]
    print("| run | crl_mode | seeds | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for run, entry in report.items():
        cells = [f"{entry['summary'][c]['mean']:.3f} ± {entry['summary'][c]['std']:.3f}" for c in columns]
        print(f"| {run} | {entry['crl_mode']} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    text = json.dumps({"split": args.split, "runs": report}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
