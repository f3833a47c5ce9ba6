"""``merkit zoo list`` and ``merkit zoo build``: the bundled models, and rebuilding them from their recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merkit.cli_options import DATA_ROOT_HELP, QuietOption, ThreadsOption, example, set_torch_threads
from merkit.errors import MerkitError

zoo_app = typer.Typer(help="Trained models shipped with merkit: list them, or rebuild them from their recipes.", no_args_is_help=True)


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def zoo_rows() -> list[dict]:
    """One row per entry: its card's name, task, modalities, labels, data + licence, headline test score, size."""
    from merkit.zoo import card, names, size_bytes

    rows = []
    for name in names():
        entry = card(name)
        test = {split: entry.scores[split].get(entry.headline) for split in entry.reported if split in entry.scores}
        rows.append({
            "name": name, "kind": entry.kind, "task": entry.task, "modalities": entry.modalities, "labels": entry.labels,
            "training_data": [d.corpus.split(" (")[0] for d in entry.training_data], "licence": entry.licence,
            "headline": entry.headline, "test": {k: v for k, v in test.items() if v is not None}, "bytes": size_bytes(name),
        })  # fmt: skip
    return rows


@zoo_app.command("list", epilog=example("zoo list"))
def zoo_list(as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """The zoo's models: task, modalities, labels, training data and licence, test score, size (no model is loaded)."""
    rows = zoo_rows()
    if as_json:
        typer.echo(json.dumps({"models": rows, "bytes": sum(r["bytes"] for r in rows)}, indent=2, ensure_ascii=False))
        return
    table = Table("name", "modalities", "labels", "training data (licence)", "test", "size", title="merkit zoo")
    for r in rows:
        score = ", ".join(f"{r['headline']} {value:.2f}" + ("" if split == "test" else f" ({split})") for split, value in r["test"].items())
        table.add_row(r["name"], ", ".join(r["modalities"]), f"{len(r['labels'])}: {', '.join(r['labels'])}",
                      f"{', '.join(r['training_data'])} ({r['licence'].split(';')[0].split('.')[0]})", score, _size(r["bytes"]))  # fmt: skip
    Console().print(table)
    typer.echo(f"{len(rows)} models, {_size(sum(r['bytes'] for r in rows))}; `merkit info NAME` for one, `merkit predict NAME FILE` to use it")


@zoo_app.command("build", epilog=example("zoo build"))
def zoo_build(
    data_root: Annotated[Optional[Path], typer.Option(help=DATA_ROOT_HELP)] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Build this entry only (repeatable; default: every recipe).")] = None,
    budget: Annotated[str, typer.Option(help="full (the recipe's seeds) or reduced (fewer seeds: a quick check of the recipe).")] = "full",
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write: the zoo folder (default: the package's own, src/merkit/zoo).")] = None,
    work: Annotated[Path, typer.Option(help="Where the feature stores and runs go (re-runs reuse them).")] = Path("runs/zoo-build"),
    recipes: Annotated[Optional[Path], typer.Option(help="Recipe folder (default recipes/zoo).")] = None,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Rebuild zoo models from their recipes: extract → train (selected on valid) → calibrated seed ensemble → test once → card."""
    from merkit.zoo_build import build_zoo

    from merkit.demo import shared_data_root

    data = shared_data_root(data_root)
    if data is None:
        raise MerkitError("no corpora to build from: pass --data-root (or set $MERKIT_SHARED_DATA)", path=data_root or Path("../shared/data"))
    set_torch_threads(threads)
    cards = build_zoo(data, out=out, work=work, only=only, budget=budget, recipes=recipes, progress=not quiet,
                      log=lambda line: quiet or typer.echo(f"merkit: {line}", err=True))  # fmt: skip
    for name, entry in cards.items():
        shown = "; ".join(f"{split}: " + ", ".join(f"{m} {v:.2f}" for m, v in values.items()) for split, values in entry.scores.items())
        typer.echo(f"{name}: {shown}")
