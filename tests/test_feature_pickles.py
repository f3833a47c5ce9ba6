"""Readers of the published multimodal feature files (models.md §7.1–7.4).

Every test writes a small file in exactly the published layout (pickles at protocol 2,
as Python-2 era files are, and protocol 4; torch files via ``torch.save``) and reads it
back through :func:`merkit.data.read_data`, by auto-detection and with an explicit format.
"""

from __future__ import annotations

import collections
import csv
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from merkit.data import DataBundle, FeatureSet, open_store, read_data, write_store
from merkit.data.safe_pickle import load_pickle
from merkit.errors import MerkitError

# --------------------------------------------------------------------------- layouts (from the spec)

IEMOCAP_NAMES = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
MELD_NAMES = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENTS = ("neutral", "positive", "negative")
MOSEI_NAMES = ("happy", "sad", "anger", "surprise", "disgust", "fear")

_SDT = (
    "videoIDs", "videoSpeakers", "videoLabels", "videoText", "roberta2", "roberta3", "roberta4",
    "videoAudio", "videoVisual", "videoSentence", "trainVid", "testVid",
)  # fmt: skip
_DGCN = ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual", "videoSentence", "trainVid", "testVid")


@dataclass(frozen=True)
class Layout:
    items: tuple[str, ...]
    meld: bool
    dims: dict[str, int]  # modality -> width
    fmt: str


LAYOUTS = {
    "sdt-iemocap": Layout(_SDT, False, {"text": 1024, "audio": 1582, "visual": 342}, "sdt-pickle"),
    "sdt-meld": Layout((*_SDT, "sentiment"), True, {"text": 768, "audio": 300, "visual": 342}, "sdt-pickle"),
    "dgcn-iemocap": Layout(_DGCN, False, {"text": 100, "audio": 1582, "visual": 342}, "dialoguegcn-pickle"),
    "mmgcn-meld": Layout((*_DGCN, "sentiment"), True, {"text": 600, "audio": 300, "visual": 342}, "dialoguegcn-pickle"),
}
_ITEM_OF = {"text": "videoText", "audio": "videoAudio", "visual": "videoVisual"}

IEMOCAP_TRAIN = ["Ses01F_impro01", "Ses01M_script02_1", "Ses02F_impro03", "Ses04M_impro05a"]
IEMOCAP_TEST = ["Ses05F_impro02", "Ses05M_script01_1b"]
MELD_TRAIN = [0, 3, 12, 7]
MELD_TEST = [1153, 1200]


@dataclass
class Written:
    """A feature pickle written to disk, and what a correct reader must find in it."""

    path: Path
    layout: Layout
    train: list
    test: list
    items: dict[str, Any]
    labels: dict = field(default_factory=dict)
    speakers: dict = field(default_factory=dict)  # key -> list of speaker tokens ('M'/'F' or index)
    sentences: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)  # modality -> key -> [T, D] float32
    sentiments: dict | None = None
    ids: dict = field(default_factory=dict)

    @property
    def num_utterances(self) -> int:
        return sum(len(v) for v in self.labels.values())


def write_feature_pickle(
    path: Path,
    layout: str = "sdt-iemocap",
    *,
    protocol: int = 4,
    value_form: str = "array",  # "array": [T, D]; "rows": list of 1-D arrays
    split_form: str = "list",  # "list" or "set"
    dims: dict[str, int] | None = None,
    mutate: Callable[[dict[str, Any]], None] | None = None,
    seed: int = 0,
) -> Written:
    """Write a per-dialogue feature pickle in one of the published layouts (models.md §7.1–7.3)."""
    spec = LAYOUTS[layout]
    dims = {**spec.dims, **(dims or {})}
    rng = np.random.default_rng(seed)
    train, test = (MELD_TRAIN, MELD_TEST) if spec.meld else (IEMOCAP_TRAIN, IEMOCAP_TEST)
    written = Written(path=path, layout=spec, train=list(train), test=list(test), items={})
    written.features = {m: {} for m in dims}
    if spec.meld:
        written.sentiments = {}
    items: dict[str, dict] = {name: {} for name in spec.items if name not in ("trainVid", "testVid")}
    for key in train + test:
        turns = int(rng.integers(3, 7))
        labels = [int(x) for x in rng.integers(0, 7 if spec.meld else 6, turns)]
        if spec.meld:
            # one-hot over 9, index = order of first appearance of the speaker in the dialogue
            people = rng.integers(0, 3, turns)
            first_seen: dict[int, int] = {}
            order = [first_seen.setdefault(int(p), len(first_seen)) for p in people]
            speakers_raw = [[1 if j == k else 0 for j in range(9)] for k in order]
            written.speakers[key] = order
            items["videoIDs"][key] = list(range(turns))
            written.sentiments[key] = [int(x) for x in rng.integers(0, 3, turns)]
            items["sentiment"][key] = list(written.sentiments[key])
        else:
            speakers_raw = [str(s) for s in rng.choice(["M", "F"], turns)]
            written.speakers[key] = speakers_raw
            items["videoIDs"][key] = [f"{key}_{s}{t:03d}" for t, s in enumerate(speakers_raw)]
            written.ids[key] = items["videoIDs"][key]
        items["videoSpeakers"][key] = speakers_raw
        items["videoLabels"][key] = labels
        written.labels[key] = labels
        sentences = [f"line {t} of dialogue {key}, with a comma" for t in range(turns)]
        items["videoSentence"][key] = sentences
        written.sentences[key] = sentences
        for modality, width in dims.items():
            array = rng.standard_normal((turns, width)).astype(np.float32)
            written.features[modality][key] = array
            items[_ITEM_OF[modality]][key] = array if value_form == "array" else [row.copy() for row in array]
        for unused in ("roberta2", "roberta3", "roberta4"):
            if unused in items:
                items[unused][key] = rng.standard_normal((turns, dims["text"])).astype(np.float32)
    as_split = set if split_form == "set" else list
    items["trainVid"] = as_split(train)
    items["testVid"] = as_split(test)
    if mutate is not None:
        mutate(items)
    written.items = items
    with path.open("wb") as handle:
        pickle.dump(tuple(items[name] for name in spec.items), handle, protocol=protocol)
    return written


