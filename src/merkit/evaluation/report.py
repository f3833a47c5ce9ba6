"""``merkit report`` (one self-contained HTML page and a Markdown twin) and ``merkit compare``."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merkit.errors import MerkitError
from merkit.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from merkit.metrics import headline, score_metrics


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MerkitError("reports need matplotlib: pip install 'merkit[report]'") from None
    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def figures(evaluation: dict[str, Any]) -> dict[str, bytes]:
    """PNG images: confusion matrix, robustness curves, reliability diagram, selective prediction."""
    plt = _pyplot()
    images: dict[str, bytes] = {}
    metrics = evaluation["metrics"]
    if "confusion_matrix" in metrics:
        names = list(metrics["per_class"])
        matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
        normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8, color="white" if normalised[i, j] > 0.5 else "black")
        ax.set_title("confusion matrix (counts; colour = row share)")
        images["confusion_matrix"] = _png(fig)
    metric = evaluation["metric"]
    if "missing_modality" in evaluation or "noise" in evaluation:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, mm in evaluation.get("missing_modality", {}).items():
            rows = mm["random_drop"]
            ax.plot([r["level"] for r in rows], [r[metric] for r in rows], marker="o", label=f"random modality drop, {mode} (rate)")
        for modality, curve in evaluation.get("noise", {}).items():
            rows = curve["rows"]
            ax.plot([r["level"] for r in rows], [r[metric] for r in rows], marker="s", label=f"noise on {modality} (× std)")
        ax.set_xlabel("level")
        ax.set_ylabel(metric)
        ax.set_title("robustness")
        ax.legend()
        ax.grid(alpha=0.3)
        images["robustness"] = _png(fig)
    if "calibration" in evaluation:
        calib = evaluation["calibration"]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
        for key, label in (("reliability_before", "before"), ("reliability_after", f"after T={calib['temperature']:.2f}")):
            bins = calib[key]
            points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"]) if c is not None]
            ax.plot(*zip(*points), marker="o", label=f"{label} (ECE {calib['before' if key.endswith('before') else 'after']['ece']:.3f})")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("reliability diagram")
        ax.legend()
        images["reliability"] = _png(fig)
        selective = calib["selective"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(selective["coverage"], selective["accuracy"])
        ax.set_xlabel("coverage (most certain first)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"selective prediction by {selective['uncertainty']} (area {selective['area']:.3f})")
        ax.grid(alpha=0.3)
        images["selective_prediction"] = _png(fig)
    return images


def _metric_rows(evaluation: dict[str, Any]) -> list[tuple[str, str, str]]:
    ci = evaluation.get("ci95", {})
    rows = []
    for name, value in headline(evaluation["metrics"]).items():
        interval = f"[{100 * ci[name]['low']:.2f}, {100 * ci[name]['high']:.2f}]" if name in ci else ""
        rows.append((name, f"{100 * value:.2f}", interval))
    return rows


def _sections(results: dict[str, Any], evaluation: dict[str, Any]) -> list[tuple[str, list[list[str]] | str, list[str] | None]]:
    """Report content as (title, table rows or text, header) — rendered to both HTML and Markdown."""
    sections: list[tuple[str, Any, Any]] = []
    config = {k: results.get(k) for k in ("model", "preset", "modalities", "protocol_label", "model_config", "train_config")}
    config["data"] = results.get("data", {}).get("source")
    sections.append(("Configuration", json.dumps(config, indent=2), None))
    if results.get("summary"):
        rows = [
            [split, metric, f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}", str(v["n"])]
            for split, metrics in results["summary"].items()
            for metric, v in metrics.items()
        ]
        sections.append(("Results over seeds (mean ± std)", rows, ["split", "metric", "value (%)", "seeds"]))
    sections.append(
        (f"Metrics on {evaluation['split']} (seed {evaluation.get('seed', 0)}, 95% bootstrap CI over dialogues)",
         [list(r) for r in _metric_rows(evaluation)], ["metric", "value (%)", "95% CI"])
    )  # fmt: skip
    per_class = evaluation["metrics"]["per_class"]
    rows = [
        [name, f"{100 * v['precision']:.1f}", f"{100 * v['recall']:.1f}", f"{100 * v['f1']:.1f}", str(v["support"]),
         "⚠ F1 = 0" if v["f1"] == 0 and v["support"] > 0 else ""]
        for name, v in per_class.items()
    ]  # fmt: skip
    sections.append(("Per class", rows, ["class", "precision", "recall", "F1", "support", "warning"]))
    if evaluation["metrics"].get("warnings"):
        sections.append(("Warnings", "\n".join(evaluation["metrics"]["warnings"]), None))
    metric = evaluation["metric"]
    for mode, mm in evaluation.get("missing_modality", {}).items():
        rows = [[r["condition"], f"{100 * r[metric]:.2f}"] for r in mm["combinations"]]
        rows += [[f"random drop {r['level']:.0%}", f"{100 * r[metric]:.2f}"] for r in mm["random_drop"]]
        rows.append(["relative robustness (random drop)", f"{mm['relative_robustness']:.3f}"])
        how = "marked absent" if mode == "mask" else "inputs zeroed, model not told"
        sections.append((f"Missing modalities ({mode}: {how})", rows, ["condition", metric]))
    if "noise" in evaluation:
        rows = [[m, *(f"{100 * r[metric]:.2f}" for r in c["rows"]), f"{c['relative_robustness']:.3f}"] for m, c in evaluation["noise"].items()]
        levels = [f"σ×{r['level']}" for r in next(iter(evaluation["noise"].values()))["rows"]]
        sections.append(("Feature noise", rows, ["modality", *levels, "relative robustness"]))
    if "uncertainty" in evaluation:
        u = evaluation["uncertainty"]
        rows = [[f"AUROC for the model's own errors (per {u['unit']}; 0.5 = chance)", f"{u['error_auroc']:.3f}"]]
        sections.append(("Uncertainty", rows, ["measure", "value"]))
    if "calibration" in evaluation:
        c = evaluation["calibration"]
        rows = [[name, f"{c['before'][name]:.4f}", f"{c['after'][name]:.4f}"] for name in c["before"]]
        sections.append((f"Calibration (temperature {c['temperature']:.3f} fitted on {c['fitted_on']})", rows, ["metric", "before", "after"]))
    return sections


def write_report(run_dir: Path, results: dict[str, Any], evaluation: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``report.html`` (images embedded) and ``report.md`` (images beside it) into ``out``."""
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = figures(evaluation)
    sections = _sections(results, evaluation)
    title = f"merkit report — {results.get('model', evaluation['model'])} on {results.get('data', {}).get('corpus', '')}"
    body, markdown = [f"<h1>{html.escape(title)}</h1>"], [f"# {title}", ""]
    for heading, content, header in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        markdown += [f"## {heading}", ""]
        if header is None:
            body.append(f"<pre>{html.escape(content)}</pre>")
            markdown += ["```", content, "```", ""]
        else:
            cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in content)
            body.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>")
            markdown += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            markdown += ["| " + " | ".join(str(c) for c in row) + " |" for row in content] + [""]
    body.append("<h2>Figures</h2>")
    markdown += ["## Figures", ""]
    for name, data in images.items():
        atomic_write_bytes(out / f"{name}.png", data)
        encoded = base64.b64encode(data).decode("ascii")
        body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{encoded}"><figcaption>{name.replace("_", " ")}</figcaption></figure>')
        markdown += [f"![{name}]({name}.png)", ""]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f3f3f3}pre{background:#f7f7f7;padding:.8em;overflow:auto}img{max-width:100%}"
    )
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    atomic_write_text(out / "report.html", page)
    atomic_write_text(out / "report.md", "\n".join(markdown))
    atomic_write_json(out / "evaluation.json", evaluation)
    return out / "report.html"


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise MerkitError("no test predictions (was this run finished?)", path=path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def compare_runs(run_dirs: Sequence[Path], seed: int = 0, samples: int = 2000, bootstrap_seed: int = 0) -> dict[str, Any]:
    """Side-by-side test metrics of runs, and a paired bootstrap of each run's difference to the first.

    The runs must have scored the same test utterances; the same resampled utterance indices are
    used for both members of a pair, so the interval reflects the difference on one test set.
    """
    if len(run_dirs) < 2:
        raise MerkitError("compare needs at least two run directories")
    runs = []
    for run_dir in run_dirs:
        results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
        predictions = _read_predictions(run_dir / f"seed{seed}" / "predictions-test.jsonl")
        classes = json.loads((run_dir / f"seed{seed}" / "best" / "model.json").read_text())["labels"]
        runs.append({"dir": run_dir, "results": results, "predictions": predictions, "labels": classes})
    ids = sorted(runs[0]["predictions"])
    for run in runs[1:]:
        if sorted(run["predictions"]) != ids:
            raise MerkitError("runs scored different test utterances; compare runs on the same data", path=run["dir"])
    names, multi = runs[0]["labels"]["names"], runs[0]["labels"]["multi_label"]
    labels = np.array([runs[0]["predictions"][i]["label"] for i in ids])
    scores = [np.array([run["predictions"][i]["scores"] for i in ids]) for run in runs]
    metric = "micro_f1" if multi else "weighted_f1"
    rng = np.random.default_rng(bootstrap_seed)
    draws = rng.integers(0, len(ids), size=(samples, len(ids)))

    def value(run_scores: np.ndarray, index: np.ndarray | slice = slice(None)) -> dict[str, float]:
        return headline(score_metrics(labels[index], run_scores[index], names, multi))

    table = [{"run": str(run["dir"]), "model": run["results"].get("model", "?"), **value(s)} for run, s in zip(runs, scores)]
    pairs = []
    for other in range(1, len(runs)):
        differences = np.array([value(scores[other], d)[metric] - value(scores[0], d)[metric] for d in draws])
        observed = table[other][metric] - table[0][metric]
        p_value = min(1.0, 2 * min((differences <= 0).mean(), (differences >= 0).mean()))
        pairs.append({
            "a": str(runs[0]["dir"]), "b": str(runs[other]["dir"]), "metric": metric, "difference": observed,
            "ci95": [float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))],
            "p_value": float(p_value), "samples": samples,
        })  # fmt: skip
    return {"seed": seed, "utterances": len(ids), "metric": metric, "runs": table, "paired_bootstrap": pairs}


