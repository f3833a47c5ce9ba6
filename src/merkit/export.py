"""``merkit export``: a self-contained model folder with its model card.

Above both training (the card names the run's protocol in training's words) and inference (the folder
is what :func:`merkit.load` opens); neither imports this module."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from merkit.checkpoint import META, WEIGHTS, load_checkpoint
from merkit.data.corpus import LabelSchema
from merkit.errors import MerkitError
from merkit.io import atomic_path, atomic_write_json, atomic_write_text
from merkit.training.config import PROTOCOLS


def _json_if_present(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """A self-contained model folder: ``model.safetensors`` + ``model.json`` (so ``merkit.load(out)`` works),
    ``labels.json``, ``features.json``, the run's ``metrics.json``/``results.json`` when they are found beside
    the checkpoint (``RUN/seedN/best`` → ``RUN/seedN/metrics.json``, ``RUN/results.json``), and a ``README.md`` model card."""
    source, out = Path(checkpoint), Path(out)
    meta = portable(dict(load_checkpoint(source).meta))  # verifies the weights' checksum and that the model rebuilds
    if out.resolve() == source.resolve():
        raise MerkitError("export into another folder than the checkpoint's", path=out)
    if out.is_dir() and any(out.iterdir()) and not (out / META).is_file():
        raise MerkitError("the output folder exists and is not a merkit model folder; choose another --out", path=out)
    with atomic_path(out / WEIGHTS) as tmp:
        shutil.copyfile(source / WEIGHTS, tmp)
    atomic_write_json(out / META, meta)
    labels = LabelSchema.model_validate(meta["labels"])
    atomic_write_json(
        out / "labels.json",
        {"names": list(labels.names), "multi_label": labels.multi_label, "thresholds": meta.get("thresholds")},
    )
    atomic_write_json(out / "features.json", meta["features"])
    here = source.resolve()  # an exported folder holds its own; a training run has them above the checkpoint
    seed_metrics = _json_if_present(here / "metrics.json") or _json_if_present(here.parent / "metrics.json")
    run_results = _json_if_present(here / "results.json") or _json_if_present(here.parent.parent / "results.json")
    seed_metrics, run_results = portable(seed_metrics), portable(run_results)
    for name, content in (("metrics.json", seed_metrics), ("results.json", run_results)):
        if content is not None:
            atomic_write_json(out / name, content)
        else:
            (out / name).unlink(missing_ok=True)
    atomic_write_text(out / "README.md", model_card(meta, seed_metrics, run_results))
    return out


def portable(value: Any) -> Any:
    """``value`` without the builder's absolute paths (an exported folder is shared): the ``path`` and ``source``
    entries keep the part below ``site-packages`` (weights that came in a package) or the last name (a store,
    a feature file). Settings that rebuild an extractor (the ``hf`` extractor's ``model`` folder) stay as they are."""
    if isinstance(value, Mapping):
        return {k: _short_path(v) if k in ("path", "source") and isinstance(v, str) else portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    return value


def _short_path(text: str) -> str:
    path = Path(text)
    if not path.is_absolute():
        return text
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return path.name


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def model_card(meta: Mapping[str, Any], seed_metrics: Mapping[str, Any] | None, run_results: Mapping[str, Any] | None) -> str:
    """The README of an exported model: what it is, its intended use, data, metrics (with the protocol), limitations."""
    labels = LabelSchema.model_validate(meta["labels"])
    model, features = meta["model"], meta["features"]
    protocol = meta.get("protocol", "honest")
    protocol_label = PROTOCOLS.get(protocol, {}).get("label", protocol)
    data = (run_results or {}).get("data", {})
    corpus = data.get("corpus", "unknown corpus")
    modalities = ", ".join(f"{m} ({entry.get('extractor')})" for m, entry in features.items())
    kind = "multi-label" if labels.multi_label else "single-label"
    lines = [
        f"# {model} — emotion recognition in conversations (merkit)",
        "",
        f"A `{model}` model trained with merkit {meta.get('merkit_version', '?')} on **{corpus}**: "
        f"{kind} classification of every utterance of a conversation into {', '.join(labels.names)}, "
        f"from {modalities}.",
        "",
        "## Intended use",
        "",
        "Research and prototyping: per-utterance emotion estimates for whole conversations (transcripts, audio, video, or any "
        "mix of the modalities above), with class probabilities, and uncertainty and expert weights where the model gives "
        "them. The labels are annotators' perceptions of the emotion expressed in the training data, not a measurement of "
        "what anyone feels: do not use the predictions to make decisions about people (hiring, health, policing, grading).",
        "",
        "```python",
        "import merkit",
        'predictor = merkit.load("THIS_FOLDER")',
        'result = predictor.predict([{"speaker": "Ana", "text": "I got the job!"}])',
        "print(result.utterances[0].label, result.utterances[0].probabilities)",
        "```",
        "",
        "```bash",
        "merkit predict THIS_FOLDER conversation.jsonl --csv --out predictions.csv",
        "merkit serve THIS_FOLDER            # web page at http://127.0.0.1:8000/",
        "```",
        "",
        "## Model",
        "",
        f"- architecture: `{model}`, config `{json.dumps(meta.get('model_config', {}), sort_keys=True)}`",
        f"- preset: {meta.get('preset') or 'none'}; seed {meta.get('seed', '?')}",
        f"- training: `{json.dumps(meta.get('train_config', {}), sort_keys=True)}`",
        f"- weights: `model.safetensors` (SHA-256 `{meta.get('weights_sha256', '?')}`)",
        "",
        "## Data",
        "",
        f"- corpus: {corpus}" + (f" (`{data['source']}`)" if data.get("source") else ""),
        f"- classes ({kind}): {', '.join(labels.names)}",
    ]
    if labels.multi_label and meta.get("thresholds"):
        lines.append(f"- decision thresholds ({meta.get('threshold_strategy', 'recorded')}, tuned on the selection split): `{json.dumps(meta['thresholds'])}`")
    lines += ["", "| modality | extractor | dim | level | utterances with it (training data) |", "|---|---|---|---|---|"]
    for modality, entry in features.items():
        lines.append(
            f"| {modality} | `{entry.get('extractor')}` | {entry.get('dim')} | {entry.get('level', 'utterance')} | "
            f"{entry.get('present', '?')} / {entry.get('count', '?')} |"
        )
    lines += ["", "The feature manifest with every extractor setting and weight checksum is in `features.json`.", "", "## Metrics", ""]
    lines.append(f"Protocol: **{protocol_label}**.")
    lines.append("")
    summary = (run_results or {}).get("summary")
    if summary:
        names = list(next(iter(summary.values())))
        seeds = (run_results or {}).get("seeds", [])
        lines += [f"Mean ± std over {len(seeds)} seed(s) {seeds} (this folder holds seed {meta.get('seed', '?')}):", ""]
        lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for split, values in summary.items():
            lines.append(f"| {split} | " + " | ".join(f"{_percent(values[n]['mean'])} ± {_percent(values[n]['std'])}" for n in names) + " |")
        lines.append("")
    test = (seed_metrics or {}).get("test")
    if test and "per_class" in test:
        lines += [f"Per class on the test split (seed {meta.get('seed', '?')}):", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for name, row in test["per_class"].items():
            lines.append(f"| {name} | {_percent(row['precision'])} | {_percent(row['recall'])} | {_percent(row['f1'])} | {row['support']} |")
        lines.append("")
    if not summary and not test:
        lines += ["No metrics were found beside the checkpoint (`metrics.json`, `results.json`).", ""]
    warnings = sorted({w for split in ("valid", "test") for w in ((seed_metrics or {}).get(split) or {}).get("warnings", [])})
    lines += ["## Limitations", ""]
    lines += [f"- {warning}: the model does not recognise this class reliably." for warning in warnings]
    if protocol != "honest":
        lines.append("- The epoch was selected on the test split (paper-compat protocol): the test scores above are optimistic.")
    lines += [
        f"- Trained on {corpus} only: conversations from other settings, languages, recording conditions or cultures "
        "may be recognised much less accurately.",
        "- An utterance without one of the modalities (or whose file is silent, corrupt or shows no face) has it masked; "
        "the model then decides on what is left, usually less accurately. `modalities` and `notes` in each prediction say "
        "which ones were used.",
        "- Probabilities and uncertainties are the model's own and are not calibrated; check them with "
        "`merkit evaluate --analysis calibration` on data like yours.",
        "- Features must come from the same extractors and weights: loading refuses an extractor whose fingerprint differs "
        "from the one recorded in `model.json`.",
        "",
    ]
    return "\n".join(lines)
