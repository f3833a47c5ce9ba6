"""Running a ``merkit export --onnx`` folder: the text encoder and the model as ONNX graphs in ONNX Runtime.

``merkit.load(folder)`` takes this path when the folder holds ``onnx/onnx.json`` (``backend="torch"``
keeps the PyTorch one). The graphs replace the two costly parts of a prediction: the transformer
text encoder (about 95 % of a text request) and the ERC model. Everything around them is shared
with the torch path (input validation, tokenisation, feature scaling, batching, notes), so both
give the same answers within the tolerance :mod:`merkit.onnx_export` measured and recorded. The
model classes, Lightning and the training code are never imported. Audio and visual extractors
run as they always do (openSMILE, Whisper, MediaPipe ...): only text encoders are exported.

``onnx/onnx.json`` records, per graph, its file, SHA-256 (checked on load, like the weights of a
checkpoint), inputs and outputs, and for text encoders the folder of tokenizer files beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merkit.batching import ConversationBatch
from merkit.checkpoint import Checkpoint, read_meta
from merkit.errors import MerkitError
from merkit.features.models_dir import file_sha256
from merkit.features.text import TextSettings, TransformerTextExtractor
from merkit.models.base import DataSpec, ModelOutput

ONNX_DIR = "onnx"
ONNX_META = "onnx.json"
ONNX_FORMAT = "merkit-onnx/1"
OUTPUTS = ("logits", "uncertainty", "expert_weights")  # ModelOutput's tensors, in this order when present


def has_onnx(folder: str | Path) -> bool:
    return (Path(folder) / ONNX_DIR / ONNX_META).is_file()


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session for the graph at ``path`` with ``threads`` intra-op threads (None: one per core)."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise MerkitError("running ONNX graphs needs onnxruntime: pip install 'merkit[onnx]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures come back as exceptions: no per-node lines on the console
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise MerkitError(f"ONNX Runtime cannot load this graph: {str(exc).splitlines()[0]}", path=path) from None


# ------------------------------------------------------------------ the model graph's inputs
def input_names(modalities: Sequence[str], sequence_modalities: Sequence[str]) -> list[str]:
    """The model graph's inputs, in order: the masks, then per modality its features and presence (and frames)."""
    names = ["utterance_mask", "speakers"]
    for m in modalities:
        names += [f"features.{m}", f"present.{m}"]
        if m in sequence_modalities:
            names += [f"sequences.{m}", f"sequence_mask.{m}"]
    return names


def batch_inputs(batch: ConversationBatch, names: Sequence[str]) -> list[torch.Tensor]:
    """The tensors of ``batch`` named by :func:`input_names`."""
    out = []
    for name in names:
        kind, _, modality = name.partition(".")
        value = getattr(batch, kind)
        out.append(value[modality] if modality else value)
    return out


def batch_of_inputs(names: Sequence[str], tensors: Sequence[torch.Tensor], num_classes: int, multi_label: bool) -> ConversationBatch:
    """The inverse of :func:`batch_inputs`, without labels (what the exported graph wraps around the model)."""
    parts: dict[str, Any] = {"features": {}, "present": {}, "sequences": {}, "sequence_mask": {}}
    for name, tensor in zip(names, tensors, strict=True):
        kind, _, modality = name.partition(".")
        if modality:
            parts[kind][modality] = tensor
        else:
            parts[kind] = tensor
    mask = parts["utterance_mask"]
    if multi_label:
        labels = torch.zeros(*mask.shape, num_classes, device=mask.device)
    else:
        labels = torch.full_like(parts["speakers"], -100)
    return ConversationBatch(labels=labels, label_mask=torch.zeros_like(mask), **parts)


class OnnxModel:
    """``model.onnx`` behind the interface :func:`merkit.prediction.predict` uses: ``eval``, ``to``, a call on a batch."""

    def __init__(self, graph, spec: DataSpec, record: Mapping[str, Any]):
        self.session = graph
        self.spec = spec
        self.inputs = list(record["inputs"])
        self.outputs = list(record["outputs"])
        self.expert_names = tuple(record.get("expert_names", ()))

    def eval(self) -> "OnnxModel":
        return self

    def to(self, device: Any) -> "OnnxModel":
        return self

    def __call__(self, batch: ConversationBatch) -> ModelOutput:
        feeds = {name: tensor.numpy() for name, tensor in zip(self.inputs, batch_inputs(batch, self.inputs), strict=True)}
        found = dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))
        tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in found.items()}
        return ModelOutput(
            logits=tensors["logits"], uncertainty=tensors.get("uncertainty"),
            expert_weights=tensors.get("expert_weights"), expert_names=self.expert_names,
        )  # fmt: skip


