"""Helpers shared by the inference and serving tests: real media made on the spot, and tiny checkpoints.

Speech comes from espeak-ng, the face video from a real photograph (scikit-image's
astronaut) turned into an mp4 by ffmpeg, as in ``test_features_media.py``. A helper that
needs a missing program or package skips the test and says what to install.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from merkit.io import write_joined_wav, write_wav  # noqa: F401  (write_wav: the tests' import of it from here)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make system-deps installs it)")
    return path


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def speak(text: str, path: Path) -> Path:
    """A wav of ``text`` spoken by espeak-ng (22,050 Hz mono)."""
    _run(require_program("espeak-ng"), "-w", str(path), text)
    return path


def face_video(path: Path, soundtrack: Path | None = None, seconds: float = 2.0) -> Path:
    """A 256×256 10 fps mp4 of the astronaut photograph; with ``soundtrack`` as its audio (and its length)."""
    ffmpeg = require_program("ffmpeg")
    skimage_data = pytest.importorskip("skimage.data", reason="the face video needs scikit-image (dev extra)")
    from PIL import Image

    photo = path.with_suffix(".png")
    Image.fromarray(skimage_data.astronaut()).save(photo)
    inputs = ["-loop", "1", "-framerate", "10", "-i", str(photo)]
    if soundtrack is not None:
        inputs += ["-i", str(soundtrack)]
    length = ["-c:a", "aac", "-shortest"] if soundtrack is not None else ["-t", str(seconds)]
    _run(ffmpeg, "-v", "error", "-y", *inputs, "-vf", "scale=256:256", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", *length, str(path))  # fmt: skip
    return path


def blank_video(path: Path, seconds: float = 2.0) -> Path:
    """A plain grey mp4 with no face and no sound track."""
    _run(require_program("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=128x128:d={seconds}:r=10",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    return path


def tone(path: Path, seconds: float, frequency: float = 220.0, rate: int = 16000) -> Path:
    """A wav of a sine tone, written with the standard library (no program needed)."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate))) for i in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(frames)
    return path


def write_jsonl(path: Path, rows: Sequence[Mapping]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return path


def untrained_checkpoint(
    path: Path,
    extractors: Mapping[str, str],
    *,
    model: str = "late-fusion",
    labels: Sequence[str] = ("anger", "joy", "neutral"),
    multi_label: bool = False,
    seed: int = 0,
) -> Path:
    """A checkpoint of a freshly initialised ``model`` whose manifest records the real ``extractors``
    (modality → extractor name): everything inference needs, without training or extracting anything."""
    import torch

    from merkit.checkpoint import save_checkpoint
    from merkit.data.corpus import LabelSchema
    from merkit.features import get_extractor
    from merkit.models.base import DataSpec
    from merkit.models.registry import get_model

    built = {modality: get_extractor(name, modality=modality) for modality, name in extractors.items()}
    entry = get_model(model)
    spec = DataSpec(
        modalities={m: e.output_dim for m, e in built.items()},
        num_classes=len(labels),
        multi_label=multi_label,
        class_names=tuple(labels),
    )
    torch.manual_seed(seed)
    network = entry.model_class(entry.config_class(), spec)
    features = {
        m: {"modality": m, "level": e.level, "dim": e.output_dim, "extractor": e.record_name, "settings": e.manifest_settings()}
        for m, e in built.items()
    }
    save_checkpoint(
        path, network, model_name=model, labels=LabelSchema(names=tuple(labels), multi_label=multi_label), features=features,
        protocol="honest", seed=seed,
    )  # fmt: skip
    return path


def join_clips(clips: Sequence[Path], out: Path, pause: float = 1.0, rate: int = 16000) -> list[tuple[float, float]]:
    """One mono 16-bit wav of ``clips`` with ``pause`` seconds of silence after each; each clip's (start, end) in it."""
    from merkit.features.media import decode_audio

    return write_joined_wav(out, [decode_audio(str(clip), sample_rate=rate) for clip in clips], pause, rate)


RAVDESS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}


def ravdess_clips(data: Path, actors, *, statement: str | None = None, repetitions=None) -> list[tuple[Path, str, int]]:
    """(file, emotion, actor) of the shared RAVDESS copy's clips of four emotions (neutral, happy, sad, angry)."""
    found = []
    for actor in actors:
        for path in sorted((data / "audio" / f"Actor_{actor:02d}").glob("*.flac")):
            _, _, emotion, _, said, repetition, _ = path.stem.split("-")
            if emotion in RAVDESS_EMOTIONS and statement in (None, said) and (repetitions is None or repetition in repetitions):
                found.append((path, RAVDESS_EMOTIONS[emotion], actor))
    return found
