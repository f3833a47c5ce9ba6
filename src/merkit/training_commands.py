"""The commands that train and score runs: ``train``, ``baseline``, ``evaluate``, ``report``, ``ensemble``,
``compare``, ``summary`` (registered on the app in :mod:`merkit.cli`)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from merkit.cli_options import DeviceOption, QuietOption, set_torch_threads
from merkit.data_commands import FormatOption, ReaderOptions, TrustOption, read_command_data
from merkit.errors import MerkitError
from merkit.recipes import CONFIG_HELP, VARIANT_HELP, merged_pairs, resolved_recipe

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
    set_torch_threads(threads)
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
        print_results(results, Console())


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
    print_results(results, Console())


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
    print_evaluation(result, Console())


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
    console = Console()
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
    console = Console()
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
