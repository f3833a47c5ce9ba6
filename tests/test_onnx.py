"""merkit export --onnx: the graphs equal the torch model, the ONNX backend runs them, bad folders are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli
from media_helpers import untrained_checkpoint

import merkit
from merkit.errors import MerkitError

pytest.importorskip("onnxruntime", reason="the ONNX backend needs the onnx extra")
pytest.importorskip("onnx", reason="exporting needs the onnx extra")
pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")

from merkit.models import layers  # noqa: E402
from merkit.models.base import DataSpec  # noqa: E402
from merkit.models.registry import available_models  # noqa: E402
from merkit.onnx_export import FP32_TOLERANCE, export_model_graph, export_onnx  # noqa: E402

EXPORTABLE = {"mlp", "bigru", "late-fusion", "sigmoid-mlp", "sdt", "sure"}  # README "ONNX export" lists the same
CONVERSATION = [
    {"speaker": "Ana", "text": "You will not believe it, I got the job!"},
    {"speaker": "Ben", "text": "You broke my phone and lied about it!"},
    {"speaker": "Ana", "text": "The keys are on the table."},
    {"speaker": "Ben", "text": "Wait, the one at the museum? No way!"},
]


def test_the_export_path_of_a_packed_bigru_gives_the_packed_numbers(monkeypatch):
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 3, num_layers=2, batch_first=True, bidirectional=True).eval()
    inputs, lengths = torch.randn(3, 6, 5), torch.tensor([6, 4, 1])
    packed = layers.packed_bigru(gru, inputs, lengths)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    unpacked = layers.packed_bigru(gru, inputs, lengths)
    assert torch.allclose(packed, unpacked, atol=1e-6)
    assert unpacked[2, 1:].abs().max() == 0  # padding stays zero


@pytest.mark.parametrize("name", sorted(name for name, entry in available_models().items() if entry.trainable))
def test_every_model_graph_equals_torch_or_is_refused(name, tmp_path):
    """Random ragged batches with missing modalities; a model the trace cannot follow is refused, never exported wrong."""
    entry = available_models()[name]
    dims = {m: d for m, d in {"text": 16, "audio": 8, "visual": 6}.items() if m in entry.modalities}
    multi_label = name in ("lddu", "sigmoid-mlp")
    spec = DataSpec(modalities=dims, num_classes=4, multi_label=multi_label, class_names=("a", "b", "c", "d"))
    torch.manual_seed(0)
    model = entry.model_class(entry.config_class(), spec).eval()
    sequence = list(dims) if entry.feature_level == "sequence" else []
    predictor = SimpleNamespace(model=model, dims=dims, meta={"model": name},
                                checkpoint=SimpleNamespace(modalities=list(dims), sequence_modalities=sequence))  # fmt: skip
    if name in EXPORTABLE:
        record = export_model_graph(predictor, tmp_path / "model.onnx")
        assert record["verified"]["max_abs_difference"] <= FP32_TOLERANCE
        assert record["outputs"][0] == "logits"
    else:
        with pytest.raises(MerkitError, match="serve it with the torch backend"):
            export_model_graph(predictor, tmp_path / "model.onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An SDT checkpoint on MiniLM text (speakers and context matter), exported fp32 and int8."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = untrained_checkpoint(root / "ckpt", {"text": "minilm"}, model="sdt")
    fp32 = export_onnx(checkpoint, root / "fp32")
    int8 = export_onnx(checkpoint, root / "int8", quantize="int8")
    return SimpleNamespace(checkpoint=checkpoint, root=root, fp32=fp32, int8=int8)


def _probabilities(result):
    return np.array([[u.probabilities[n] for n in result.labels] for u in result.utterances])


def test_onnx_predictions_equal_the_torch_ones(exported):
    assert exported.fp32["check"]["max_abs_probability_difference"] <= FP32_TOLERANCE
    assert exported.fp32["check"]["label_agreement"] == 1.0
    with merkit.load(exported.checkpoint) as reference, merkit.load(exported.root / "fp32", threads=1) as onnx:
        assert onnx.describe()["backend"] == "onnx" and reference.describe()["backend"] == "torch"
        want, got = reference.predict(CONVERSATION), onnx.predict(CONVERSATION)
        assert np.abs(_probabilities(want) - _probabilities(got)).max() <= FP32_TOLERANCE
        assert all(u.expert_weights for u in got.utterances)  # SDT's modality weights come through the graph
        assert [u.label for u in want.utterances] == [u.label for u in got.utterances]
        assert [u.notes for u in onnx.predict([{"text": ""}]).utterances] == [u.notes for u in reference.predict([{"text": ""}]).utterances]
    with merkit.load(exported.root / "fp32", backend="torch") as torch_path:
        assert np.abs(_probabilities(torch_path.predict(CONVERSATION)) - _probabilities(want)).max() == 0


def test_int8_is_recorded_and_close(exported):
    record = json.loads((exported.root / "int8" / "onnx" / "onnx.json").read_text())
    assert record["quantize"] == "int8" and record["text"]["text"]["file"].endswith("-int8.onnx")
    size = {kind: (exported.root / kind / "onnx" / record_["text"]["text"]["file"]).stat().st_size
            for kind, record_ in (("fp32", exported.fp32), ("int8", exported.int8))}  # fmt: skip
    assert size["int8"] < size["fp32"] / 3
    with merkit.load(exported.root / "int8", threads=1) as int8, merkit.load(exported.checkpoint) as reference:
        difference = np.abs(_probabilities(int8.predict(CONVERSATION)) - _probabilities(reference.predict(CONVERSATION))).max()
    assert 0 < difference < 0.05  # quantised, so not equal, yet close on this model
    assert "## ONNX graphs" in (exported.root / "int8" / "README.md").read_text()


def test_the_onnx_backend_loads_no_torch_model_and_no_training_code(exported):
    code = (
        "import sys, merkit\n"
        f"p = merkit.load({str(exported.root / 'int8')!r}, threads=1)\n"
        "r = p.predict([{'speaker': 'A', 'text': 'I got the job!'}])\n"
        "bad = [m for m in sys.modules if m.startswith(('lightning', 'pytorch_lightning', 'merkit.training.engine', "
        "'merkit.models.sdt', 'transformers.models.bert.modeling'))]\n"
        "print(r.utterances[0].label, bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout


def test_damaged_or_missing_graphs_are_clear_errors(exported, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(exported.root / "fp32", folder)
    graph = folder / "onnx" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(MerkitError, match="does not match the checksum in onnx.json"):
        merkit.load(folder)
    with merkit.load(folder, backend="torch") as predictor:  # the torch path does not read the graphs
        assert predictor.describe()["backend"] == "torch"
    with pytest.raises(MerkitError, match="no ONNX graphs here"):
        merkit.load(exported.checkpoint, backend="onnx")
    with pytest.raises(MerkitError, match="unknown backend"):
        merkit.load(exported.checkpoint, backend="tensorrt")


def test_export_and_predict_commands(exported, tmp_path):
    result = run_cli("export", str(exported.checkpoint), "--out", str(tmp_path / "m"), "--onnx")
    assert result.returncode == 0, result.stderr
    assert "largest probability difference" in result.stdout and (tmp_path / "m" / "onnx" / "onnx.json").is_file()
    talk = tmp_path / "talk.txt"
    talk.write_text("Ana: I got the job!\nBen: No way.\n")
    for backend in ("onnx", "torch"):
        result = run_cli("predict", str(tmp_path / "m"), str(talk), "--backend", backend, "--threads", "1", "-q")
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["utterances"]) == 2
    result = run_cli("export", str(exported.checkpoint), "--out", str(tmp_path / "n"), "--quantize", "int4")
    assert result.returncode != 0 and "unknown quantization 'int4'" in result.stderr and "Traceback" not in result.stderr
