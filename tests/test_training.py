"""The training engine: registry smoke test, resume after a kill, DDP, checkpoints, protocols."""

import csv
import itertools
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from merkit.batching import BucketBatchSampler, DialogueDataset
from merkit.checkpoint import check_compatible, load_checkpoint
from merkit.data import read_data
from merkit.errors import MerkitError
from merkit.models import available_models
from merkit.models.base import DataSpec
from merkit.training.config import resolve_configs
from merkit.training.engine import train_model

TINY = {"dialogues": 24, "max_turns": 10, "text_dim": 12, "audio_dim": 10, "visual_dim": 8}


@pytest.fixture(scope="module")
def tiny():
    return read_data("synthetic", **TINY)


def _subsets(modalities):
    return [list(c) for r in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, r)]


def _tiny_batch(tiny, modalities):
    """Six training dialogues of the tiny corpus as one batch, and the matching data spec."""
    dataset = DialogueDataset(tiny.corpus, tiny.features, ["train"], modalities)
    spec = DataSpec(
        modalities={m: tiny.features[m].dim for m in modalities},
        num_classes=tiny.corpus.labels.num_classes,
        class_names=tiny.corpus.labels.names,
    )
    return dataset.collate([dataset[i] for i in range(6)]), spec


SMOKE_CASES = [(name, subset) for name, entry in available_models().items() if entry.trainable for subset in _subsets(entry.modalities)]


