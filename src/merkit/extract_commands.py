"""Typer command functions for ``merkit extract``, ``merkit extractors`` and ``merkit merge``.

The CLI registers them (``app.command("extract")(extract)`` …); they are plain functions
with ``typer.Annotated`` options so that they can also be called from Python.
``python -m merkit.extract_commands extract …`` runs them without the main CLI.
They sit above the training layer: ``extract --finetune`` fine-tunes the encoder first
(:mod:`merkit.training.finetune`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from merkit.cli_options import DeviceOption, QuietOption, example, set_torch_threads
from merkit.errors import MerkitError
from merkit.recipes import CONFIG_HELP, VARIANT_HELP, RecipeCommand, merged_pairs


def _settings(pairs: list[str] | None) -> dict[str, Any]:
    from merkit.data.formats import parse_options

    return parse_options(pairs or [])


def extract(
    ctx: typer.Context,
    corpus: Annotated[str, typer.Argument(metavar="DATA", help="Data to read: a corpus file or folder, a feature store, or 'synthetic' (`merkit data formats`).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the feature store (created, or the modality added/replaced).")],
    modality: Annotated[str, typer.Option("--modality", "-m", help="Modality: text, audio or visual.")] = "text",
    extractor: Annotated[
        Optional[str],
        typer.Option(
            "--extractor", "-e", help="Extractor name (`merkit extractors`; default minilm / is10 / face-effnet) or a model folder."
        ),
    ] = None,
    encoder: Annotated[
        Optional[Path], typer.Option("--encoder", help="Local model folder for --extractor hf (a Hugging Face or sentence-transformers folder).")
    ] = None,
    pooling: Annotated[Optional[str], typer.Option(help="mean | cls | target (mean over the target utterance's tokens).")] = None,
    level: Annotated[Optional[str], typer.Option(help="utterance (one vector) | sequence (token rows).")] = None,
    context_before: Annotated[Optional[int], typer.Option(help="Previous turns in the input.")] = None,
    context_after: Annotated[Optional[int], typer.Option(help="Following turns in the input.")] = None,
    speaker: Annotated[Optional[bool], typer.Option("--speaker/--no-speaker", help="Prefix turns with 'Speaker: '.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Tokens per input (default: the model's).")] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalise vectors.")] = None,
    setting: Annotated[
        Optional[list[str]], typer.Option("--set", "-s", help="Override a setting: key=value (repeatable), of the extractor (`merkit extractors`).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size: inputs per model call.")] = 32,
    chunk_size: Annotated[int, typer.Option(help="Inputs per cache chunk (the unit of resume and sharding).")] = 512,
    shard: Annotated[Optional[str], typer.Option(help="Shard i/n only (0 <= i < n): compute it, then `merkit merge`.")] = None,
    cache: Annotated[Optional[Path], typer.Option(help="Cache folder (default: STORE/.cache/...).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Compute everything, cache nothing.")] = False,
    device: DeviceOption = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (1 is fastest on a busy machine) for torch.")] = None,
    finetune: Annotated[bool, typer.Option("--finetune", help="Fine-tune on train (select on valid) first.")] = False,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 3,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 2e-5,
    finetune_batch_size: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 16,
    evals_per_epoch: Annotated[int, typer.Option(help="Validation checks per fine-tuning epoch.")] = 1,
    finetune_layers: Annotated[
        Optional[int], typer.Option(help="Fine-tune only the top N transformer layers (default: all; fewer is faster).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the fine-tuning.")] = 0,
    bf16: Annotated[
        Optional[bool], typer.Option("--bf16/--fp32", help="bf16 autocast while fine-tuning (default: where the device has native bf16).")
    ] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop fine-tuning after this many steps.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="Input format, or 'auto' to detect it.")] = "auto",
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow pickles that run code (only for files you trust).")] = False,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Reader option key=value (repeatable).")] = None,
    quiet: QuietOption = False,
    allow_failures: Annotated[
        bool, typer.Option("--allow-failures", help="Exit 0 even when some media files failed (they are masked and reported).")
    ] = False,
    config: Annotated[Optional[Path], typer.Option(help=CONFIG_HELP)] = None,
    variant: Annotated[Optional[str], typer.Option(help=VARIANT_HELP)] = None,
    model: Annotated[Optional[Path], typer.Option("--model", hidden=True, help="Deprecated: use --encoder.")] = None,
) -> None:
    """Extract features of one modality for every utterance into a feature store (cached, resumable, shardable).

    An input that fails (corrupt or silent file, no audio track) is masked, listed in
    STORE/failures/MODALITY.jsonl, and the rest goes on; the exit code is then 1 unless --allow-failures.
    """
    from merkit.data.formats import parse_options, read_data
    from merkit.features.commands import build_extractor
    from merkit.features.extract import _stderr, parse_shard, run_extraction

    if model is not None:
        typer.echo("merkit: warning: extract --model is deprecated: use --encoder (--model is train's architecture)", err=True)
        encoder = encoder or model
    setting = merged_pairs(ctx, "setting", "set", setting)
    option = merged_pairs(ctx, "option", "option", option)
    shard_spec = parse_shard(shard)
    set_torch_threads(threads)
    if finetune and shard_spec is not None:
        raise MerkitError(
            "--finetune cannot be sharded: fine-tune once without --shard, then shard with --extractor FOLDER"
        )
    named = {"pooling": pooling, "level": level, "context_before": context_before, "context_after": context_after,
             "speaker": speaker, "max_length": max_length, "normalize": normalize}  # fmt: skip
    settings = _settings(setting)
    both = [key for key in settings if named.get(key) is not None]
    if both:
        raise MerkitError(f"--set {both[0]}=... and --{both[0].replace('_', '-')} both given; keep one")
    ex = build_extractor(modality, extractor, model=encoder, device=device, **{**named, **settings})
    bundle = read_data(corpus, format, trust_pickle=trust_pickle, **parse_options(option or []))
    log = None if quiet else _stderr
    if finetune:
        from merkit.features.finetuned import finetuned_extractor
        from merkit.features.text import TransformerTextExtractor
        from merkit.training.finetune import FinetuneConfig, finetune_encoder

        if not isinstance(ex, TransformerTextExtractor):
            raise MerkitError(f"--finetune works with transformer text extractors, not {ex.name!r}")
        finetune_config = FinetuneConfig(
            epochs=epochs, lr=lr, batch_size=finetune_batch_size, seed=seed, bf16=bf16,
            evals_per_epoch=evals_per_epoch, max_steps=max_steps, train_layers=finetune_layers,
        )  # fmt: skip
        folder, record = finetune_encoder(bundle.corpus, ex, Path(out) / "encoders", finetune_config, progress=not quiet, log=log)
        ex = finetuned_extractor(ex, folder, record)
    try:
        result = run_extraction(
            bundle.corpus, ex, out=out, source=corpus, cache_dir=cache, use_cache=not no_cache, batch_size=batch_size,
            chunk_size=chunk_size, shard=shard_spec, progress=not quiet, log=log,
        )  # fmt: skip
    finally:
        ex.close()
    _exit_on_failures(result, allow_failures)


def _exit_on_failures(result, allow_failures: bool) -> None:
    """Exit with code 1 when inputs failed, unless they are allowed."""
    if result.failures and not allow_failures:
        where = f" (listed in {result.report})" if result.report else ""
        typer.echo(
            f"merkit: {len(result.failures):,} utterance(s) failed{where}; pass --allow-failures to accept them", err=True
        )
        raise typer.Exit(1)


def extractors(
    modality: Annotated[Optional[str], typer.Option("--modality", "-m", help="Modality: text, audio or visual; only its extractors are listed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List the registered feature extractors."""
    from merkit.features.registry import available_extractors

    infos = available_extractors(modality)
    if as_json:
        rows = [
            {"name": i.name, "modality": i.modality, "dim": i.dim, "levels": list(i.levels), "description": i.description,
             "trained_on": i.trained_on, "settings": i.defaults}
            for i in infos.values()
        ]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("extractor", "modality", "dim", "levels", "description", "trained on")
    for info in infos.values():
        table.add_row(info.name, info.modality, str(info.dim or "from model"), ", ".join(info.levels), info.description, info.trained_on)
    Console().print(table)
    settings = sorted({k for i in infos.values() for k in i.defaults})
    if settings:
        typer.echo("settings (--set key=value or their own options): " + ", ".join(settings))


def merge(
    out: Annotated[Path, typer.Argument(metavar="STORE", help="Feature store directory the shards were extracted for (--out of the shard runs).")],
    cache: Annotated[Optional[Path], typer.Option(help="Cache folder of the shards (default: the store's).")] = None,
    quiet: QuietOption = False,
    allow_failures: Annotated[
        bool, typer.Option("--allow-failures", help="Exit 0 even when some media files failed (they are masked and reported).")
    ] = False,
) -> None:
    """Check that every shard of `merkit extract --shard i/n` finished, then write the store."""
    from merkit.features.extract import _stderr, merge_shards

    _exit_on_failures(merge_shards(out, cache_dir=cache, log=None if quiet else _stderr), allow_failures)


def _standalone_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    app.command("extract", epilog=example("extract"), cls=RecipeCommand)(extract)
    app.command("extractors", epilog=example("extractors"))(extractors)
    app.command("merge", epilog=example("merge"))(merge)
    return app


if __name__ == "__main__":  # pragma: no cover - the merkit CLI registers these commands
    try:
        _standalone_app()(prog_name="merkit")
    except MerkitError as exc:
        print(f"merkit: error: {exc}", file=sys.stderr)
        sys.exit(2)
