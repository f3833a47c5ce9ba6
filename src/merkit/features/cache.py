"""The content-hash feature cache: a re-run skips done work and a killed run resumes.

A cache directory holds the features of one extractor fingerprint (name, settings, weight
checksum) as chunk files ``chunk-<id>.safetensors``; each holds the 32-byte SHA-256 keys
of its inputs (``keys [n, 32]``), the stacked rows (``values [sum L, D]``) and the row
offsets (``offsets [n+1]``). A key is the hash of the fingerprint and the exact model
input (see :func:`item_key`), so an utterance whose input has not changed is never
encoded twice, whatever corpus or store it comes from. Chunks are written atomically
(temporary file + rename): a killed run loses at most the chunk it was computing, and
many processes (shards of one job) may write into one directory at once.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from merkit.errors import MerkitError
from merkit.io import atomic_path

KEY_BYTES = 32


def item_key(fingerprint: str, content: bytes) -> bytes:
    """The cache key of one input: SHA-256 of the extractor fingerprint and the input bytes."""
    digest = hashlib.sha256(fingerprint.encode("ascii"))
    digest.update(b"\0")
    digest.update(content)
    return digest.digest()


class FeatureCache:
    """Chunks of cached rows under ``root``, indexed by key on open."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, tuple[Path, int]] = {}
        self._scanned: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Index chunk files written since the last look (e.g. by other shards)."""
        for path in sorted(self.root.glob("chunk-*.safetensors")):
            if path.name in self._scanned:
                continue
            try:
                with safe_open(str(path), framework="numpy") as handle:
                    keys = handle.get_tensor("keys")
            except Exception as exc:  # a foreign or damaged file: say which one
                raise MerkitError(f"unreadable cache chunk ({exc}); delete it to recompute its rows", path=path) from None
            for row, key in enumerate(keys):
                self._index.setdefault(key.tobytes(), (path, row))
            self._scanned.add(path.name)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, keys: Iterable[bytes]) -> list[bytes]:
        return [key for key in keys if key not in self._index]

    def put(self, keys: Sequence[bytes], rows: Sequence[np.ndarray]) -> Path:
        """Write one chunk (rows ``[D]`` or ``[L, D]``) atomically; returns its path."""
        if not keys:
            raise ValueError("empty chunk")
        chunk_id = hashlib.sha256(b"".join(keys)).hexdigest()[:24]
        path = self.root / f"chunk-{chunk_id}.safetensors"
        blocks = [np.asarray(row, dtype=np.float32).reshape(-1, np.shape(row)[-1]) for row in rows]
        offsets = np.zeros(len(blocks) + 1, dtype=np.int64)
        np.cumsum([b.shape[0] for b in blocks], out=offsets[1:])
        tensors = {
            "keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy(),
            "values": np.ascontiguousarray(np.concatenate(blocks)),
            "offsets": offsets,
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"rows": "sequence" if any(np.ndim(r) == 2 for r in rows) else "vector"})
        for row, key in enumerate(keys):
            self._index.setdefault(key, (path, row))
        self._scanned.add(path.name)
        return path

    def get_many(self, keys: Sequence[bytes], *, sequence: bool) -> dict[bytes, np.ndarray]:
        """Rows of ``keys`` (all must be cached), reading each chunk file once."""
        by_file: dict[Path, list[tuple[bytes, int]]] = defaultdict(list)
        for key in keys:
            path, row = self._index[key]
            by_file[path].append((key, row))
        found = {}
        for path, wanted in by_file.items():
            with safe_open(str(path), framework="numpy") as handle:
                values = handle.get_tensor("values")
                offsets = handle.get_tensor("offsets")
            for key, row in wanted:
                block = values[offsets[row] : offsets[row + 1]]
                found[key] = block.copy() if sequence else block[0].copy()
        return found
