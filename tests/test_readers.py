"""Readers of the text corpora (real data where present) and of a user's own files."""

import csv
import json
import pickle

import pytest
from conftest import shared

from merkit.data import read_data
from merkit.data.formats import available_formats
from merkit.data.formats.meld_csv import parse_time
from merkit.errors import MerkitError

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def split_counts(corpus):
    stats = corpus.stats()["splits"]
    return {split: (entry["dialogues"], entry["utterances"]) for split, entry in stats.items()}


def test_every_format_is_registered():
    assert set(available_formats()) >= {
        "meld-csv", "iemocap-cosmic", "goemotions-tsv", "sdt-pickle", "dialoguegcn-pickle",
        "mosei-pickle", "jsonl", "csv", "synthetic", "store",
    }  # fmt: skip


# ---------------------------------------------------------------- real data
def test_meld_real_counts_labels_and_times():
    corpus = read_data(shared("meld")).corpus
    assert split_counts(corpus) == {"train": (1038, 9989), "valid": (114, 1109), "test": (280, 2610)}
    assert corpus.labels.names == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    train = corpus.stats()["splits"]["train"]["labels"]
    assert list(train.values()) == [4710, 1205, 268, 683, 1743, 271, 1109]
    first = next(corpus.utterances())
    assert first.speaker == "Chandler" and first.sentiment == "neutral"
    assert first.start == pytest.approx(16 * 60 + 16.059) and first.end == pytest.approx(16 * 60 + 21.731)
    assert "company’s" in first.text  # curly quote kept, not "uncurled"


def test_iemocap_real_counts():
    corpus = read_data(shared("iemocap")).corpus
    assert split_counts(corpus) == {"train": (108, 5163), "valid": (12, 647), "test": (31, 1623)}
    assert list(corpus.stats()["labels"].values()) == [648, 1084, 1708, 1103, 1041, 1849]
    assert {u.speaker for u in corpus.utterances()} == {"M", "F"}
    assert all(d.startswith("Ses05") for d in corpus.splits["test"])


def test_goemotions_real_counts_are_multi_label():
    corpus = read_data(shared("goemotions")).corpus
    assert corpus.labels.multi_label
    assert split_counts(corpus) == {"train": (43410, 43410), "valid": (5426, 5426), "test": (5427, 5427)}
    train = corpus.stats()["splits"]["train"]
    assert train["labels"] == {
        "anger": 5579, "disgust": 793, "fear": 726, "joy": 17410, "neutral": 14219, "sadness": 3263, "surprise": 5367,
    }  # fmt: skip
    assert 0.07 < train["multi_label_utterances"] / 43410 < 0.11


def _real_meld_rows(limit_rows_with_non_ascii: int = 40):
    with open(shared("meld") / "train_sent_emo.csv", encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if any(ord(c) > 127 for c in row["Utterance"])]
    return rows[:limit_rows_with_non_ascii]


def _write_meld(path, rows, encoding="utf-8", text=lambda t: t):
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "Utterance": text(row["Utterance"])})


@pytest.mark.parametrize(
    ("damage", "encoding", "lossy"),
    [
        (lambda t: t.encode("utf-8").decode("latin-1"), "utf-8", 0),  # mustâ\x80\x99ve
        (lambda t: t.encode("cp1252").decode("latin-1"), "utf-8", 0),  # must\x92ve, as in the raw MELD release
        (lambda t: t, "cp1252", 0),  # a file saved as cp1252
        # cp1252 has no character for some UTF-8 bytes; dropping them loses those characters for good.
        (lambda t: t.encode("utf-8").decode("cp1252", errors="ignore"), "utf-8", 3),
    ],
)
def test_meld_mojibake_is_repaired_on_real_rows(tmp_path, damage, encoding, lossy):
    rows = _real_meld_rows()
    assert len(rows) == 40, "expected real rows with non-ASCII punctuation"
    path = tmp_path / "train_sent_emo.csv"
    _write_meld(path, rows, encoding=encoding, text=damage)
    damaged = [u.text for u in read_data(path, repair=False).corpus.utterances()]
    texts = [u.text for u in read_data(path).corpus.utterances()]
    originals = [r["Utterance"] for r in sorted(rows, key=lambda r: (int(r["Dialogue_ID"]), int(r["Utterance_ID"])))]
    if encoding == "utf-8":
        assert sum(a != b for a, b in zip(damaged, originals, strict=True)) == len(rows)
    assert sum(a == b for a, b in zip(texts, originals, strict=True)) >= len(rows) - lossy