def feature_index(corpus) -> dict[tuple[str, int], int]:
    """(dialogue id, turn) -> row index in corpus.utterances() order."""
    index, position = {}, 0
    for dialogue in corpus.dialogues:
        for turn in range(len(dialogue)):
            index[(dialogue.id, turn)] = position
            position += 1
    assert position == sum(1 for _ in corpus.utterances())
    return index


def check_feature_bundle(bundle, written: Written) -> None:
    """Everything a reader of a per-dialogue feature pickle must get right."""
    corpus = bundle.corpus
    spec = written.layout
    assert corpus.name == ("meld" if spec.meld else "iemocap")
    assert corpus.labels.names == (MELD_NAMES if spec.meld else IEMOCAP_NAMES)
    assert corpus.labels.num_classes == (7 if spec.meld else 6)
    assert not corpus.labels.multi_label
    assert len(corpus.dialogues) == len(written.train) + len(written.test)
    assert corpus.num_utterances == written.num_utterances
    assert {d.id for d in corpus.dialogues} == {str(k) for k in written.train + written.test}
    # splits: the published files merge train+valid into trainVid
    splits = corpus.splits
    assert set(splits.get("train", ())) | set(splits.get("valid", ())) == {str(k) for k in written.train}
    assert not set(splits.get("train", ())) & set(splits.get("valid", ()))
    assert len(splits.get("train", ())) + len(splits.get("valid", ())) == len(written.train)
    assert set(splits["test"]) == {str(k) for k in written.test}
    assert len(splits["test"]) == len(written.test)
    # features: widths read from the arrays, rows aligned with corpus.utterances()
    assert set(bundle.features) == {"text", "audio", "visual"}
    rows = feature_index(corpus)
    key_of = {str(k): k for k in written.train + written.test}
    for modality, width in spec.dims.items():
        features: FeatureSet = bundle.features[modality]
        assert features.modality == modality
        assert features.level == "utterance"
        assert features.dim == written.features[modality][written.train[0]].shape[1]
        assert features.values.shape == (corpus.num_utterances, features.dim)
        assert len(features) == corpus.num_utterances
        assert features.present.all()
        assert features.values.dtype == np.float32
        for dialogue in corpus.dialogues:
            expected = written.features[modality][key_of[dialogue.id]]
            got = np.stack([features.row(rows[(dialogue.id, t)]) for t in range(len(dialogue))])
            np.testing.assert_array_equal(got, expected)
    # utterance records
    speaker_names: dict[tuple[str, int], str] = {}
    for dialogue in corpus.dialogues:
        key = key_of[dialogue.id]
        assert len(dialogue) == len(written.labels[key])
        for turn, utterance in enumerate(dialogue.utterances):
            assert utterance.label == written.labels[key][turn]
            assert utterance.text == written.sentences[key][turn]
            if spec.meld:
                speaker_names[(dialogue.id, written.speakers[key][turn])] = utterance.speaker
                assert utterance.sentiment == MELD_SENTIMENTS[written.sentiments[key][turn]]
                assert utterance.meta["speaker_role"] == str(written.speakers[key][turn])  # argmax of the one-hot
            else:
                assert utterance.speaker == written.speakers[key][turn]
                assert utterance.sentiment is None
                assert utterance.meta["speaker_role"] == str("MF".index(written.speakers[key][turn]))  # M = 0, F = 1
    if spec.meld:
        assert corpus.sentiment_names == MELD_SENTIMENTS
        # one speaker name per one-hot index within a dialogue, distinct indices -> distinct names
        for dialogue in corpus.dialogues:
            key = key_of[dialogue.id]
            names = {i: speaker_names[(dialogue.id, i)] for i in set(written.speakers[key])}
            assert len(set(names.values())) == len(names)
            for turn, utterance in enumerate(dialogue.utterances):
                assert utterance.speaker == names[written.speakers[key][turn]]
    # utterance ids are unique across the corpus (Corpus validates, but be explicit)
    ids = [u.id for u in corpus.utterances()]
    assert len(ids) == len(set(ids))


