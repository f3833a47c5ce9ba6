"""Image-folder corpora: ``<class>/<image>`` trees (CK+, FER2013, AffectNet samples), one image per utterance.

Layout, below the folder given (single wrapping folders such as ``images/`` are looked
through): class folders, or split folders ``train/``, ``val|valid|validation|dev/`` and
``test/`` holding class folders. In a class folder each image file is an utterance (media
``image``) and each folder of frames is one (media ``frames``: a clip's frames, or an OpenFace
output folder with its ``*_aligned`` crops; see :mod:`merkit.data.images`). Every utterance is
its own one-utterance dialogue, with no text; its id is its path below the layout's root
without the suffix (``anger/S010_004_00000017``). Classes are the class folders' names in
sorted order (``-o labels=a,b,…`` fixes the order).

Speaker (subject): ``-o speaker_pattern=REGEX`` searched in the file name without suffix,
its first group (else the whole match); ``'^(S\\d+)_'`` gives CK+'s subjects. Without it
every image is its own speaker, with a warning when the split is drawn (near-duplicate
frames of one person would land on both sides). Splits: the split folders when present (a
missing validation or test split is drawn from ``train/``, grouped by speaker; without ``train/``,
e.g. an evaluation-only ``test/``, the folders are the splits as they are); else a seeded split
grouped by speaker (scikit-learn ``GroupShuffleSplit``; ``valid_fraction`` 0.1,
``test_fraction`` 0.1, ``seed`` 0 [R]).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.images import is_frame_folder, is_image, natural_key
from merkit.errors import MerkitError

SPLIT_FOLDERS = {
    "train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid",
    "dev": "valid", "test": "test", "testing": "test",
}  # fmt: skip


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _items(class_folder: Path) -> list[tuple[Path, str]]:
    """The utterances of a class folder: ``(path, media kind)``, images then frame folders."""
    images = [(p, "image") for p in class_folder.iterdir() if p.is_file() and is_image(p)]
    frames = [(p, "frames") for p in _subfolders(class_folder) if is_frame_folder(p)]
    return sorted(images, key=lambda item: natural_key(item[0].name)) + frames


def _has_items(folder: Path) -> bool:
    return any(p.is_file() and is_image(p) for p in folder.iterdir()) or any(is_frame_folder(p) for p in _subfolders(folder))


def layout(root: Path) -> tuple[Path, dict[str | None, list[Path]]] | None:
    """The layout's root and its class folders by split folder (``None``: no split folders), or ``None``."""
    base = root
    for _ in range(3):
        if not base.is_dir():
            return None
        subfolders = _subfolders(base)
        if subfolders and all(p.name.lower() in SPLIT_FOLDERS for p in subfolders):
            found = {p.name: [c for c in _subfolders(p) if _has_items(c)] for p in subfolders}
            return (base, found) if any(found.values()) else None
        has_images = any(p.is_file() and is_image(p) for p in base.iterdir())
        if len(subfolders) == 1 and not has_images:  # a wrapping folder (``images/``): look inside
            base = subfolders[0]
            continue
        classes = [c for c in subfolders if _has_items(c)]
        return (base, {None: classes}) if len(classes) >= 2 else None
    return None


def _speaker_of(stem: str, pattern: re.Pattern | None, path: Path) -> str | None:
    if pattern is None:
        return None
    match = pattern.search(stem)
    if match is None:
        raise MerkitError(f"speaker_pattern {pattern.pattern!r} does not match the file name {stem!r}", path=path)
    return match.group(1) if pattern.groups else match.group(0)


def grouped_split(ids: list[str], groups: list[str], fraction: float, seed: int) -> set[str]:
    """The ids of about ``fraction`` of the groups, drawn with ``seed`` (scikit-learn ``GroupShuffleSplit``)."""
    from sklearn.model_selection import GroupShuffleSplit

    if len(set(groups)) < 2:
        raise MerkitError(f"cannot draw a split grouped by speaker from {len(set(groups))} speaker(s)")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, chosen = next(splitter.split(ids, groups=groups))
    return {ids[i] for i in chosen}


