"""Options that several commands share: one name, one short form and one help text per concept."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from merkit.devices import CHOICES
from merkit.errors import MerkitError


def set_torch_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads for this process (left as torch chose when not given)."""
    if threads is None:
        return
    if threads < 1:
        raise MerkitError("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


def _quiet_libraries(quiet: bool) -> bool:
    """``--quiet`` also silences the libraries merkit loads models with (their weight-loading bars)."""
    if quiet:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub and transformers when imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:
            from transformers.utils import logging

            logging.disable_progress_bar()
    return quiet


DeviceOption = Annotated[str, typer.Option("--device", help=f"Device to compute on: {CHOICES}.")]
BackendOption = Annotated[
    str, typer.Option("--backend", help="auto (the ONNX graphs of `merkit export --onnx` when the folder has them), torch or onnx.")
]
ThreadsOption = Annotated[Optional[int], typer.Option(help="CPU threads (1 is fastest on a busy machine) per prediction, for torch and ONNX Runtime.")]
DATA_ROOT_HELP = "Folder of the shared corpora (iemocap/, meld/, ravdess/ …; default $MERKIT_SHARED_DATA, else ../shared/data)."
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.", callback=_quiet_libraries)]

# One example a command, shown at the end of its --help.
EXAMPLES = {
    "data stats": "merkit data stats ../shared/data/meld --json",
    "data convert": "merkit data convert ../shared/data/iemocap/iemocap.pkl --trust-pickle --out stores/iemocap",
    "data add-features": "merkit data add-features stores/ravdess --modality visual face_action_units.csv --columns 'AU*_r,AU*_c'",
    "data formats": "merkit data formats",
    "extract": "merkit extract ../shared/data/meld -m text -e mpnet --out stores/meld-mpnet",
    "extractors": "merkit extractors",
    "merge": "merkit merge stores/meld-mpnet   # after `merkit extract ... --shard 0/4` … `3/4`",
    "models": "merkit models",
    "train": "merkit train stores/meld-mpnet --model sure --preset auto --seeds 0,1,2 --out runs/meld/sure",
    "baseline": "merkit baseline stores/ravdess --modalities audio,visual --out runs/ravdess/svm",
    "evaluate": "merkit evaluate runs/meld/sure/seed0/best --data stores/meld-mpnet --analysis calibration",
    "report": "merkit report runs/meld/sure --run-seed 0",
    "ensemble": "merkit ensemble runs/meld/bigru runs/meld/sdt --out runs/meld/ensemble --weights fit",
    "compare": "merkit compare runs/meld/bigru runs/meld/sure --bootstrap 2000",
    "summary": "merkit summary runs/meld/* --metrics accuracy,weighted_f1 --splits test",
    "predict": "merkit predict runs/meld/sure/seed0/best talk.txt --csv --out talk.csv",
    "serve": "merkit serve models/sure --port 8000   # then open http://127.0.0.1:8000/",
    "live": "merkit live runs/ravdess/seed0/best --input talk.wav   # or --mic; --json for JSON lines",
    "diarize": "merkit diarize meeting.wav --out meeting.rttm   # --num-speakers 3 when known",
    "export": "merkit export runs/meld/sure/seed0/best --out models/sure --onnx --quantize int8",
    "demo": "merkit demo",
    "info": "merkit info runs/meld/sure/seed0/best",
    "doctor": "merkit doctor",
    "cache list": "merkit cache list",
    "cache clear": "merkit cache clear models/whisper-base --yes",
    "zoo list": "merkit zoo list",
    "zoo build": "merkit zoo build --data-root ../shared/data --only voice-ravdess --budget reduced",
}


def example(name: str) -> str:
    return f"Example: {EXAMPLES[name]}"
