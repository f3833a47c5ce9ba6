"""Typed training configuration, presets, and ``--set key=value`` overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from merkit.errors import MerkitError
from merkit.models.base import ModelConfig
from merkit.models.registry import ModelEntry


class TrainConfig(BaseModel):
    """How a model is trained; every model shares these fields (presets set them per dataset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(16, ge=1, description="dialogues per batch (per device under DDP)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    speaker_index: Literal["auto", "role", "order"] = Field(
        "auto",
        description="[R] speaker index of SDT/SURE's speaker embedding: role = the corpus's own roles (IEMOCAP M=0/F=1, the "
        "pickles' one-hot, as the official codes), order = first appearance in the dialogue; auto = role where the reader gives roles",
    )
    optimizer: Literal["adamw", "adam"] = "adamw"
    decay_grouping: Literal["standard", "inverted"] = Field(
        "standard",
        description="which parameters get weight_decay: standard = weights (not biases or norms); inverted = only biases and "
        "norms, as LDDU's official BertAdam grouping (models.md §6.4's lddu_inverted_decay)",
    )
    scheduler: Literal["none", "cosine", "warmup_cosine", "warmup_linear"] = Field(
        "none",
        description="learning rate over the run's steps: cosine decay, after a linear warm-up of warmup_fraction for "
        "warmup_cosine; warmup_linear = linear warm-up, then linear decay to 0 (the encoder fine-tuning's)",
    )
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    grad_clip: float | None = 1.0
    patience: int | None = Field(10, ge=1, description="early stopping on the selection split; None = off")
    class_weights: Literal["none", "inverse_frequency"] | list[float] = Field(
        "none",
        description="single-label: cross-entropy weights, (1/frequency)^class_weight_power from the training split; "
        "multi-label: BCE positive weights, (negatives/positives)^class_weight_power per label (a label rare in training "
        "gets its positives up-weighted); a list gives the weights themselves",
    )
    class_weight_power: float = Field(
        1.0, ge=0, description="[R] the power of inverse_frequency class weights; 0 = unweighted, 1 = fully balanced"
    )
    monitor: Literal["auto", "weighted_f1", "macro_f1", "accuracy", "uar", "micro_f1", "jaccard_accuracy"] = Field(
        "auto", description="selection metric; auto = weighted_f1 (single-label) or micro_f1 (multi-label)"
    )
    normalize: Literal["auto", "none", "standard", "robust"] | dict[str, Literal["auto", "none", "standard", "robust"]] = Field(
        "auto",
        description="feature scaling fitted on the training split, one method or {modality: method}; auto = none for "
        "merkit's text encoders, standard for everything else [R] (see merkit.normalization)",
    )
    threshold: Literal["per_class", "per_class_f1", "global", "lddu_search"] | Annotated[float, Field(ge=0, lt=1)] = Field(
        "per_class",
        description="multi-label decision threshold: a fixed value, or tuned on the selection split "
        "(per class for micro-F1 or for each class's F1, one global value, or LDDU's search over 0.150-0.295); "
        "see merkit.thresholds",
    )


# ``precision``: None lets merkit choose (bf16 mixed precision on a GPU that has it, else fp32); the official
# codes train in fp32, so paper-compat does too. An explicit ``--precision`` wins over both.
PROTOCOLS = {
    "honest": {"train": ("train",), "select": "valid", "precision": None, "label": "honest: epoch selected on the validation split"},
    "paper-compat": {
        "train": ("train", "valid"),
        "select": "test",
        "precision": "32-true",
        "label": "paper-compat: train+valid merged, epoch selected ON THE TEST SPLIT (optimistic; as the official codes do), fp32",
    },
}


def training_precision(requested: str | None, protocol: str, use_gpu: bool, bf16: bool) -> str:
    """The Lightning precision a run trains in: ``requested``, else the protocol's, else bf16-mixed on a bf16 GPU, else fp32."""
    return requested or PROTOCOLS[protocol]["precision"] or ("bf16-mixed" if use_gpu and bf16 else "32-true")


def _parse_value(raw: str) -> Any:
    import json

    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


AUTO = "auto"


def resolve_configs(
    entry: ModelEntry,
    preset: str | None,
    overrides: Mapping[str, str] | list[str] | None = None,
    chosen: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """Defaults ← preset ← ``--set`` overrides. A key goes to the model config if it names a model
    field, else to the training config; ``model.x`` / ``train.x`` force one of them. ``preset="auto"``
    takes the fields ``chosen`` for the corpus (:mod:`merkit.training.auto`; none before the data is read)."""
    fields: Mapping[str, Mapping[str, Any]] = {}
    if preset == AUTO:
        fields = chosen or {}
    elif preset is not None:
        if preset not in entry.presets:
            raise MerkitError(
                f"model {entry.name!r} has no preset {preset!r}; presets: {', '.join([*entry.presets, AUTO])}"
            )
        fields = entry.presets[preset]
    model_fields: dict[str, Any] = dict(fields.get("model", {}))
    train_fields: dict[str, Any] = dict(fields.get("train", {}))
    pairs = overrides.items() if isinstance(overrides, Mapping) else [_split_pair(p) for p in overrides or []]
    for key, raw in pairs:
        value = _parse_value(raw) if isinstance(raw, str) else raw
        scope, _, name = key.rpartition(".")
        if scope == "model" or (not scope and name in entry.config_class.model_fields):
            if name not in entry.config_class.model_fields:
                raise MerkitError(f"{entry.name} has no model setting {name!r}; settings: {', '.join(entry.config_class.model_fields)}")
            model_fields[name] = value
        elif scope in ("", "train") and name in TrainConfig.model_fields:
            train_fields[name] = value
        else:
            known = ", ".join([*entry.config_class.model_fields, *TrainConfig.model_fields])
            raise MerkitError(f"unknown setting {key!r} for {entry.name}{_extraction_hint(name)}; known: {known}")
    try:
        return entry.config_class(**model_fields), TrainConfig(**train_fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MerkitError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _extraction_hint(name: str) -> str:
    """Where a feature extractor's setting goes instead (``merkit train --set trim_db=40`` is an extraction setting)."""
    from merkit.features.registry import available_extractors

    owners = [info.name for info in available_extractors().values() if name in info.defaults]
    if not owners:
        return ""
    return f" (it is a setting of the {', '.join(owners[:3])} feature extractor{'s' if len(owners) > 1 else ''}: " \
        f"pass it to `merkit extract --set {name}=...` and train on the new store)"


def override_names(overrides: Mapping[str, str] | list[str] | None) -> list[str]:
    """The setting names ``--set`` gives (without a ``model.``/``train.`` scope)."""
    keys = overrides.keys() if isinstance(overrides, Mapping) else [_split_pair(p)[0] for p in overrides or []]
    return [key.rpartition(".")[2] for key in keys]


def _split_pair(pair: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise MerkitError(f"--set {pair!r} is not of the form key=value")
    return key.strip(), value.strip()
