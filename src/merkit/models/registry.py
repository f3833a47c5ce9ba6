"""The one model registry: CLI choices, docs tables and smoke tests are generated from it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_class: type
    config_class: type
    modalities: tuple[str, ...]
    description: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # "utterance": one vector per utterance; "sequence": every modality as frames
    # (batch.sequences; utterance vectors come as one-frame sequences).
    feature_level: str = "utterance"


_MODEL_MODULES = ("mlp", "bigru", "late_fusion", "mister_e", "sigmoid_mlp", "lddu", "sdt", "sure")
_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    modalities: tuple[str, ...],
    description: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    feature_level: str = "utterance",
) -> Callable[[type], type]:
    """Class decorator registering a model under ``name`` with its typed config and presets."""

    def decorate(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        if feature_level not in ("utterance", "sequence"):
            raise ValueError(f"model {name!r}: feature_level must be 'utterance' or 'sequence'")
        _MODELS[name] = ModelEntry(name, cls, config, modalities, description, dict(presets or {}), feature_level)
        return cls

    return decorate


def available_models() -> dict[str, ModelEntry]:
    """Registered models by name (the model modules register themselves on import)."""
    for module in _MODEL_MODULES:
        importlib.import_module(f"merkit.models.{module}")
    return dict(_MODELS)


def get_model(name: str) -> ModelEntry:
    models = available_models()
    if name not in models:
        from merkit.errors import MerkitError

        raise MerkitError(f"unknown model {name!r}; choose one of: {', '.join(models)}")
    return models[name]
