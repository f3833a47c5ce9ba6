"""Conformance suite of the reader registry: every registered format passes the same checks.

Parametrised over :func:`merkit.data.formats.available_formats`, so a newly registered reader is
checked as soon as it has a fixture in ``FIXTURES`` (the suite fails naming a reader without one).
Each fixture is a small input in the format's published layout, built by the test (the feature
pickles and the M3ED file with the builders of ``test_feature_pickles.py`` and ``test_lddu.py``).
Each reader must:

* detect its own fixture, and auto-detection must pick it;
* refuse every other reader's fixture with its own ``detect``, so that which reader reads an input
  never depends on the order readers are tried in (the one exception, the generic CSV reader that
  takes any ``.csv`` after the corpora's own CSV readers, is listed in ``FALLBACKS`` with its reason);
* survive a round trip through the feature store: read → store → read back keeps the dialogues,
  utterances (ids, texts, labels, speakers, times, media), splits, label set and features.

The same detection and round trip run on the real corpora of ``../shared/data`` (their published
layouts as downloaded; skipped when absent, the round trips marked slow).
"""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest

from merkit.data import open_store, read_data, write_store
from merkit.data.formats import Source, available_formats, detect_format, get_reader
from conftest import shared
from test_feature_pickles import mosei_layout, write_feature_pickle

FORMATS = list(available_formats())

# (reader, fixture it accepts though the fixture is another reader's): why that is right.
FALLBACKS = {
    ("csv", "meld-csv-file"): "the generic CSV reader takes any .csv; MELD's own reader is tried first",
}


# ------------------------------------------------------------------ fixtures, one per reader (and variants)
def _meld_rows(split: str) -> list[list[str]]:
    header = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
    lines = [("Oh my God, he’s back!", "Rachel", "surprise", "positive"), ("So what, you’re gonna go?", "Ross", "neutral", "neutral")]
    rows = [header]
    for dialogue in (0, 1):
        for turn, (text, speaker, emotion, sentiment) in enumerate(lines):
            rows.append([str(len(rows)), f"{text} ({split})", speaker, emotion, sentiment, str(dialogue), str(turn), "3", "7",
                         f"00:16:{10 + turn:02d},059", f"00:16:{11 + turn:02d},500"])  # fmt: skip
    return rows


def _write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _meld(root):
    folder = root / "meld"
    folder.mkdir()
    for split, name in (("train", "train_sent_emo.csv"), ("dev", "dev_sent_emo.csv"), ("test", "test_sent_emo.csv")):
        _write_csv(folder / name, _meld_rows(split))
    return folder, {}


def _meld_file(root):
    return _write_csv(root / "train_sent_emo.csv", _meld_rows("train")), {}


def _iemocap(root):
    dialogues = {"Ses01F_impro01": 3, "Ses02M_script01_1": 2, "Ses05F_impro02": 2, "Ses04F_impro03": 2}
    speakers = {d: ["MF"[t % 2] for t in range(n)] for d, n in dialogues.items()}
    labels = {d: [(t + len(d)) % 6 for t in range(n)] for d, n in dialogues.items()}
    sentences = {d: [f"turn {t} of {d}." for t in range(n)] for d, n in dialogues.items()}
    ids = list(dialogues)
    folder = root / "iemocap"
    folder.mkdir()
    (folder / "iemocap.pkl").write_bytes(pickle.dumps([speakers, labels, sentences, ids[:2], ids[2:3], ids[3:]], protocol=2))
    return folder, {}


def _iemocap_file(root):
    folder, options = _iemocap(root)
    return folder / "iemocap.pkl", options


def _images_in_splits(root):
    from PIL import Image

    folder = root / "fer"
    for split, subjects in (("train", (1, 2, 3, 4)), ("test", (5, 6))):
        for label in ("angry", "happy"):
            for subject in subjects:
                path = folder / split / label / f"P{subject}_{label}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((48, 48), 30 * subject, dtype=np.uint8)).save(path)
    return folder, {"speaker_pattern": r"^(P\d+)_", "valid_fraction": 0.25}


def _goemotions(root):
    folder = root / "goemotions"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        lines = [f"What a {split} day [NAME]!\t3,6\t{split}a1", f"meh\t4\t{split}b2", f"no way\t1\t{split}c3"]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", "utf-8")
    return folder, {}


def _goemotions_file(root):
    path = root / "test.tsv"
    path.write_text("so proud of you\t3\tx1\nugh\t0,1\tx2\n", "utf-8")
    return path, {}


def _ravdess(root):
    folder = root / "ravdess"
    for actor in (1, 2, 17, 19):
        for emotion in (1, 5):
            clip = folder / "audio" / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.flac"
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.write_bytes(b"")  # the reader reads names only
    return folder, {}


