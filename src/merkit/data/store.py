"""The feature store: a corpus plus per-modality feature arrays on disk, written atomically.

Layout of a store directory::

    manifest.json                  # written last; its presence makes the store complete
    corpus-<hash>.json             # the Corpus records
    <modality>-<hash>.safetensors  # tensors "values", "present" (and "offsets")

Data files are named by a SHA-256 of their content (16 hex digits), so identical extractions
give byte-identical stores: nothing in a store records a time or a random token (stores
written before this named their files by a random token; the manifest names the files, so
they open alike). A file is written under a temporary name and renamed; ``manifest.json`` is
replaced atomically after them, so a write that is killed midway leaves the previous store
fully readable (a file it would rewrite has the same name only when it has the same bytes); the
orphaned files are swept by the next write. Arrays are memory-mapped on open (safetensors
is a flat header + raw buffers), so a large store costs no RAM until rows are read.
No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from safetensors.numpy import save_file

from merkit._version import __version__
from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet
from merkit.errors import MerkitError
from merkit.io import atomic_path, atomic_write_json, atomic_write_text

MANIFEST = "manifest.json"
STORE_FORMAT = "merkit-feature-store"
STORE_VERSION = 1
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corpus_fingerprint(corpus: Corpus) -> str:
    """Content hash of a corpus: features recorded against one corpus never silently serve another."""
    return _sha256(corpus.model_dump_json().encode("utf-8"))


def _memmap_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Map every tensor of a safetensors file read-only, without copying."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise MerkitError("truncated feature file (no header)", path=path)
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            raise MerkitError("truncated feature file (header runs past the end)", path=path)
        try:
            header = json.loads(handle.read(header_size))
        except json.JSONDecodeError as exc:
            raise MerkitError(f"corrupt feature file header: {exc}", path=path) from None
    metadata = header.pop("__metadata__", {}) or {}
    arrays = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if 8 + header_size + end > size:
            raise MerkitError(f"truncated feature file: tensor {name!r} runs past the end", path=path)
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        if end == begin:
            arrays[name] = np.zeros(shape, dtype=dtype)
        else:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + begin, shape=shape)
    return arrays, metadata


@dataclass(frozen=True)
class FeatureStore:
    """A complete store opened from disk: its corpus and lazily mapped features."""

    root: Path
    manifest: Mapping[str, Any]
    corpus: Corpus

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["features"])

    def describe(self, modality: str) -> Mapping[str, Any]:
        return self.manifest["features"][modality]

    def features(self, modality: str) -> FeatureSet:
        if modality not in self.manifest["features"]:
            raise MerkitError(
                f"no {modality!r} features in this store (it has: {', '.join(self.modalities) or 'none'})",
                path=self.root,
            )
        entry = self.manifest["features"][modality]
        path = self.root / entry["file"]
        arrays, _ = _memmap_safetensors(path)
        missing = {"values", "present"} - set(arrays)
        if missing:
            raise MerkitError(f"feature file lacks tensors {sorted(missing)}", path=path)
        return FeatureSet(
            modality=modality,
            values=arrays["values"],
            present=np.asarray(arrays["present"], dtype=bool),
            offsets=np.asarray(arrays["offsets"]) if "offsets" in arrays else None,
            extractor=entry.get("extractor", "unknown"),
            settings=entry.get("settings", {}),
            source=entry.get("source", ""),
        )

    def all_features(self) -> dict[str, FeatureSet]:
        return {modality: self.features(modality) for modality in self.modalities}


def is_store(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_store(path: str | Path) -> FeatureStore:
    """Open a complete store; a directory without a manifest (e.g. a killed first write) is refused."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise MerkitError("not a complete merkit feature store (no manifest.json)", path=root)
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MerkitError(f"corrupt manifest: {exc}", path=manifest_path) from None
    if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
        raise MerkitError(
            f"unsupported store format {manifest.get('format')!r} version {manifest.get('version')!r}",
            path=manifest_path,
        )
    corpus_entry = manifest["corpus"]
    corpus_path = root / corpus_entry["file"]
    try:
        corpus_bytes = corpus_path.read_bytes()
    except OSError as exc:
        raise MerkitError(f"store is missing its corpus file: {exc.strerror}", path=corpus_path) from None
    if _sha256(corpus_bytes) != corpus_entry["sha256"]:
        raise MerkitError("corpus file does not match the manifest checksum (modified or truncated)", path=corpus_path)
    try:
        corpus = Corpus.model_validate_json(corpus_bytes)
    except ValidationError as exc:
        raise MerkitError(f"invalid corpus file: {exc.errors()[0]['msg']}", path=corpus_path) from None
    for modality, entry in manifest["features"].items():
        file = root / entry["file"]
        if not file.is_file() or file.stat().st_size != entry["bytes"]:
            raise MerkitError(f"{modality} feature file is missing or truncated", path=file)
    return FeatureStore(root=root, manifest=manifest, corpus=corpus)


