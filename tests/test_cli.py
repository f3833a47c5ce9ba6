"""The command line: JSON stats, conversion, and one-line errors with exit code 2."""

import json
import pickle
import subprocess
import sys

from conftest import run_main, shared
import pytest
from typer.testing import CliRunner

from merkit.cli import app
from merkit.data import open_store
from merkit.errors import MerkitError

runner = CliRunner()


def test_stats_json_on_real_meld(capsys):
    code, out, _ = run_main(["data", "stats", str(shared("meld")), "--json"], capsys)
    assert code == 0
    stats = json.loads(out)
    assert {s: (v["dialogues"], v["utterances"]) for s, v in stats["splits"].items()} == {
        "train": (1038, 9989), "valid": (114, 1109), "test": (280, 2610),
    }  # fmt: skip
    assert stats["labels"]["neutral"] == 6436


def test_stats_json_on_real_iemocap_and_goemotions(capsys):
    code, out, _ = run_main(["data", "stats", str(shared("iemocap")), "--json"], capsys)
    test = json.loads(out)["splits"]["test"]
    assert code == 0 and (test["dialogues"], test["utterances"]) == (31, 1623)
    code, out, _ = run_main(["data", "stats", str(shared("goemotions")), "--json"], capsys)
    stats = json.loads(out)
    assert [stats["splits"][s]["utterances"] for s in ("train", "valid", "test")] == [43410, 5426, 5427]
    assert stats["label_kind"] == "multi-label" and sum(stats["labels"].values()) > 54263


def test_convert_then_stats_on_the_store(tmp_path, capsys):
    out = tmp_path / "store"
    code, stdout, _ = run_main(["data", "convert", "synthetic", "--out", str(out), "-o", "dialogues=20"], capsys)
    assert code == 0 and "20 dialogues" in stdout
    assert sorted(open_store(out).modalities) == ["audio", "text", "visual"]
    code, stdout, _ = run_main(["data", "stats", str(out), "--json"], capsys)
    assert json.loads(stdout)["features"]["text"]["dim"] == 32


def test_bad_input_is_one_line_on_stderr_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "train_sent_emo.csv"
    bad.write_text("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n1,hi,Ross,joy\n")
    code, out, err = run_main(["data", "stats", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(bad) in err and "line 2" in err and "Traceback" not in err


def test_unsafe_pickle_via_cli_names_the_opt_in(tmp_path, capsys):
    from collections import Counter

    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(Counter("ab")))
    code, _, err = run_main(["data", "stats", str(path)], capsys)
    assert code == 2 and "--trust-pickle" in err and str(path) in err


@pytest.mark.parametrize("command", [
    ["data", "stats", "{data}"], ["data", "convert", "{data}", "--out", "{tmp}/store"], ["train", "{data}", "--model", "mlp", "--out", "{tmp}/run"],
    ["baseline", "{data}", "--modalities", "text", "--out", "{tmp}/svm"], ["evaluate", "{tmp}/no-checkpoint", "--data", "{data}"],
    ["extract", "{data}", "--out", "{tmp}/store"],
])  # fmt: skip
def test_every_command_that_reads_data_takes_the_pickle_opt_in_it_names(tmp_path, capsys, command):
    """The refusal names --trust-pickle, so the command that printed it must accept it."""
    from collections import Counter

    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(Counter("ab")))
    argv = [part.format(data=path, tmp=tmp_path) for part in command]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "--trust-pickle" in err and str(path) in err, err
    code, _, err = run_main([*argv, "--trust-pickle"], capsys)
    assert "No such option" not in err and "--trust-pickle" not in err, err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "merkit", "--debug", "data", "stats", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_help_formats_models_and_demo(tmp_path):
    assert runner.invoke(app, ["--help"]).exit_code == 0
    formats = runner.invoke(app, ["data", "formats"])
    assert formats.exit_code == 0 and "sdt-pickle" in formats.output
    assert runner.invoke(app, ["models"]).exit_code == 0
    demo = runner.invoke(app, ["demo", "--synthetic", "--out", str(tmp_path / "demo")])
    assert demo.exit_code == 0, demo.output
    assert open_store(tmp_path / "demo" / "stores" / "synthetic").corpus.name == "synthetic"
    assert "weighted F1" in demo.output
    assert json.loads((tmp_path / "demo" / "runs" / "synthetic-bigru" / "results.json").read_text())["protocol"] == "honest"


