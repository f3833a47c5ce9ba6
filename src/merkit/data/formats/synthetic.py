"""A seeded generator of multimodal conversations with known structure.

It lets every model be trained and tested with no external data, and makes behaviour
checkable: each modality's features carry the label with a chosen strength (``*_signal``),
some utterances carry no signal at all so only the dialogue context reveals them
(``ambiguous``), emotions persist per speaker and spread between speakers, a modality can be
made pure noise (``noise_modalities``) or partly missing (``missing_*``), and with
``complementary`` text and audio each see only half of the label (text the pair
``c // 2``, audio the parity ``c % 2``), so only their combination identifies it.

Use the spec name ``synthetic`` as the input path: ``merkit data stats synthetic``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from merkit.data.corpus import MODALITIES, Dialogue, LabelSchema, build_corpus, build_utterance
from merkit.data.features import FeatureSet
from merkit.data.formats import DataBundle, Source, register_reader
from merkit.errors import MerkitError

SPEC_NAME = "synthetic"
_EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust", "frustration", "excitement", "calm")


class SyntheticSpec(BaseModel):
    """Everything that shapes the synthetic corpus; stored in the feature manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    dialogues: int = Field(120, ge=3)
    min_turns: int = Field(6, ge=1)
    max_turns: int = Field(20, ge=1)
    speakers: int = Field(2, ge=1)
    classes: int = Field(6, ge=2, le=len(_EMOTIONS))
    multi_label: bool = False
    text_dim: int = Field(32, ge=1)
    audio_dim: int = Field(24, ge=1)
    visual_dim: int = Field(16, ge=1)
    text_signal: float = 1.0
    audio_signal: float = 0.7
    visual_signal: float = 0.4
    noise: float = Field(1.0, ge=0)
    noise_modalities: tuple[str, ...] = ()
    complementary: bool = False
    persistence: float = Field(0.6, ge=0, le=1)
    contagion: float = Field(0.5, ge=0, le=1)
    ambiguous: float = Field(0.25, ge=0, le=1)
    missing_text: float = Field(0.0, ge=0, le=1)
    missing_audio: float = Field(0.0, ge=0, le=1)
    missing_visual: float = Field(0.0, ge=0, le=1)

    @field_validator("noise_modalities", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        names = [v for v in value.split(",") if v] if isinstance(value, str) else value
        unknown = set(names) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
        return tuple(names)

    def signal(self, modality: str) -> float:
        return 0.0 if modality in self.noise_modalities else getattr(self, f"{modality}_signal")


def _labels(spec: SyntheticSpec, rng: np.random.Generator, speakers: list[int]) -> list[tuple[int, ...]]:
    """Per-turn label sets: a speaker keeps their emotion, or catches the previous turn's, or draws anew."""
    prior = 1.0 / (1.0 + 0.4 * np.arange(spec.classes))  # imbalanced, like real corpora
    prior /= prior.sum()

    def draw() -> tuple[int, ...]:
        first = int(rng.choice(spec.classes, p=prior))
        if spec.multi_label and rng.random() < 0.35:
            return tuple(sorted({first, int(rng.choice(spec.classes, p=prior))}))
        return (first,)

    state: dict[int, tuple[int, ...]] = {}
    labels: list[tuple[int, ...]] = []
    for speaker in speakers:
        if speaker in state and rng.random() < spec.persistence:
            current = state[speaker]
        elif labels and rng.random() < spec.contagion:
            current = labels[-1]
        else:
            current = draw()
        state[speaker] = current
        labels.append(current)
    return labels


def _views(spec: SyntheticSpec, modality: str) -> tuple[int, np.ndarray]:
    """How many prototypes a modality has, and which prototype each class maps to."""
    classes = np.arange(spec.classes)
    if spec.complementary and modality == "text":
        return (spec.classes + 1) // 2, classes // 2
    if spec.complementary and modality == "audio":
        return 2, classes % 2
    return spec.classes, classes


def generate(spec: SyntheticSpec) -> DataBundle:
    if spec.max_turns < spec.min_turns:
        raise MerkitError(f"max_turns ({spec.max_turns}) is below min_turns ({spec.min_turns})")
    rng = np.random.default_rng(spec.seed)
    names = _EMOTIONS[: spec.classes]
    dialogues, all_labels, ambiguous = [], [], []
    for index in range(spec.dialogues):
        turns = int(rng.integers(spec.min_turns, spec.max_turns + 1))
        speakers = [int(s) for s in rng.integers(0, spec.speakers, size=turns)]
        labels = _labels(spec, rng, speakers)
        utterances = tuple(
            build_utterance(
                id=f"syn{index:04d}_{turn:03d}",
                speaker=f"speaker{speaker}",
                text=f"synthetic utterance {turn} of dialogue {index}",
                label=label if spec.multi_label else label[0],
            )
            for turn, (speaker, label) in enumerate(zip(speakers, labels, strict=True))
        )
        dialogues.append(Dialogue(id=f"syn{index:04d}", utterances=utterances))
        all_labels.extend(labels)
        ambiguous.extend(rng.random(turns) < spec.ambiguous)

    count = len(all_labels)
    signal_mask = ~np.asarray(ambiguous)
    features = {}
    for modality in MODALITIES:
        dim = getattr(spec, f"{modality}_dim")
        prototype_count, view = _views(spec, modality)
        prototypes = rng.normal(size=(prototype_count, dim))
        prototypes *= 3.0 / np.linalg.norm(prototypes, axis=1, keepdims=True)
        clean = np.stack([prototypes[view[list(label)]].sum(axis=0) for label in all_labels])
        values = spec.signal(modality) * clean * signal_mask[:, None] + spec.noise * rng.normal(size=(count, dim))
        present = rng.random(count) >= getattr(spec, f"missing_{modality}")
        values[~present] = 0.0
        features[modality] = FeatureSet(
            modality=modality,
            values=values.astype(np.float32),
            present=present,
            extractor="synthetic",
            settings=spec.model_dump(mode="json"),
            source=f"synthetic(seed={spec.seed})",
        )

    order = rng.permutation(spec.dialogues)
    n_train, n_valid = int(0.7 * spec.dialogues), int(0.15 * spec.dialogues)
    ids = [dialogues[i].id for i in order]
    splits = {
        "train": tuple(sorted(ids[:n_train])),
        "valid": tuple(sorted(ids[n_train : n_train + n_valid])),
        "test": tuple(sorted(ids[n_train + n_valid :])),
    }
    corpus = build_corpus(
        name="synthetic",
        labels=LabelSchema(names=names, multi_label=spec.multi_label),
        dialogues=tuple(dialogues),
        splits=splits,
    )
    return DataBundle(corpus, features)


@register_reader
class SyntheticReader:
    name = "synthetic"
    description = "seeded synthetic multimodal conversations (input path: 'synthetic'; options: see SyntheticSpec)"

    def detect(self, source: Source) -> bool:
        return source.spec == SPEC_NAME and not source.path.exists()

    def read(self, source: Source, **options: Any) -> DataBundle:
        try:
            spec = SyntheticSpec(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise MerkitError(f"synthetic option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return generate(spec)
