"""Still images as utterance media: which files are images, and the frames of a frame folder.

An utterance's visual input is a video (``media["video"]``), one image (``media["image"]``:
a face crop or a photograph) or a folder of frames (``media["frames"]``: the sampled frames
of a clip, e.g. what ``ffmpeg -i clip.mp4 %05d.png`` or OpenFace writes). Frames are taken
in natural order of their names (``frame_2`` before ``frame_10``). OpenFace's output folder
is recognised: a folder holding no images but one ``<name>_aligned/`` folder (its aligned face
crops, ``frame_det_00_000001.bmp`` …) gives the frames of that folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from merkit.errors import MerkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def natural_key(name: str) -> tuple:
    """``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, in natural order (OpenFace's ``*_aligned`` sub-folder when the folder has none).

    Raises :class:`MerkitError` for a folder that is missing or holds no frames, naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MerkitError("frame folder not found" if not folder.exists() else "not a folder of frames", path=folder)
    frames = [p for p in folder.iterdir() if p.is_file() and is_image(p)]
    if not frames:
        aligned = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.endswith("_aligned"))
        if len(aligned) > 1:
            names = ", ".join(p.name for p in aligned)
            raise MerkitError(f"several OpenFace aligned folders ({names}); name one of them as the frames folder", path=folder)
        if aligned:
            frames = [p for p in aligned[0].iterdir() if p.is_file() and is_image(p)]
    if not frames:
        raise MerkitError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the frame folder", path=folder)
    return sorted(frames, key=lambda p: natural_key(p.name))


def is_frame_folder(folder: Path) -> bool:
    """Whether ``folder`` holds frames (images, or one OpenFace ``*_aligned`` folder of them)."""
    try:
        frame_files(folder)
    except (MerkitError, OSError):
        return False
    return True
