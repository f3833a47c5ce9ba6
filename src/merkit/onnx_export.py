"""``merkit export CHECKPOINT --out DIR --onnx [--quantize int8]``: the text encoders and the model as ONNX graphs.

The ordinary export is written first (``merkit.load(DIR, backend="torch")`` keeps working), then
``DIR/onnx/``: ``model.onnx``, one ``<modality>-encoder.onnx`` per transformer text extractor with
its tokenizer files, and ``onnx.json`` (:mod:`merkit.onnx_runtime` reads it). The graphs are traced
with PyTorch's TorchScript-based exporter with the dialogue, turn, token and frame axes dynamic.

Tracing records one path through the code, so nothing is trusted without a check:

* the model graph is compared with the torch model on random batches of several shapes (dialogue
  lengths, missing modalities, an utterance with none); outputs differing by more than
  :data:`FP32_TOLERANCE` make the export fail with the size of the difference;
* the whole path (tokeniser → encoder graph → model graph) is compared with the torch predictor on
  the packaged example conversations, and the largest probability difference and the label
  agreement are recorded in ``onnx.json`` (``check``). With ``quantize="none"`` a difference above
  :data:`FP32_TOLERANCE` fails the export.

``quantize="int8"`` applies ONNX Runtime's dynamic quantisation to the text encoders only (the
model graph is small and stays fp32): int8 weights per output channel with the 7-bit range that
CPUs without VNNI instructions need to avoid overflow, activations quantised per call. Its effect
on accuracy is measured, not bounded: see ``check`` and ``benchmarks/onnx_accuracy.py``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merkit._version import __version__
from merkit.batching import ConversationBatch
from merkit.errors import MerkitError
from merkit.features.models_dir import file_sha256
from merkit.features.registry import package_versions
from merkit.features.text import TransformerTextExtractor
from merkit.export import export_model
from merkit.inference import Predictor
from merkit.loading import load
from merkit.io import atomic_write_json, atomic_write_text
from merkit.onnx_runtime import ONNX_DIR, ONNX_FORMAT, ONNX_META, OUTPUTS, batch_inputs, batch_of_inputs, input_names, load_onnx, session

QUANTIZE = ("none", "int8")
FP32_TOLERANCE = 1e-4  # largest |difference| of a probability (or other output) between torch and the fp32 graphs
OPSET = 17
VERIFY_SHAPES = ((1, 1, 1), (3, 7, 4), (2, 12, 2))  # (dialogues, turns, frames) of the random check batches
TOKENIZER_SUFFIXES = (".json", ".txt", ".model")  # the files of a model folder the tokenizer and settings need
EXAMPLES = Path(__file__).parent / "examples" / "conversations.jsonl"


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The exporter's tracer warnings and the quantiser's advice are about their internals, not the user's model;
    attention runs without its fused fast path, which the exporter cannot translate."""
    root = logging.getLogger()
    level, fastpath = root.level, torch.backends.mha.get_fastpath_enabled()
    root.setLevel(logging.ERROR)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel of eval mode has no ONNX form
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        torch.backends.mha.set_fastpath_enabled(fastpath)


# ------------------------------------------------------------------ the model graph
def random_batch(dims: dict[str, int], sequence: list[str], shape: tuple[int, int, int], speakers: int, seed: int) -> ConversationBatch:
    """A batch like the collated ones: ragged dialogues, modalities missing at random, one utterance with none."""
    generator = torch.Generator().manual_seed(seed)
    dialogues, turns, frames = shape
    lengths = torch.tensor([max(1, turns - 2 * b) for b in range(dialogues)])
    mask = torch.arange(turns)[None] < lengths[:, None]
    features, present, sequences, sequence_mask = {}, {}, {}, {}
    for m, dim in dims.items():
        present[m] = (torch.rand(dialogues, turns, generator=generator) > 0.3) & mask
        present[m][0, 0] = True
        if turns > 1:
            present[m][0, 1] = False  # the second turn of the first dialogue has no modality at all
        if m in sequence:
            counts = torch.randint(1, frames + 1, (dialogues, turns, 1), generator=generator)
            sequence_mask[m] = (torch.arange(frames) < counts) & present[m][..., None]
            sequences[m] = torch.randn(dialogues, turns, frames, dim, generator=generator) * sequence_mask[m][..., None]
            features[m] = sequences[m].sum(2) / sequence_mask[m].sum(-1, keepdim=True).clamp(min=1)
        else:
            features[m] = torch.randn(dialogues, turns, dim, generator=generator) * present[m][..., None]
    return ConversationBatch(
        features=features, present=present, utterance_mask=mask, speakers=(torch.arange(turns) % speakers).expand(dialogues, turns).clone(),
        labels=torch.full((dialogues, turns), -100), label_mask=torch.zeros_like(mask), sequences=sequences, sequence_mask=sequence_mask,
    )  # fmt: skip