def test_meld_quoted_commas_survive(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(
        MELD_HEADER + '1,"Well, no, I said ""hi, there"".",Ross,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,500"\n'
    )
    utterance = next(read_data(path).corpus.utterances())
    assert utterance.text == 'Well, no, I said "hi, there".'
    assert parse_time("00:00:02,500") == 2.5


# ---------------------------------------------------------------- bad inputs
def test_truncated_meld_csv_names_file_and_line(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(MELD_HEADER + '1,hello,Ross,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,500"\n2,"cut off here')
    with pytest.raises(MerkitError) as info:
        read_data(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value) and "truncated" in str(info.value)


def test_row_with_missing_fields_is_reported(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(MELD_HEADER + "1,hello,Ross,joy,positive,0,0\n")
    with pytest.raises(MerkitError, match=r"line 2: row has 7 fields, the header has 11"):
        read_data(path, format="meld-csv")


def test_wrong_column_is_reported(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(MELD_HEADER.replace("Emotion", "Emo") + "1,hi,Ross,joy,positive,0,0,1,1,0:0:1.0,0:0:2.0\n")
    with pytest.raises(MerkitError, match="line 1: missing column.s. Emotion"):
        read_data(path, format="meld-csv")


def test_unknown_meld_label_names_the_line(tmp_path):
    path = tmp_path / "train_sent_emo.csv"
    path.write_text(MELD_HEADER + '1,hi,Ross,happiness,positive,0,0,1,1,"00:00:01,000","00:00:02,000"\n')
    with pytest.raises(MerkitError, match=r"line 2: unknown label 'happiness'; known labels: neutral"):
        read_data(path)


def test_iemocap_pickle_with_empty_dialogue(tmp_path):
    path = tmp_path / "iemocap.pkl"
    data = [{"d1": ["M"], "d2": []}, {"d1": [0], "d2": []}, {"d1": ["hi"], "d2": []}, ["d1", "d2"], [], []]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(MerkitError, match="dialogue 'd2': empty dialogue") as info:
        read_data(path)
    assert str(path) in str(info.value)


def test_file_that_is_not_what_format_says(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"dialogue_id": "a", "text": "hi"}\n')
    with pytest.raises(MerkitError, match="does not look like the 'meld-csv' format"):
        read_data(path, format="meld-csv")
    with pytest.raises(MerkitError, match="unknown format 'nope'"):
        read_data(path, format="nope")


# ---------------------------------------------------------------- user files
def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_user_jsonl_with_media_and_splits(tmp_path):
    rows = [
        {"dialogue_id": "d1", "utterance_id": "u1", "speaker": "A", "text": "I won!", "label": "joy", "split": "train",
         "audio": "clips/d1_u1.wav", "start": 0.0, "end": 1.5},
        {"dialogue_id": "d1", "speaker": "B", "text": "No way.", "label": "surprise", "split": "train"},
        {"dialogue_id": "d2", "speaker": "A", "text": "Go away.", "label": "anger", "split": "dev"},
    ]  # fmt: skip
    corpus = read_data(_jsonl(tmp_path / "mine.jsonl", rows)).corpus
    assert corpus.labels.names == ("anger", "joy", "surprise")
    assert corpus.splits == {"train": ("d1",), "valid": ("d2",), "test": ()}
    first = next(corpus.utterances())
    assert first.id == "d1/u1" and first.media["audio"] == str((tmp_path / "clips/d1_u1.wav").resolve())
    assert [u.id for u in corpus.dialogues[0].utterances] == ["d1/u1", "d1/1"]


def test_user_csv_multi_label_with_fixed_class_order(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("dialogue_id,speaker,text,label,split\nd1,A,hi,joy;surprise,train\nd1,B,meh,,train\n")
    corpus = read_data(path, labels="joy,anger,surprise").corpus
    assert corpus.labels.multi_label and corpus.labels.names == ("joy", "anger", "surprise")
    assert [u.label for u in corpus.utterances()] == [(0, 2), ()]


def test_user_file_without_split_gets_a_deterministic_split(tmp_path):
    rows = [{"dialogue_id": f"d{i}", "text": "x", "label": "a"} for i in range(50)]
    first = read_data(_jsonl(tmp_path / "a.jsonl", rows)).corpus.splits
    second = read_data(_jsonl(tmp_path / "b.jsonl", rows)).corpus.splits
    assert first == second and len(first["train"]) > len(first["test"]) > 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"dialogue_id": "d", "utterance_id": "1", "label": "a"}, {"dialogue_id": "d", "utterance_id": "1", "label": "a"}],
         "duplicate utterance id 'd/1'"),
        ([{"dialogue_id": "d", "label": "happy"}], None),
        ([{"text": "no dialogue"}], "line 1: missing dialogue_id"),
        ([{"dialogue_id": "d", "split": "training"}], "line 1: unknown split 'training'"),
        ([{"dialogue_id": "d", "start": "soon"}], "line 1: start 'soon' is not a number"),
    ],
)  # fmt: skip
def test_user_jsonl_errors(tmp_path, rows, message):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    if message is None:  # an unknown label only exists relative to a declared class list
        with pytest.raises(MerkitError, match="line 1: unknown label 'happy'"):
            read_data(path, labels="joy,anger")
        return
    with pytest.raises(MerkitError, match=message) as info:
        read_data(path)
    assert str(path) in str(info.value)


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"dialogue_id": "d"}\n{"dialogue_id": \n')
    with pytest.raises(MerkitError, match="line 2: not valid JSON"):
        read_data(path)


def test_example_file_shipped_with_the_package_reads():
    from importlib.resources import files

    example = files("merkit") / "examples" / "conversations.jsonl"
    corpus = read_data(str(example)).corpus
    assert corpus.num_utterances >= 6 and set(corpus.splits) == {"train", "valid", "test"}


# ---------------------------------------------------------------- user files: column names
@pytest.mark.parametrize("column", ["emotion", "Emotion", "labels", "class", "LABEL"])
def test_user_csv_recognises_common_label_column_names(tmp_path, column):
    path = tmp_path / "mine.csv"
    path.write_text(f"dialogue_id,text,{column}\nd1,hi,joy\nd2,no,anger\n")
    corpus = read_data(path).corpus
    assert corpus.labels.names == ("anger", "joy")
    assert [u.label for u in corpus.utterances()] == [1, 0]


def test_user_table_column_options_and_unknown_columns_warn_once(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("conv,turn,who,words,emo,part,wav,extra1,extra2\nc1,1,A,hi,joy,train,a.wav,x,y\nc2,1,B,yo,sad,test,b.wav,x,y\n")
    options = {"dialogue_column": "conv", "utterance_column": "turn", "speaker_column": "who", "text_column": "words",
               "label_column": "emo", "split_column": "part", "audio_column": "wav"}  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        corpus = read_data(path, **{**options, "split_column": "none"}).corpus
    assert len(caught) == 1 and "'extra1', 'extra2'" in str(caught[0].message) and "'part'" in str(caught[0].message)
    with pytest.warns(UserWarning, match="'extra1', 'extra2'"):
        corpus = read_data(path, **options).corpus
    first = next(corpus.utterances())
    assert (first.id, first.speaker, first.text, first.label) == ("c1/1", "A", "hi", 0)
    assert first.media["audio"] == str((tmp_path / "a.wav").resolve())
    assert corpus.splits["train"] == ("c1",) and corpus.splits["test"] == ("c2",) and corpus.labels.names == ("joy", "sad")
    jsonl = _jsonl(tmp_path / "mine.jsonl", [{"dialogue_id": "d", "Emotion": "joy", "mood": "x"}])
    with pytest.warns(UserWarning, match="ignoring column.s. 'mood'"):
        assert next(read_data(jsonl).corpus.utterances()).label == 0


def test_user_table_option_naming_a_missing_column_is_an_error(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("dialogue_id,text,label\nd1,hi,joy\n")
    with pytest.raises(MerkitError, match=r"label_column='emo': no such column; the file has: dialogue_id, text, label") as info:
        read_data(path, label_column="emo")
    assert str(path) in str(info.value)
    with pytest.raises(MerkitError, match="option not understood.*nope_column"):
        read_data(path, nope_column="x")


def test_user_csv_without_dialogue_ids_one_dialogue_per_row(tmp_path):
    path = tmp_path / "speech.csv"
    path.write_text("file,emotion,speaker\nclip1,happy,s1\nclip2,sad,s2\nclip3,sad,s1\n")
    with pytest.raises(MerkitError, match="missing dialogue_id column.*-o dialogue_column=none") as info:
        read_data(path)  # auto-detected as csv (used to be "cannot tell the format")
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match="'file'"):
        corpus = read_data(path, dialogue_column="none").corpus
    assert [len(d) for d in corpus.dialogues] == [1, 1, 1] and corpus.labels.names == ("happy", "sad")
    corpus = read_data(path, dialogue_column="none", utterance_column="file").corpus
    assert [d.id for d in corpus.dialogues] == ["clip1", "clip2", "clip3"]
    path.write_text("file,emotion\nclip1,happy\nclip1,sad\n")
    with pytest.raises(MerkitError, match="line 3: duplicate utterance id 'clip1'"):
        read_data(path, dialogue_column="none", utterance_column="file")


def test_one_row_dialogues_are_named_after_their_media_file(tmp_path):
    """Not ``row1``: a prediction's id must say which clip it is."""
    path = tmp_path / "speech.csv"
    path.write_text("audio,emotion\nclips/happy1.wav,happy\nclips/sad2.wav,sad\n")
    corpus = read_data(path, dialogue_column="none").corpus
    assert [d.id for d in corpus.dialogues] == ["clips/happy1", "clips/sad2"]
    assert [u.id for u in corpus.utterances()] == ["clips/happy1/0", "clips/sad2/0"]


def test_meld_csv_is_still_detected_before_the_generic_csv(tmp_path):
    path = tmp_path / "episode.csv"
    path.write_text("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n1,hi,Ross,joy,positive,0,0\n")
    from merkit.data.formats import Source, detect_format

    assert detect_format(Source(path)) == "meld-csv"
    path.write_text("dialogue_id,text\nd,hi\n")
    assert detect_format(Source(path)) == "csv"
