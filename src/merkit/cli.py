"""The ``merkit`` command line (Typer). Verbs: ``data``, ``extract``, ``train``, ``evaluate``, ``report``,
``compare``, ``models``, ``demo``, ``info``, ``doctor``, ``cache``.

Errors a user can fix (bad file, bad option) print one line on stderr and exit with code 2;
``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import errno
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merkit._version import __version__
from merkit.cli_options import BackendOption, DeviceOption, QuietOption, ThreadsOption, example
from merkit.data_commands import FormatOption, ReaderOptions, TrustOption, data_app, read_command_data
from merkit.errors import MerkitError
from merkit.recipes import CONFIG_HELP, VARIANT_HELP, RecipeCommand, merged_pairs, resolved_recipe
from merkit.extract_commands import extract, extractors, merge
from merkit.live_cli import live
from merkit.recording_commands import MaxSpeakersOption, MinSpeakersOption, NumSpeakersOption, diarize
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

FoldsOption = Annotated[
    Optional[str],
    typer.Option(
        help="K-fold cross-validation: each fold tests on one part, selects on the next, trains on the rest; "
        "or loso, leave one group out: one fold per speaker group (per dialogue with --group-by dialogue)."
    ),
]
GroupByOption = Annotated[str, typer.Option(help="What a fold part never splits: speaker | dialogue.")]
FoldAssignmentOption = Annotated[
    str, typer.Option(help="contiguous (sorted speakers in runs) | stratified (each part with the class mix).")
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a setting: key=value (repeatable), of the model or of the training (`merkit models`)."),
]


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


@app.command("train", epilog=example("train"), cls=RecipeCommand)
def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Data to read: a corpus file or folder, a feature store, or 'synthetic', with features.")],
    model: Annotated[str, typer.Option("--model", help="Registered model name (see `merkit models`).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the run directory (results.json, checkpoints, logs).")],
    preset: Annotated[
        Optional[str],
        typer.Option(help="Named hyper-parameter preset of the model (`merkit models`), or 'auto': chosen from the training split's shape."),
    ] = None,
    set_: SetOption = None,
    modalities: Annotated[Optional[str], typer.Option(help="Comma-separated modalities (default: all the model takes).")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; one run each, mean ± std in results.json.")] = "0",
    protocol: Annotated[str, typer.Option(help="Selection protocol: honest (select on valid) or paper-compat (select on test; labelled).")] = "honest",
    device: DeviceOption = "auto",
    devices: Annotated[str, typer.Option(help="How many devices per node (e.g. 2 for DDP; 'auto').")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Nodes (DDP across machines, e.g. under torchrun/SLURM).")] = 1,
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ...")] = "auto",
    precision: Annotated[Optional[str], typer.Option(help="32-true, bf16-mixed, 16-mixed (default: bf16 on GPU).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue into an existing --out: an interrupted run of the same configuration.")] = False,
    quiet: QuietOption = False,
    folds: FoldsOption = None,
    group_by: GroupByOption = "speaker",
    fold_assignment: FoldAssignmentOption = "contiguous",
    keep_resume_state: Annotated[
        bool, typer.Option("--keep-resume-state", help="Keep each finished seed's checkpoints/last.ckpt (deleted by default).")
    ] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (1 is fastest on a busy machine) for torch.")] = None,
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
    config: Annotated[Optional[Path], typer.Option(help=CONFIG_HELP)] = None,
    variant: Annotated[Optional[str], typer.Option(help=VARIANT_HELP)] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved configuration (a recipe with every setting) and exit without training.")
    ] = False,
) -> None:
    """Train a model (one run per seed) with selection on the validation split; write results.json.

    With --folds K (or loso, one fold per group): runs on speaker-independent parts (OUT/fold<i>/), mean ± std over folds × seeds.
    With --config FILE: the recipe's options where the command line gives none; the resolved recipe goes to OUT/recipe.yaml."""
    from merkit.data.formats import parse_options
    from merkit.devices import lightning_accelerator
    from merkit.io import atomic_write_text
    from merkit.training.crossval import cross_validate
    from merkit.training.engine import train_model

    set_ = merged_pairs(ctx, "set_", "set", set_)
    option = merged_pairs(ctx, "option", "option", option)
    if print_config:
        from merkit.models.registry import get_model
        from merkit.training.config import resolve_configs

        model_config, train_config = resolve_configs(get_model(model), preset, set_)
        settings = {**{f"model.{k}": v for k, v in model_config.model_dump(mode="json").items()},
                    **{f"train.{k}": v for k, v in train_config.model_dump(mode="json").items()}}  # fmt: skip
        note = "# preset auto: its choices are made from the training split when training starts (not shown)\n" if preset == "auto" else ""
        typer.echo(note + resolved_recipe(ctx, "train", set=settings, option=option), nl=False)
        return
    _torch_threads(threads)
    run = train_model if folds is None else functools.partial(
        cross_validate, folds=folds, group_by=group_by, assignment=fold_assignment
    )
    results = run(
        data,
        model,
        out=out,
        preset=preset,
        overrides=set_ or [],
        modalities=[m.strip() for m in modalities.split(",")] if modalities else None,
        seeds=_int_list(seeds),
        protocol=protocol,
        accelerator=lightning_accelerator(device),
        devices=int(devices) if devices.isdigit() else devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        resume=resume,
        progress=not quiet,
        data_options={"trust_pickle": trust_pickle, **({"format": format} if format != "auto" else {}), **parse_options(option or [])},
        keep_resume_state=keep_resume_state,
        announce=lambda line: typer.echo(f"merkit: {line}", err=True),
    )
    if results:
        atomic_write_text(out / "recipe.yaml", resolved_recipe(ctx, "train", set=set_, option=option))
        print_results(results, _console())


@app.command("baseline", epilog=example("baseline"), cls=RecipeCommand)
def baseline(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Data to read: a corpus file or folder, a feature store, or 'synthetic', with features.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the run directory (results.json, as `merkit train` writes).")],
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities, concatenated.")],
    c_grid: Annotated[str, typer.Option("--c", help="Comma-separated C values; the best on valid is tested.")] = "0.1,0.3,1,3,10,30,100",
    folds: FoldsOption = None,
    group_by: GroupByOption = "speaker",
    fold_assignment: FoldAssignmentOption = "contiguous",
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
    config: Annotated[Optional[Path], typer.Option(help=CONFIG_HELP)] = None,
    variant: Annotated[Optional[str], typer.Option(help=VARIANT_HELP)] = None,
) -> None:
    """An RBF-SVM (scikit-learn) on the same features, C chosen on valid: the baseline to report models against."""
    from merkit.evaluation.baselines import svm_baseline
    from merkit.training.engine import _source_of

    option = merged_pairs(ctx, "option", "option", option)

    try:
        grid = [float(c) for c in c_grid.split(",") if c.strip()]
    except ValueError:
        raise MerkitError(f"--c {c_grid!r} is not a comma-separated list of numbers") from None
    bundle = read_command_data(data, format, trust_pickle, option)
    results = svm_baseline(
        bundle, [m.strip() for m in modalities.split(",")], out=out, folds=folds, group_by=group_by, assignment=fold_assignment,
        c_grid=grid, source=_source_of(data),
    )
    print_results(results, _console())


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MerkitError(f"--seeds {text!r} is not a comma-separated list of integers") from None


