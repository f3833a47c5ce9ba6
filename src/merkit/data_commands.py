"""``merkit data`` (stats, convert, add-features, formats), and what every command that reads data shares:
the reader options ``-f/--format``, ``-o/--option key=value`` and ``--trust-pickle``, and reading with the
reader's warnings as one ``merkit: warning:`` line each. The main CLI registers ``data_app``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merkit.cli_options import example

data_app = typer.Typer(help="Read, inspect and convert corpora and feature files.", no_args_is_help=True)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="Input format, or 'auto' to detect it.")]
TrustOption = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow pickles that run code (only for files you trust).")
]
ReaderOptions = Annotated[
    Optional[list[str]], typer.Option("--option", "-o", help="Reader option key=value (repeatable).")
]


def read_command_data(path: str, format: str, trust_pickle: bool, option: list[str] | None):
    """Read a command's data argument; the reader's warnings (e.g. ignored columns) print as one ``merkit: warning:`` line each."""
    import warnings

    from merkit.data.formats import parse_options, read_data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return read_data(path, format, trust_pickle=trust_pickle, **parse_options(option or []))
        finally:
            for warning in dict.fromkeys(str(w.message) for w in caught):
                typer.echo(f"merkit: warning: {' '.join(warning.split())}", err=True)


def print_stats(stats: dict, console: Console) -> None:
    table = Table(title=f"{stats['name']} ({stats['label_kind']}, {len(stats['classes'])} classes)")
    table.add_column("split")
    table.add_column("dialogues", justify="right")
    table.add_column("utterances", justify="right")
    table.add_column("speakers", justify="right")
    for split, entry in stats["splits"].items():
        table.add_row(split, f"{entry['dialogues']:,}", f"{entry['utterances']:,}", f"{entry['speakers']:,}")
    table.add_row("all", f"{stats['dialogues']:,}", f"{stats['utterances']:,}", f"{stats['speakers']:,}", style="bold")
    console.print(table)
    labels = Table(title="labels")
    labels.add_column("class")
    for split in stats["splits"]:
        labels.add_column(split, justify="right")
    labels.add_column("all", justify="right")
    for name, count in stats["labels"].items():
        labels.add_row(name, *(f"{stats['splits'][s]['labels'][name]:,}" for s in stats["splits"]), f"{count:,}")
    if "no_emotion_utterances" in stats:  # multi-label rows labelled with an empty list
        counts = [stats["splits"][s]["no_emotion_utterances"] for s in stats["splits"]]
        labels.add_row("(no emotion)", *(f"{c:,}" for c in counts), f"{stats['no_emotion_utterances']:,}", style="italic")
    console.print(labels)


@data_app.command("stats", epilog=example("data stats"))
def data_stats(
    path: Annotated[str, typer.Argument(metavar="DATA", help="Data to read: a corpus file or folder, a feature store, or 'synthetic' (`merkit data formats`).")],
    format: FormatOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
) -> None:
    """Per-split dialogue and utterance counts and the label distribution."""
    bundle = read_command_data(path, format, trust_pickle, option)
    stats = bundle.corpus.stats()
    stats["features"] = {m: f.describe() for m, f in bundle.features.items()}
    if as_json:
        typer.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print_stats(stats, Console())


@data_app.command("convert", epilog=example("data convert"))
def data_convert(
    path: Annotated[str, typer.Argument(metavar="DATA", help="Data to read: a corpus file or folder, a feature store, or 'synthetic' (`merkit data formats`).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the feature store directory.")],
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
) -> None:
    """Convert any readable input into a merkit corpus + feature store (no pickle, written atomically)."""
    from merkit.data.store import write_store

    bundle = read_command_data(path, format, trust_pickle, option)
    store = write_store(out, bundle.corpus, bundle.features, keep_existing=False)
    dims = ", ".join(f"{m} {store.describe(m)['dim']}-d" for m in store.modalities) or "no features"
    typer.echo(f"wrote {out}: {len(store.corpus.dialogues):,} dialogues, {store.corpus.num_utterances:,} utterances, {dims}")


@data_app.command("add-features", epilog=example("data add-features"))
def data_add_features(
    store: Annotated[Path, typer.Argument(help="Feature store directory (e.g. from `merkit data convert`).")],
    source: Annotated[Path, typer.Argument(help="CSV/TSV/Parquet table keyed by utterance, or a folder of OpenFace CSVs or .npy files.")],
    modality: Annotated[str, typer.Option("--modality", "-m", help="Modality: text, audio or visual.")],
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated names or globs, e.g. 'AU*_r,AU*_c' (default: every numeric column).")] = None,
    key: Annotated[Optional[str], typer.Option(help="Key column of a table (default: utterance_id, id, clip, file or name).")] = None,
    frames: Annotated[str, typer.Option(help="mean (one vector per utterance) or sequence (keep the frames).")] = "mean",
    min_confidence: Annotated[float, typer.Option(help="OpenFace: drop frames with a lower confidence (and success 0).")] = 0.8,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON: the import report.")] = False,
) -> None:
    """Attach precomputed per-utterance features (OpenFace CSVs, a table, .npy files) to a store as one modality."""
    import warnings

    from merkit.data.external import add_features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report carries them; printed below
        written, report = add_features(store, modality, source, columns=columns, key=key, frames=frames, min_confidence=min_confidence)
    for warning in report.warnings:
        typer.echo(f"merkit: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps({"store": str(store), **report.to_dict()}, indent=2, ensure_ascii=False))
        return
    total = written.corpus.num_utterances
    level = "frame sequences" if frames == "sequence" else "utterance vectors"
    typer.echo(f"added {modality} to {store}: {report.matched:,} of {total:,} utterances, {report.dim}-d {level} ({report.kind})")
    if report.columns:
        shown = ", ".join(report.columns[:6]) + (f", … ({len(report.columns)} columns)" if len(report.columns) > 6 else "")
        typer.echo(f"columns: {shown}" + (f"; key {report.key}" if report.key else ""))
    if report.missing:
        examples = ", ".join(f"{uid} ({why})" for uid, why in list(report.missing.items())[:5])
        typer.echo(f"missing (masked): {len(report.missing):,} utterances, e.g. {examples}")


@data_app.command("formats", epilog=example("data formats"))
def data_formats() -> None:
    """List the input formats merkit reads."""
    from merkit.data.formats import available_formats

    table = Table("format", "description")
    for name, description in available_formats().items():
        table.add_row(name, description)
    Console().print(table)