class _Graph(torch.nn.Module):
    """The model with flat tensor inputs and outputs, as the exporter needs it."""

    def __init__(self, model: torch.nn.Module, names: list[str], outputs: list[str]):  # export it in eval mode: the
        # exporter puts the wrapper back in the mode it had, and a wrapper left training would switch dropout on
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        spec = self.model.spec
        output = self.model(batch_of_inputs(self.names, tensors, spec.num_classes, spec.multi_label))
        return tuple(getattr(output, name) for name in self.outputs)


def _probabilities(name: str, value: np.ndarray, multi_label: bool) -> np.ndarray:
    if name != "logits":
        return value
    tensor = torch.from_numpy(value)
    return (torch.sigmoid(tensor) if multi_label else torch.softmax(tensor, -1)).numpy()


def export_model_graph(predictor: Predictor, path: Path) -> dict[str, Any]:
    """``model.onnx`` for the predictor's torch model, checked against it on :data:`VERIFY_SHAPES`."""
    model, checkpoint = predictor.model, predictor.checkpoint
    names = input_names(checkpoint.modalities, checkpoint.sequence_modalities)
    speakers = max(1, min(2, int(getattr(model.config, "max_speakers", 2) or 2)))
    example = random_batch(predictor.dims, checkpoint.sequence_modalities, (2, 5, 3), speakers, seed=0)
    with torch.no_grad():
        first = model(example)
    outputs = [name for name in OUTPUTS if getattr(first, name) is not None]
    dynamic = {name: {0: "dialogues", 1: "turns", **({2: "frames"} if name.startswith("sequence") else {})} for name in names}
    dynamic |= {name: {0: "dialogues", 1: "turns"} for name in outputs}
    try:
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                _Graph(model, names, outputs).eval(), tuple(batch_inputs(example, names)), str(path), input_names=names,
                output_names=outputs, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many kinds of errors for operators it cannot translate
        raise MerkitError(f"the {predictor.meta['model']} model cannot be exported to ONNX: {str(exc).splitlines()[0]}") from None
    unfaithful = f"the {predictor.meta['model']} model does not export to ONNX faithfully"
    try:
        graph = session(path, threads=1)
    except MerkitError as exc:
        raise MerkitError(f"{unfaithful}: {exc.message}; serve it with the torch backend") from None
    used = [i.name for i in graph.get_inputs()]  # the exporter drops inputs the model does not read (speakers, often)
    worst = 0.0
    for seed, shape in enumerate(VERIFY_SHAPES, start=1):
        batch = random_batch(predictor.dims, checkpoint.sequence_modalities, shape, speakers, seed)
        with torch.no_grad():
            expected = model(batch)
        feeds = {name: tensor.numpy() for name, tensor in zip(used, batch_inputs(batch, used), strict=True)}
        mask = batch.utterance_mask.numpy()
        try:
            found_outputs = graph.run(outputs, feeds)
        except Exception as exc:  # a shape the trace baked in: onnxruntime's own exception types
            raise MerkitError(
                f"{unfaithful}: on a batch of {shape[0]} dialogues × {shape[1]} turns ONNX Runtime fails "
                f"({str(exc).splitlines()[0][:200]}); serve it with the torch backend"
            ) from None
        for name, found in zip(outputs, found_outputs, strict=True):
            want = _probabilities(name, getattr(expected, name).float().numpy(), model.spec.multi_label)[mask]
            got = _probabilities(name, found, model.spec.multi_label)[mask]
            difference = float(np.nanmax(np.abs(want - got))) if want.size else 0.0
            if not np.array_equal(np.isnan(want), np.isnan(got)) or difference > FP32_TOLERANCE:
                raise MerkitError(
                    f"{unfaithful}: its {name} differ from the torch "
                    f"model's by {difference:.2g} on a batch of {shape[0]} dialogues × {shape[1]} turns (tolerance "
                    f"{FP32_TOLERANCE:g}); serve it with the torch backend"
                )
            worst = max(worst, difference)
    return {
        "file": path.name, "sha256": file_sha256(path), "inputs": used, "outputs": outputs, "expert_names": list(first.expert_names),
        "sequence_modalities": list(checkpoint.sequence_modalities),
        "verified": {"shapes": [list(shape) for shape in VERIFY_SHAPES], "max_abs_difference": worst},
    }  # fmt: skip


# ------------------------------------------------------------------ the text encoders
class _Encoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).last_hidden_state