def print_results(results: dict, console: Console) -> None:
    title = f"{results['model']} on {results['data']['corpus']} ({', '.join(results['modalities'])}; {results['protocol_label']})"
    # One row per metric, one column per split: fits an 80-column terminal however many metrics there are.
    table = Table(title=title)
    table.add_column("metric")
    splits = list(results["summary"])
    for split in splits:
        table.add_column(split, justify="right", no_wrap=True)
    for metric in next(iter(results["summary"].values())):
        table.add_row(metric, *(f"{100 * results['summary'][s][metric]['mean']:.2f} ± {100 * results['summary'][s][metric]['std']:.2f}" for s in splits))
    console.print(table)
    for warning in results.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    folds = results.get("cross_validation", {}).get("folds")
    runs = f"{folds} folds × " if folds else ""
    console.print(f"{runs}seeds {results['seeds']}, {results['wall_seconds']:.0f} s")


@app.command("evaluate", epilog=example("evaluate"))
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best) or a `merkit export` folder.")],
    data: Annotated[str, typer.Option("--data", help="Data to read: a corpus file or folder, a feature store, or 'synthetic', with the features the checkpoint reads.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    analysis: Annotated[Optional[list[str]], typer.Option("--analysis", help="Analyses beside the scores: missing-modality, noise, calibration (repeatable; default all).")] = None,
    drop_mode: Annotated[Optional[list[str]], typer.Option("--drop-mode", help="How missing-modality drops: mask (marked absent) or zero (inputs zeroed, the model not told, as MiSTER-E's code tests); repeatable, default both.")] = None,
    cross_corpus: Annotated[Optional[str], typer.Option("--cross-corpus", help="Also score on this other corpus (MELD ↔ IEMOCAP shared classes).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap samples for the 95% intervals (0 = none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed of the bootstrap and of the noise and drop analyses.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON: the full result.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the result JSON (as well as printing it).")] = None,
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
    protocol: Annotated[Optional[list[str]], typer.Option("--protocol", hidden=True, help="Deprecated: use --analysis.")] = None,
) -> None:
    """Metrics with bootstrap 95% intervals, robustness to missing/noisy modalities, and calibration."""
    from merkit.evaluation.evaluate import PROTOCOLS, Evaluator, cross_corpus_evaluation
    from merkit.io import atomic_write_json

    if protocol:
        typer.echo("merkit: warning: evaluate --protocol is deprecated: use --analysis (--protocol is train's selection protocol)", err=True)
        analysis = [*(analysis or []), *protocol]
    evaluator = Evaluator(checkpoint, read_command_data(data, format, trust_pickle, option))
    from merkit.evaluation.robustness import DROP_MODES

    unknown = [mode for mode in drop_mode or () if mode not in DROP_MODES]
    if unknown:
        raise MerkitError(f"unknown --drop-mode {unknown[0]!r}; choose from {', '.join(DROP_MODES)}")
    result = evaluator.run(split, analysis or PROTOCOLS, bootstrap, seed, drop_mode or DROP_MODES)
    if cross_corpus:
        result["cross_corpus"] = cross_corpus_evaluation(evaluator.checkpoint, read_command_data(cross_corpus, "auto", trust_pickle, None), split)
    if out:
        atomic_write_json(out, result)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_evaluation(result, _console())


def print_evaluation(result: dict, console: Console) -> None:
    from merkit.metrics import headline

    table = Table(title=f"{result['model']} on {result['split']} ({', '.join(result['modalities'])})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for name, value in headline(result["metrics"]).items():
        ci = result.get("ci95", {}).get(name)
        table.add_row(name, f"{100 * value:.2f}", f"[{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]" if ci else "")
    console.print(table)
    for warning in result["metrics"].get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    for name, values in result.get("experts", {}).items():
        console.print(f"{name:<12} " + "  ".join(f"mean {key} {value:.3f}" for key, value in values.items()))
    if "uncertainty" in result:
        u = result["uncertainty"]
        console.print(f"uncertainty ranks errors (per {u['unit']}): AUROC {u['error_auroc']:.3f} (0.5 = chance)")
    metric = result["metric"]
    for mode, mm in result.get("missing_modality", {}).items():
        for row in mm["combinations"]:
            console.print(f"{row['condition'] + f' ({mode})':<40} {metric} {100 * row[metric]:.2f}")
        console.print(f"relative robustness to random modality drop ({mode}): {mm['relative_robustness']:.3f}")
    for modality, curve in result.get("noise", {}).items():
        console.print(f"relative robustness to noise on {modality}: {curve['relative_robustness']:.3f}")
    if "calibration" in result:
        c = result["calibration"]
        console.print(f"ECE {c['before']['ece']:.4f} → {c['after']['ece']:.4f} after temperature {c['temperature']:.3f} (fitted on valid)")
    if "cross_corpus" in result:
        x = result["cross_corpus"]
        console.print(f"cross-corpus {x['source']} → {x['target']} on {x['shared_classes']}: weighted F1 {100 * x['weighted_f1']:.2f}")


@app.command("report", epilog=example("report"))
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory (with results.json) of `merkit train`.")],
    data: Annotated[Optional[str], typer.Option(help="Data to read: a corpus file or folder, a feature store, or 'synthetic' (default: the data the run was trained on).")] = None,
    run_seed: Annotated[int, typer.Option(help="Which seed of the run: its checkpoint RUN/seed<N>/best is evaluated.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap samples for the 95% intervals (0 = none).")] = 1000,
    out: Annotated[Optional[Path], typer.Option(help="Where to write: the report directory (default RUN/report).")] = None,
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
) -> None:
    """Write a self-contained HTML report (and a Markdown twin) for a training run."""
    from merkit.data.formats import read_data
    from merkit.evaluation.evaluate import Evaluator
    from merkit.evaluation.report import write_report

    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise MerkitError("not a finished training run (no results.json)", path=run_dir)
    results = json.loads(results_path.read_text())
    if data is None:
        source = results["data"]["source"]
        if source == "in-memory bundle":
            raise MerkitError("this run was trained on in-memory data; pass --data", path=run_dir)
        bundle = read_data(source, **results["data"].get("options", {}))
    else:
        bundle = read_command_data(data, format, trust_pickle, option)
    evaluation = Evaluator(run_dir / f"seed{run_seed}" / "best", bundle).run("test", bootstrap=bootstrap)
    evaluation["seed"] = run_seed
    page = write_report(run_dir, results, evaluation, out)
    typer.echo(f"wrote {page} (and report.md beside it)")


@app.command("ensemble", epilog=example("ensemble"))
def ensemble(
    members: Annotated[
        list[Path], typer.Argument(metavar="RUN_OR_CHECKPOINT...", help="Run directory (every seed<N>/best) or checkpoint directory: the members to combine.")
    ],
    out: Annotated[Path, typer.Option(help="Where to write: the ensemble's run directory.")],
    data: Annotated[Optional[str], typer.Option(help="Data to read: a corpus file or folder, a feature store, or 'synthetic': to fit and score the ensemble on (default: the data the runs were trained on).")] = None,
    weights: Annotated[str, typer.Option(help="uniform, or fit: simplex weights minimising the validation NLL (the split that also chose each member's epoch, so fit can overfit it).")] = "uniform",
    adjust: Annotated[str, typer.Option(help="none, or macro_f1 / weighted_f1: logit adjustment toward rare classes, strength chosen on validation by that metric.")] = "none",
    resume: Annotated[bool, typer.Option(help="Continue into an existing --out that holds the same ensemble (rebuilt).")] = False,
    format: FormatOption = "auto",
    trust_pickle: TrustOption = False,
    option: ReaderOptions = None,
) -> None:
    """Average the calibrated probabilities of several seeds/models (fitted on validation) into one run."""
    from merkit.data.formats import parse_options
    from merkit.training.ensemble import build_ensemble

    options = {"format": format, "trust_pickle": trust_pickle, **parse_options(option or [])}
    result = build_ensemble(members, out, data=data, weights=weights, adjust=adjust, resume=resume, data_options=options)
    console = _console()
    metric = "micro_f1" if "micro_f1" in result["summary"].get("test", {}) else "weighted_f1"
    table = Table("member", "model", "temperature", "weight", f"test {metric}", title=f"ensemble of {len(result['members'])} → {out}")
    for member in result["members"]:
        score = (member.get("test") or {}).get(metric)
        table.add_row(member["checkpoint"], member["model"], f"{member['temperature']:.3f}", f"{member['weight']:.3f}", "" if score is None else f"{100 * score:.2f}")
    console.print(table)
    if result["adjustment"]["metric"] != "none":
        console.print(f"logit adjustment τ = {result['adjustment']['tau']} (best validation {result['adjustment']['metric']})")
    for split, values in result["summary"].items():
        console.print(f"ensemble {split}: " + "  ".join(f"{name} {100 * v['mean']:.2f}" for name, v in values.items()))


@app.command("compare", epilog=example("compare"))
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run directory (with results.json): two or more, scored on the same test set.")],
    run_seed: Annotated[int, typer.Option(help="Which seed of the runs: their test predictions in RUN/seed<N>.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap samples of the paired difference (at least 1).", min=1)] = 1000,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the comparison JSON (as well as printing it).")] = None,
) -> None:
    """Side-by-side test metrics and a paired bootstrap test of each run against the first."""
    from merkit.evaluation.report import compare_runs
    from merkit.io import atomic_write_json

    result = compare_runs(run_dirs, seed=run_seed, samples=bootstrap)
    if out:
        atomic_write_json(out, result)
    console = _console()
    metrics = [k for k in result["runs"][0] if k not in ("run", "model")]
    table = Table("run", "model", *metrics, title=f"test, seed {run_seed}, {result['utterances']} utterances")
    for row in result["runs"]:
        table.add_row(row["run"], row["model"], *(f"{100 * row[m]:.2f}" for m in metrics))
    console.print(table)
    for pair in result["paired_bootstrap"]:
        low, high = pair["ci95"]
        console.print(
            f"{pair['b']} − {pair['a']}: Δ{pair['metric']} {100 * pair['difference']:+.2f} "
            f"[95% CI {100 * low:+.2f}, {100 * high:+.2f}], p = {pair['p_value']:.3f} (paired bootstrap, {pair['samples']} samples)"
        )


