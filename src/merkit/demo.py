"""``merkit demo``, the README's main job.

With the real corpora beside the repo (``../shared/data``): extract frozen MiniLM text
features of IEMOCAP and MELD (cached), train a model on each with selection on the validation
split, score the test split, print the table, and predict the emotions of a short example
conversation. Without them: the same on the embedded synthetic corpus. Every step reuses
what an earlier run left (store, cache, finished runs), so a re-run is fast.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from merkit.data.formats import read_data
from merkit.data.store import is_store, open_store, write_store
from merkit.training.engine import train_model

REAL_CORPORA = ("iemocap", "meld")
DEMO_MODEL = "bigru"


def shared_data_root(explicit: Path | None = None) -> Path | None:
    """``--data-root``, else ``$MERKIT_SHARED_DATA``, else ``../shared/data``; None when absent."""
    for candidate in (explicit, os.environ.get("MERKIT_SHARED_DATA"), Path("..") / "shared" / "data"):
        if candidate is not None and all((Path(candidate) / name).is_dir() for name in REAL_CORPORA):
            return Path(candidate)
    if explicit is not None:
        from merkit.errors import MerkitError

        raise MerkitError(f"no {' and '.join(REAL_CORPORA)} folders here", path=explicit)
    return None


def _text_store(corpus_path: Path, store: Path, console: Console) -> Path:
    if is_store(store) and "text" in open_store(store).modalities:
        console.print(f"  features: reusing {store}")
        return store
    from merkit.features.extract import run_extraction
    from merkit.features.registry import get_extractor

    console.print(f"  features: MiniLM text embeddings → {store}")
    corpus = read_data(corpus_path).corpus
    extractor = get_extractor("minilm", modality="text")
    try:
        run_extraction(corpus, extractor, out=store, source=str(corpus_path), log=None)
    finally:
        extractor.close()
    return store


def _train(data: Any, run_dir: Path, model: str, overrides: list[str], console: Console) -> dict[str, Any]:
    if (run_dir / "results.json").is_file():
        console.print(f"  model: reusing {run_dir}")
        return json.loads((run_dir / "results.json").read_text())
    console.print(f"  model: training {model} (selection on the validation split) → {run_dir}")
    return train_model(data, model, out=run_dir, overrides=overrides, seeds=[0], resume=True, modalities=None)


def run_demo(out: Path, data_root: Path | None, model: str, console: Console) -> dict[str, Any]:
    rows = {}
    if data_root is not None:
        console.print(f"[bold]merkit demo[/bold] on the real corpora in {data_root} (text only, MiniLM features)")
        for name in REAL_CORPORA:
            console.print(f"[bold]{name}[/bold]")
            store = _text_store(data_root / name, out / "stores" / f"{name}-minilm", console)
            rows[name] = _train(store, out / "runs" / f"{name}-{model}", model, [], console)
    else:
        console.print("[bold]merkit demo[/bold]: no ../shared/data here, using the embedded synthetic corpus")
        bundle = read_data("synthetic")
        write_store(out / "stores" / "synthetic", bundle.corpus, bundle.features, keep_existing=False)
        rows["synthetic"] = _train(out / "stores" / "synthetic", out / "runs" / f"synthetic-{model}", model, [], console)
    table = Table(title="test split (model selected on the validation split)")
    for column in ("corpus", "model", "modalities"):
        table.add_column(column)
    for column in ("accuracy", "weighted F1", "macro F1"):
        table.add_column(column, justify="right")
    for corpus, results in rows.items():
        test = results["summary"]["test"]
        table.add_row(
            corpus, results["model"], ", ".join(results["modalities"]),
            *(f"{100 * test[m]['mean']:.2f}" for m in ("accuracy", "weighted_f1", "macro_f1")),
        )  # fmt: skip
    console.print(table)
    if data_root is not None:
        _predict_example(out / "runs" / f"meld-{model}" / "seed0" / "best", console)
    return rows


def _predict_example(checkpoint: Path, console: Console) -> None:
    from merkit.inference import load

    example = files("merkit") / "examples" / "conversations.jsonl"
    predictor = load(checkpoint)
    table = Table(title=f"predicted emotions of {example.name} (MELD model)")
    for column in ("dialogue", "speaker", "text", "predicted", "p"):
        table.add_column(column)
    try:
        result = predictor.predict(str(example))
    finally:
        predictor.close()
    for row in result.utterances:
        table.add_row(row.dialogue_id, row.speaker, row.text, str(row.label), f"{max(row.probabilities.values()):.2f}")
    console.print(table)