def _fraction(value: Any, name: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0 < fraction < 1:
        raise MerkitError(f"{name}={value!r}: give a fraction between 0 and 1")
    return fraction


@register_reader
class ImageFolderReader:
    name = "image-folder"
    description = "face images in class folders (<class>/<image>, optionally under train/ val/ test/); one-utterance dialogues"

    def detect(self, source: Source) -> bool:
        return source.path.is_dir() and layout(source.path) is not None

    def read(
        self,
        source: Source,
        *,
        speaker_pattern: str | None = None,
        labels: str | None = None,
        valid_fraction: Any = 0.1,
        test_fraction: Any = 0.1,
        seed: int = 0,
        name: str | None = None,
    ) -> DataBundle:
        found = layout(source.path)
        if found is None:
            raise MerkitError("no class folders of images (<class>/<image>) found", path=source.spec)
        base, by_split = found
        try:
            pattern = re.compile(speaker_pattern) if speaker_pattern else None
        except re.error as exc:
            raise MerkitError(f"speaker_pattern {speaker_pattern!r} is not a regular expression: {exc}") from None
        class_names = sorted({c.name for folders in by_split.values() for c in folders}, key=natural_key)
        if labels is not None:
            given = [n.strip() for n in str(labels).split(",") if n.strip()]
            unknown = sorted(set(class_names) - set(given))
            if unknown:
                raise MerkitError(f"labels={labels!r} lacks the class folder(s) {', '.join(unknown)}")
            class_names = given
        schema = LabelSchema(names=tuple(class_names))
        dialogues, speakers, split_of = [], {}, {}
        for split_folder, class_folders in by_split.items():
            for class_folder in class_folders:
                for path, kind in _items(class_folder):
                    utterance_id = path.relative_to(base).with_suffix("").as_posix() if kind == "image" else path.relative_to(base).as_posix()
                    speaker = _speaker_of(path.stem if kind == "image" else path.name, pattern, path) or utterance_id
                    utterance = build_utterance(
                        id=utterance_id, speaker=speaker, label=schema.index(class_folder.name), media={kind: str(path.resolve())}
                    )
                    dialogues.append(Dialogue(id=utterance_id, utterances=(utterance,)))
                    speakers[utterance_id] = speaker
                    split_of[utterance_id] = SPLIT_FOLDERS[split_folder.lower()] if split_folder else "train"
        if not dialogues:
            raise MerkitError("the class folders hold no images", path=source.spec)
        self._draw_missing_splits(split_of, speakers, pattern, _fraction(valid_fraction, "valid_fraction"),
                                  _fraction(test_fraction, "test_fraction"), int(seed), source.spec)  # fmt: skip
        splits = {s: tuple(d for d, owner in split_of.items() if owner == s) for s in ("train", "valid", "test")}
        corpus = build_corpus(name=name or source.path.resolve().name, labels=schema, dialogues=tuple(dialogues), splits=splits)
        return DataBundle(corpus)

    @staticmethod
    def _draw_missing_splits(
        split_of: dict[str, str], speakers: dict[str, str], pattern, valid: float, test: float, seed: int, where: str
    ) -> None:
        """Fill in the missing test and valid splits from training, grouped by speaker; with no training
        images (an evaluation-only folder) there is nothing to draw from, and nothing is drawn."""
        given = set(split_of.values())
        drawn = [s for s in ("test", "valid") if s not in given] if "train" in given else []
        if drawn and pattern is None and len(set(speakers.values())) == len(speakers):
            warnings.warn(
                f"{where}: no speaker_pattern, so every image is its own speaker and near-duplicate images of one person "
                f"may fall in both the training and the {' and '.join(drawn)} split; give -o speaker_pattern=REGEX",
                UserWarning,
                stacklevel=3,
            )
        for split in drawn:
            pool = [i for i, s in split_of.items() if s == "train"]
            fraction = valid / (1 - test) if split == "valid" and "test" in drawn else test if split == "test" else valid
            for i in grouped_split(pool, [speakers[i] for i in pool], fraction, seed):
                split_of[i] = split