def summarize_runs(run_dirs: Sequence[Path], metrics: Sequence[str], splits: Sequence[str] = ("valid", "test")) -> list[dict[str, Any]]:
    """One row per run from its ``results.json``: model, preset, seeds and each split/metric's mean ± std (percent)."""
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise MerkitError("no results.json (has `merkit train` finished in this directory?)", path=run_dir)
        results = json.loads(path.read_text())
        row: dict[str, Any] = {
            "run": str(run_dir), "model": results["model"], "preset": results.get("preset"), "seeds": results["seeds"],
            "runs": results.get("runs", len(results["seeds"])),  # folds × seeds for cross-validation
        }  # fmt: skip
        for split in splits:
            for metric in metrics:
                stats = results["summary"].get(split, {}).get(metric)
                if stats is None:
                    raise MerkitError(f"results.json has no {split} {metric}", path=path)
                row[f"{split} {metric}"] = (100 * stats["mean"], 100 * stats["std"])
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """``summarize_runs`` rows as a Markdown table (mean ± sample std)."""
    value_columns = [key for key in rows[0] if isinstance(rows[0][key], (tuple, float))]
    lines = ["| run | model | runs | " + " | ".join(value_columns) + " |", "|---|---|---|" + "---|" * len(value_columns)]
    for row in rows:
        cells = [f"{row[c][0]:.2f} ± {row[c][1]:.2f}" if isinstance(row[c], tuple) else f"{row[c]:.3f}" for c in value_columns]
        lines.append(f"| {row['run']} | {row['model']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
