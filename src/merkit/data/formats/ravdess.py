"""RAVDESS (Livingstone & Russo 2018): acted speech clips named by the standard 7-part code.

A file name ``MM-VV-EE-II-SS-RR-AA`` gives modality (01 audio-video, 02 video only, 03 audio
only), vocal channel (01 speech, 02 song), emotion (01 neutral … 08 surprised), intensity
(01 normal, 02 strong), statement (01 "Kids are talking by the door", 02 "Dogs are sitting by
the door"), repetition and actor (odd male, even female). Read from any folder holding
``Actor_XX/`` folders of such files, at any depth: the shared 16 kHz copy
(``audio/Actor_XX/*.flac``) and the original download (``Actor_XX/*.wav`` at 48 kHz, and the
``01-…``/``02-…`` ``.mp4`` files of the audio-visual release). Files of one recording (same code
but for the modality) become one utterance: audio from the audio-only file, else the
audio-visual video's track; video from the audio-visual file, else the video-only one.

There are no conversations: every clip is its own one-utterance dialogue. The utterance id is
the stem of the file that gives its audio (else its video), so tables keyed by clip name (e.g.
OpenFace output) attach with ``merkit data add-features``. Speaker = ``Actor_XX``; gender,
intensity, statement, repetition and vocal channel are kept in ``Utterance.meta``. Default
split (speaker-independent, the shared data README's): train actors 1–16, valid 17–18,
test 19–24; ``-o valid_actors=…`` / ``-o test_actors=…`` (comma lists) change it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from merkit.data.corpus import Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.errors import MerkitError

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_CODE = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)$")
_SUFFIXES = {".wav", ".flac", ".mp4"}
_VOCAL = {"01": "speech", "02": "song"}
DEFAULT_VALID = (17, 18)
DEFAULT_TEST = (19, 20, 21, 22, 23, 24)


def _actor_folders(root: Path) -> list[Path]:
    """``Actor_XX`` folders at depth 0–3 below ``root`` (the layouts people download and convert)."""
    found = [root] if re.fullmatch(r"Actor_\d\d", root.name) else []
    for depth in ("", "*/", "*/*/"):
        found.extend(p for p in root.glob(f"{depth}Actor_[0-9][0-9]") if p.is_dir())
    return sorted(set(found))


def _clips(root: Path) -> list[tuple[Path, tuple[str, ...]]]:
    clips = []
    for folder in _actor_folders(root):
        for path in sorted(folder.iterdir()):
            match = _CODE.match(path.stem)
            if match and path.suffix.lower() in _SUFFIXES:
                clips.append((path, match.groups()))
    return clips


def _actors(value: Any, option: str) -> set[int]:
    if isinstance(value, int):
        return {value}
    try:
        return {int(part) for part in str(value).split(",") if part.strip()}
    except ValueError:
        raise MerkitError(f"{option} {value!r} is not a comma-separated list of actor numbers") from None


@register_reader
class RavdessReader:
    name = "ravdess"
    description = "RAVDESS clips (Actor_XX/MM-VV-EE-II-SS-RR-AA.wav|flac|mp4); 8 emotions, one-utterance dialogues"

    def detect(self, source: Source) -> bool:
        path = source.path
        return path.is_dir() and any(
            _CODE.match(p.stem) and p.suffix.lower() in _SUFFIXES for folder in _actor_folders(path)[:3] for p in folder.iterdir()
        )

    def read(
        self, source: Source, *, vocal: str = "speech", valid_actors: Any = None, test_actors: Any = None
    ) -> DataBundle:
        if vocal not in ("speech", "song", "both"):
            raise MerkitError(f"vocal={vocal!r}: choose speech, song or both")
        valid = _actors(valid_actors, "valid_actors") if valid_actors is not None else set(DEFAULT_VALID)
        test = _actors(test_actors, "test_actors") if test_actors is not None else set(DEFAULT_TEST)
        if valid & test:
            raise MerkitError(f"actors {sorted(valid & test)} are in both valid_actors and test_actors")
        recordings: dict[tuple[str, ...], dict[str, Path]] = {}
        for path, (modality, *code) in _clips(source.path):
            if vocal != "both" and _VOCAL[code[0]] != vocal:
                continue
            recordings.setdefault(tuple(code), {})[modality] = path
        if not recordings:
            raise MerkitError(f"no RAVDESS {vocal} clips (Actor_XX/MM-VV-EE-II-SS-RR-AA.wav|flac|mp4) found", path=source.spec)
        schema = LabelSchema(names=EMOTIONS)
        dialogues, split_of = [], {}
        for code, files in sorted(recordings.items()):
            channel, emotion, intensity, statement, repetition, actor = code
            audio = files.get("03") or files.get("01")
            video = files.get("01") or files.get("02")
            media = {"audio": str(audio)} if audio is not None else {}
            if video is not None:
                media["video"] = str(video)
            utterance_id = (audio or video).stem
            number = int(actor)
            utterance = build_utterance(
                id=utterance_id,
                speaker=f"Actor_{actor}",
                text=STATEMENTS[statement],
                label=schema.index(EMOTIONS[int(emotion) - 1]),
                media=media,
                meta={
                    "actor": actor,
                    "gender": "male" if number % 2 else "female",
                    "intensity": "strong" if intensity == "02" else "normal",
                    "statement": statement,
                    "repetition": repetition,
                    "vocal_channel": _VOCAL[channel],
                },
            )
            dialogues.append(Dialogue(id=utterance_id, utterances=(utterance,)))
            split_of[utterance_id] = "test" if number in test else "valid" if number in valid else "train"
        splits = {s: tuple(d for d, owner in split_of.items() if owner == s) for s in ("train", "valid", "test")}
        corpus = build_corpus(name="ravdess", labels=schema, dialogues=tuple(dialogues), splits=splits)
        return DataBundle(corpus)