def _tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes, bytes), read in place: a feature file's name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
        digest.update(array.reshape(-1).view(np.uint8))  # contiguous: a view, no copy
    return digest.hexdigest()


def _write_features(root: Path, features: FeatureSet) -> dict[str, Any]:
    tensors = {"values": np.ascontiguousarray(features.values), "present": features.present.astype(np.uint8)}
    if features.offsets is not None:
        tensors["offsets"] = np.ascontiguousarray(features.offsets, dtype=np.int64)
    name = f"{features.modality}-{_tensors_sha256(tensors)[:16]}.safetensors"
    with atomic_path(root / name) as tmp:
        # One metadata key: safetensors writes several in hash order, which differs from run to run.
        save_file(tensors, str(tmp), metadata={"modality": features.modality})
    return {**features.describe(), "file": name, "bytes": (root / name).stat().st_size}


def write_store(
    path: str | Path,
    corpus: Corpus,
    features: Mapping[str, FeatureSet] | None = None,
    *,
    keep_existing: bool = True,
) -> FeatureStore:
    """Write (or update) the store at ``path`` atomically and return it opened.

    With ``keep_existing`` the modalities already in the store are kept (when its corpus is
    the same), so extractors can add one modality at a time.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    features = dict(features or {})
    ids = [utterance.id for utterance in corpus.utterances()]
    for feature_set in features.values():
        feature_set.validate(ids)

    fingerprint = corpus_fingerprint(corpus)
    entries: dict[str, Any] = {}
    if keep_existing and is_store(root):
        previous = open_store(root)
        if previous.manifest["corpus"]["fingerprint"] == fingerprint:
            entries = {m: e for m, e in previous.manifest["features"].items() if m not in features}
        elif previous.modalities and not set(previous.modalities) <= set(features):
            raise MerkitError(
                "this store holds features of a different corpus; write to a new directory or pass keep_existing=False",
                path=root,
            )

    corpus_text = corpus.model_dump_json()
    corpus_sha256 = _sha256(corpus_text.encode("utf-8"))
    corpus_name = f"corpus-{corpus_sha256[:16]}.json"
    atomic_write_text(root / corpus_name, corpus_text)
    for modality, feature_set in features.items():
        entries[modality] = _write_features(root, feature_set)
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "merkit_version": __version__,
        "corpus": {
            "file": corpus_name,
            "sha256": corpus_sha256,
            "fingerprint": fingerprint,
            "name": corpus.name,
            "dialogues": len(corpus.dialogues),
            "utterances": corpus.num_utterances,
        },
        "features": entries,
    }
    atomic_write_json(root / MANIFEST, manifest)
    _sweep(root, keep={MANIFEST, corpus_name, *(entry["file"] for entry in entries.values())})
    return open_store(root)


def _sweep(root: Path, keep: set[str]) -> None:
    """Remove data files no longer referenced by the manifest, and temp files of killed writes."""
    for child in root.iterdir():
        if child.name in keep or not child.is_file():
            continue
        if (child.name.startswith(".") and ".tmp-" in child.name) or child.suffix in {".json", ".safetensors"}:
            os.unlink(child)