@pytest.fixture
def sdt_iemocap(tmp_path) -> Written:
    return write_feature_pickle(tmp_path / "iemocap_multimodal_features.pkl", "sdt-iemocap")


# --------------------------------------------------------------------------- 1. SDT IEMOCAP


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "sdt-pickle"])
def test_sdt_iemocap_reads_published_layout(tmp_path, protocol, fmt):
    written = write_feature_pickle(tmp_path / "iemocap_multimodal_features.pkl", "sdt-iemocap", protocol=protocol)
    if protocol == 2:  # numpy arrays at protocol 2 go through _codecs.encode, as in the Python-2 era files
        assert b"_codecs\nencode" in written.path.read_bytes()
    bundle = read_data(written.path, format=fmt, valid_fraction=0.25)
    check_feature_bundle(bundle, written)
    assert len(bundle.corpus.splits["valid"]) == 1  # round(0.25 * 4)
    assert len(bundle.corpus.splits["train"]) == 3
    # the utterance ids of item 0 (strings) are kept
    by_id = {u.id: u for u in bundle.corpus.utterances()}
    for key, ids in written.ids.items():
        for turn, utterance_id in enumerate(ids):
            assert by_id[utterance_id].label == written.labels[key][turn]
    assert bundle.features["text"].dim == 1024
    assert bundle.features["audio"].dim == 1582
    assert bundle.features["visual"].dim == 342
    # IEMOCAP string keys sort as strings: train dialogues come first, then test, each sorted
    assert [d.id for d in bundle.corpus.dialogues] == sorted(IEMOCAP_TRAIN) + sorted(IEMOCAP_TEST)


def test_sdt_iemocap_python2_module_names(tmp_path):
    """Python-2 era pickles name ``numpy.core.multiarray`` (not ``numpy._core``)."""
    written = write_feature_pickle(tmp_path / "old.pkl", "sdt-iemocap", protocol=2)
    data = written.path.read_bytes()
    assert b"cnumpy._core.multiarray\n" in data
    written.path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on numpy.core
        bundle = read_data(written.path)
    check_feature_bundle(bundle, written)


def test_sdt_iemocap_default_valid_fraction_and_seed(sdt_iemocap):
    bundle = read_data(sdt_iemocap.path)
    check_feature_bundle(bundle, sdt_iemocap)
    # default valid_fraction 0.1 of 4 training dialogues rounds to none
    assert len(bundle.corpus.splits["train"]) + len(bundle.corpus.splits.get("valid", ())) == 4
    half = read_data(sdt_iemocap.path, valid_fraction=0.5, seed=3)
    again = read_data(sdt_iemocap.path, valid_fraction=0.5, seed=3)
    assert len(half.corpus.splits["valid"]) == 2
    assert half.corpus.splits == again.corpus.splits
    assert set(half.corpus.splits["valid"]) <= set(IEMOCAP_TRAIN)


@pytest.mark.parametrize(
    "valid_ids",
    [
        ["Ses02F_impro03"],
        "Ses02F_impro03,Ses01F_impro01",
        "file",
    ],
)
def test_sdt_iemocap_explicit_valid_ids(sdt_iemocap, tmp_path, valid_ids):
    if valid_ids == "file":
        ids_file = tmp_path / "valid.txt"
        ids_file.write_text("Ses04M_impro05a\nSes01M_script02_1\n")
        valid_ids, expected = str(ids_file), {"Ses04M_impro05a", "Ses01M_script02_1"}
    elif isinstance(valid_ids, str):
        expected = set(valid_ids.split(","))
    else:
        expected = set(valid_ids)
    bundle = read_data(sdt_iemocap.path, format="sdt-pickle", valid_ids=valid_ids)
    check_feature_bundle(bundle, sdt_iemocap)
    assert set(bundle.corpus.splits["valid"]) == expected
    assert set(bundle.corpus.splits["train"]) == set(IEMOCAP_TRAIN) - expected
    assert set(bundle.corpus.splits["test"]) == set(IEMOCAP_TEST)


def test_sdt_iemocap_valid_ids_must_be_training_dialogues(sdt_iemocap):
    with pytest.raises(MerkitError) as caught:
        read_data(sdt_iemocap.path, valid_ids=["Ses05F_impro02"])  # a test dialogue
    assert "Ses05F_impro02" in str(caught.value)
    assert str(sdt_iemocap.path) in str(caught.value)


@pytest.mark.parametrize("protocol", [2, 4])
def test_sdt_iemocap_rows_as_lists_and_splits_as_sets(tmp_path, protocol):
    written = write_feature_pickle(
        tmp_path / "feats.pkl", "sdt-iemocap", protocol=protocol, value_form="rows", split_form="set"
    )
    assert isinstance(written.items["trainVid"], set)
    assert isinstance(written.items["videoText"][IEMOCAP_TRAIN[0]], list)
    bundle = read_data(written.path)
    check_feature_bundle(bundle, written)
    # sets are sorted for determinism: the same file reads the same way twice
    assert read_data(written.path).corpus == bundle.corpus
    assert [d.id for d in bundle.corpus.dialogues] == sorted(IEMOCAP_TRAIN) + sorted(IEMOCAP_TEST)


