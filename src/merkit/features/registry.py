"""The extractor registry, shared by every modality.

An extractor turns the utterances of a :class:`~merkit.data.corpus.Corpus` into feature
arrays of one modality. Each is a class registered by name with :func:`register_extractor`
and carries its modality (``text``, ``audio``, ``visual``), a description, the levels it
can produce (``utterance`` vectors and/or ``sequence`` rows of tokens/frames), its output
dimension, and a pydantic ``Settings`` model (validated; unknown settings are refused).

The extraction driver (:mod:`merkit.features.extract`) is modality-agnostic. It asks an
extractor for one :class:`WorkItem` per utterance (:meth:`Extractor.plan`: the bytes that
determine the output, a cost used to batch similar items together, and a payload), hashes
the bytes together with :meth:`Extractor.fingerprint` (extractor name + settings + weight
checksum) for the content-hash cache, and hands batches of payloads to
:meth:`Extractor.encode`. An audio or visual extractor only has to implement ``plan``
(e.g. bytes = media file hash + time span) and ``encode``.

>>> from merkit.features import available_extractors
>>> available_extractors()["minilm"].dim
384
"""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from merkit.data.corpus import Corpus
from merkit.errors import MerkitError

MODALITIES = ("text", "audio", "visual")
LEVELS = ("utterance", "sequence")

# Modules that register extractors on import (the audio/visual issue adds its modules here).
_EXTRACTOR_MODULES = ("merkit.features.text", "merkit.features.audio", "merkit.features.video", "merkit.features.face_cnn")


class ExtractorSettings(BaseModel):
    """Base of every extractor's settings: frozen, unknown keys refused.

    ``added_later`` names settings added after stores existed: while off (``None``) they are left out of
    the recorded settings and the fingerprint, so older stores and checkpoints keep theirs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    added_later: ClassVar[tuple[str, ...]] = ()

    def recorded(self) -> dict[str, Any]:
        """The settings as recorded in manifests and fingerprints."""
        return self.model_dump(mode="json", exclude={k for k in self.added_later if getattr(self, k) is None})


@dataclass(frozen=True)
class WorkItem:
    """What one utterance needs extracted.

    ``content`` is every byte that determines the output (the model input, e.g. token ids);
    the cache key is the hash of it and the extractor fingerprint. ``cost`` (e.g. tokens,
    seconds of audio) sorts similar items into one batch. ``payload`` goes to ``encode``.
    """

    content: bytes
    cost: int
    payload: Any


@dataclass(frozen=True)
class ExtractorInfo:
    """The registry's row for one extractor (``merkit extractors``)."""

    name: str
    modality: str
    description: str
    trained_on: str
    dim: int | None
    levels: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    extractor_class: type | None = None


class Extractor(ABC):
    """Base class of all extractors; subclasses set the class attributes and register."""

    name: ClassVar[str]
    modality: ClassVar[str]
    description: ClassVar[str]
    # What the pretrained weights learnt from, so that no one scores them on data they saw (e.g. CK+ for the FER CNN).
    trained_on: ClassVar[str] = "nothing (no learnt weights)"
    levels: ClassVar[tuple[str, ...]] = ("utterance",)
    dim: ClassVar[int | None] = None  # None: known only once the model is located
    Settings: ClassVar[type[ExtractorSettings]] = ExtractorSettings

    def __init__(self, *, device: str | None = None, **settings: Any):
        self.device = device  # "cpu", "cuda", or None/"auto" for the GPU when there is one
        self.record_name = self.name  # the name written to the manifest (e.g. "minilm-finetuned")
        self.extra: dict[str, Any] = {}  # more manifest settings (e.g. the fine-tuning record)
        try:
            self.settings = self.Settings(**settings)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            known = ", ".join(self.Settings.model_fields)
            raise MerkitError(
                f"extractor {self.name!r}: setting {where!r}: {first['msg']} (settings: {known})"
            ) from None
        if getattr(self.settings, "level", "utterance") not in self.levels:
            raise MerkitError(f"extractor {self.name!r} cannot produce {self.settings.level!r} features")

    # ---------------------------------------------------------------- identity
    @property
    def level(self) -> str:
        return getattr(self.settings, "level", "utterance")

    @property
    def output_dim(self) -> int:
        if self.dim is None:
            raise NotImplementedError
        return self.dim

    def spec(self) -> dict[str, Any]:
        """Name and settings: enough to rebuild this extractor with :func:`get_extractor`."""
        return {"name": self.name, "settings": self.settings.recorded()}

    def weights(self) -> dict[str, Any]:
        """Where the weights are and their checksum (empty for extractors without weights)."""
        return {}

    def identity(self) -> dict[str, Any]:
        """Everything that determines the numbers (not batch size or device)."""
        return {**self.spec(), "modality": self.modality, "level": self.level, "weights_sha256": self.weights().get("sha256")}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode("utf-8")).hexdigest()

    def versions(self) -> dict[str, str]:
        """Versions of the packages that computed the numbers (recorded in the manifest)."""
        return package_versions(["merkit", "numpy", "torch"])

    def manifest_settings(self) -> dict[str, Any]:
        """The ``settings`` recorded in the store manifest: enough to regenerate the features."""
        return {
            **self.settings.recorded(),
            **self.extra,
            "extractor": self.name,
            "modality": self.modality,
            "level": self.level,
            "dim": self.output_dim,
            "weights": self.weights(),
            "versions": self.versions(),
            "fingerprint": self.fingerprint(),
        }

    # ---------------------------------------------------------------- work
    @abstractmethod
    def plan(self, corpus: Corpus) -> list[WorkItem | None]:
        """One item per utterance in corpus order; ``None`` where the modality is absent."""

    @abstractmethod
    def encode(self, payloads: Sequence[Any]) -> list[np.ndarray]:
        """Features of a batch: ``[D]`` per item (utterance level) or ``[L, D]`` (sequence level)."""

    def close(self) -> None:
        """Release models and memory (optional)."""


_REGISTRY: dict[str, type[Extractor]] = {}


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make an extractor available under ``cls.name``."""
    if cls.modality not in MODALITIES:
        raise ValueError(f"extractor {cls.name!r}: modality {cls.modality!r} is not one of {MODALITIES}")
    if not set(cls.levels) <= set(LEVELS):
        raise ValueError(f"extractor {cls.name!r}: levels {cls.levels} not within {LEVELS}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"extractor {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> dict[str, type[Extractor]]:
    for module in _EXTRACTOR_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def available_extractors(modality: str | None = None) -> dict[str, ExtractorInfo]:
    """Registered extractors by name (optionally of one modality), in registration order."""
    infos = {}
    for name, cls in _load().items():
        if modality is not None and cls.modality != modality:
            continue
        defaults = {key: info.default for key, info in cls.Settings.model_fields.items() if not info.is_required()}
        infos[name] = ExtractorInfo(name, cls.modality, cls.description, cls.trained_on, cls.dim, cls.levels, defaults, cls)
    return infos


def get_extractor(name: str, *, modality: str | None = None, **settings: Any) -> Extractor:
    """Build the extractor ``name`` with validated ``settings``; a clear error for unknown names."""
    registry = _load()
    if name not in registry:
        choices = [n for n, c in registry.items() if modality is None or c.modality == modality]
        raise MerkitError(f"unknown extractor {name!r}; choose one of: {', '.join(choices)}")
    cls = registry[name]
    if modality is not None and cls.modality != modality:
        raise MerkitError(f"extractor {name!r} produces {cls.modality} features, not {modality}")
    return cls(**settings)


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``names`` (missing packages are left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions

