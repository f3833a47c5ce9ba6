"""The one model registry: CLI choices, docs tables and smoke tests are generated from it."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    # The model's own rules for ``--preset auto``: ``auto(shape, chosen)`` sets fields on ``chosen``
    # (a merkit.training.auto.AutoPreset) after the shared rules.
    auto: Callable[[Any, Any], None] | None = None
    # False for models that are assembled from trained checkpoints (the ensemble), never trained themselves.
    trainable: bool = True


# The corpus shape each preset name was made for (one name means the same corpus in every model);
# ``merkit models`` prints it so that a user can tell which preset, if any, suits their corpus.
PRESET_SHAPES = {
    "iemocap": "IEMOCAP's published features, paper settings: 2-speaker dialogues of ~50 turns, 6 classes",
    "meld": "MELD's published features, paper settings: multi-party dialogues of ~10 turns, 7 imbalanced classes",
    "mosi": "CMU-MOSI's published features, paper settings: one-speaker video segments, sentiment",
    "iemocap-mpnet": "merkit's own MPNet text vectors on long 2-speaker dialogues (IEMOCAP-like), CPU-sized",
    "meld-mpnet": "merkit's own MPNet text vectors on short multi-party dialogues (MELD-like), CPU-sized",
    "iemocap-minilm": "merkit's own MiniLM text vectors on long 2-speaker dialogues (IEMOCAP-like), CPU-sized",
    "meld-minilm": "merkit's own MiniLM text vectors on short multi-party dialogues (MELD-like), CPU-sized",
    "mosei-aligned": "CMU-MOSEI word-aligned features (50 frames a modality), 6 labels, multi-label",
    "mosei-unaligned": "CMU-MOSEI unaligned features (audio/visual 500 frames), 6 labels, multi-label",
    "m3ed": "M3ED features, one sample a dialogue, 7 labels, multi-label",
    "goemotions": "one-vector texts (MiniLM/MPNet), ~43k training items, 7 labels (Ekman grouping), multi-label",
    "auto": "any other corpus: settings chosen from its training split's size, turns and class balance "
    "(`merkit train --preset auto` prints what it chose and why)",
}

_MODEL_MODULES = ("mlp", "bigru", "late_fusion", "mister_e", "sigmoid_mlp", "lddu", "sdt", "sure", "ensemble")
_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    modalities: tuple[str, ...],
    description: str,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    feature_level: str = "utterance",
    auto: Callable[[Any, Any], None] | None = None,
    trainable: bool = True,
) -> Callable[[type], type]:
    """Class decorator registering a model under ``name`` with its typed config and presets (each may say
    which corpus shape it ``suits``; the name ``auto`` is kept for the corpus-adaptive preset)."""

    def decorate(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        if feature_level not in ("utterance", "sequence"):
            raise ValueError(f"model {name!r}: feature_level must be 'utterance' or 'sequence'")
        if "auto" in (presets or {}):
            raise ValueError(f"model {name!r}: 'auto' is the corpus-adaptive preset, not a name to register")
        undescribed = set(presets or {}) - set(PRESET_SHAPES)
        if undescribed:
            raise ValueError(f"model {name!r}: say in PRESET_SHAPES which corpus shape {sorted(undescribed)} suit")
        _MODELS[name] = ModelEntry(name, cls, config, modalities, description, dict(presets or {}), feature_level, auto, trainable)
        return cls

    return decorate


def available_models() -> dict[str, ModelEntry]:
    """Registered models by name (the model modules register themselves on import)."""
    for module in _MODEL_MODULES:
        importlib.import_module(f"merkit.models.{module}")
    return dict(_MODELS)


CATALOGUE = Path(__file__).with_name("catalogue.json")


def describe_models() -> list[dict[str, Any]]:
    """What ``merkit models`` lists, from the live registry (imports every model, and so torch)."""
    return [
        {"name": e.name, "modalities": list(e.modalities), "presets": list(e.presets), "description": e.description}
        for e in sorted(available_models().values(), key=lambda e: e.name)  # not import order, which varies
    ]


def catalogue() -> list[dict[str, Any]]:
    """:func:`describe_models` as written to ``catalogue.json`` (a test keeps it equal to the live registry):
    listing the models then takes no torch import, a fraction of a second instead of several."""
    return json.loads(CATALOGUE.read_text("utf-8"))


def write_catalogue() -> None:
    """Rewrite ``catalogue.json`` after adding a model or a preset."""
    CATALOGUE.write_text(json.dumps(describe_models(), indent=1, ensure_ascii=False) + "\n", "utf-8")


def get_model(name: str) -> ModelEntry:
    models = available_models()
    if name not in models:
        from merkit.errors import MerkitError

        raise MerkitError(f"unknown model {name!r}; choose one of: {', '.join(models)}")
    return models[name]