@pytest.mark.parametrize("fraction", [-0.5, 1.5])
def test_sdt_valid_fraction_out_of_range(sdt_iemocap, fraction):
    with pytest.raises(MerkitError, match="valid_fraction"):
        read_data(sdt_iemocap.path, valid_fraction=fraction)


def test_sdt_unknown_option_is_a_merkit_error(sdt_iemocap):
    with pytest.raises(MerkitError, match="labels_csv"):
        read_data(sdt_iemocap.path, labels_csv="x.csv")


# --------------------------------------------------------------------------- 2. SDT MELD


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "sdt-pickle"])
def test_sdt_meld_reads_published_layout(tmp_path, protocol, fmt):
    written = write_feature_pickle(tmp_path / "meld_multimodal_features.pkl", "sdt-meld", protocol=protocol)
    bundle = read_data(written.path, format=fmt)
    check_feature_bundle(bundle, written)
    # text width is read from the arrays (768-d re-extraction), not assumed 1024
    assert bundle.features["text"].dim == 768
    assert bundle.features["audio"].dim == 300
    assert bundle.features["visual"].dim == 342
    # item 12 holds sentiment 0 neutral, 1 positive, 2 negative
    sentiments = {u.sentiment for u in bundle.corpus.utterances()}
    assert sentiments <= set(MELD_SENTIMENTS) and sentiments


def test_sdt_meld_int_keys_as_strings_and_sets(tmp_path):
    written = write_feature_pickle(tmp_path / "meld.pkl", "sdt-meld", value_form="rows", split_form="set")
    bundle = read_data(written.path)
    check_feature_bundle(bundle, written)
    assert all(isinstance(d.id, str) for d in bundle.corpus.dialogues)


def test_sdt_meld_split_ids_as_numpy_ints_and_strings(tmp_path):
    def odd_split_ids(items):
        items["trainVid"] = [np.int64(k) if i % 2 else str(k) for i, k in enumerate(items["trainVid"])]
        items["testVid"] = np.asarray(items["testVid"], dtype=np.int64)
        for key, values in items["sentiment"].items():  # sentiment as an int array
            items["sentiment"][key] = np.asarray(values, dtype=np.int64)

    written = write_feature_pickle(tmp_path / "meld.pkl", "sdt-meld", mutate=odd_split_ids, protocol=2)
    check_feature_bundle(read_data(written.path), written)


def test_sdt_meld_item12_that_is_not_sentiment_is_ignored(tmp_path):
    def emotions_in_item12(items):
        # values outside 0..2: not sentiment labels, so they must not become sentiments
        for key, labels in items["sentiment"].items():
            items["sentiment"][key] = [6] * len(labels)

    written = write_feature_pickle(tmp_path / "meld.pkl", "sdt-meld", mutate=emotions_in_item12)
    bundle = read_data(written.path)
    assert all(u.sentiment is None for u in bundle.corpus.utterances())
    assert bundle.corpus.num_utterances == written.num_utterances


# --------------------------------------------------------------------------- 3. DialogueGCN / MMGCN


@pytest.mark.parametrize("layout", ["dgcn-iemocap", "mmgcn-meld"])
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "dialoguegcn-pickle"])
def test_dialoguegcn_pickles(tmp_path, layout, protocol, fmt):
    written = write_feature_pickle(tmp_path / f"{layout}.pkl", layout, protocol=protocol)
    bundle = read_data(written.path, format=fmt, valid_fraction=0.5)
    check_feature_bundle(bundle, written)
    assert {m: f.dim for m, f in bundle.features.items()} == LAYOUTS[layout].dims
    assert len(bundle.corpus.splits["valid"]) == 2


@pytest.mark.parametrize(
    ("layout", "wrong_format"),
    [("dgcn-iemocap", "sdt-pickle"), ("mmgcn-meld", "sdt-pickle"), ("sdt-iemocap", "dialoguegcn-pickle"), ("sdt-meld", "dialoguegcn-pickle")],
)
def test_feature_pickle_with_the_wrong_explicit_format(tmp_path, layout, wrong_format):
    written = write_feature_pickle(tmp_path / "feats.pkl", layout)
    with pytest.raises(MerkitError) as caught:
        read_data(written.path, format=wrong_format)
    assert str(written.path) in str(caught.value)
    assert wrong_format in str(caught.value)


# --------------------------------------------------------------------------- 4. CMU-MOSEI

MOSEI_TGTS = [[2, 4, 7, 3], [2, 3], [2, 5, 3], [2, 9, 4, 3], [2, 6, 3], [2, 8, 8, 3], [2, 4, 5, 6, 7, 8, 9, 3]]
MOSEI_COUNTS = {"train": 3, "valid": 2, "test": 2}


def _decoded(tgt: list[int]) -> tuple[int, ...]:
    return tuple(sorted({t - 4 for t in tgt[1:-1]}))


