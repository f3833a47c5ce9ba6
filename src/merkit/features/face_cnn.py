"""``face-cnn``: merkit's own face-expression CNN, trained on FER2013's training split, as a face extractor.

The network (:class:`FaceCNN`) is defined here and only here: the recipe that trains it
(``recipes/zoo/face_fer2013.py``) and the extractor that embeds faces with it both import it.
It is a VGG-style net of four stages (two 3×3 convolutions with batch norm and ReLU, then 2×2
max pooling) of ``widths`` channels, global average pooling, a ``hidden``-unit layer and 7
expression logits. Input: a 48×48 grey face, x / 255, centre-cropped to ``CROP``×``CROP`` (the
recipe trains on random crops of that size). The extractor's row is the ``hidden``-unit layer
before the logits (after ReLU), averaged over the sampled frames like the other face extractors.

Its weights ship in the package (``merkit/zoo/face-fer2013/face_cnn.safetensors``, float16, computed
in float32; the training record is ``card.md`` beside them): nothing is downloaded. It learnt from FER2013's
``train`` split only (28,709 web-search faces; never CK+ nor FER2013's PublicTest/PrivateTest),
so unlike ``face-fer`` its CK+ figures are clean; its FER2013 ``valid`` (PublicTest) score is in
the card. Face finding, cropping and pooling are those of the other face extractors
(:mod:`merkit.features.video`); with ``detection=auto`` a small face crop such as a FER2013
image is used whole.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from merkit.errors import MerkitError
from merkit.io import file_sha256, folder_sha256
from merkit.features.registry import register_extractor
from merkit.features.video import FaceExtractor, FaceSettings, crop_square

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SIZE = 48  # the face is resized to SIZE×SIZE grey, as FER2013's images are
CROP = 44  # the network sees the centre CROP×CROP (random crops of this size in training)
# where the CROP×CROP crops start (row, column): the centre, or the centre and the four corners (test-time crops)
CROPS = {"centre": ((2, 2),), "five": ((2, 2), (0, 0), (0, 4), (4, 0), (4, 4))}
WIDTHS = (32, 64, 128, 256)
HIDDEN = 256
TRAINED_ON = "FER2013's train split only (28,709 web-search faces, 7 expressions; never CK+ nor FER2013's PublicTest)"


def weights_file() -> Path:
    """The shipped weights (safetensors), inside the package."""
    return Path(__file__).resolve().parent.parent / "zoo" / "face-fer2013" / "face_cnn.safetensors"


def build(widths: tuple[int, ...] = WIDTHS, hidden: int = HIDDEN, classes: int = len(CLASSES), dropout: float = 0.4):
    """A fresh :class:`FaceCNN` (torch is imported here, not on importing merkit.features)."""
    import torch
    from torch import nn

    class FaceCNN(nn.Module):
        """VGG-style stages → global average → ``hidden`` units (the embedding) → logits."""

        def __init__(self):
            super().__init__()
            stages, inputs = [], 1
            for width in widths:
                layers: list[nn.Module] = []
                for index in range(2):
                    layers += [nn.Conv2d(inputs if index == 0 else width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                stages.append(nn.Sequential(*layers, nn.MaxPool2d(2)))
                inputs = width
            self.stages = nn.Sequential(*stages)
            self.embedding = nn.Sequential(nn.Dropout(dropout), nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, classes))

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.embedding(self.stages(x).mean(dim=(2, 3)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(x))

    return FaceCNN()


def to_input(faces: np.ndarray, at: tuple[int, int] = CROPS["centre"][0]):
    """``[N, 48, 48]`` uint8 grey faces → the network's ``[N, 1, CROP, CROP]`` float input (the crop starting at
    ``at``, the centre by default; x / 255)."""
    import torch

    if faces.ndim != 3 or faces.shape[1:] != (SIZE, SIZE):
        raise MerkitError(f"face-cnn takes [N, {SIZE}, {SIZE}] grey faces, got shape {tuple(faces.shape)}")
    crop = faces[:, at[0] : at[0] + CROP, at[1] : at[1] + CROP]
    return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32) / 255.0)[:, None]


def views(faces: np.ndarray, *, flip: bool, crops: str = "centre"):
    """The network's inputs for each test-time view of the faces: each crop of ``CROPS[crops]``, and its mirror
    with ``flip``; a linear head on their averaged embedding gives their averaged logits."""
    for at in CROPS[crops]:
        x = to_input(faces, at)
        yield x
        if flip:
            yield x.flip(-1)


def probabilities(network, faces: np.ndarray, *, flip: bool, crops: str = "centre", bf16: bool = False, batch: int = 512) -> np.ndarray:
    """``[N, 7]`` class probabilities of uint8 ``[N, 48, 48]`` faces, of the logits averaged over the test-time
    views (:func:`views`: what a linear head on the extractor's averaged embedding gives)."""
    import torch

    network.eval()
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(faces), batch):
            seen = [network(x.contiguous(memory_format=torch.channels_last)).float() for x in views(faces[start : start + batch], flip=flip, crops=crops)]
            out.append(torch.stack(seen).mean(dim=0).softmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), dtype=np.float32)


def _present(path: Path) -> Path:
    """``path``, or the one-line error that names it (the fingerprint and the network both read it)."""
    if not path.is_file():
        raise MerkitError(f"face-cnn: the weights file {path} is missing from the package (rebuild with recipes/zoo/face_fer2013.py)")
    return path


@functools.lru_cache(maxsize=1)
def shipped() -> tuple[Any, dict[str, Any]]:
    """The shipped :class:`FaceCNN` in eval mode and its metadata (widths, hidden, classes, ``flip``: whether the
    classifier averages with the mirrored face, ``trained_on``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = _present(weights_file())
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("face_cnn", "{}"))
    network = build(tuple(meta.get("widths", WIDTHS)), int(meta.get("hidden", HIDDEN)), len(meta.get("classes", CLASSES)))
    network.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in load_file(str(path)).items()})
    return network.eval(), meta


class FaceCnnSettings(FaceSettings):
    crops: Literal["five"] | None = Field(None, description="five: average the centre crop with the four corner crops (test-time crops; unset: the centre) [R]")
    added_later: ClassVar[tuple[str, ...]] = ("face", "crops")


@register_extractor
class FaceCnn(FaceExtractor):
    name = "face-cnn"
    description = "merkit's own FER2013-trained CNN: the 256 units before its 7 expression logits, of face crops, averaged"
    trained_on = TRAINED_ON
    dim = HIDDEN
    embedders = ("cnn",)
    Settings: ClassVar[type[FaceSettings]] = FaceCnnSettings

    weights_path: Path | None = None  # the recipe points this at the weights it has just written, to record their checksum

    def weights(self) -> dict[str, Any]:
        files = dict(super().weights()["files"])
        files["face-cnn"] = file_sha256(_present(self.weights_path or weights_file()))
        return {"files": files, "sha256": folder_sha256(files)}

    def embed(self, image: np.ndarray, box: tuple[int, int, int], points: np.ndarray | None) -> np.ndarray:
        import torch
        from PIL import Image

        face = Image.fromarray(crop_square(image, *box)).resize((SIZE, SIZE), Image.Resampling.BILINEAR).convert("L")
        batch = torch.cat(list(views(np.asarray(face)[None], flip=self.settings.flip, crops=self.settings.crops or "centre")))
        with torch.inference_mode():
            return shipped()[0].embed(batch).mean(dim=0).numpy().astype(np.float32)
