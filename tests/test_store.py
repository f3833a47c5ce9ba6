"""The feature store: round trips, memory mapping, and atomicity under a killed write."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from merkit.data import FeatureSet, open_store, read_data, stack_rows, write_store
from merkit.data.store import MANIFEST
from merkit.errors import MerkitError


@pytest.fixture
def bundle():
    return read_data("synthetic", dialogues=10, max_turns=8)


def test_round_trip_is_exact_and_memory_mapped(tmp_path, bundle):
    store = write_store(tmp_path / "s", bundle.corpus, bundle.features)
    assert store.corpus == bundle.corpus
    assert sorted(store.modalities) == ["audio", "text", "visual"]
    for modality, original in bundle.features.items():
        loaded = store.features(modality)
        assert isinstance(loaded.values, np.memmap)
        np.testing.assert_array_equal(loaded.values, original.values)
        np.testing.assert_array_equal(loaded.present, original.present)
        assert store.describe(modality)["dim"] == original.dim
    assert not list(tmp_path.glob("s/.*tmp*"))
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "s").iterdir())


def test_sequence_features_round_trip(tmp_path, bundle):
    ids = [u.id for u in bundle.corpus.utterances()]
    rng = np.random.default_rng(0)
    rows = [None if i % 5 == 0 else rng.normal(size=(i % 4 + 1, 3)).astype(np.float32) for i in range(len(ids))]
    frames = stack_rows("audio", rows, ids=ids, sequence=True, extractor="test")
    store = write_store(tmp_path / "s", bundle.corpus, {"audio": frames})
    loaded = store.features("audio")
    assert loaded.level == "sequence"
    for i, row in enumerate(rows):
        assert loaded.present[i] == (row is not None)
        if row is not None:
            np.testing.assert_array_equal(loaded.row(i), row)


def test_adding_a_modality_keeps_the_others(tmp_path, bundle):
    write_store(tmp_path / "s", bundle.corpus, {"text": bundle.features["text"]})
    store = write_store(tmp_path / "s", bundle.corpus, {"audio": bundle.features["audio"]})
    assert sorted(store.modalities) == ["audio", "text"]
    # Files of replaced versions are swept: one corpus file and one file per modality remain.
    assert len([p for p in (tmp_path / "s").iterdir() if p.name != MANIFEST]) == 3


def test_features_of_another_corpus_are_refused(tmp_path, bundle):
    write_store(tmp_path / "s", bundle.corpus, {"text": bundle.features["text"]})
    other = read_data("synthetic", dialogues=10, max_turns=8, seed=1)
    with pytest.raises(MerkitError, match="different corpus"):
        write_store(tmp_path / "s", other.corpus, {"audio": other.features["audio"]})


def test_nan_feature_is_refused_naming_the_utterance(tmp_path, bundle):
    values = bundle.features["text"].values.copy()
    values[7, 2] = np.nan
    bad = FeatureSet("text", values, bundle.features["text"].present)
    utterance_id = [u.id for u in bundle.corpus.utterances()][7]
    with pytest.raises(MerkitError, match=f"utterance '{utterance_id}': text features contain NaN"):
        write_store(tmp_path / "s", bundle.corpus, {"text": bad})


def test_wrong_row_count_is_refused(tmp_path, bundle):
    feature = bundle.features["text"]
    with pytest.raises(MerkitError, match="rows"):
        write_store(tmp_path / "s", bundle.corpus, {"text": FeatureSet("text", feature.values[:-1], feature.present)})


def test_directory_without_manifest_is_not_a_store(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "text-abc.safetensors").write_bytes(b"partial")
    with pytest.raises(MerkitError, match="not a complete merkit feature store"):
        open_store(tmp_path / "half")


def test_truncated_feature_file_is_detected(tmp_path, bundle):
    store = write_store(tmp_path / "s", bundle.corpus, bundle.features)
    path = store.root / store.describe("text")["file"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MerkitError, match="missing or truncated"):
        open_store(tmp_path / "s")


def test_modified_corpus_file_is_detected(tmp_path, bundle):
    store = write_store(tmp_path / "s", bundle.corpus)
    corpus_file = store.root / store.manifest["corpus"]["file"]
    corpus_file.write_text(corpus_file.read_text().replace("speaker0", "speakerX"))
    with pytest.raises(MerkitError, match="checksum"):
        open_store(tmp_path / "s")


# A child process starts rewriting the store and is SIGKILLed at a chosen point.
_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import merkit.data.store as store_module
    from merkit.data import read_data, write_store

    point = sys.argv[2]
    real_save = store_module.save_file

    def save_half_then_die(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        size = os.path.getsize(path)
        os.truncate(path, size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    def die_before_manifest(path, obj):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "data":
        store_module.save_file = save_half_then_die
    else:
        store_module.atomic_write_json = die_before_manifest
    bundle = read_data("synthetic", dialogues=10, max_turns=8, seed=5)
    write_store(sys.argv[1], bundle.corpus, bundle.features, keep_existing=False)
    """
)


