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


KERNEL_CACHE = 0  # [R] oneDNN kernels kept per library: none (with 64, one turn's prediction still left 51 kB)


def bound_kernel_cache(entries: int = KERNEL_CACHE) -> None:
    """Bound oneDNN's cache of compiled kernels before a predictor or CTranslate2 (Whisper) first runs. oneDNN keeps
    one per input shape, up to 1,024 (about 175 kB each), and a predictor meets a new shape with nearly every turn:
    Whisper's encoder on each clip's own frames left about 70 kB a turn in a live session (issue #36), torch's
    MiniLM 42 kB per new sentence length. Compiling each time instead costs about 3 ms a Whisper-tiny encoding, 0.6 ms
    a MiniLM sentence, and a quarter of CAM++'s time on a turn. Read once per process by each library that bundles
    oneDNN (torch and CTranslate2 each have their own); a value the user set in ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is
    kept."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(entries))
