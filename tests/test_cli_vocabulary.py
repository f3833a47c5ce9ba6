"""One CLI vocabulary (issue #37): a long option or an argument's metavar means one thing in every command.

:data:`GLOSSARY` is the vocabulary: each long option (and each argument, by its metavar) names one
concept with one short definition, and every command's help text for it starts with that definition
(a command may add its specifics after it). The test walks every command and subcommand of the
Typer app and fails, naming the command and the option, on an option the glossary does not know, on
a help text that says something else, on one name with two types or two defaults, on a short flag
with two long names, and on a command that reads data without the reader options.

A new option: use an existing name if it means the same, else add the name and its definition here.
Hidden options are deprecated spellings: their help starts with ``Deprecated: use --NEW``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import typer
from typer.main import get_command

from merkit.cli import app

READS_DATA = "Data to read: a corpus file or folder, a feature store, or 'synthetic'"
RUN = "Run directory (with results.json)"

GLOSSARY: dict[str, str] = {
    # what a command reads and writes
    "DATA": READS_DATA,
    "--data": READS_DATA,
    "--format": "Input format, or 'auto' to detect it.",
    "--option": "Reader option key=value (repeatable)",
    "--trust-pickle": "Allow pickles that run code (only for files you trust).",
    "STORE": "Feature store directory",
    "SOURCE": "CSV/TSV/Parquet table keyed by utterance",
    "INPUT": "A .jsonl/.csv/.json/.txt ('Speaker: text' lines) file",
    "--out": "Where to write",
    "--json": "Print machine-readable JSON",
    "--csv": "Print CSV, one row per utterance",
    "--quiet": "No progress bars or log lines.",
    # trained artefacts: a run (one or more seeds, results.json) and a checkpoint (one model)
    "RUN": RUN,
    "--baseline": RUN,
    "CHECKPOINT": "Checkpoint directory (RUN/seed0/best)",
    "RUN_OR_CHECKPOINT": "Run directory (every seed<N>/best) or checkpoint directory",
    "--run-seed": "Which seed of the run",
    # randomness and statistics
    "--seed": "Random seed",
    "--seeds": "Comma-separated seeds",
    "--bootstrap": "Bootstrap samples",
    # settings
    "--set": "Override a setting: key=value (repeatable)",
    "--config": "Recipe: a YAML file of this command's options",
    "--variant": "Recipe variant",
    "--print-config": "Print the resolved configuration",
    "--preset": "Named hyper-parameter preset of the model",
    "--model": "Registered model name (see `merkit models`)",
    "--modalities": "Comma-separated modalities",
    "--modality": "Modality: text, audio or visual",
    "--protocol": "Selection protocol: honest (select on valid) or paper-compat (select on test; labelled).",
    "--analysis": "Analyses beside the scores: missing-modality, noise, calibration (repeatable; default all).",
    # compute
    "--device": "Device to compute on: auto (the GPU when there is one) | cpu | cuda.",
    "--devices": "How many devices per node",
    "--num-nodes": "Nodes (DDP across machines",
    "--strategy": "Lightning strategy",
    "--precision": "32-true, bf16-mixed, 16-mixed",
    "--threads": "CPU threads (1 is fastest on a busy machine)",
    "--workers": "Processes per media extractor (0: one per core).",
    "--batch-size": "Batch size:",
    "--backend": "auto (the ONNX graphs of `merkit export --onnx` when the folder has them), torch or onnx.",
    # training runs
    "--resume": "Continue into an existing --out",
    "--keep-resume-state": "Keep each finished seed's checkpoints/last.ckpt",
    "--folds": "K-fold cross-validation",
    "--group-by": "What a fold part never splits: speaker | dialogue.",
    "--fold-assignment": "contiguous (sorted speakers in runs) | stratified (each part with the class mix).",
    "--c": "Comma-separated C values",
    "--weights": "uniform, or fit: simplex weights",
    "--adjust": "none, or macro_f1 / weighted_f1: logit adjustment",
    # evaluation and summaries
    "--split": "Split to evaluate",
    "--splits": "Comma-separated splits",
    "--metrics": "Comma-separated metrics",
    "--drop-mode": "How missing-modality drops",
    "--cross-corpus": "Also score on this other corpus",
    # feature extraction
    "--extractor": "Extractor name (`merkit extractors`",
    "--encoder": "Local model folder for --extractor hf",
    "--pooling": "mean | cls | target",
    "--level": "utterance (one vector) | sequence",
    "--context-before": "Previous turns in the input.",
    "--context-after": "Following turns in the input.",
    "--speaker": "Prefix turns with 'Speaker: '.",
    "--max-length": "Tokens per input",
    "--normalize": "L2-normalise vectors.",
    "--chunk-size": "Inputs per cache chunk",
    "--shard": "Shard i/n only (0 <= i < n)",
    "--cache": "Cache folder",
    "--no-cache": "Compute everything, cache nothing.",
    "--allow-failures": "Exit 0 even when some media files failed",
    "--finetune": "Fine-tune on train (select on valid) first.",
    "--epochs": "Fine-tuning epochs.",
    "--lr": "Fine-tuning learning rate.",
    "--finetune-batch-size": "Fine-tuning batch size.",
    "--evals-per-epoch": "Validation checks per fine-tuning epoch.",
    "--finetune-layers": "Fine-tune only the top N transformer layers",
    "--bf16": "bf16 autocast while fine-tuning",
    "--max-steps": "Stop fine-tuning after this many steps.",
    # imported features
    "--columns": "Comma-separated names or globs",
    "--key": "Key column of a table",
    "--frames": "mean (one vector per utterance) or sequence",
    "--min-confidence": "OpenFace: drop frames with a lower confidence",
    # prediction, recordings, serving, export
    "--asr": "Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder",
    "--language": "Recording input: the spoken language",
    "--speakers": "Recording input: auto (diarize; the default where the diarization extra is installed), none (one unknown speaker), or an RTTM file",
    "--num-speakers": "Recording input: the number of speakers",
    "--min-speakers": "Recording input: at least this many speakers",
    "--max-speakers": "Recording input: at most this many speakers",
    "RECORDING": "An audio or video recording",
    "--srt": "Recording input: also write subtitles",
    "--timeline": "Recording input: also write an HTML page",
    "--host": "Interface to listen on",
    "--port": "TCP port.",
    "--max-utterances": "Utterances per request",
    "--max-upload-mb": "Request size in MB",
    "--max-media-seconds": "Duration of each uploaded media file",
    "--max-characters": "Characters of text per request",
    "--max-queue": "Requests running or waiting",
    "--max-recording-seconds": "Duration of a recording for POST /predict/recording",
    "--request-seconds": "Time a request may wait and run",
    "--replicas": "Copies of the model serving requests at once",
    "--max-live-sessions": "WebSocket /live: connections open at once",
    "--max-live-frame-bytes": "WebSocket /live: bytes of one audio frame",
    "--max-live-seconds": "WebSocket /live: seconds of audio per connection",
    "--live-idle-seconds": "WebSocket /live: seconds without a message before it closes",
    # live
    "--input": "Recording to play through the live session",
    "--mic": "Listen to the default microphone until Ctrl+C",
    "--pace": "Play --input at real-time pace",
    "--onnx": "Also the text encoders and the model as ONNX graphs",
    "--quantize": "none, or int8",
    # the demo, the cache, the program
    "--data-root": "Folder of the shared corpora (iemocap/, meld/, ravdess/ …",
    "--only": "Build this entry only",
    "--budget": "full (the recipe's seeds) or reduced",
    "--work": "Where the feature stores and runs go",
    "--recipes": "Recipe folder",
    "--synthetic": "Use the embedded synthetic corpus",
    "NAME": "One entry of `merkit cache list`",
    "--yes": "Do not ask for confirmation.",
    "--version": "Show the version and exit.",
    "--debug": "Show full tracebacks for errors.",
    "--install-completion": "Install completion for the current shell.",
    "--show-completion": "Show completion for the current shell",
}

# Commands (or a command's option) being aligned by the engineers who own them (issue #37): their breaks are
# not failed. Remove an entry when it keeps the vocabulary (test_pending_commands_still_need_their_exemption says when).
PENDING: set[str] = set()

# Names whose default is part of their meaning: the same in every command.
VARYING_DEFAULTS = {"--out", "--batch-size", "--modality", "--model", "--modalities", "--data", "--cache"}
# What every command that reads data (a DATA argument or --data) also takes.
READER_OPTIONS = ("--format", "--option", "--trust-pickle")


@dataclass(frozen=True)
class Use:
    """One option or argument of one command."""

    command: str
    name: str  # the long option, or an argument's metavar
    help: str
    kind: str
    default: object
    shorts: tuple[str, ...]
    hidden: bool


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def _kind(param, context) -> str:
    """The value's type, whether one or many are given (``<list[Path]>`` and ``<path>`` are both paths)."""
    kind = str(param.display_type(context)).strip("<>").lower().removesuffix(" range")
    return kind.removeprefix("list[").removesuffix("]")


