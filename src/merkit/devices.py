"""One meaning of ``--device`` for every command: ``auto`` (the GPU when torch sees one), ``cpu``, ``cuda``
(``gpu`` and ``cuda:N`` too). Asking for a GPU that is not there is a clear error, not a failure deep inside."""

from __future__ import annotations

from merkit.errors import MerkitError

CHOICES = "auto (the GPU when there is one) | cpu | cuda"


def resolve_device(device: str | None) -> str:
    """The torch device name for ``device``."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "gpu":
        name = "cuda"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise MerkitError(f"--device {device}: torch {torch.__version__} ({built}) sees no CUDA GPU here; use --device cpu or auto")
        return name
    raise MerkitError(f"--device {device!r} is not a device; choose {CHOICES}")


def lightning_accelerator(device: str | None) -> str:
    """``--device`` as Lightning's ``accelerator`` (``auto`` stays ``auto``: Lightning then picks the GPU itself)."""
    if (device or "auto").strip().lower() == "auto":
        return "auto"
    return "gpu" if resolve_device(device).startswith("cuda") else "cpu"


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes in bf16 natively. On a CPU without AVX512-BF16/AMX, bf16 autocast is
    emulated and was over ten times slower than fp32 (MPNet fine-tuning on an AVX2 EPYC), so it is off there."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


NATIVE_CACHES = {  # [R] issue #36: caches of the libraries under torch and CTranslate2, off or one entry
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0",  # oneDNN's compiled kernels: none (with 64, one turn's prediction still left 51 kB)
    "LRU_CACHE_CAPACITY": "1",  # torch's (ideep's) convolution set-ups: one
    "MKL_DISABLE_FAST_MM": "1",  # MKL's own buffer cache: off
}


def bound_native_caches() -> None:
    """Keep the native libraries under torch and CTranslate2 from keeping something per input shape, before a predictor,
    Whisper or a live session first runs: a predictor meets a new shape with nearly every turn, so a long live session
    grew by what each cache kept (issue #36). oneDNN's compiled kernels (torch and CTranslate2 each bundle a oneDNN;
    up to 1,024 of about 175 kB): Whisper's encoder on each clip's own frames left about 70 kB a turn, torch's MiniLM
    42 kB per new sentence length; compiling each time costs about 3 ms a Whisper-tiny encoding and 0.6 ms a MiniLM
    sentence. torch's convolution set-ups (up to 1,024): CAM++ left 138 kB per new turn length. MKL's buffer cache:
    8 kB a turn of a live session. The last two cost nothing measurable. MKL reads its variable when torch is
    imported, so it takes effect only before that (``merkit live`` and ``merkit serve`` call this first); the others
    are read at first use. A value the user set is kept."""
    import os

    for name, value in NATIVE_CACHES.items():
        os.environ.setdefault(name, value)