@pytest.mark.parametrize(("name", "modalities"), SMOKE_CASES, ids=[f"{n}-{'+'.join(m)}" for n, m in SMOKE_CASES])
def test_every_model_learns_on_every_modality_subset(tiny, name, modalities):
    entry = available_models()[name]
    torch.manual_seed(0)
    batch, spec = _tiny_batch(tiny, modalities)
    model = entry.model_class(entry.config_class(), spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        model.train()
        loss, _ = model.compute_loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_bucket_sampler_is_a_function_of_seed_and_epoch_and_splits_ranks():
    lengths = list(np.random.default_rng(0).integers(1, 40, size=50))
    a = BucketBatchSampler(lengths, 4, shuffle=True, seed=1)
    b = BucketBatchSampler(lengths, 4, shuffle=True, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert sorted(i for batch in a for i in batch) == list(range(50))
    ranks = [BucketBatchSampler(lengths, 2, shuffle=True, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    joined = [x + y for x, y in zip(*(list(r) for r in ranks))]
    assert joined == list(a)  # each global step sees the dialogues of the single-process batch


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "merkit", *args], capture_output=True, text=True, **kwargs)


RUN = ["train", "synthetic", "--model", "bigru", "--quiet", "--device", "cpu",
       "-o", "dialogues=60", "--set", "patience=null"]  # fmt: skip


def test_killed_run_resumed_ends_like_an_unbroken_one(tmp_path):
    args = [*RUN, "--set", "epochs=12"]
    assert _cli(*args, "--out", str(tmp_path / "whole")).returncode == 0
    broken = tmp_path / "broken"
    process = subprocess.Popen([sys.executable, "-m", "merkit", *args, "--out", str(broken)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = broken / "seed0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "seed0" / "metrics.json").exists(), "the run finished before it could be killed"
    again = _cli(*args, "--out", str(broken))
    assert again.returncode == 2 and "--resume" in again.stderr
    assert _cli(*args, "--out", str(broken), "--resume").returncode == 0
    whole = json.loads((tmp_path / "whole" / "seed0" / "metrics.json").read_text())
    resumed = json.loads((broken / "seed0" / "metrics.json").read_text())
    assert resumed["best_epoch"] == whole["best_epoch"]
    for split in ("valid", "test"):
        assert resumed[split]["weighted_f1"] == pytest.approx(whole[split]["weighted_f1"], abs=1e-9)


def _logged_epochs(run, column="epoch"):
    """The epoch of each row of a run's CSV log that has a value in ``column``."""
    log = run / "seed0" / "logs" / "metrics.csv"
    if not log.exists():
        return []
    with log.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle) if row.get(column)]


def _empty_folders(run):
    return [folder for folder in run.rglob("*") if folder.is_dir() and not any(folder.iterdir())]


def test_resumed_run_continues_its_epoch_log(tmp_path):
    """Lightning's CSV logger deleted the log it found, so a resumed run's log began at the resumed epoch."""
    run = tmp_path / "run"
    args = [*RUN, "--set", "epochs=8", "--out", str(run)]
    process = subprocess.Popen([sys.executable, "-m", "merkit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while max(_logged_epochs(run), default=-1) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # killed in epoch 2: epochs 0 and 1 are logged and checkpointed, some of epoch 2 is logged
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "seed0" / "metrics.json").exists(), "the run finished before it could be killed"
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for per_epoch in ("select_weighted_f1", "loss_epoch"):
        assert _logged_epochs(run, per_epoch) == list(range(8)), per_epoch
    assert _logged_epochs(run) == sorted(_logged_epochs(run))  # the redone part of epoch 2 is logged once
    assert not _empty_folders(run)


def test_train_output_to_a_pipe_is_one_line_per_epoch(tmp_path):
    """Off a terminal the live bar left carriage returns and escape codes in redirected output."""
    done = _cli(*[arg for arg in RUN if arg != "--quiet"], "--set", "epochs=3", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "\r" not in output and "\x1b" not in output and "it/s" not in output  # no bar, whole or in pieces
    assert re.findall(r"^seed 0 epoch (\d)/3 \([\d.]+ s\): select_weighted_f1 0\.\d{4}, loss_epoch \d\.\d{4}$", done.stderr, re.M) == ["1", "2", "3"]
    assert "weighted_f1" in done.stdout  # the results table


def test_ddp_on_two_cpu_processes_matches_a_single_process(tmp_path):
    """Same global batches and, with dialogues of one length, the same loss normalisation on every rank:
    the mean of the two ranks' gradients is the single process's, so the runs agree to float precision."""
    args = [*RUN, "-o", "min_turns=10", "-o", "max_turns=10", "--set", "epochs=8", "--set", "dropout=0.0"]
    single = _cli(*args, "--set", "batch_size=16", "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    ddp = _cli(*args, "--set", "batch_size=8", "--devices", "2", "--strategy", "ddp", "--out", str(tmp_path / "ddp"), timeout=300)
    assert ddp.returncode == 0, ddp.stderr
    one = json.loads((tmp_path / "single" / "seed0" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "seed0" / "metrics.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["best_epoch"] == one["best_epoch"]
    scores = [
        np.array([json.loads(line)["scores"] for line in (tmp_path / run / "seed0" / "predictions-test.jsonl").read_text().splitlines()])
        for run in ("single", "ddp")
    ]
    assert scores[0].shape == scores[1].shape and np.abs(scores[0] - scores[1]).max() < 1e-4


def test_multi_seed_results_and_checkpoint_round_trip(tmp_path, tiny):
    results = train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=3"], seeds=[0, 1], progress=False)
    assert results["seeds"] == [0, 1] and results["summary"]["test"]["weighted_f1"]["n"] == 2
    assert results["protocol"] == "honest" and "validation" in results["protocol_label"]
    assert {"torch", "lightning", "merkit"} <= set(results["environment"])
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["per_seed"]["1"]["test"] == results["per_seed"]["1"]["test"]
    checkpoint = load_checkpoint(tmp_path / "run" / "seed0" / "best")
    assert checkpoint.labels == tiny.corpus.labels and checkpoint.modalities == ["text", "audio", "visual"]
    features = {m: f.describe() for m, f in tiny.features.items()}
    check_compatible(checkpoint.meta, tiny.corpus.labels, features)
    features["audio"] = {**features["audio"], "dim": 99}
    del features["visual"]
    with pytest.raises(MerkitError, match="audio dimension: model 10, data 99; the data has no visual features"):
        check_compatible(checkpoint.meta, tiny.corpus.labels, features)


def test_truncated_checkpoint_is_refused(tmp_path, tiny):
    train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=1"], progress=False)
    weights = tmp_path / "run" / "seed0" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(MerkitError, match="checksum"):
        load_checkpoint(weights.parent)


def test_paper_compat_protocol_selects_on_test_and_says_so(tmp_path, tiny):
    results = train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=2"], protocol="paper-compat", progress=False)
    assert results["protocol"] == "paper-compat" and "TEST" in results["protocol_label"]
    assert "valid" not in results["summary"]  # valid was merged into training: no score that looks held out
    assert "valid" not in results["per_seed"]["0"]
    assert results["precision"] == ["32-true"]  # recorded, and fp32 as the official codes train
    assert json.loads((tmp_path / "run" / "seed0" / "best" / "model.json").read_text())["speaker_index"] == "order"  # no roles


def test_paper_compat_trains_in_fp32_even_where_honest_would_use_bf16():
    from merkit.training.config import training_precision

    assert training_precision(None, "honest", use_gpu=True, bf16=True) == "bf16-mixed"
    assert training_precision(None, "paper-compat", use_gpu=True, bf16=True) == "32-true"
    assert training_precision(None, "honest", use_gpu=False, bf16=False) == "32-true"
    assert training_precision("16-mixed", "paper-compat", use_gpu=True, bf16=True) == "16-mixed"  # an explicit --precision wins


def test_train_prints_zero_f1_warnings_and_a_table_that_fits_80_columns(tmp_path, tiny):
    from rich.console import Console

    from merkit.training_commands import print_results

    results = train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=1"], progress=False)  # one epoch: rare classes missed
    console = Console(record=True, width=80)
    print_results(results, console)
    text = console.export_text()
    assert "warning: seed 0 test: class" in text
    rows = [line for line in text.splitlines() if "±" in line]
    assert rows and all(line.count("±") == len(results["summary"]) for line in rows)  # no ± broken over two lines
    saved = json.loads((tmp_path / "run" / "seed0" / "metrics.json").read_text())
    assert results["warnings"] == [f"seed 0 {s}: {w}" for s in ("valid", "test") for w in saved[s]["warnings"]]


def test_settings_resolve_from_preset_and_overrides():
    entry = available_models()["bigru"]
    model_config, train_config = resolve_configs(entry, None, ["hidden=64", "train.lr=0.01", "class_weights=inverse_frequency"])
    assert model_config.hidden == 64 and train_config.lr == 0.01 and train_config.class_weights == "inverse_frequency"
    with pytest.raises(MerkitError, match="unknown setting 'hiden'"):
        resolve_configs(entry, None, ["hiden=3"])
    with pytest.raises(MerkitError, match="invalid setting lr"):
        resolve_configs(entry, None, ["lr=-1"])
    with pytest.raises(MerkitError, match="no preset 'nope'"):
        resolve_configs(entry, "nope", [])


@pytest.mark.parametrize("name", [name for name, entry in available_models().items() if entry.trainable])
def test_every_model_trains_under_bf16_autocast(tiny, name):
    """The mixed-precision path the GPU uses by default: dtypes mix inside the model and losses."""
    entry = available_models()[name]
    batch, spec = _tiny_batch(tiny, list(entry.modalities))
    torch.manual_seed(0)
    model = entry.model_class(entry.config_class(), spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.compute_loss(model(batch), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_training_split_without_labels_is_an_error_not_a_run(tmp_path, tiny):
    from merkit.data.formats import DataBundle

    corpus = tiny.corpus
    dialogues = tuple(
        d.model_copy(update={"utterances": tuple(u.model_copy(update={"label": None}) for u in d.utterances)}) for d in corpus.dialogues
    )
    unlabelled = DataBundle(corpus.model_copy(update={"dialogues": dialogues}), tiny.features)
    with pytest.raises(MerkitError, match=r"training split \(train\) of 'synthetic' has no labelled utterances.*label_column") as info:
        train_model(unlabelled, "mlp", out=tmp_path / "run", overrides=["epochs=1"], progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_finished_seed_drops_its_resume_state_unless_kept(tmp_path, tiny):
    results = train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=2", "monitor=uar"], progress=False)
    seed = tmp_path / "run" / "seed0"
    metrics = json.loads((seed / "metrics.json").read_text())
    assert not (seed / "checkpoints" / "last.ckpt").exists() and metrics["resume_state_bytes"] > 0
    assert "uar" in metrics["test"] and results["summary"]["test"]["uar"]["n"] == 1
    assert json.loads((seed / "best" / "model.json").read_text())["train_config"]["monitor"] == "uar"
    again = train_model(tiny, "mlp", out=tmp_path / "run", overrides=["epochs=2", "monitor=uar"], progress=False, resume=True)
    assert again["per_seed"] == results["per_seed"]  # a finished seed is read back from metrics.json
    assert not _empty_folders(tmp_path / "run")  # its emptied checkpoints/ folder went with last.ckpt
    train_model(tiny, "mlp", out=tmp_path / "kept", overrides=["epochs=1"], progress=False, keep_resume_state=True)
    kept = tmp_path / "kept" / "seed0"
    assert (kept / "checkpoints" / "last.ckpt").stat().st_size == json.loads((kept / "metrics.json").read_text())["resume_state_bytes"]
    with pytest.raises(MerkitError, match="monitor=uar is not a multi-label metric"):
        train_model(read_data("synthetic", **TINY, multi_label=True), "mlp", out=tmp_path / "multi", overrides=["monitor=uar"], progress=False)


def test_cli_train_threads_and_keep_resume_state(tmp_path):
    done = _cli(*RUN, "--set", "epochs=1", "--threads", "1", "--keep-resume-state", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "seed0" / "checkpoints" / "last.ckpt").exists()
    bad = _cli(*RUN, "--threads", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.strip() == "merkit: error: --threads must be at least 1"


def test_speaker_index_comes_from_the_corpus_roles_where_it_has_them():
    """IEMOCAP's speaker one-hot is M = 0, F = 1 in the official SDT/SURE codes; first-appearance order loses that."""
    from conftest import shared

    from merkit.batching import speaker_indices
    from merkit.data import read_data
    from merkit.training.config import TrainConfig
    from merkit.training.engine import speaker_index

    corpus = read_data(shared("iemocap")).corpus
    assert speaker_index(TrainConfig(), corpus) == "role"
    assert speaker_index(TrainConfig(speaker_index="order"), corpus) == "order"
    for dialogue in corpus.dialogues:
        assert speaker_indices(dialogue, "role") == ["MF".index(u.speaker) for u in dialogue.utterances]
    first_is_female = sum(speaker_indices(d, "order")[0] != speaker_indices(d, "role")[0] for d in corpus.dialogues)
    assert first_is_female == 66  # the dialogues where order gives the female speaker index 0