def _metavar(param) -> str:
    return (param.metavar or param.name.upper()).removesuffix("...")


def uses(typer_app: typer.Typer) -> list[Use]:
    """Every option and argument of every command of ``typer_app`` (the root's own options under ``merkit``)."""
    found: list[Use] = []
    stack = [("merkit", get_command(typer_app))]
    while stack:
        path, command = stack.pop()
        context = typer.Context(command)
        for param in command.params:
            if param.param_type_name == "argument":
                name, shorts = _metavar(param), ()
            else:
                longs = [o for o in param.opts if o.startswith("--")]
                name, shorts = longs[0], tuple(o for o in param.opts if len(o) == 2)
            found.append(Use(path, name, param.help or "", _kind(param, context), param.default, shorts,
                             bool(getattr(param, "hidden", False))))  # fmt: skip
        for name, sub in getattr(command, "commands", {}).items():
            stack.append((f"{path} {name}", sub))
    return found


def vocabulary_problems(found: list[Use], glossary: dict[str, str] = GLOSSARY) -> list[str]:
    """Each break of the vocabulary as one line naming the command and the option."""
    problems = []
    shown = [u for u in found if not u.hidden]
    for use in found:
        if use.hidden and not use.help.startswith("Deprecated: use --"):
            problems.append(f"`{use.command}` {use.name}: a hidden option is a deprecated spelling; its help starts 'Deprecated: use --NEW'")
    for use in shown:
        if use.name not in glossary:
            problems.append(
                f"`{use.command}` {use.name}: not in the CLI vocabulary; use an existing name with its meaning, "
                "or add this one with its definition to GLOSSARY in tests/test_cli_vocabulary.py"
            )
        elif not _normal(use.help).startswith(_normal(glossary[use.name])):
            problems.append(f"`{use.command}` {use.name}: its help {use.help!r} does not start with the definition {glossary[use.name]!r}")
    for name in sorted({u.name for u in shown}):
        same = [u for u in shown if u.name == name]
        kinds = {u.kind for u in same}
        if len(kinds) > 1:
            problems.append(f"{name}: one name, several types: " + "; ".join(f"`{u.command}` {u.kind}" for u in same))
        defaults = {repr(u.default) for u in same}
        if name not in VARYING_DEFAULTS and len(defaults) > 1:
            problems.append(f"{name}: one name, several defaults: " + "; ".join(f"`{u.command}` {u.default!r}" for u in same))
    longs_of: dict[str, set[str]] = {}
    for use in shown:
        for short in use.shorts:
            longs_of.setdefault(short, set()).add(use.name)
    problems += [f"{short} stands for several options: {', '.join(sorted(longs))}" for short, longs in longs_of.items() if len(longs) > 1]
    for name in sorted({u.name for u in shown}):
        same = [u for u in shown if u.name == name]
        if len({u.shorts for u in same}) > 1:
            problems.append(f"{name}: short forms differ: " + "; ".join(f"`{u.command}` {'/'.join(u.shorts) or 'none'}" for u in same))
    commands = {u.command for u in shown}
    for command in sorted(commands):
        names = {u.name for u in shown if u.command == command}
        if names & {"DATA", "--data"}:
            problems += [f"`{command}` reads data but has no {option}" for option in READER_OPTIONS if option not in names]
    return problems


