"""Who speaks each live turn: online assignment from voice embeddings, or one unknown speaker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from merkit.errors import MerkitError
from merkit.recording import UNKNOWN_SPEAKER


class SpeakerAssigner(Protocol):
    """Gives each new turn a speaker; may revise earlier turns' (it returns every turn's speaker so far).
    :meth:`embed` may run ahead on a turn that is not yet closed; :meth:`assign` runs once the turn is."""

    source: str  # what the timeline's ``speakers`` says

    def embed(self, audio: np.ndarray) -> Any:
        """What :meth:`assign` needs of a turn's audio (16 kHz mono), without changing the assigner."""

    def assign(self, embedding: Any) -> list[str]:
        """The speakers of all turns so far, the new turn (its :meth:`embed`) last."""


class OneSpeaker:
    """Every turn is the one ``unknown`` speaker (as the offline timeline without an RTTM file)."""

    source = UNKNOWN_SPEAKER

    def __init__(self) -> None:
        self.turns = 0

    def embed(self, audio: np.ndarray) -> None:
        return None

    def assign(self, embedding: None) -> list[str]:
        self.turns += 1
        return [UNKNOWN_SPEAKER] * self.turns


class NearestSpeaker:
    """Online speakers from voice embeddings: a turn joins the speaker whose mean embedding is nearest (cosine
    distance) if nearer than ``threshold``, else starts a new speaker ``S1``, ``S2``, ...; after each turn every
    earlier turn is re-assigned to its nearest mean, which may revise it. ``embed``: 16 kHz mono → a vector."""

    source = "voice embeddings (online)"

    def __init__(self, embed: Callable[[np.ndarray], np.ndarray], threshold: float):
        self.encoder = embed
        self.threshold = threshold
        self.vectors: list[np.ndarray] = []
        self.names: list[str] = []
        self.created = 0

    def _means(self) -> tuple[list[str], np.ndarray]:
        speakers = sorted(set(self.names), key=self.names.index)
        means = np.stack([np.mean([v for v, n in zip(self.vectors, self.names) if n == s], axis=0) for s in speakers])
        return speakers, means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        vector = np.asarray(self.encoder(audio), dtype=np.float64).reshape(-1)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def assign(self, vector: np.ndarray) -> list[str]:
        name = None
        if self.names:
            speakers, means = self._means()
            distances = 1.0 - means @ vector
            if distances.min() < self.threshold:
                name = speakers[int(distances.argmin())]
        if name is None:
            self.created += 1
            name = f"S{self.created}"
        self.vectors.append(vector)
        self.names.append(name)
        speakers, means = self._means()
        self.names = [speakers[int((1.0 - means @ v).argmin())] for v in self.vectors]
        return list(self.names)


def voice_speakers() -> tuple[SpeakerAssigner, str | None]:
    """:class:`NearestSpeaker` over :func:`merkit.speaker_embeddings.embed` (CAM++) at its ``THRESHOLD``, or, when the
    diarization extra is missing, :class:`OneSpeaker` and why."""
    from merkit import diarization, speaker_embeddings

    try:
        speaker_embeddings.speaker_encoder("campplus")
    except (MerkitError, ImportError, OSError) as exc:
        return OneSpeaker(), f"one speaker: no speaker embeddings ({exc}); {speaker_embeddings.EXTRA}"
    return NearestSpeaker(speaker_embeddings.embed, diarization.THRESHOLD), None
