"""Precomputed per-utterance features from other tools, attached to a feature store as one modality.

Users often already have features (most often OpenFace action units); re-extracting them is slow
and may not reproduce the numbers a paper used. Three sources are read:

* a **table** keyed by utterance (CSV, TSV, Parquet), one row per utterance;
* a folder of **OpenFace** ``FeatureExtraction`` CSVs, one per clip (key = file stem), one row per
  frame; frames OpenFace did not track (``success == 0`` or low ``confidence``) are dropped;
* a folder of **.npy** files, one per utterance (key = file stem), ``[D]`` or frames ``[L, D]``.

Keys match an utterance id, else the stem of one of the utterance's media files, else the id of a
one-utterance dialogue. Utterances without usable features are masked (``present=False``), never
given zeros that a model would take for data, and listed in the report with the reason. The
manifest entry records the source, its SHA-256, the columns, key and frame handling, so a store
says where every number came from.
"""

from __future__ import annotations

import csv
import fnmatch
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from merkit.data.corpus import MODALITIES, Corpus
from merkit.data.features import FeatureSet, stack_rows
from merkit.data.store import FeatureStore, open_store, write_store
from merkit.errors import MerkitError

KEY_COLUMNS = ("utterance_id", "id", "clip", "file", "name")
OPENFACE_META = ("frame", "face_id", "timestamp", "confidence", "success")
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET = (".parquet", ".pq")
FRAMES = ("mean", "sequence")
EXAMPLES = 5


def _some(items: Sequence[str], limit: int = EXAMPLES) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


@dataclass
class ImportReport:
    """What an import did: the counts of the summary, and each masked utterance with its reason."""

    modality: str
    source: str
    kind: str
    key: str | None
    columns: list[str] | None
    frames: str
    dim: int
    matched: int
    missing: dict[str, str]
    unmatched_keys: list[str]
    matched_by: dict[str, int]
    dropped_frames: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing_count": len(self.missing)}


# ---------------------------------------------------------------------------- tables
@dataclass
class _Table:
    """Cells of a delimited file or Parquet table, with where each row came from (for errors)."""

    path: Path
    header: list[str]
    rows: list[list[Any]]
    places: list[str]

    def numbers(self, columns: Sequence[str]) -> np.ndarray:
        """The columns as float64 ``[rows, D]``; a cell that is no number names its row and column."""
        indices = [self.header.index(column) for column in columns]
        cells = [[row[i] for i in indices] for row in self.rows]
        try:
            return np.array(cells, dtype=np.float64).reshape(len(cells), len(indices))
        except (ValueError, TypeError):
            pass
        for row, place in zip(cells, self.places):
            for value, column in zip(row, columns):
                try:
                    float(value)
                except (ValueError, TypeError):
                    raise MerkitError(f"column {column!r} holds {value!r}, not a number", path=self.path, place=place) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def is_numeric(self, column: str) -> bool:
        try:
            self.numbers([column])
            return True
        except MerkitError:
            return False


def _read_delimited(path: Path, delimiter: str) -> _Table:
    """A CSV/TSV with the header stripped (OpenFace writes ``frame, face_id, ...``)."""
    rows, places, line = [], [], 1
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise MerkitError("empty file (no header row)", path=path)
            duplicates = [name for name, count in Counter(header).items() if count > 1]
            if duplicates:
                raise MerkitError(f"duplicate column names {duplicates}", path=path, place="header")
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise MerkitError(f"row has {len(row)} fields, the header has {len(header)}", path=path, place=f"line {line}")
                rows.append([cell.strip() for cell in row])
                places.append(f"line {line}")
    except UnicodeDecodeError:
        raise MerkitError("not UTF-8 text", path=path) from None
    except csv.Error as exc:
        raise MerkitError(f"malformed CSV ({exc})", path=path, place=f"line {line + 1}") from None
    return _Table(path, header, rows, places)


def _read_parquet(path: Path) -> _Table:
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        raise MerkitError("reading Parquet needs pandas and pyarrow: pip install pandas pyarrow (or save the table as CSV)", path=path) from None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise MerkitError(f"cannot read Parquet ({exc})", path=path) from None
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()  # the key may have been saved as the index
    rows = frame.to_numpy(dtype=object).tolist()
    return _Table(path, [str(c) for c in frame.columns], rows, [f"row {i + 1}" for i in range(len(rows))])


