"""`merkit data add-features`: precomputed features (tables, OpenFace CSVs, .npy) attached to a store."""

import hashlib
import json
import sys

import numpy as np
import pytest
from conftest import run_main, shared
from typer.testing import CliRunner

from merkit.cli import app
from merkit.data import build_corpus, open_store, read_data, stack_rows, write_store
from merkit.data.corpus import LabelSchema, Dialogue, Utterance
from merkit.data.external import add_features, import_features
from merkit.errors import MerkitError

OPENFACE_HEADER = "frame, face_id, timestamp, confidence, success, AU01_r, AU02_r, AU01_c"
TURNS = [  # (dialogue, utterance, split, video clip or None)
    ("cafe", "1", "train", "cafe_1"), ("cafe", "2", "train", "cafe_2"), ("cafe", "3", "train", "cafe_3"),
    ("bus", "1", "valid", None), ("bus", "2", "valid", None), ("solo", "1", "test", None), ("quiet", "1", "test", None),
]  # fmt: skip
IDS = [f"{d}/{u}" for d, u, _, _ in TURNS]


@pytest.fixture
def store(tmp_path):
    """A 7-utterance store (one multi-turn dialogue with video files, two one-turn dialogues) with text features."""
    lines = [
        {"dialogue_id": d, "utterance_id": u, "text": f"turn {u}", "label": "joy" if i % 2 else "neutral", "split": s}
        | ({"video": f"clips/{clip}.mp4"} if clip else {})
        for i, (d, u, s, clip) in enumerate(TURNS)
    ]
    corpus_file = tmp_path / "talk.jsonl"
    corpus_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    corpus = read_data(corpus_file).corpus
    assert [u.id for u in corpus.utterances()] == IDS
    text = stack_rows("text", [np.full(4, i, np.float32) for i in range(len(IDS))], ids=IDS, extractor="test")
    path = tmp_path / "store"
    write_store(path, corpus, {"text": text})
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def au_table(tmp_path, sep=",", name="aus.csv", rows=None):
    """A table keyed by utterance_id; bus/2 has no row and 'ghost' matches nothing."""
    header = ["utterance_id", "AU01_r", "note", "AU02_r", "AU01_c", "AU02_c"]
    rows = rows or [[uid, f"{i}.5", "x", f"{i}", "1", "0"] for i, uid in enumerate(IDS) if uid != "bus/2"] + [["ghost", "9", "x", "9", "9", "9"]]
    return write(tmp_path / name, "\n".join(sep.join(r) for r in [header, *rows]) + "\n")


def openface_folder(tmp_path):
    """OpenFace-style CSVs named after the video files / one-turn dialogues; 'quiet' has no good frame."""
    folder = tmp_path / "openface"
    frames = {
        "cafe_1": [(0.98, 1, 1.0, 2.0, 1), (0.50, 1, 9.0, 9.0, 9), (0.95, 1, 3.0, 4.0, 0)],
        "cafe_2": [(0.90, 0, 9.0, 9.0, 9), (0.85, 1, 2.0, 2.0, 1)],
        "cafe_3": [(0.99, 1, 0.0, 1.0, 0)],
        "solo": [(0.81, 1, 5.0, 5.0, 1)],
        "quiet": [(0.30, 1, 1.0, 1.0, 1), (0.99, 0, 1.0, 1.0, 1)],
    }
    for clip, rows in frames.items():
        body = [f"{n}, 0, {n / 30:.3f}, {c}, {s}, {a}, {b}, {k}" for n, (c, s, a, b, k) in enumerate(rows, 1)]
        write(folder / f"{clip}.csv", "\n".join([OPENFACE_HEADER, *body]) + "\n")
    return folder