@app.command("summary", epilog=example("summary"))
def summary(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run directory (with results.json): one or more.")],
    metrics: Annotated[str, typer.Option(help="Comma-separated metrics.")] = "accuracy,weighted_f1",
    splits: Annotated[str, typer.Option(help="Comma-separated splits.")] = "valid,test",
    baseline: Annotated[
        Optional[Path],
        typer.Option(metavar="RUN", help="Run directory (with results.json) to give each run's last split/metric as a ratio to (e.g. `merkit baseline`'s)."),
    ] = None,
) -> None:
    """Mean ± std over seeds (and folds) of several runs, as one Markdown table."""
    from merkit.evaluation.report import markdown_table, summarize_runs

    rows = summarize_runs(run_dirs, metrics.split(","), splits.split(","))
    if baseline is not None:
        (reference,) = summarize_runs([baseline], metrics.split(","), splits.split(","))
        column = [key for key, value in reference.items() if isinstance(value, tuple)][-1]
        for row in rows:
            row[f"÷ {reference['model']}"] = row[column][0] / reference[column][0]
    typer.echo(markdown_table(rows))


PROGRESS_FROM = 50  # utterances from which `merkit predict` shows progress bars


def _torch_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise MerkitError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


@app.command("predict", epilog=example("predict"))
def predict_conversations(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best), a `merkit export` folder, or a zoo model (`merkit zoo list`); "
                                                   "left out: the zoo's default (text-meld; for a recording, text + voice fused).")],
    input: Annotated[
        Optional[Path], typer.Argument(help="A .jsonl/.csv/.json/.txt ('Speaker: text' lines) file, any corpus merkit reads, or a folder of media with one transcript.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (the default).")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per utterance.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write (atomically) instead of printing.")] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Batch size: dialogues per model call.")] = 16,
    workers: Annotated[int, typer.Option(help="Processes per media extractor (0: one per core).")] = 1,
    threads: ThreadsOption = None,
    backend: BackendOption = "auto",
    quiet: QuietOption = False,
    speakers: Annotated[Optional[str], typer.Option(help="Recording input: auto (diarize; the default where the diarization extra is installed), none (one unknown speaker), or an RTTM file.")] = None,
    num_speakers: NumSpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    shard: Annotated[Optional[str], typer.Option(help="Shard i/n only (0 <= i < n) of a folder of recordings, for array jobs.")] = None,
    asr: Annotated[str, typer.Option(help="Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder.")] = "tiny",
    language: Annotated[Optional[str], typer.Option(help="Recording input: the spoken language (default: English for tiny, detected by base).")] = None,
    srt: Annotated[Optional[Path], typer.Option(help="Recording input: also write subtitles with each segment's emotion.")] = None,
    timeline: Annotated[Optional[Path], typer.Option(help="Recording input: also write an HTML page plotting each class's probability over time.")] = None,
) -> None:
    """Per-utterance emotions, probabilities, uncertainty and the modalities used, for raw conversations,
    or, for one audio/video recording, an emotion timeline of its speech segments (VAD + Whisper)."""
    from merkit.inference import MEDIA_SUFFIXES
    from merkit.loading import load

    if as_json and as_csv:
        raise MerkitError("choose one of --json and --csv")
    if input is None:  # `merkit predict FILE`: the zoo's default model for it
        input, checkpoint = checkpoint, None
    from merkit.recording_commands import diarization_settings, is_recording_folder, parse_speakers

    folder = is_recording_folder(input)
    recording = folder or (input.is_file() and input.suffix.lower() in MEDIA_SUFFIXES["audio"] + MEDIA_SUFFIXES["video"])
    if not recording and (speakers or num_speakers or min_speakers or max_speakers):
        raise MerkitError("--speakers, --num-speakers, --min-speakers and --max-speakers are for audio or video recordings", path=input)
    if shard is not None and not folder:
        raise MerkitError("--shard is for a folder of recordings", path=input)
    if folder and (srt or timeline or as_csv):
        raise MerkitError("a folder of recordings gets one JSON timeline per file and merged CSVs in --out DIR/; --srt, --timeline and --csv are for one recording", path=input)
    diarization = diarization_settings(num_speakers, min_speakers, max_speakers)
    speakers = parse_speakers(speakers) if recording else None
    from merkit.zoo import DEFAULT_RECORDING, DEFAULT_TEXT, FUSION, resolve

    checkpoint = resolve(checkpoint or (DEFAULT_RECORDING if recording else DEFAULT_TEXT))
    if (checkpoint / FUSION).is_file():
        if folder:
            raise MerkitError("the fused zoo model predicts one recording at a time; give a checkpoint for a folder of recordings", path=input)
        from merkit.fusion import predict_fused_command

        result = predict_fused_command(checkpoint.name, input, recording=recording, speakers=speakers, diarization=diarization, asr=asr,
                                       language=language, device=device, workers=workers, threads=threads, quiet=quiet)  # fmt: skip
        count, what = len(result.segments), "speech segments"
        return _write_prediction(result, count, what, as_csv=as_csv, out=out, srt=srt, timeline=timeline)
    if not recording and (srt or timeline or language or asr != "tiny"):
        raise MerkitError("--asr, --language, --srt and --timeline are for one audio or video recording", path=input)
    _torch_threads(threads)
    with load(checkpoint, device=device, batch_size=batch_size, workers=workers, backend=backend, threads=threads) as predictor:
        if folder:
            from merkit.recording import RecordingSettings
            from merkit.recording_commands import predict_folder

            raise typer.Exit(predict_folder(predictor, input, out, RecordingSettings(asr=asr, language=language), speakers=speakers,
                                            diarization=diarization, shard=shard, progress=not quiet,
                                            log=lambda line: quiet or typer.echo(f"merkit: {line}", err=True)))  # fmt: skip
        if recording:
            from merkit.recording import RecordingSettings, predict_recording

            settings = RecordingSettings(asr=asr, language=language)
            result = predict_recording(predictor, input, settings, speakers=speakers, diarization=diarization, progress=not quiet,
                                       log=lambda line: quiet or typer.echo(f"merkit: {line}", err=True))  # fmt: skip
            count, what = len(result.segments), "speech segments"
        else:
            corpus = predictor.corpus(input)
            result = predictor.predict(corpus, progress=not quiet and corpus.num_utterances >= PROGRESS_FROM)
            count, what = len(result.utterances), "utterance predictions"
    _write_prediction(result, count, what, as_csv=as_csv, out=out, srt=srt, timeline=timeline)