# ------------------------------------------------------------------ the text encoder graph
class OnnxTextExtractor(TransformerTextExtractor):
    """A transformer text extractor whose encoder is an ONNX graph; tokenisation and pooling are the torch one's."""

    name = "onnx-text"
    description = "a text encoder exported by merkit export --onnx"

    def __init__(self, folder: Path, graph, record: Mapping[str, Any], settings: Mapping[str, Any]):
        self._folder = folder
        self.session = graph
        self.record = dict(record)
        fields = TextSettings.model_fields
        super().__init__(**{key: value for key, value in settings.items() if key in fields})
        self.dim = int(record["dim"])
        self._graph_inputs = [i.name for i in graph.get_inputs()]

    def model_folder(self) -> Path:
        return self._folder

    def weights(self) -> dict[str, Any]:
        return {"path": self.record["file"], "sha256": self.record["sha256"], "quantize": self.record.get("quantize")}

    def versions(self) -> dict[str, str]:
        from merkit.features.registry import package_versions

        return package_versions(["merkit", "numpy", "onnxruntime", "tokenizers", "transformers"])

    def batch_device(self) -> str:
        return "cpu"

    def hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        feeds = {name: batch[name].numpy() for name in self._graph_inputs}
        return torch.from_numpy(self.session.run(["last_hidden_state"], feeds)[0])

    def load_model(self):  # the torch encoder is never loaded on this path
        raise MerkitError("this text extractor runs an ONNX graph; it has no torch model")

    def close(self) -> None:
        self.session = None


# ------------------------------------------------------------------ loading a folder
@dataclass(frozen=True)
class OnnxCheckpoint(Checkpoint):
    """A checkpoint whose model is :class:`OnnxModel`; which modalities it reads as frames comes from ``onnx.json``."""

    record: dict[str, Any] = field(default_factory=dict)
    backend = "onnx"

    @property
    def sequence_modalities(self) -> list[str]:
        return list(self.record["model"]["sequence_modalities"])


def read_record(onnx_dir: Path) -> dict[str, Any]:
    """``onnx.json``, every graph it names present with its recorded SHA-256."""
    path = onnx_dir / ONNX_META
    try:
        record = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise MerkitError(f"no ONNX graphs here (no {ONNX_DIR}/{ONNX_META}): make them with `merkit export CHECKPOINT --onnx`",
                          path=onnx_dir.parent) from None  # fmt: skip
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MerkitError(f"corrupt ONNX record: {exc}", path=path) from None
    if record.get("format") != ONNX_FORMAT:
        raise MerkitError(f"not a merkit ONNX record (format {record.get('format')!r}, expected {ONNX_FORMAT!r})", path=path)
    for entry in (record["model"], *record.get("text", {}).values()):
        graph = onnx_dir / entry["file"]
        if not graph.is_file():
            raise MerkitError("missing ONNX graph named in onnx.json", path=graph)
        if file_sha256(graph) != entry["sha256"]:
            raise MerkitError("ONNX graph does not match the checksum in onnx.json (truncated or replaced?)", path=graph)
    return record


def load_onnx(folder: str | Path, *, batch_size: int = 16, workers: int = 1, threads: int | None = None, onnx_dir: Path | None = None):
    """A :class:`~merkit.inference.Predictor` running the folder's ONNX graphs on the CPU."""
    from merkit.inference import Predictor

    folder = Path(folder)
    onnx_dir = onnx_dir or folder / ONNX_DIR
    record = read_record(onnx_dir)
    meta = read_meta(folder)
    model = OnnxModel(session(onnx_dir / record["model"]["file"], threads), DataSpec.model_validate(meta["data_spec"]), record["model"])
    extractors = {}
    for modality, entry in record.get("text", {}).items():
        settings = meta["features"][modality].get("settings") or {}
        extractors[modality] = OnnxTextExtractor(onnx_dir / entry["folder"], session(onnx_dir / entry["file"], threads), entry, settings)
        extractors[modality].record_name = str(meta["features"][modality].get("extractor"))
    checkpoint = OnnxCheckpoint(model=model, meta=meta, record=record)  # type: ignore[arg-type]
    return Predictor(checkpoint, device="cpu", batch_size=batch_size, workers=workers, extractors=extractors)