def test_csv_table_with_glob_columns_masks_missing_rows_and_records_provenance(tmp_path, store):
    source = au_table(tmp_path)
    with pytest.warns(UserWarning, match=r"1 key\(s\).*'ghost'"):
        written, report = add_features(store, "visual", source, columns="AU*_c,AU*_r")
    assert report.columns == ["AU01_c", "AU02_c", "AU01_r", "AU02_r"]  # pattern order, then file order
    assert report.key == "utterance_id" and report.matched == 6 and report.unmatched_keys == ["ghost"]
    assert report.missing == {"bus/2": "no row in the source"}
    visual = written.features("visual")
    np.testing.assert_array_equal(visual.row(1), [1, 0, 1.5, 1])
    assert visual.present.tolist() == [uid != "bus/2" for uid in IDS]  # masked, not a zero row passed as data
    assert sorted(written.modalities) == ["text", "visual"]  # the other modality is kept
    entry = written.describe("visual")
    assert entry["extractor"] == "external" and entry["source"] == str(source.resolve())
    settings = entry["settings"]
    assert settings["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (settings["columns"], settings["key"], settings["frames"]) == (report.columns, "utterance_id", "mean")
    assert (settings["matched"], settings["missing"], settings["unmatched_keys"]) == (6, 1, 1)


def test_tsv_takes_every_numeric_column_by_default(tmp_path, store):
    rows = [[uid, str(i), "text", "1e-3"] for i, uid in enumerate(IDS)]
    source = write(tmp_path / "f.tsv", "id\tv1\tnote\tv2\n" + "".join("\t".join(r) + "\n" for r in rows))
    features, report = import_features(store, "audio", source)
    assert report.key == "id" and report.columns == ["v1", "v2"] and features.present.all()
    np.testing.assert_allclose(features.values[3], [3, 1e-3])


def test_table_keys_match_media_stems_and_one_turn_dialogues(tmp_path, store):
    source = write(tmp_path / "t.csv", "clip,a\ncafe_2,2\ncafe_3,3\nsolo,7\n")
    features, report = import_features(store, "visual", source)
    assert report.matched_by == {"media": 2, "dialogue": 1}
    assert features.present.tolist() == [False, True, True, False, False, True, False]
    assert features.values[5, 0] == 7


def test_openface_folder_drops_untracked_frames_and_masks_empty_clips(tmp_path, store):
    features, report = import_features(store, "visual", openface_folder(tmp_path), columns="AU*_r")
    assert report.kind == "openface" and report.columns == ["AU01_r", "AU02_r"] and report.dim == 2
    np.testing.assert_allclose(features.row(0), [2.0, 3.0])  # frames 1 and 3 (frame 2 has confidence 0.5)
    np.testing.assert_allclose(features.row(1), [2.0, 2.0])  # frame 1 has success 0
    assert report.dropped_frames == 4
    assert set(report.missing) == {"bus/1", "bus/2", "quiet/1"}
    assert "no frame with success=1 and confidence >= 0.8" in report.missing["quiet/1"]
    assert not features.present[IDS.index("quiet/1")]
    assert features.settings["min_confidence"] == 0.8 and features.settings["sha256"]


def test_openface_frame_sequences(tmp_path, store):
    folder = openface_folder(tmp_path)
    features, report = import_features(store, "visual", folder, frames="sequence", min_confidence=0.4)
    assert features.level == "sequence" and report.columns == ["AU01_r", "AU02_r", "AU01_c"]
    np.testing.assert_allclose(features.row(0), [[1, 2, 1], [9, 9, 9], [3, 4, 0]])
    assert len(features.row(1)) == 1 and features.row(IDS.index("bus/1")).shape == (0, 3)
    assert not features.present[IDS.index("quiet/1")]  # its one confident frame has success 0
    written = write_store(store, open_store(store).corpus, {"visual": features})
    np.testing.assert_allclose(written.features("visual").row(5), [[5, 5, 1]])


def test_npy_folder_vectors_and_frames(tmp_path, store):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "cafe_1.npy", np.array([1.0, 2.0]))
    np.save(folder / "cafe_2.npy", np.array([[1.0, 2.0], [3.0, 6.0]]))
    np.save(folder / "solo.npy", np.zeros((0, 2)))
    features, report = import_features(store, "audio", folder)
    np.testing.assert_allclose(features.values[:2], [[1, 2], [2, 4]])
    assert report.missing["solo/1"] == "no frames (0 rows)" and features.present.sum() == 2
    with pytest.raises(MerkitError, match="cafe_1.npy.*shape \\[2\\]"):
        import_features(store, "audio", folder, frames="sequence")
    (folder / "cafe_1.npy").unlink()
    sequences, _ = import_features(store, "audio", folder, frames="sequence")
    np.testing.assert_allclose(sequences.row(1), [[1, 2], [3, 6]])


def bad_width(tmp_path):
    return write(tmp_path / "w.csv", "id,a,b\ncafe/1,1,2\ncafe/2,1\n"), {}, ["w.csv", "line 3", "2 fields"]


def bad_nan(tmp_path):
    return write(tmp_path / "n.csv", "id,a,b\ncafe/1,1,2\ncafe/2,nan,2\n"), {}, ["n.csv", "line 3", "'a'", "'cafe/2'"]


def bad_inf(tmp_path):
    return write(tmp_path / "i.tsv", "id\ta\ncafe/1\t1\ncafe/2\t-inf\n"), {}, ["i.tsv", "line 3", "'cafe/2'"]


def bad_duplicate(tmp_path):
    return write(tmp_path / "d.csv", "id,a\ncafe/1,1\ncafe/1,2\n"), {}, ["d.csv", "line 3", "duplicate key 'cafe/1'", "line 2"]


def bad_pattern(tmp_path):
    return au_table(tmp_path), {"columns": "AU*_r,AU99*"}, ["aus.csv", "'AU99*'", "header", "'AU01_r'"]


def bad_non_numeric(tmp_path):
    return au_table(tmp_path), {"columns": "note"}, ["aus.csv", "line 2", "'note'", "not a number"]


def bad_no_match(tmp_path):
    return write(tmp_path / "u.csv", "id,a\nnobody,1\n"), {}, ["u.csv", "none of the 1 keys", "'cafe/1'"]


def bad_key(tmp_path):
    return au_table(tmp_path), {"key": "clip_name"}, ["aus.csv", "no key column 'clip_name'"]


def bad_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", {}, ["empty", "empty folder"]