def mosei_layout(
    *,
    seed: int = 0,
    keys: tuple[str, str, str] = ("text", "vision", "audio"),
    lengths: tuple[int, int, int] = (50, 50, 50),
    dims: tuple[int, int, int] = (768, 35, 74),
    stacked: bool = True,
    tgt: bool = True,
    mmsa_extras: bool = True,
    neg_inf: bool = True,
) -> tuple[dict, dict]:
    """A MOSEI top-level dict; returns (object to save, expected per split)."""
    rng = np.random.default_rng(seed)
    obj, expected = {}, {}
    position = 0
    for split, count in MOSEI_COUNTS.items():
        part: dict[str, Any] = {}
        arrays = {}
        for key, length, width in zip(keys, lengths, dims, strict=True):
            values = rng.standard_normal((count, length, width)).astype(np.float32)
            arrays[key] = values
        if neg_inf:  # COVAREP audio has -inf; LDDU turns it into 0
            arrays[keys[2]][0, 5, :3] = -np.inf
            arrays[keys[2]][count - 1, length - 1, 7] = -np.inf
        for key, values in arrays.items():
            part[key] = values if stacked else [sample.copy() for sample in values]
        targets = [MOSEI_TGTS[(position + i) % len(MOSEI_TGTS)] for i in range(count)]
        position += count
        if tgt:
            part["tgt"] = [list(t) for t in targets]
        if mmsa_extras:
            part["raw_text"] = [f"segment {i} of {split}, said softly" for i in range(count)]
            part["id"] = [f"vid{split}{i}$_${i}" for i in range(count)]
            part["annotations"] = ["Neutral"] * count
            part["regression_labels"] = rng.standard_normal(count).astype(np.float32)
        obj[split] = part
        expected[split] = {
            "modalities": {
                modality: np.where(np.isneginf(arrays[key]), 0.0, arrays[key]).astype(np.float32)
                for modality, key in zip(("text", "visual", "audio"), keys, strict=True)
            },
            "labels": [_decoded(t) for t in targets],
            "targets": targets,
        }
    return obj, expected


def check_mosei_bundle(bundle, expected: dict, dims: tuple[int, int, int], lengths: tuple[int, int, int]) -> None:
    corpus = bundle.corpus
    assert corpus.labels.multi_label
    assert corpus.labels.names == MOSEI_NAMES
    assert corpus.num_utterances == sum(MOSEI_COUNTS.values())
    assert set(bundle.features) == {"text", "audio", "visual"}
    rows = {u.id: i for i, u in enumerate(corpus.utterances())}
    for split, count in MOSEI_COUNTS.items():
        dialogues = corpus.split_dialogues(split)
        assert len(dialogues) == count
        for i, dialogue in enumerate(dialogues):
            assert len(dialogue) == 1  # one segment = one one-utterance dialogue
            utterance = dialogue.utterances[0]
            assert utterance.label == expected[split]["labels"][i]
            for modality, width, length in zip(("text", "visual", "audio"), dims, lengths, strict=True):
                features = bundle.features[modality]
                row = features.row(rows[utterance.id])
                assert row.shape == (length, width)
                np.testing.assert_array_equal(row, expected[split]["modalities"][modality][i])
    for modality, width in zip(("text", "visual", "audio"), dims, strict=True):
        features = bundle.features[modality]
        assert features.level == "sequence"
        assert features.dim == width
        assert len(features) == corpus.num_utterances
        assert features.present.all()
        assert np.isfinite(features.values).all()


def test_mosei_tgt_decoding_examples(tmp_path):
    obj, _ = mosei_layout()
    obj["train"]["tgt"] = [[2, 4, 7, 3], [2, 3], [2, 9, 3]]
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    corpus = read_data(path).corpus
    labels = [d.utterances[0].label for d in corpus.split_dialogues("train")]
    assert labels == [(0, 3), (), (5,)]
    stats = corpus.stats()
    assert stats["label_kind"] == "multi-label"


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "mosei-pickle"])
def test_mosei_mmsa_aligned(tmp_path, protocol, fmt):
    obj, expected = mosei_layout()
    path = tmp_path / "aligned_50.pkl"
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)
    bundle = read_data(path, format=fmt)
    assert bundle.corpus.name == "cmu-mosei"
    check_mosei_bundle(bundle, expected, (768, 35, 74), (50, 50, 50))
    # -inf of the audio became exactly 0, other values untouched
    first_train = bundle.corpus.split_dialogues("train")[0].utterances[0]
    index = [u.id for u in bundle.corpus.utterances()].index(first_train.id)
    audio = bundle.features["audio"].row(index)
    np.testing.assert_array_equal(audio[5, :3], np.zeros(3, dtype=np.float32))
    np.testing.assert_array_equal(audio[5, 3:], obj["train"]["audio"][0, 5, 3:])
    # raw_text of the MMSA layout becomes the utterance text
    assert first_train.text == obj["train"]["raw_text"][0]
    assert {u.label for u in bundle.corpus.utterances()} >= {(0, 3), ()}