@pytest.mark.parametrize("point", ["data", "manifest"])
def test_killed_write_leaves_the_old_store_readable(tmp_path, bundle, point):
    target = tmp_path / "s"
    write_store(target, bundle.corpus, bundle.features)
    before = json.loads((target / MANIFEST).read_text())
    result = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target), point], capture_output=True)
    assert result.returncode == -9, result.stderr.decode()
    assert json.loads((target / MANIFEST).read_text()) == before
    store = open_store(target)
    assert store.corpus == bundle.corpus
    np.testing.assert_array_equal(store.features("audio").values, bundle.features["audio"].values)
    # The next successful write sweeps the orphans of the killed one.
    write_store(target, bundle.corpus, bundle.features)
    assert len(os.listdir(target)) == 5


def test_killed_first_write_is_not_a_store(tmp_path):
    target = tmp_path / "new"
    result = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target), "manifest"], capture_output=True)
    assert result.returncode == -9
    with pytest.raises(MerkitError, match="not a complete"):
        open_store(target)


# ---------------------------------------------------------------- reproducible stores (#34 item 7i)
def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_identical_extractions_give_byte_identical_stores(tmp_path):
    """Two processes (safetensors' metadata order and any random name differ between processes, not within one)."""
    from conftest import run_cli
    from media_helpers import speak, write_jsonl

    pytest.importorskip("opensmile", reason="openSMILE needs the audio extra")
    lines = {"a": "I got the job!", "b": "Oh no, not again.", "c": "Leave me alone."}
    rows = [{"dialogue_id": "d1", "utterance_id": k, "text": t, "audio": speak(t, tmp_path / f"{k}.wav").name} for k, t in lines.items()]
    table = write_jsonl(tmp_path / "talk.jsonl", rows)
    stores = [tmp_path / "one", tmp_path / "two"]
    for store in stores:
        result = run_cli("extract", str(table), "--out", str(store), "-m", "audio", "-e", "egemaps", "--quiet")
        assert result.returncode == 0, result.stderr
    one, two = (_files(store) for store in stores)
    assert sorted(one) == sorted(two) and any(name.startswith("audio-") for name in one)
    assert [name for name in one if one[name] != two[name]] == []


def test_store_file_names_are_content_hashes_and_old_token_named_stores_open(tmp_path, bundle):
    first = write_store(tmp_path / "a", bundle.corpus, bundle.features)
    second = write_store(tmp_path / "b", bundle.corpus, bundle.features)
    assert _files(first.root) == _files(second.root)
    assert first.manifest["corpus"]["file"] == f"corpus-{first.manifest['corpus']['sha256'][:16]}.json"
    # A store as written before content-addressed names: random tokens, the version in the file metadata.
    from safetensors.numpy import load_file, save_file

    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((first.root / MANIFEST).read_text())
    manifest["corpus"]["file"] = "corpus-3f9a1c2b7d4e.json"
    (old / manifest["corpus"]["file"]).write_bytes((first.root / first.manifest["corpus"]["file"]).read_bytes())
    for modality, entry in manifest["features"].items():
        tensors = load_file(str(first.root / entry["file"]))
        entry["file"] = f"{modality}-a1b2c3d4e5f6.safetensors"
        save_file(tensors, str(old / entry["file"]), metadata={"modality": modality, "merkit": "0.1.0"})
        entry["bytes"] = (old / entry["file"]).stat().st_size
    (old / MANIFEST).write_text(json.dumps(manifest))
    store = open_store(old)
    assert store.corpus == bundle.corpus
    np.testing.assert_array_equal(store.features("text").values, bundle.features["text"].values)