def _write_prediction(result, count: int, what: str, *, as_csv: bool, out: Path | None, srt: Path | None, timeline: Path | None) -> None:
    from merkit.io import atomic_write_text

    if srt is not None:
        atomic_write_text(srt, result.to_srt())
    if timeline is not None:
        atomic_write_text(timeline, result.to_html())
    text = result.to_csv() if as_csv else result.model_dump_json(indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}: {count:,} {what}", err=True)


@app.command("serve", epilog=example("serve"))
def serve(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint directory (RUN/seed0/best), a `merkit export` folder, or a zoo model (default: text-meld).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    max_utterances: Annotated[Optional[int], typer.Option(help="Utterances per request (default 200).")] = None,
    max_upload_mb: Annotated[Optional[float], typer.Option(help="Request size in MB (default 50).")] = None,
    max_media_seconds: Annotated[Optional[float], typer.Option(help="Duration of each uploaded media file (default 600).")] = None,
    max_characters: Annotated[Optional[int], typer.Option(help="Characters of text per request (default 50,000).")] = None,
    max_queue: Annotated[Optional[int], typer.Option(help="Requests running or waiting; more get 503 + Retry-After (default 8).")] = None,
    request_seconds: Annotated[Optional[float], typer.Option(help="Time a request may wait and run (default 60).")] = None,
    device: DeviceOption = "auto",
    workers: Annotated[int, typer.Option(help="Processes per media extractor (0: one per core).")] = 1,
    threads: ThreadsOption = None,
    backend: BackendOption = "auto",
    replicas: Annotated[int, typer.Option(help="Copies of the model serving requests at once (up to the cores; each takes its memory).", min=1)] = 1,
    max_recording_seconds: Annotated[Optional[float], typer.Option(help="Duration of a recording for POST /predict/recording (default 3600).")] = None,
    asr: Annotated[str, typer.Option(help="Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder (POST /predict/recording).")] = "tiny",
    max_live_sessions: Annotated[Optional[int], typer.Option(help="WebSocket /live: connections open at once (default 4).")] = None,
    max_live_frame_bytes: Annotated[Optional[int], typer.Option(help="WebSocket /live: bytes of one audio frame (default 128,000).")] = None,
    max_live_seconds: Annotated[Optional[float], typer.Option(help="WebSocket /live: seconds of audio per connection (default 3600).")] = None,
    live_idle_seconds: Annotated[Optional[float], typer.Option(help="WebSocket /live: seconds without a message before it closes (default 30).")] = None,
) -> None:
    """HTTP server: POST /predict, POST /predict/recording, GET /health, GET /model, WebSocket /live, API docs at /docs, and a web page at /."""
    try:
        import uvicorn

        from merkit.serve import ServeLimits, create_app
    except ImportError as exc:
        raise MerkitError(f"merkit serve needs the serve extra ({exc.name} is missing): pip install 'merkit[serve]'") from None
    from pydantic import ValidationError

    from merkit.inference import validation_message
    from merkit.loading import load
    from merkit.zoo import DEFAULT_TEXT

    given = {
        "max_utterances": max_utterances, "max_upload_mb": max_upload_mb, "max_media_seconds": max_media_seconds,
        "max_characters": max_characters, "max_queue": max_queue, "request_seconds": request_seconds,
        "max_recording_seconds": max_recording_seconds,
    }  # fmt: skip
    live_given = {"max_sessions": max_live_sessions, "max_frame_bytes": max_live_frame_bytes, "max_session_seconds": max_live_seconds,
                  "idle_seconds": live_idle_seconds}  # fmt: skip
    try:
        limits = ServeLimits(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise MerkitError(f"--{validation_message(exc).replace('_', '-')}") from None
    from merkit.serve.live import LiveLimits

    try:
        live = LiveLimits(**{key: value for key, value in live_given.items() if value is not None})
    except ValidationError as exc:
        option = {"max_sessions": "max_live_sessions", "max_frame_bytes": "max_live_frame_bytes", "max_session_seconds": "max_live_seconds",
                  "idle_seconds": "live_idle_seconds"}[str(exc.errors()[0]["loc"][0])]  # fmt: skip
        raise MerkitError(f"--{option.replace('_', '-')}: {exc.errors()[0]['msg']}") from None
    from merkit.recording import RecordingSettings, asr_folder

    if asr not in ("tiny", "base"):
        asr_folder(asr)  # a wrong folder is said now, not at the first recording
    _torch_threads(threads)
    listening = _listen(host, port)  # a busy port is said now, not after the model has loaded
    try:
        predictors = []
        for _ in range(replicas):
            predictors.append(load(checkpoint or DEFAULT_TEXT, device=device, workers=workers, backend=backend, threads=threads))
            predictors[-1].predict([{"text": "warming up"}])  # loads the text encoder and the model before the first request
    except BaseException:
        for predictor in predictors:
            predictor.close()
        listening.close()
        raise
    info = predictors[0].describe()
    typer.echo(f"merkit serve: {info['model']} ({info['backend']}, {replicas} replica(s)) on http://{host}:{port}/ "
               "(API docs at /docs)", err=True)  # fmt: skip
    try:
        app = create_app(predictors, limits, RecordingSettings(asr=asr), live)
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[listening])
    finally:
        for predictor in predictors:
            predictor.close()
        listening.close()