def _pending(problem: str) -> bool:
    return any(entry in problem for entry in PENDING)


def test_every_option_of_every_command_keeps_the_vocabulary():
    problems = [p for p in vocabulary_problems(uses(app)) if not _pending(p)]
    assert not problems, "the CLI breaks its vocabulary:\n" + "\n".join(problems)


def test_pending_commands_still_need_their_exemption():
    present = {f"`{u.command}`" for u in uses(app)} | {f"`{u.command}` {u.name}" for u in uses(app)}
    problems = vocabulary_problems(uses(app))
    aligned = sorted(entry for entry in PENDING & present if not any(entry in p for p in problems))
    assert not aligned, f"these commands keep the vocabulary now: remove them from PENDING: {aligned}"


def test_a_model_setting_and_an_extractor_setting_are_told_apart():
    """``train --set`` takes the model's and the training's settings; an extractor's names the command it belongs to."""
    from merkit.errors import MerkitError
    from merkit.models.registry import get_model
    from merkit.training.config import resolve_configs

    with pytest.raises(MerkitError, match=r"unknown setting 'trim_db' for bigru \(it is a setting of the .*is10.* pass it to `merkit extract --set trim_db=\.\.\.`"):
        resolve_configs(get_model("bigru"), None, ["trim_db=40"])
    with pytest.raises(MerkitError, match=r"unknown setting 'colour' for bigru; known: "):
        resolve_configs(get_model("bigru"), None, ["colour=red"])