def export_encoder(extractor: TransformerTextExtractor, work: Path, modality: str, quantize: str) -> dict[str, Any]:
    """``<modality>-encoder.onnx`` (int8 when asked) and the tokenizer files beside it."""
    payloads = [(extractor.tokenizer(text)["input_ids"], (1, 2)) for text in ("hello world", "how are you doing today")]
    batch = extractor.batch_tensors(payloads, "cpu")
    names = list(batch)
    path = work / f"{modality}-encoder.onnx"
    dynamic = {name: {0: "texts", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            _Encoder(extractor.load_model().cpu(), names).eval(), tuple(batch.values()), str(path), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        if quantize == "int8":
            from onnx import TensorProto
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32, path = path, work / f"{modality}-encoder-int8.onnx"
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})  # fmt: skip
            fp32.unlink()
    folder = work / f"{modality}-tokenizer"
    folder.mkdir()
    for file in sorted(extractor.folder.iterdir()):
        if file.is_file() and file.suffix in TOKENIZER_SUFFIXES:
            shutil.copyfile(file, folder / file.name)
    return {
        "file": path.name, "sha256": file_sha256(path), "folder": folder.name, "dim": extractor.output_dim, "inputs": names,
        "quantize": quantize, "extractor": extractor.record_name, "exported_from": extractor.fingerprint(),
    }  # fmt: skip


# ------------------------------------------------------------------ the whole export
def _check(torch_predictor: Predictor, onnx_predictor: Predictor) -> dict[str, Any]:
    """Both predictors on the packaged example conversations: largest probability difference, label agreement."""
    names = list(torch_predictor.labels.names)
    want = torch_predictor.predict(EXAMPLES).utterances
    got = onnx_predictor.predict(EXAMPLES).utterances
    difference = max(abs(a.probabilities[n] - b.probabilities[n]) for a, b in zip(want, got, strict=True) for n in names)
    agree = sum(a.label == b.label for a, b in zip(want, got, strict=True))
    return {"data": EXAMPLES.name, "utterances": len(want), "max_abs_probability_difference": difference,
            "label_agreement": agree / len(want)}  # fmt: skip


def export_onnx(checkpoint: str | Path, out: str | Path, *, quantize: str = "none") -> dict[str, Any]:
    """The ordinary export of ``checkpoint`` into ``out`` plus ``out/onnx/``; returns the ``onnx.json`` record."""
    if quantize not in QUANTIZE:
        raise MerkitError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZE)}")
    try:
        import onnx  # noqa: F401  (the exporter and the quantiser need it)
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MerkitError(f"merkit export --onnx needs the onnx extra ({exc.name} is missing): pip install 'merkit[onnx]'") from None
    out = Path(out)
    export_model(checkpoint, out)
    work = out / f".{ONNX_DIR}-partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with load(out, backend="torch", device="cpu") as predictor:
            text = {
                m: export_encoder(e, work, m, quantize) for m, e in predictor.extractors.items() if isinstance(e, TransformerTextExtractor)
            }
            record: dict[str, Any] = {
                "format": ONNX_FORMAT, "merkit_version": __version__, "opset": OPSET, "quantize": quantize,
                "versions": package_versions(["torch", "onnx", "onnxruntime"]),
                "model": export_model_graph(predictor, work / "model.onnx"), "text": text,
            }  # fmt: skip
            atomic_write_json(work / ONNX_META, record)
            onnx_predictor = load_onnx(out, onnx_dir=work, threads=1)
            try:
                record["check"] = _check(predictor, onnx_predictor)
            finally:
                onnx_predictor.close()
        if quantize == "none" and record["check"]["max_abs_probability_difference"] > FP32_TOLERANCE:
            raise MerkitError(
                f"the ONNX graphs' probabilities differ from the torch model's by {record['check']['max_abs_probability_difference']:.2g} "
                f"on {EXAMPLES.name} (tolerance {FP32_TOLERANCE:g}); serve it with the torch backend"
            )
        atomic_write_json(work / ONNX_META, record)
        shutil.rmtree(out / ONNX_DIR, ignore_errors=True)
        work.rename(out / ONNX_DIR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    readme = out / "README.md"
    atomic_write_text(readme, readme.read_text("utf-8") + onnx_card(record))
    return record


def onnx_card(record: dict[str, Any]) -> str:
    """The model card's section on the ONNX graphs."""
    check = record["check"]
    encoders = ", ".join(f"`{entry['file']}` ({m}, {entry['extractor']})" for m, entry in record["text"].items()) or "none"
    return "\n".join([
        "## ONNX graphs",
        "",
        f"`onnx/` holds the model (`{record['model']['file']}`) and the text encoders ({encoders}) as ONNX graphs "
        f"(opset {record['opset']}, text encoders quantised: {record['quantize']}). `merkit.load(THIS_FOLDER)`, `merkit predict` "
        "and `merkit serve` run them in ONNX Runtime on the CPU; `--backend torch` runs `model.safetensors` instead.",
        "",
        f"- model graph against the torch model on random batches: largest difference {record['model']['verified']['max_abs_difference']:.2g}",
        f"- whole path against the torch predictor on {check['utterances']} utterances of `{check['data']}`: largest probability "
        f"difference {check['max_abs_probability_difference']:.2g}, same label for {100 * check['label_agreement']:.1f} %",
        "",
    ])  # fmt: skip