def bad_npy_width(tmp_path):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "cafe_1.npy", np.ones(3))
    np.save(tmp_path / "npy" / "cafe_2.npy", np.ones(4))
    return tmp_path / "npy", {}, ["cafe_2.npy", "4 features per row where cafe_1.npy has 3"]


def bad_npy_nan(tmp_path):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "solo.npy", np.array([[1.0, 2.0], [np.nan, 0]]))
    return tmp_path / "npy", {}, ["solo.npy", "row 1, column 0", "'solo'"]


def bad_openface_columns(tmp_path):
    folder = openface_folder(tmp_path)
    write(folder / "solo.csv", "frame, face_id, timestamp, confidence, success, AU01_r\n1, 0, 0, 0.9, 1, 1\n")
    return folder, {"columns": "AU0*"}, ["solo.csv", "header", "'AU02_r'"]


def bad_openface_nan(tmp_path):
    folder = openface_folder(tmp_path)
    write(folder / "solo.csv", OPENFACE_HEADER + "\n1, 0, 0, 0.9, 1, 1, nan, 1\n")
    return folder, {}, ["solo.csv", "line 2", "'AU02_r'", "'solo'"]


BAD = [bad_width, bad_nan, bad_inf, bad_duplicate, bad_pattern, bad_non_numeric, bad_no_match, bad_key,
       bad_empty_folder, bad_npy_width, bad_npy_nan, bad_openface_columns, bad_openface_nan]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[case.__name__ for case in BAD])
def test_bad_sources_name_the_file_and_the_place(tmp_path, store, case):
    source, options, expected = case(tmp_path)
    with pytest.raises(MerkitError) as error:
        import_features(store, "visual", source, **options)
    message = str(error.value)
    assert error.value.path and source.name in message
    for part in expected:
        assert part in message, (part, message)
    assert open_store(store).modalities == ["text"]  # nothing written


def test_bad_options(tmp_path, store):
    with pytest.raises(MerkitError, match="unknown modality 'face'.*text, audio, visual"):
        import_features(store, "face", au_table(tmp_path))
    with pytest.raises(MerkitError, match="--frames sequence needs a folder"):
        import_features(store, "visual", au_table(tmp_path), frames="sequence")
    with pytest.raises(MerkitError, match="unknown feature source"):
        import_features(store, "visual", write(tmp_path / "x.json", "{}"))


def test_parquet_table_and_a_clear_message_without_pyarrow(tmp_path, store, monkeypatch):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "aus.parquet"
    pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]}, index=pd.Index(["cafe/1", "solo/1"], name="utterance_id")).to_parquet(path)
    features, report = import_features(store, "visual", path)
    assert report.key == "utterance_id" and report.columns == ["a", "b"]
    np.testing.assert_array_equal(features.values[5], [2, 4])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MerkitError, match="aus.parquet: reading Parquet needs pandas and pyarrow: pip install"):
        import_features(store, "visual", path)


def test_cli_summary_json_and_one_line_error(tmp_path, store, capsys):
    source = au_table(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "add-features", str(store), "--modality", "visual", str(source), "--columns", "AU*_r,AU*_c"])
    assert result.exit_code == 0, result.output
    assert "6 of 7 utterances, 4-d" in result.output and "AU01_r" in result.output and "bus/2" in result.output
    assert "'ghost'" in result.output  # the unmatched-key warning
    assert open_store(store).describe("visual")["dim"] == 4
    folder = openface_folder(tmp_path)
    result = runner.invoke(app, ["data", "add-features", str(store), str(folder), "--modality", "visual", "--frames", "sequence", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kind"] == "openface" and report["missing_count"] == 3 and report["frames"] == "sequence"
    assert open_store(store).describe("visual")["level"] == "sequence"
    bad = write(tmp_path / "bad.csv", "id,a\ncafe/1,1\ncafe/2,oops\n")
    code, out, err = run_main(["data", "add-features", str(store), str(bad), "--modality", "visual"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "bad.csv" in err and "line 3" in err and "Traceback" not in err


def test_real_ravdess_action_units(tmp_path):
    table = shared("ravdess") / "face_action_units.csv"
    if not table.is_file():
        pytest.skip(f"real data {table} is not present")
    clips = [line.split(",", 1)[0] for line in table.read_text().splitlines()[1:6]]
    utterances = [Utterance(id=clip, label=0) for clip in clips]
    corpus = build_corpus(
        name="ravdess-mini", labels=LabelSchema(names=("neutral",)),
        dialogues=tuple(Dialogue(id=f"d{i}", utterances=(u,)) for i, u in enumerate(utterances)),
        splits={"train": tuple(f"d{i}" for i in range(len(clips)))},
    )  # fmt: skip
    write_store(tmp_path / "store", corpus)
    with pytest.warns(UserWarning, match="match no utterance"):  # the other 1,435 clips
        written, report = add_features(tmp_path / "store", "visual", table, columns="AU*_r,AU*_c")
    assert report.key == "clip" and report.dim == 35 and report.matched == 5 and not report.missing
    values = np.asarray(written.features("visual").values)
    assert values.shape == (5, 35) and np.isfinite(values).all()
    assert report.columns[0] == "AU01_r" and report.columns[-1] == "AU45_c"