def test_the_walk_sees_every_command_and_subcommand():
    commands = {u.command for u in uses(app)}
    assert {"merkit", "merkit train", "merkit extract", "merkit data stats", "merkit cache clear"} <= commands
    assert {"--version", "--out", "--set", "DATA", "CHECKPOINT", "RUN"} <= {u.name for u in uses(app)}


def _bad_app() -> typer.Typer:
    bad = typer.Typer()

    @bad.command("first")
    def first(
        data: str = typer.Argument(..., help=READS_DATA + "."),
        seed: int = typer.Option(0, help="Which seed's checkpoint to evaluate."),
        colour: str = typer.Option("red", help="A colour."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines."),
        format: str = typer.Option("auto", "--format", "-f", help="Input format, or 'auto' to detect it."),
    ) -> None:
        """One command."""

    @bad.command("second")
    def second(
        seed: int = typer.Option(1, help="Random seed of something."),
        quiet: bool = typer.Option(False, "--quiet", "-s", help="No progress bars or log lines."),
        old: str = typer.Option("", "--old", hidden=True, help="The old name."),
    ) -> None:
        """Another command."""

    return bad


def test_the_check_names_each_break_with_its_command_and_option():
    """The checker itself can fail: an unknown option, another meaning, two defaults, two short forms, missing reader options."""
    problems = "\n".join(vocabulary_problems(uses(_bad_app())))
    assert "`merkit first` --colour: not in the CLI vocabulary" in problems
    assert re.search(r"`merkit first` --seed: its help \"Which seed's checkpoint to evaluate.\" does not start with the definition 'Random seed'", problems)
    assert "--seed: one name, several defaults" in problems
    assert "--quiet: one name" not in problems and "-s stands for" not in problems
    assert "`merkit second` --old: a hidden option is a deprecated spelling" in problems
    assert "`merkit first` reads data but has no --option" in problems and "`merkit first` reads data but has no --trust-pickle" in problems
    assert "has no --format" not in problems
    assert "--quiet: short forms differ: `merkit first` -q; `merkit second` -s" in problems or \
        "--quiet: short forms differ: `merkit second` -s; `merkit first` -q" in problems


@pytest.mark.parametrize(
    ("argv", "new"),
    [
        (["evaluate", "{tmp}/nothing", "--data", "synthetic", "--protocol", "noise"], "--analysis"),
        (["extract", "{tmp}/nothing.jsonl", "--out", "{tmp}/s", "--model", "{tmp}", "-e", "hf"], "--encoder"),
    ],
)
def test_a_deprecated_spelling_says_its_new_name_on_one_line(tmp_path, capsys, argv, new):
    from conftest import run_main

    _, _, err = run_main([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    lines = [line for line in err.splitlines() if "is deprecated" in line]
    assert len(lines) == 1 and new in lines[0], err
