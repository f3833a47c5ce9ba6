"""``merkit.load``: the one place that chooses a backend for a checkpoint folder.

Above :mod:`merkit.inference` (the :class:`~merkit.inference.Predictor`, which knows no backend) and
:mod:`merkit.onnx_runtime` (whose ONNX model and extractors the Predictor runs like the PyTorch ones)."""

from __future__ import annotations

from pathlib import Path

from merkit.checkpoint import load_checkpoint
from merkit.devices import bound_native_caches, resolve_device
from merkit.errors import MerkitError
from merkit.inference import Predictor
from merkit.zoo import FUSION, card_of, resolve


BACKENDS = ("auto", "torch", "onnx")


def load(
    checkpoint: str | Path, *, device: str = "auto", batch_size: int = 16, workers: int = 1, backend: str = "auto",
    threads: int | None = None,
) -> Predictor:  # fmt: skip
    """A :class:`~merkit.inference.Predictor` for the checkpoint directory (e.g. ``RUN/seed0/best`` or a ``merkit export`` folder)
    or the zoo model of that name (``merkit.load("text-meld")``; ``merkit zoo list``).

    ``device``: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda``; ``batch_size``:
    dialogues per model call; ``workers``: processes per media extractor; ``backend``: ``onnx`` runs
    the graphs of ``merkit export --onnx`` in ONNX Runtime on the CPU (``auto``: when the folder has
    them), ``torch`` the PyTorch model; ``threads``: ONNX Runtime's threads per graph (None: one per core).
    """
    from merkit.onnx_runtime import has_onnx, load_onnx

    bound_native_caches()  # before torch's oneDNN first runs: a predictor meets a new input shape with nearly every turn
    checkpoint = resolve(checkpoint)
    if (checkpoint / FUSION).is_file():
        raise MerkitError(f"{checkpoint.name} fuses two zoo models over a recording: use merkit.fusion.load_fused({checkpoint.name!r}) "
                          f"or `merkit predict {checkpoint.name} RECORDING`")  # fmt: skip
    if backend not in BACKENDS:
        raise MerkitError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "onnx" or (backend == "auto" and has_onnx(checkpoint) and device != "cuda"):
        if device == "cuda":
            raise MerkitError("the onnx backend runs on the CPU; use --backend torch for --device cuda")
        predictor = load_onnx(checkpoint, batch_size=batch_size, workers=workers, threads=threads)
    else:
        predictor = Predictor(load_checkpoint(checkpoint, resolve_device(device)), device=device, batch_size=batch_size, workers=workers)
    entry = card_of(checkpoint)
    if entry is not None:  # a zoo model's outputs name it ("text-meld"), not its architecture ("ensemble")
        predictor.name = entry.name
    return predictor