def test_stats_of_a_speech_csv_warns_about_ignored_columns_on_one_line(tmp_path, capsys):
    path = tmp_path / "speech.csv"
    path.write_text("file,Emotion,notes\nclip1,happy,x\nclip2,sad,y\n")
    code, out, err = run_main(["data", "stats", str(path), "--json", "-o", "dialogue_column=none", "-o", "utterance_column=file"], capsys)
    assert code == 0 and json.loads(out)["labels"] == {"happy": 1, "sad": 1}
    assert err.count("\n") == 1 and err.startswith("merkit: warning: ") and "'notes'" in err
    code, _, err = run_main(["data", "stats", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "dialogue_column=none" in err


def test_reader_warnings_print_as_one_merkit_line_in_every_command(tmp_path, capsys):
    """A reader's warning (an ignored column) reaches the user as `merkit: warning: …`, not a Python warning."""
    from conftest import run_main

    table = tmp_path / "mine.csv"
    table.write_text("scene,line,emotion,note\nd1,Hello there.,joy,x\nd1,Go away.,anger,y\n", encoding="utf-8")
    code, _, err = run_main(["extract", str(table), "-o", "dialogue_column=scene", "-o", "text_column=line",
                             "-m", "text", "-e", "minilm", "--out", str(tmp_path / "store"), "--quiet"], capsys)  # fmt: skip
    assert "merkit: warning: mine.csv: ignoring column(s) 'note'" in err, err
    assert "UserWarning" not in err and "map_columns(" not in err


def _commands():
    """Every CLI command as (name, click command), sub-apps included."""
    from typer.main import get_command

    from merkit.cli import app

    found, stack = [], [("", get_command(app))]
    while stack:
        prefix, group = stack.pop()
        for name, command in group.commands.items():
            full = f"{prefix} {name}".strip()
            if hasattr(command, "commands"):
                stack.append((full, command))
            else:
                found.append((full, command))
    return sorted(found, key=lambda pair: pair[0])


def test_every_command_shows_an_example_that_parses():
    import shlex

    from merkit.cli_options import EXAMPLES

    commands = dict(_commands())
    assert set(commands) == set(EXAMPLES)
    for name, command in commands.items():
        assert command.epilog == f"Example: {EXAMPLES[name]}"
        words = shlex.split(EXAMPLES[name].split("   #")[0])
        assert words[: 1 + len(name.split())] == ["merkit", *name.split()], name
        command.make_context(name, words[1 + len(name.split()) :])  # options and arguments exist and have the right types


def test_a_device_that_is_not_there_is_one_clear_error(monkeypatch):
    import torch

    from merkit.devices import lightning_accelerator, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "gpu", "cuda:1"):
        with pytest.raises(MerkitError, match=f"--device {asked}: torch .* sees no CUDA GPU here; use --device cpu or auto"):
            resolve_device(asked)
    with pytest.raises(MerkitError, match="'tpu' is not a device; choose auto"):
        resolve_device("tpu")
    assert resolve_device("auto") == "cpu" and lightning_accelerator("auto") == "auto" and lightning_accelerator("CPU") == "cpu"


@pytest.mark.parametrize("command", [["demo"], ["zoo", "build", "--only", "text-meld"]])
def test_a_data_root_without_the_corpora_is_refused_not_replaced(tmp_path, capsys, command, monkeypatch):
    """An explicit --data-root that lacks the corpora stops with its name, even where ../shared/data exists."""
    monkeypatch.setenv("MERKIT_SHARED_DATA", str(tmp_path))
    code, _, err = run_main([*command, "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "out")], capsys)
    error = err.strip()
    assert code == 2 and error.startswith("merkit: error: ") and str(tmp_path / "empty") in error and "\n" not in error
    assert not (tmp_path / "out").exists()