def _listen(host: str, port: int):
    """A socket bound to ``host:port`` and listening (uvicorn serves on it), or a clear error when it cannot be."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it an answer written in two parts waits for the client's
        # delayed ACK, 40 ms on every keep-alive request.
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        why = "is in use by another program" if getattr(exc, "errno", None) == errno.EADDRINUSE else f"cannot be used ({exc.strerror or exc})"
        raise MerkitError(f"--port {port} on {host} {why}; choose another --port") from None
    return listening


@app.command("export", epilog=example("export"))
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best) or a `merkit export` folder.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the model folder.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Also the text encoders and the model as ONNX graphs (onnx/), checked against torch.")] = False,
    quantize: Annotated[str, typer.Option(help="none, or int8: dynamic int8 quantisation of the ONNX text encoders (implies --onnx).")] = "none",
) -> None:
    """A model folder: weights, model.json (config), labels, feature manifest, metrics and a README model card."""
    from merkit.export import export_model

    if onnx or quantize != "none":
        from merkit.onnx_export import export_onnx

        record = export_onnx(checkpoint, out, quantize=quantize)
        check = record["check"]
        typer.echo(f"ONNX graphs checked against torch on {check['utterances']} utterances: largest probability difference "
                   f"{check['max_abs_probability_difference']:.2g}, same label for {100 * check['label_agreement']:.1f} %")  # fmt: skip
    else:
        export_model(checkpoint, out)
    folder = out
    files = ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
    typer.echo(f"wrote {folder}: {files}")


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
    data_root: Annotated[Optional[Path], typer.Option(help="Folder with iemocap/ and meld/ (default ../shared/data).")] = None,
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
