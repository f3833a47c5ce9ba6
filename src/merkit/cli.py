"""The ``merkit`` command line (Typer): the app, its small commands (``models``, ``info``, ``doctor``, ``cache``,
``demo``) and the registration of the others, which live beside their layer (``data_commands``, ``extract_commands``,
``training_commands``, ``predict_commands``, ``recording_commands``, ``live_cli``, ``zoo_commands``).

Errors a user can fix (bad file, bad option) print one line on stderr and exit with code 2;
``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merkit._version import __version__
from merkit.cli_options import DATA_ROOT_HELP, example
from merkit.data_commands import data_app
from merkit.errors import MerkitError
from merkit.recipes import RecipeCommand
from merkit.extract_commands import extract, extractors, merge
from merkit.live_cli import live
from merkit.predict_commands import export, predict_conversations, serve
from merkit.recording_commands import diarize
from merkit.training_commands import baseline, compare, ensemble, evaluate, report, summary, train
from merkit.zoo_commands import zoo_app

app = typer.Typer(
    name="merkit",
    help="Multimodal emotion recognition in conversations: data, features, models, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion
)
app.add_typer(data_app, name="data")
app.command("extract", epilog=example("extract"), cls=RecipeCommand)(extract)
app.command("extractors", epilog=example("extractors"))(extractors)
app.command("merge", epilog=example("merge"))(merge)
app.command("live", epilog=example("live"))(live)
app.command("diarize", epilog=example("diarize"))(diarize)
app.add_typer(zoo_app, name="zoo")


def _console() -> Console:
    return Console()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"merkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """merkit: multimodal emotion recognition in conversations."""


@app.command("models", epilog=example("models"))
def models() -> None:
    """List the registered models with their modalities and presets, and which corpus shape each preset suits."""
    from merkit.models.registry import PRESET_SHAPES, catalogue

    entries = catalogue()
    table = Table("model", "modalities", "presets", "description")
    for entry in entries:
        table.add_row(entry["name"], ", ".join(entry["modalities"]), ", ".join([*entry["presets"], "auto"]), entry["description"])
    console = _console()
    console.print(table)
    shapes = Table("preset", "models", "suits")
    for preset, shape in PRESET_SHAPES.items():
        users = [e["name"] for e in entries if preset in e["presets"] or preset == "auto"]
        shapes.add_row(preset, ", ".join(users), shape)
    console.print(shapes)


app.command("train", epilog=example("train"), cls=RecipeCommand)(train)
app.command("baseline", epilog=example("baseline"), cls=RecipeCommand)(baseline)
app.command("evaluate", epilog=example("evaluate"))(evaluate)
app.command("report", epilog=example("report"))(report)
app.command("ensemble", epilog=example("ensemble"))(ensemble)
app.command("compare", epilog=example("compare"))(compare)
app.command("summary", epilog=example("summary"))(summary)
app.command("predict", epilog=example("predict"))(predict_conversations)
app.command("serve", epilog=example("serve"))(serve)
app.command("export", epilog=example("export"))(export)


@app.command("info", epilog=example("info"))
def info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best), a `merkit export` folder, or a zoo model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """What a checkpoint is: labels, modalities, feature extractors, model config, selection, seed and recorded scores."""
    from merkit.diagnostics import checkpoint_info, format_info
    from merkit.zoo import FUSION, card_of, render_card, resolve

    folder = resolve(checkpoint)
    entry = card_of(folder)  # a zoo model's card, if it is one
    if (folder / FUSION).is_file():
        typer.echo(entry.model_dump_json(indent=2) if as_json else render_card(entry))
        return
    record = checkpoint_info(folder) | ({"card": entry.model_dump(mode="json")} if entry else {})
    lines = format_info(record) + ([f"zoo card    {entry.name}: {entry.task}", f"data        {'; '.join(d.corpus for d in entry.training_data)}",
                                    f"licence     {entry.licence}"] if entry else [])  # fmt: skip
    typer.echo(json.dumps(record, indent=2, ensure_ascii=False) if as_json else "\n".join(lines))


@app.command("doctor", epilog=example("doctor"))
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Which extras, offline weights and programs are installed (and how to install the missing ones), torch threads, GPU."""
    from merkit.diagnostics import doctor_report, format_doctor

    report = doctor_report()
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else "\n".join(format_doctor(report)))


cache_app = typer.Typer(help="List or clear merkit's cache folder ($MERKIT_CACHE, default ~/.cache/merkit).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("list", epilog=example("cache list"))
def cache_list(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """The joined weights, transcripts and anything else in the cache folder, with sizes (feature caches live in each store's .cache/)."""
    from merkit.diagnostics import cache_entries, human_bytes
    from merkit.features.models_dir import cache_root

    entries = cache_entries()
    if as_json:
        typer.echo(json.dumps({"root": str(cache_root()), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}, indent=2))
        return
    table = Table("entry", "files", "size", "what", title=str(cache_root()))
    for entry in entries:
        table.add_row(entry["name"], f"{entry['files']:,}", human_bytes(entry["bytes"]), entry["kind"])
    table.add_row("all", f"{sum(e['files'] for e in entries):,}", human_bytes(sum(e["bytes"] for e in entries)), "", style="bold")
    _console().print(table)


@cache_app.command("clear", epilog=example("cache clear"))
def cache_clear(
    name: Annotated[Optional[str], typer.Argument(help="One entry of `merkit cache list` (default: all of merkit's own).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete cache entries; joined weights are joined again from the installed packages on next use."""
    from merkit.diagnostics import cache_targets, human_bytes, remove_entries

    targets = cache_targets(name)
    if not targets:
        typer.echo("the cache holds nothing of merkit's")
        return
    size = human_bytes(sum(e["bytes"] for e in targets))
    if not yes and not typer.confirm(f"delete {', '.join(e['path'] for e in targets)} ({size})?"):
        typer.echo("nothing deleted")
        raise typer.Exit(1)
    remove_entries(targets)
    typer.echo(f"deleted {len(targets)} entr{'y' if len(targets) == 1 else 'ies'} ({size})")


@app.command("demo", epilog=example("demo"))
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where to write: the demo's stores and runs (re-runs reuse them).")] = Path("runs/demo"),
    data_root: Annotated[Optional[Path], typer.Option(help=DATA_ROOT_HELP)] = None,
    model: Annotated[str, typer.Option(help="Registered model name (see `merkit models`) to train.")] = "bigru",
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Use the embedded synthetic corpus even when real data is present.")] = False,
) -> None:
    """The main job: features → training (selected on valid) → test scores → predictions of an example conversation."""
    from merkit.demo import run_demo, shared_data_root

    run_demo(out, None if synthetic else shared_data_root(data_root), model, _console())


def _warning_printer(original):
    """``warnings.showwarning`` that prints merkit's own warnings as one ``merkit: warning:`` line (others as before)."""
    package = str(Path(__file__).resolve().parent)

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(package):
            print(f"merkit: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> None:
    import warnings

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(warnings.showwarning)
            app(args=args, prog_name="merkit")
    except MerkitError as exc:
        if debug:
            raise
        print(f"merkit: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("merkit: interrupted", file=sys.stderr)
        sys.exit(130)