def _select(patterns: Sequence[str] | None, available: Sequence[str], table: _Table) -> list[str]:
    """Columns named by the patterns (fnmatch; pattern order, then file order), or every numeric one."""
    if not patterns:
        chosen = [column for column in available if table.is_numeric(column)]
        if not chosen:
            try:
                table.numbers(available)  # names the first cell that is not a number
            except MerkitError as exc:
                raise MerkitError(f"no numeric feature column: {exc.message}", path=table.path, place=exc.place) from None
            raise MerkitError("no feature column besides the key", path=table.path, place="header")
        return chosen
    chosen: list[str] = []
    for pattern in patterns:
        hits = [column for column in available if fnmatch.fnmatchcase(column, pattern)]
        if not hits:
            raise MerkitError(
                f"column pattern {pattern!r} matches no column; available: {_some(list(available), 40)}",
                path=table.path,
                place="header",
            )
        chosen += [column for column in hits if column not in chosen]
    return chosen


def _check_finite(values: np.ndarray, keys: Sequence[str], columns: Sequence[str], path: Path, places: Sequence[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise MerkitError(
            f"{values[row, column]} in column {columns[column]!r} of key {keys[row]!r} ({int(bad.sum())} such values)",
            path=path,
            place=places[row],
        )


def _from_table(path: Path, patterns, key: str | None, frames: str):
    """One row per utterance, keyed by ``key`` (default: the first of KEY_COLUMNS present)."""
    if frames == "sequence":
        raise MerkitError("a table holds one row per utterance; --frames sequence needs a folder of OpenFace CSVs or .npy files", path=path)
    table = _read_parquet(path) if path.suffix.lower() in PARQUET else _read_delimited(path, DELIMITERS[path.suffix.lower()])
    if not table.rows:
        raise MerkitError("the table has no rows", path=path)
    if key is None:
        key = next((name for name in KEY_COLUMNS if name in table.header), table.header[0])
    elif key not in table.header:
        raise MerkitError(f"no key column {key!r}; columns: {_some(table.header, 40)}", path=path, place="header")
    position = table.header.index(key)
    keys, first_place = [], {}
    for row, place in zip(table.rows, table.places):
        name = "" if row[position] is None else str(row[position]).strip()
        if not name:
            raise MerkitError(f"empty key in column {key!r}", path=path, place=place)
        if name in first_place:
            raise MerkitError(f"duplicate key {name!r} (first at {first_place[name]})", path=path, place=place)
        first_place[name] = place
        keys.append(name)
    columns = _select(patterns, [c for c in table.header if c != key], table)
    values = table.numbers(columns)
    _check_finite(values, keys, columns, path, table.places)
    return dict(zip(keys, values)), {}, columns, key, 0


# ---------------------------------------------------------------------------- folders
def _from_openface(files: list[Path], patterns, frames: str, min_confidence: float):
    """One clip per CSV; frames OpenFace could not track are dropped, a clip left with none is masked."""
    rows: dict[str, np.ndarray | None] = {}
    reasons: dict[str, str] = {}
    columns: list[str] | None = None
    dropped = 0
    for file in files:
        table = _read_delimited(file, ",")
        if columns is None:
            columns = _select(patterns, [c for c in table.header if c not in OPENFACE_META], table)
        lacking = [c for c in columns if c not in table.header]
        if lacking:
            raise MerkitError(f"lacks column(s) {_some(lacking)} that {files[0].name} has", path=file, place="header")
        keep = np.ones(len(table.rows), dtype=bool)
        if "success" in table.header:
            keep &= table.numbers(["success"])[:, 0] != 0
        if "confidence" in table.header:
            keep &= table.numbers(["confidence"])[:, 0] >= min_confidence
        values = table.numbers(columns)
        dropped += int((~keep).sum())
        if not keep.any():
            rows[file.stem] = None
            reasons[file.stem] = (
                "no frames" if not table.rows
                else f"no frame with success=1 and confidence >= {min_confidence} (of {len(table.rows)})"
            )  # fmt: skip
            continue
        kept = values[keep]
        _check_finite(kept, [file.stem] * len(kept), columns, file, [p for p, k in zip(table.places, keep) if k])
        rows[file.stem] = kept if frames == "sequence" else kept.mean(axis=0)
    return rows, reasons, columns, None, dropped


def _from_npy(files: list[Path], frames: str):
    """One array per utterance: ``[D]``, or frames ``[L, D]`` (averaged unless ``sequence``)."""
    rows: dict[str, np.ndarray | None] = {}
    reasons: dict[str, str] = {}
    width = None
    for file in files:
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise MerkitError(f"cannot read the .npy file ({exc})", path=file) from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            raise MerkitError(f"holds {getattr(array, 'dtype', type(array).__name__)}, not numbers", path=file)
        wanted = (2,) if frames == "sequence" else (1, 2)
        if array.ndim not in wanted or array.shape[-1] == 0:
            expected = "[L, D] frames" if frames == "sequence" else "[D] or [L, D]"
            raise MerkitError(f"array of shape {list(array.shape)} where {expected} was expected", path=file)
        if width is None:
            width = array.shape[-1]
        elif array.shape[-1] != width:
            raise MerkitError(f"{array.shape[-1]} features per row where {files[0].name} has {width}", path=file, place=f"shape {list(array.shape)}")
        array = array.astype(np.float64)
        bad = ~np.isfinite(array)
        if bad.any():
            index = [int(i) for i in np.argwhere(bad)[0]]
            where = f"row {index[0]}, column {index[1]}" if array.ndim == 2 else f"column {index[0]}"
            raise MerkitError(f"NaN or infinite value in column {index[-1]} of key {file.stem!r}", path=file, place=where)
        if array.ndim == 2 and len(array) == 0:
            rows[file.stem], reasons[file.stem] = None, "no frames (0 rows)"
        else:
            rows[file.stem] = array if frames == "sequence" or array.ndim == 1 else array.mean(axis=0)
    return rows, reasons, None, None, 0


def _source_files(folder: Path) -> tuple[str, list[Path]]:
    def listed(suffix: str) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix and not p.name.startswith("."))

    csvs, npys = listed(".csv"), listed(".npy")
    if csvs and npys:
        raise MerkitError("the folder mixes .csv and .npy files; keep one kind per folder", path=folder)
    if not csvs and not npys:
        raise MerkitError("empty folder: no OpenFace .csv files or .npy files in it", path=folder)
    return ("openface", csvs) if csvs else ("npy", npys)


def source_sha256(source: Path, files: Sequence[Path] = ()) -> str:
    """SHA-256 of the file, or of the sorted ``name sha256`` lines of the folder's files (as for model folders)."""
    from merkit.io import file_sha256, folder_sha256

    if source.is_file():
        return file_sha256(source)
    return folder_sha256({file.name: file_sha256(file) for file in files})


# ---------------------------------------------------------------------------- matching
def match_keys(corpus: Corpus, keys: Sequence[str], *, path: Path | None = None) -> tuple[dict[int, str], Counter, list[str]]:
    """Utterance index → key: by utterance id, else media file stem, else one-utterance dialogue id.

    Returns the matches, how many matched each way, and the keys that matched nothing. Two
    keys landing on one utterance are an error (the features would silently overwrite).
    """
    utterances = list(corpus.utterances())
    by_id = {u.id: i for i, u in enumerate(utterances)}
    by_media: dict[str, set[int]] = {}
    for index, utterance in enumerate(utterances):
        for media in utterance.media.values():
            by_media.setdefault(PurePosixPath(str(media).replace("\\", "/")).stem, set()).add(index)
    by_dialogue, start = {}, 0
    for dialogue in corpus.dialogues:
        if len(dialogue) == 1:
            by_dialogue[dialogue.id] = start
        start += len(dialogue)
    matches: dict[int, str] = {}
    ways: Counter = Counter()
    unmatched: list[str] = []
    for key in keys:
        if key in by_id:
            index, way = by_id[key], "id"
        elif len(by_media.get(key, ())) == 1:
            index, way = next(iter(by_media[key])), "media"
        elif key in by_dialogue:
            index, way = by_dialogue[key], "dialogue"
        else:
            unmatched.append(key)
            continue
        if index in matches:
            raise MerkitError(f"keys {matches[index]!r} and {key!r} both match utterance {utterances[index].id!r}", path=path)
        matches[index] = key
        ways[way] += 1
    return matches, ways, unmatched


# ---------------------------------------------------------------------------- entry points
def import_features(
    store: str | Path | Corpus | FeatureStore,
    modality: str,
    source: str | Path,
    *,
    columns: str | Sequence[str] | None = None,
    key: str | None = None,
    frames: str = "mean",
    min_confidence: float = 0.8,
) -> tuple[FeatureSet, ImportReport]:
    """Read ``source`` into a :class:`FeatureSet` aligned with the store's corpus, and a report.

    ``columns``: names or globs (``"AU*_r,AU*_c"``) of a table or OpenFace CSV; default every
    numeric column except the key (and OpenFace's frame/face_id/timestamp/confidence/success).
    ``key``: the key column of a table. ``frames``: ``mean`` (one vector per utterance) or
    ``sequence`` (keep frame rows). ``min_confidence``: OpenFace frames below it are dropped.
    Keys that match no utterance give a warning (also in ``report.warnings``).
    """
    if modality not in MODALITIES:
        raise MerkitError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    if frames not in FRAMES:
        raise MerkitError(f"--frames must be one of {', '.join(FRAMES)}, not {frames!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise MerkitError(f"--min-confidence must be between 0 and 1, not {min_confidence}")
    corpus = store if isinstance(store, Corpus) else (store if isinstance(store, FeatureStore) else open_store(store)).corpus
    path = Path(source).expanduser().resolve()
    if isinstance(columns, str):
        columns = [part.strip() for part in columns.split(",") if part.strip()]
    if not path.exists():
        raise MerkitError("feature source not found", path=path)

    files: list[Path] = []
    if path.is_dir():
        kind, files = _source_files(path)
        if key is not None:
            raise MerkitError("--key applies to tables; in a folder the key is each file's name (stem)", path=path)
        if kind == "openface":
            data, reasons, chosen, key_column, dropped = _from_openface(files, columns, frames, min_confidence)
        else:
            if columns:
                raise MerkitError("--columns applies to tables and OpenFace CSVs; a .npy folder is taken whole", path=path)
            data, reasons, chosen, key_column, dropped = _from_npy(files, frames)
    elif path.suffix.lower() in DELIMITERS or path.suffix.lower() in PARQUET:
        kind = "table"
        data, reasons, chosen, key_column, dropped = _from_table(path, columns, key, frames)
    else:
        raise MerkitError("unknown feature source: give a .csv/.tsv/.parquet table or a folder of OpenFace .csv or .npy files", path=path)

    matches, ways, unmatched = match_keys(corpus, list(data), path=path)
    ids = [utterance.id for utterance in corpus.utterances()]
    if not matches:
        raise MerkitError(
            f"none of the {len(data)} keys ({_some(list(data), 3)}) matches an utterance id, media file stem or "
            f"one-utterance dialogue id of the store (utterance ids look like {_some(ids, 3)})",
            path=path,
        )
    rows = [data[matches[i]] if i in matches else None for i in range(len(ids))]
    missing = {
        ids[i]: reasons.get(matches[i], "no usable features") if i in matches else "no row in the source"
        for i in range(len(ids)) if rows[i] is None
    }  # fmt: skip
    matched = len(ids) - len(missing)
    if not matched:
        raise MerkitError(f"every matched utterance was masked (e.g. {next(iter(missing.values()))})", path=path)
    settings = {
        "kind": kind,
        "sha256": source_sha256(path, files),
        "columns": chosen,
        "key": key_column,
        "frames": frames,
        **({"min_confidence": min_confidence, "dropped_frames": dropped} if kind == "openface" else {}),
        "matched": matched,
        "missing": len(missing),
        "unmatched_keys": len(unmatched),
        "matched_by": dict(ways),
    }
    features = stack_rows(
        modality, rows, ids=ids, sequence=frames == "sequence", path=str(path),
        extractor="external", source=str(path), settings=settings,
    )  # fmt: skip
    report = ImportReport(
        modality=modality, source=str(path), kind=kind, key=key_column, columns=chosen, frames=frames,
        dim=features.dim, matched=matched, missing=missing, unmatched_keys=unmatched, matched_by=dict(ways),
        dropped_frames=dropped,
    )  # fmt: skip
    if unmatched:
        message = f"{len(unmatched)} key(s) in {path} match no utterance (e.g. {_some(unmatched)})"
        report.warnings.append(message)
        warnings.warn(message, stacklevel=2)
    return features, report


def add_features(store: str | Path, modality: str, source: str | Path, **options: Any) -> tuple[FeatureStore, ImportReport]:
    """:func:`import_features`, then write the modality into the store (the other modalities are kept)."""
    opened = open_store(store)
    features, report = import_features(opened, modality, source, **options)
    return write_store(store, opened.corpus, {modality: features}), report