def test_mosei_samples_as_lists(tmp_path):
    obj, expected = mosei_layout(stacked=False, mmsa_extras=False)
    path = tmp_path / "mosei.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    check_mosei_bundle(read_data(path), expected, (768, 35, 74), (50, 50, 50))


def _write_labels_csv(path: Path, targets_by_split: dict[str, list[list[int]]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "tgt"])
        for split, targets in targets_by_split.items():
            for tgt in targets:
                writer.writerow([split, str(tgt)])  # "[2, 4, 7, 3]"


def test_mosei_unaligned_needs_labels_csv(tmp_path):
    lengths = (50, 500, 500)
    obj, expected = mosei_layout(tgt=False, lengths=lengths, seed=1)
    for split, count in MOSEI_COUNTS.items():
        obj[split]["audio_lengths"] = [500] * count
        obj[split]["vision_lengths"] = [500] * count
    path = tmp_path / "unaligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MerkitError) as caught:
        read_data(path)
    assert "labels_csv" in str(caught.value)
    assert str(path) in str(caught.value)

    labels_csv = tmp_path / "labels.csv"
    _write_labels_csv(labels_csv, {split: expected[split]["targets"] for split in MOSEI_COUNTS})
    assert '"[2, 4, 7, 3]"' in labels_csv.read_text()
    for fmt in ("auto", "mosei-pickle"):
        bundle = read_data(path, format=fmt, labels_csv=str(labels_csv))
        check_mosei_bundle(bundle, expected, (768, 35, 74), lengths)


def test_mosei_labels_csv_count_mismatch(tmp_path):
    obj, expected = mosei_layout(tgt=False)
    path = tmp_path / "unaligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    labels_csv = tmp_path / "labels.csv"
    targets = {split: expected[split]["targets"] for split in MOSEI_COUNTS}
    targets["valid"] = targets["valid"][:1]
    _write_labels_csv(labels_csv, targets)
    with pytest.raises(MerkitError, match="valid"):
        read_data(path, labels_csv=str(labels_csv))


def test_mosei_unknown_emotion_token(tmp_path):
    obj, _ = mosei_layout()
    obj["test"]["tgt"][1] = [2, 11, 3]  # id 11 - 4 = 7: no such emotion
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MerkitError) as caught:
        read_data(path)
    message = str(caught.value)
    assert str(path) in message and "11" in message and "sample 1" in message


CARAT_LENGTHS, CARAT_DIMS = (60, 60, 60), (300, 35, 74)


def _write_carat(path: Path, seed: int = 2) -> dict:
    torch = pytest.importorskip("torch")
    obj, expected = mosei_layout(
        keys=("src-text", "src-visual", "src-audio"),
        lengths=CARAT_LENGTHS,
        dims=CARAT_DIMS,
        stacked=False,
        mmsa_extras=False,
        seed=seed,
    )
    assert isinstance(obj["train"]["src-text"], list) and obj["train"]["src-text"][0].shape == (60, 300)
    torch.save(obj, path)
    return expected


@pytest.mark.parametrize("fmt", ["auto", "mosei-pickle"])
def test_mosei_tailor_carat_torch_file(tmp_path, fmt):
    path = tmp_path / "mosei_senti_data.pt"
    expected = _write_carat(path)
    bundle = read_data(path, format=fmt)
    check_mosei_bundle(bundle, expected, CARAT_DIMS, CARAT_LENGTHS)


@pytest.mark.parametrize("fmt", ["auto", "mosei-pickle"])
def test_mosei_tailor_carat_torch_file_trusted(tmp_path, fmt):
    path = tmp_path / "mosei_senti_data.pt"
    expected = _write_carat(path)
    bundle = read_data(path, format=fmt, trust_pickle=True)
    assert bundle.corpus.name == "cmu-mosei"
    check_mosei_bundle(bundle, expected, CARAT_DIMS, CARAT_LENGTHS)


@pytest.mark.parametrize("payload", ["command", "custom-class"])
def test_mosei_torch_file_with_code_is_refused(tmp_path, payload):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    obj, _ = mosei_layout(mmsa_extras=False)
    obj["train"]["extra"] = _RunsCommand(f"touch {marker}") if payload == "command" else PlainRecord("x")
    path = tmp_path / "mosei.pt"
    torch.save(obj, path)
    for fmt in ("auto", "mosei-pickle"):
        with pytest.raises(MerkitError) as caught:
            read_data(path, format=fmt)
        assert "--trust-pickle" in str(caught.value)
        assert str(path) in str(caught.value)
    assert not marker.exists()


def test_mosei_rejects_feature_pickle_options(tmp_path):
    obj, _ = mosei_layout()
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MerkitError, match="valid_fraction"):
        read_data(path, valid_fraction=0.2)


# --------------------------------------------------------------------------- 5. feature store round trip