def _images(root):
    from PIL import Image

    folder = root / "ckplus"
    for label in ("happy", "sad"):
        for subject in range(1, 6):
            path = folder / label / f"S{subject:03d}_001_00000{label == 'sad' and 2 or 1}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((48, 48), 40 * subject, dtype=np.uint8)).save(path)
    return folder, {"speaker_pattern": r"^(S\d+)_", "valid_fraction": 0.2, "test_fraction": 0.2}


def _table_rows():
    return [
        {"dialogue_id": f"cafe{d}", "utterance_id": str(t), "speaker": "Ana" if t % 2 == 0 else "Ben",
         "text": f"line {t}, at the café", "label": ("joy", "anger", "neutral")[(d + t) % 3],
         "split": ("train", "valid", "test", "train")[d], "start": float(t), "end": t + 0.5}
        for d in range(4) for t in range(3)
    ]  # fmt: skip


def _jsonl(root):
    path = root / "conversations.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _table_rows()), "utf-8")
    return path, {}


def _csv(root):
    rows = _table_rows()
    return _write_csv(root / "conversations.csv", [list(rows[0]), *([str(v) for v in row.values()] for row in rows)]), {}


def _sdt(root):
    return write_feature_pickle(root / "iemocap_multimodal_features.pkl", "sdt-iemocap", protocol=2, dims={"text": 8, "audio": 6, "visual": 4}).path, {}


def _sdt_meld(root):
    return write_feature_pickle(root / "meld_multimodal_features.pkl", "sdt-meld", dims={"text": 8, "audio": 6, "visual": 4}).path, {}


def _dialoguegcn(root):
    return write_feature_pickle(root / "IEMOCAP_features.pkl", "dgcn-iemocap", protocol=2, dims={"text": 8, "audio": 6, "visual": 4}).path, {}


def _mmgcn(root):
    return write_feature_pickle(root / "MELD_features_raw1.pkl", "mmgcn-meld", dims={"text": 8, "audio": 6, "visual": 4}).path, {}


def _mosei(root):
    obj, _ = mosei_layout(lengths=(8, 8, 8), dims=(8, 4, 10))
    path = root / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path, {}


def _carat_mosei(root):
    torch = pytest.importorskip("torch")
    obj, _ = mosei_layout(keys=("src-text", "src-visual", "src-audio"), lengths=(8, 8, 8), dims=(8, 4, 10), stacked=False, mmsa_extras=False)
    path = root / "mosei_senti_data.pt"
    torch.save(obj, path)
    return path, {}


def _m3ed(root):
    torch = pytest.importorskip("torch")
    from test_lddu import _m3ed_carat

    path = root / "m3ed.pt"
    torch.save(_m3ed_carat(widths=(8, 6, 4), lengths=((3, 5), (2,), (4,))), path)
    return path, {}


def _store(root):
    bundle = read_data("synthetic", dialogues=6, min_turns=2, max_turns=4)
    folder = root / "store"
    write_store(folder, bundle.corpus, bundle.features)
    return folder, {}


def _synthetic(root):
    return "synthetic", {"dialogues": 6, "min_turns": 2, "max_turns": 4}


