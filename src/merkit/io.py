"""Atomic file writes: a reader sees the old file or the new one, never half of one (JSON, text, bytes, wav)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def _file_mode() -> int:
    """The mode ``open()`` would give a new file under this process's umask (``mkstemp`` makes 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()  # read once, at import: setting the umask is process-wide and not thread-safe


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed over ``path``.

    If the block raises, ``path`` is untouched and the temporary file removed; after a kill
    it is left as ``.<name>.tmp-*`` for the next writer to sweep.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Like :func:`atomic_path`, but yields the temporary file opened for binary writing."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_wav(path: str | Path, samples: Any, rate: int = 16_000) -> Path:
    """A mono 16-bit wav of float samples in [-1, 1] (clipped), written atomically."""
    import numpy as np

    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return Path(path)


def write_joined_wav(path: str | Path, pieces: Sequence[Any], pause: float = 1.0, rate: int = 16_000) -> list[tuple[float, float]]:
    """One wav of ``pieces`` (float samples at ``rate``) with ``pause`` seconds of silence after each; each piece's
    (start, end) in seconds — a recording whose true segments are known."""
    import numpy as np

    silence = np.zeros(int(pause * rate), dtype=np.float32)
    spans, clock, parts = [], 0, []
    for samples in pieces:
        spans.append((clock / rate, (clock + len(samples)) / rate))
        parts += [np.asarray(samples, dtype=np.float32), silence]
        clock += len(samples) + len(silence)
    write_wav(path, np.concatenate(parts), rate)
    return spans


# ------------------------------------------------------------------ checksums
@functools.lru_cache(maxsize=4096)  # bounded: a server or live session checking new files for days stays flat
def _sha256_of(resolved: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered (for the 4,096 latest files) while its size and mtime are unchanged."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def folder_sha256(checksums: dict[str, str]) -> str:
    """One checksum for a model folder: the hash of its sorted ``name sha256`` lines."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()