def _assert_same_bundle(a, b) -> None:
    assert a.corpus == b.corpus
    assert set(a.features) == set(b.features)
    for modality in a.features:
        x, y = a.features[modality], b.features[modality]
        np.testing.assert_array_equal(np.asarray(x.values), np.asarray(y.values))
        np.testing.assert_array_equal(np.asarray(x.present), np.asarray(y.present))
        assert (x.offsets is None) == (y.offsets is None)
        if x.offsets is not None:
            np.testing.assert_array_equal(np.asarray(x.offsets), np.asarray(y.offsets))
        assert x.values.dtype == y.values.dtype
        assert x.level == y.level and x.dim == y.dim
        assert x.extractor == y.extractor


@pytest.mark.parametrize("kind", ["sdt-iemocap", "sdt-meld", "mmgcn-meld", "mosei"])
def test_store_round_trip(tmp_path, kind):
    if kind == "mosei":
        obj, _ = mosei_layout()
        source = tmp_path / "aligned_50.pkl"
        source.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        source = write_feature_pickle(tmp_path / "feats.pkl", kind, protocol=2).path
    bundle = read_data(source, valid_fraction=0.5) if kind != "mosei" else read_data(source)
    store_dir = tmp_path / "store"
    written = write_store(store_dir, bundle.corpus, bundle.features)
    opened = open_store(store_dir)
    assert opened.corpus == bundle.corpus == written.corpus
    assert sorted(opened.modalities) == ["audio", "text", "visual"]
    _assert_same_bundle(bundle, DataBundle(opened.corpus, opened.all_features()))
    for fmt in ("auto", "store"):
        _assert_same_bundle(bundle, read_data(store_dir, format=fmt))
    assert not list(store_dir.glob("*.pkl"))  # no pickle in a store


# --------------------------------------------------------------------------- 6. bad inputs


def _drop_one_text_row(items):
    key = IEMOCAP_TRAIN[1]
    items["videoText"][key] = items["videoText"][key][:-1]


def _ghost_in_train(items):
    items["trainVid"] = [*items["trainVid"], "Ses03F_ghost01"]


def _label_out_of_range(items):
    items["videoLabels"][IEMOCAP_TRAIN[2]][1] = 6


def _speaker_missing(items):
    items["videoSpeakers"][IEMOCAP_TEST[0]] = items["videoSpeakers"][IEMOCAP_TEST[0]][:-1]


def _dialogue_missing_from_audio(items):
    del items["videoAudio"][IEMOCAP_TEST[1]]


def _ragged_visual_rows(items):
    rows = [np.asarray(r) for r in items["videoVisual"][IEMOCAP_TRAIN[3]]]
    rows[1] = rows[1][:-1]
    items["videoVisual"][IEMOCAP_TRAIN[3]] = rows


@pytest.mark.parametrize(
    ("mutate", "names"),
    [
        (_drop_one_text_row, [IEMOCAP_TRAIN[1], "text"]),
        (_ghost_in_train, ["Ses03F_ghost01"]),
        (_label_out_of_range, [IEMOCAP_TRAIN[2], "6"]),
        (_speaker_missing, [IEMOCAP_TEST[0]]),
        (_dialogue_missing_from_audio, [IEMOCAP_TEST[1]]),
        (_ragged_visual_rows, [IEMOCAP_TRAIN[3]]),
    ],
    ids=["row-count", "split-without-labels", "label-out-of-range", "speakers-short", "missing-dialogue", "ragged-rows"],
)
@pytest.mark.parametrize("fmt", ["auto", "sdt-pickle"])
def test_inconsistent_feature_pickle(tmp_path, mutate, names, fmt):
    written = write_feature_pickle(tmp_path / "bad.pkl", "sdt-iemocap", mutate=mutate)
    with pytest.raises(MerkitError) as caught:
        read_data(written.path, format=fmt)
    message = str(caught.value)
    assert str(written.path) in message
    for name in names:
        assert name in message


def test_row_count_mismatch_in_dialoguegcn_meld(tmp_path):
    key = MELD_TRAIN[2]

    def short_audio(items):
        items["videoAudio"][key] = items["videoAudio"][key][1:]

    written = write_feature_pickle(tmp_path / "bad.pkl", "mmgcn-meld", mutate=short_audio)
    with pytest.raises(MerkitError) as caught:
        read_data(written.path)
    assert str(written.path) in str(caught.value)
    assert f"dialogue {key!r}" in str(caught.value)


@pytest.mark.parametrize("modality", ["text", "audio", "visual"])
def test_nan_in_features_names_the_utterance(tmp_path, modality):
    key, turn = IEMOCAP_TRAIN[2], 1

    def add_nan(items):
        items[_ITEM_OF[modality]][key][turn, 3] = np.nan

    written = write_feature_pickle(tmp_path / "nan.pkl", "sdt-iemocap", mutate=add_nan)
    with pytest.raises(MerkitError) as caught:
        read_data(written.path)
    message = str(caught.value)
    assert str(written.path) in message
    assert written.ids[key][turn] in message  # the utterance
    assert modality in message and "NaN" in message


def test_nan_in_mosei_features_names_the_sample(tmp_path):
    obj, _ = mosei_layout()
    obj["valid"]["vision"][1, 10, 0] = np.nan
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MerkitError) as caught:
        read_data(path)
    message = str(caught.value)
    assert str(path) in message and "visual" in message and "NaN" in message
    assert "valid_00001" in message


