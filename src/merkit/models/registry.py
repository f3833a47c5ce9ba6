"""The one model registry: CLI choices, docs tables and smoke tests are generated from it."""

from __future__ import annotations

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


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    modalities: tuple[str, ...],
    description: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[type], type]:
    """Class decorator registering a model under ``name`` with its typed config and presets."""

    def decorate(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, cls, config, modalities, description, dict(presets or {}))
        return cls

    return decorate


def available_models() -> dict[str, ModelEntry]:
    """Registered models by name (the model modules register themselves on import)."""
    return dict(_MODELS)
