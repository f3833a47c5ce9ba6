"""Model checkpoints: weights in safetensors + one JSON with everything needed to rebuild and check them.

``model.json`` holds the model name and typed config, the data spec (modality widths,
classes), the label schema, the feature manifest (extractor and dimension per modality), the
feature scaling fitted on the training split (``normalization``),
the training config and the merkit version. Loading rebuilds the model from the registry,
verifies the weights' checksum, and :func:`check_compatible` says exactly what does not
match a given dataset. No pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from merkit._version import __version__
from merkit.batching import DialogueDataset
from merkit.data.corpus import Corpus, LabelSchema
from merkit.data.features import FeatureSet
from merkit.errors import MerkitError
from merkit.io import atomic_path, atomic_write_json
from merkit.models.base import DataSpec, ERCModel
from merkit.models.registry import get_model
from merkit.normalization import Scaler, scalers_from_json

WEIGHTS = "model.safetensors"
META = "model.json"
CHECKPOINT_FORMAT = "merkit-checkpoint"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    directory: str | Path,
    model: ERCModel,
    *,
    model_name: str,
    labels: LabelSchema,
    features: Mapping[str, Mapping[str, Any]],
    **info: Any,
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (both atomically) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT, "model": model_name})
    meta = {
        "format": CHECKPOINT_FORMAT,
        "merkit_version": __version__,
        "model": model_name,
        "model_config": model.config.model_dump(mode="json"),
        "data_spec": model.spec.model_dump(mode="json"),
        "labels": labels.model_dump(mode="json"),
        "features": {m: dict(features[m]) for m in model.spec.modalities},
        "weights_sha256": _sha256(directory / WEIGHTS),
        **info,
    }
    atomic_write_json(directory / META, meta)
    return directory


@dataclass(frozen=True)
class Checkpoint:
    model: ERCModel
    meta: Mapping[str, Any]
    backend = "torch"  # what runs the model (merkit.onnx_runtime.OnnxCheckpoint: "onnx")

    @property
    def labels(self) -> LabelSchema:
        return LabelSchema.model_validate(self.meta["labels"])

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["data_spec"]["modalities"])

    @property
    def sequence_modalities(self) -> list[str]:
        """The modalities the model reads as frame sequences (all of them for sequence-level models)."""
        return self.modalities if get_model(self.meta["model"]).feature_level == "sequence" else []

    def dataset(self, corpus: Corpus, features: Mapping[str, FeatureSet], splits: list[str]) -> DialogueDataset:
        """The splits' dialogues with the features this model reads, scaled as in training."""
        return DialogueDataset(
            corpus, dict(features), splits, self.modalities, self.sequence_modalities, self.scalers, self.meta.get("speaker_index", "order")
        )

    @property
    def prior(self) -> np.ndarray | None:
        """The training split's label frequencies (what an utterance with no modality is given; none in older checkpoints)."""
        prior = self.meta.get("label_prior")
        return None if prior is None else np.asarray(prior, dtype=np.float32)

    @property
    def scalers(self) -> dict[str, Scaler]:
        """The per-modality feature scaling fitted on the training split (none in older checkpoints)."""
        return scalers_from_json(self.meta.get("normalization"))


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        inside = sorted(Path(directory).glob(f"seed*/best/{META}")) + sorted(Path(directory).glob(f"fold*/seed*/best/{META}"))
        hint = f"; a run folder: its checkpoints are {', '.join(str(p.parent) for p in inside[:3])}" if inside else ""
        raise MerkitError(f"not a merkit checkpoint (no {META}){hint}", path=directory)
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MerkitError(f"corrupt checkpoint metadata: {exc}", path=path) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise MerkitError("not a merkit checkpoint (wrong format field)", path=path)
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the registry and load its weights (checksum verified)."""
    directory = Path(directory)
    meta = read_meta(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise MerkitError(f"checkpoint has no {WEIGHTS}", path=directory)
    if _sha256(weights) != meta.get("weights_sha256"):
        raise MerkitError("weights do not match the checksum in model.json (truncated or replaced?)", path=weights)
    entry = get_model(meta["model"])
    config = entry.config_class.model_validate(meta["model_config"])
    model = entry.model_class(config, DataSpec.model_validate(meta["data_spec"]))
    try:
        state = load_file(str(weights), device=str(device))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise MerkitError(f"cannot load weights: {str(exc).splitlines()[0]}", path=weights) from None
    model.to(device).eval()
    return Checkpoint(model=model, meta=meta)


def check_compatible(meta: Mapping[str, Any], labels: LabelSchema, features: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise one :class:`MerkitError` listing every way the data differs from what the model was trained on."""
    problems = []
    trained = LabelSchema.model_validate(meta["labels"])
    if trained.names != labels.names:
        problems.append(f"labels differ: model {list(trained.names)}, data {list(labels.names)}")
    if trained.multi_label != labels.multi_label:
        problems.append("label kind differs (single- vs multi-label)")
    for modality, expected in meta["features"].items():
        if modality not in features:
            problems.append(f"the data has no {modality} features (model expects {expected.get('dim')}-d {expected.get('extractor')})")
            continue
        found = features[modality]
        if found.get("dim") != expected.get("dim"):
            problems.append(f"{modality} dimension: model {expected.get('dim')}, data {found.get('dim')}")
        if found.get("extractor") != expected.get("extractor"):
            problems.append(f"{modality} extractor: model {expected.get('extractor')!r}, data {found.get('extractor')!r}")
    if problems:
        raise MerkitError("checkpoint does not fit this data: " + "; ".join(problems))