# fixture name -> (reader that must read it, builder)
FIXTURES = {
    "store": ("store", _store),
    "ravdess": ("ravdess", _ravdess),
    "meld-csv": ("meld-csv", _meld),
    "meld-csv-file": ("meld-csv", _meld_file),
    "iemocap-cosmic": ("iemocap-cosmic", _iemocap),
    "iemocap-cosmic-file": ("iemocap-cosmic", _iemocap_file),
    "goemotions-tsv": ("goemotions-tsv", _goemotions),
    "goemotions-tsv-file": ("goemotions-tsv", _goemotions_file),
    "sdt-pickle": ("sdt-pickle", _sdt),
    "sdt-pickle-meld": ("sdt-pickle", _sdt_meld),
    "dialoguegcn-pickle": ("dialoguegcn-pickle", _dialoguegcn),
    "dialoguegcn-pickle-meld": ("dialoguegcn-pickle", _mmgcn),
    "m3ed-torch": ("m3ed-torch", _m3ed),
    "mosei-pickle": ("mosei-pickle", _mosei),
    "mosei-pickle-carat": ("mosei-pickle", _carat_mosei),
    "image-folder": ("image-folder", _images),
    "image-folder-splits": ("image-folder", _images_in_splits),
    "jsonl": ("jsonl", _jsonl),
    "csv": ("csv", _csv),
    "synthetic": ("synthetic", _synthetic),
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Fixture name → (path or spec, read options), each in its own folder."""
    built = {}
    for name, (_, builder) in FIXTURES.items():
        built[name] = builder(tmp_path_factory.mktemp(name))
    return built


def test_every_registered_reader_has_a_fixture():
    missing = sorted(set(FORMATS) - {reader for reader, _ in FIXTURES.values()})
    assert not missing, f"readers without a conformance fixture (add one to FIXTURES): {missing}"


@pytest.mark.parametrize("fixture", FIXTURES)
def test_auto_detection_picks_the_fixtures_own_reader(fixture, fixtures):
    reader, _ = FIXTURES[fixture]
    spec, _ = fixtures[fixture]
    assert get_reader(reader).detect(Source(spec))
    assert detect_format(Source(spec)) == reader


@pytest.mark.parametrize("reader", FORMATS)
def test_detect_refuses_every_other_readers_fixture(reader, fixtures):
    detector = get_reader(reader)
    accepted = [
        fixture for fixture, (owner, _) in FIXTURES.items()
        if owner != reader and (reader, fixture) not in FALLBACKS and detector.detect(Source(fixtures[fixture][0]))
    ]  # fmt: skip
    assert not accepted, f"{reader!r} detects the fixtures of other readers: {accepted}"
    stale = [fixture for r, fixture in FALLBACKS if r == reader and not detector.detect(Source(fixtures[fixture][0]))]
    assert not stale, f"FALLBACKS lists {stale} for {reader!r}, which no longer detects them: drop the entries"


def _same_features(a, b, where: str) -> None:
    assert set(a) == set(b), where
    for modality in a:
        x, y = a[modality], b[modality]
        assert (x.level, x.dim, x.extractor, x.source) == (y.level, y.dim, y.extractor, y.source), f"{where}: {modality}"
        assert x.settings == y.settings, f"{where}: {modality} settings"
        np.testing.assert_array_equal(np.asarray(x.values), np.asarray(y.values), err_msg=f"{where}: {modality}")
        np.testing.assert_array_equal(np.asarray(x.present), np.asarray(y.present), err_msg=f"{where}: {modality}")
        assert (x.offsets is None) == (y.offsets is None), f"{where}: {modality}"
        if x.offsets is not None:
            np.testing.assert_array_equal(np.asarray(x.offsets), np.asarray(y.offsets), err_msg=f"{where}: {modality}")


def check_round_trip(spec, reader: str, options: dict, store, where: str) -> None:
    """read → store → read back keeps everything the reader read."""
    bundle = read_data(spec, format=reader, **options)
    corpus = bundle.corpus
    assert corpus.num_utterances > 0 and any(u.label is not None for u in corpus.utterances())
    write_store(store, corpus, bundle.features)
    back = read_data(store)
    assert back.corpus == corpus
    # spelled out, so that a failure names what was lost
    pairs = list(zip(corpus.utterances(), back.corpus.utterances(), strict=True))
    for before, after in pairs:
        assert (after.id, after.text, after.label, after.speaker) == (before.id, before.text, before.label, before.speaker)
        assert (after.start, after.end, dict(after.media), dict(after.meta)) == (before.start, before.end, dict(before.media), dict(before.meta))
    assert back.corpus.splits == corpus.splits and back.corpus.labels == corpus.labels
    _same_features(bundle.features, back.features, where)
    _same_features(bundle.features, open_store(store).all_features(), where)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_round_trip_through_the_store_keeps_everything(fixture, fixtures, tmp_path):
    spec, options = fixtures[fixture]
    check_round_trip(spec, FIXTURES[fixture][0], options, tmp_path / "store", fixture)


# ------------------------------------------------------------------ the real corpora, as published
REAL = {  # folder under ../shared/data -> (its reader, read options)
    "meld": ("meld-csv", {}),
    "iemocap": ("iemocap-cosmic", {}),
    "goemotions": ("goemotions-tsv", {}),
    "ravdess": ("ravdess", {}),
    "ckplus": ("image-folder", {"speaker_pattern": r"^(S\d+)_"}),
    "fer2013": ("image-folder", {}),
}


@pytest.mark.parametrize("corpus", REAL)
def test_real_corpora_are_detected_by_their_own_reader_only(corpus):
    path = shared(corpus)
    reader, _ = REAL[corpus]
    accepted = [name for name in FORMATS if get_reader(name).detect(Source(path))]
    assert accepted == [reader]
    assert detect_format(Source(path)) == reader


@pytest.mark.slow
@pytest.mark.parametrize("corpus", [c for c in REAL if c != "fer2013"])  # FER2013: 28k images, the same reader as CK+
def test_real_corpora_round_trip_through_the_store(corpus, tmp_path):
    reader, options = REAL[corpus]
    check_round_trip(shared(corpus), reader, options, tmp_path / "store", corpus)