class PlainRecord:
    """A harmless class; still, the restricted unpickler must not import it."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _with_counter(items):
    items["videoSentence"] = collections.Counter(items["videoSentence"])


def _with_custom_class(items):
    key = IEMOCAP_TRAIN[0]
    items["videoSentence"][key] = [PlainRecord(s) for s in items["videoSentence"][key]]


@pytest.mark.parametrize(
    ("mutate", "refused_name"),
    [(_with_counter, "collections.Counter"), (_with_custom_class, "PlainRecord")],
    ids=["counter", "custom-class"],
)
@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "sdt-pickle"])
def test_non_plain_data_pickle_is_refused(tmp_path, mutate, refused_name, protocol, fmt):
    written = write_feature_pickle(tmp_path / "objects.pkl", "sdt-iemocap", mutate=mutate, protocol=protocol)
    with pytest.raises(MerkitError) as caught:
        read_data(written.path, format=fmt)
    message = str(caught.value)
    assert "--trust-pickle" in message
    assert refused_name in message
    assert str(written.path) in message


@pytest.mark.parametrize("protocol", [2, 4])
def test_trusted_plain_data_pickle_loads(tmp_path, protocol):
    written = write_feature_pickle(tmp_path / "objects.pkl", "sdt-iemocap", mutate=_with_counter, protocol=protocol)
    bundle = read_data(written.path, trust_pickle=True)
    check_feature_bundle(bundle, written)
    assert isinstance(load_pickle(written.path, trust=True)[9], collections.Counter)
    # trusting one read does not make later reads trusting
    with pytest.raises(MerkitError, match="--trust-pickle"):
        read_data(written.path, format="sdt-pickle")


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fmt", ["auto", "sdt-pickle", "dialoguegcn-pickle", "mosei-pickle"])
def test_code_running_pickle_is_refused_and_not_run(tmp_path, protocol, fmt):
    marker = tmp_path / "pwned"
    key = IEMOCAP_TRAIN[0]

    def inject(items):
        items["videoSentence"][key][0] = _RunsCommand(f"touch {marker}")

    written = write_feature_pickle(tmp_path / "evil.pkl", "sdt-iemocap", mutate=inject, protocol=protocol)
    assert b"system" in written.path.read_bytes()
    with pytest.raises(MerkitError) as caught:
        read_data(written.path, format=fmt)
    assert "--trust-pickle" in str(caught.value)
    assert "system" in str(caught.value)
    assert str(written.path) in str(caught.value)
    assert not marker.exists()
    with pytest.raises(MerkitError, match="--trust-pickle"):
        load_pickle(written.path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9, 0.999])
@pytest.mark.parametrize("layout", ["sdt-iemocap", "mosei"])
def test_truncated_pickle_is_a_readable_error(tmp_path, protocol, fraction, layout):
    path = tmp_path / "truncated.pkl"
    if layout == "mosei":
        obj, _ = mosei_layout()
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    else:
        write_feature_pickle(path, layout, protocol=protocol)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    for fmt in ("auto", "sdt-pickle", "mosei-pickle"):
        with pytest.raises(MerkitError) as caught:
            read_data(path, format=fmt)
        message = str(caught.value)
        assert str(path) in message
        assert "truncated" in message or "corrupt" in message


def test_truncated_torch_file_is_a_readable_error(tmp_path):
    torch = pytest.importorskip("torch")
    obj, _ = mosei_layout(keys=("src-text", "src-visual", "src-audio"), stacked=False, mmsa_extras=False)
    path = tmp_path / "mosei.pt"
    torch.save(obj, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MerkitError) as caught:
        read_data(path, format="mosei-pickle")
    assert str(path) in str(caught.value)


def test_meld_csv_given_as_sdt_pickle(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
        '1,"Oh, hi.",Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
    )
    assert read_data(path).corpus.name == "meld"  # sanity: it is a real MELD CSV
    with pytest.raises(MerkitError) as caught:
        read_data(path, format="sdt-pickle")
    assert str(path) in str(caught.value)
    assert "sdt-pickle" in str(caught.value)


def test_nine_item_pickle_given_as_sdt_pickle(tmp_path):
    written = write_feature_pickle(tmp_path / "IEMOCAP_features.pkl", "dgcn-iemocap")
    with pytest.raises(MerkitError) as caught:
        read_data(written.path, format="sdt-pickle")
    assert str(written.path) in str(caught.value)


@pytest.mark.parametrize("obj", [{"a": 1}, [1, 2, 3], "text", list(range(12))], ids=["dict", "short-list", "str", "12-ints"])
def test_other_pickles_are_not_feature_pickles(tmp_path, obj):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    for fmt in ("auto", "sdt-pickle", "dialoguegcn-pickle", "mosei-pickle"):
        with pytest.raises(MerkitError) as caught:
            read_data(path, format=fmt)
        assert str(path) in str(caught.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pkl"
    for fmt in ("auto", "sdt-pickle"):
        with pytest.raises(MerkitError) as caught:
            read_data(path, format=fmt)
        assert str(path) in str(caught.value)
