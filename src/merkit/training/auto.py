"""``--preset auto``: training settings chosen from the shape of the training split, each with its reason.

Why: the hand-made presets were tuned on one corpus each (IEMOCAP, MELD, GoEmotions, ...); on another
corpus a borrowed preset is a guess and the bare defaults under- or over-train it (issue #21: LDDU's
only multi-label preset left a 5.5k-item corpus under-trained). The rules below are merkit's [R]; the
docs/results/presets-auto.md measures them against every hand-made preset on corpora that none
of them was made for. A model adds its own rules with ``register_model(..., auto=...)``: SDT/SURE
(:func:`merkit.models.sdt.auto_rules`) and LDDU (:func:`merkit.models.lddu.auto_rules`: the code's
learning rate; on small corpora no extractor layers and, multi-label, rare labels' positives weighted;
measured on two 5k-item multi-label corpora).

The shared rules:

- ``batch_size`` (dialogues per batch): at least ``MIN_STEPS_PER_EPOCH`` optimiser steps an epoch,
  at most 16 dialogues (the presets' 8–16).
- ``epochs``: enough epochs for about ``TARGET_STEPS`` steps, within ``EPOCH_RANGE``;
  ``patience``: a sixth of them, within ``PATIENCE_RANGE`` (small corpora reach their best late).
- ``class_weights``: ``inverse_frequency`` when the selection metric weighs classes equally
  (macro F1, UAR) and the largest class has ``IMBALANCE`` times the smallest; otherwise none
  (a weighted loss trades the frequent classes' F1, which weighted F1 and accuracy count most).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from merkit.data.corpus import Corpus

TARGET_STEPS = 2000
EPOCH_RANGE = (20, 200)
PATIENCE_RANGE = (5, 20)
MIN_STEPS_PER_EPOCH = 20
MAX_BATCH = 16
IMBALANCE = 3.0
EQUAL_CLASS_METRICS = ("macro_f1", "uar")


@dataclass(frozen=True)
class CorpusShape:
    """What the rules look at: sizes of the training split, dialogue shape and class balance."""

    dialogues: int
    utterances: int
    mean_turns: float
    max_speakers: int
    classes: int
    multi_label: bool
    imbalance: float  # largest class count / smallest non-zero one (1.0 with one class)

    @classmethod
    def of(cls, corpus: Corpus, splits: Sequence[str]) -> "CorpusShape":
        dialogues = [d for split in splits for d in corpus.split_dialogues(split)]
        utterances = [u for d in dialogues for u in d.utterances]
        counts = [n for n in Counter(i for u in utterances for i in u.label_indices()).values() if n]
        return cls(
            dialogues=len(dialogues),
            utterances=len(utterances),
            mean_turns=len(utterances) / max(len(dialogues), 1),
            max_speakers=max((len({u.speaker for u in d.utterances}) for d in dialogues), default=1),
            classes=corpus.labels.num_classes,
            multi_label=corpus.labels.multi_label,
            imbalance=max(counts) / min(counts) if counts else 1.0,
        )

    def describe(self) -> str:
        turns = "one-turn dialogues" if self.mean_turns == 1 else f"dialogues of {self.mean_turns:.1f} turns on average"
        kind = "multi-label" if self.multi_label else "single-label"
        return (
            f"{self.utterances:,} training utterances in {self.dialogues:,} {turns}, {self.classes} classes ({kind}), "
            f"largest class {self.imbalance:.1f}× the smallest"
        )


@dataclass
class AutoPreset:
    """The chosen settings (as a preset: ``model`` and ``train`` fields) and why each was chosen."""

    shape: CorpusShape
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # setting name → reason

    def set(self, scope: str, name: str, value: Any, why: str) -> None:
        getattr(self, scope)[name] = value
        self.why[name] = why

    def describe(self) -> dict[str, Any]:
        reasons = [f"{name}={value} ({self.why[name]})" for name, value in {**self.model, **self.train}.items()]
        return {"shape": asdict(self.shape), "model": self.model, "train": self.train, "reasons": reasons}

    def summary(self, overridden: Sequence[str] = ()) -> str:
        """One line for the user: the shape, the choices grouped by reason, and the ``--set`` keys that won over them."""
        grouped: dict[str, list[str]] = {}
        for name, value in {**self.model, **self.train}.items():
            if name not in overridden:
                grouped.setdefault(self.why[name], []).append(f"{name}={value}")
        taken = [name for name in overridden if name in self.why]
        tail = f"; --set wins for {', '.join(taken)}" if taken else ""
        return f"preset auto for {self.shape.describe()}: " + "; ".join(f"{', '.join(n)} ({w})" for w, n in grouped.items()) + tail


def auto_preset(entry: Any, shape: CorpusShape, monitor: str) -> AutoPreset:
    """The shared rules, then the model's own (``entry.auto``); ``monitor`` is the resolved selection metric."""
    chosen = AutoPreset(shape)
    batch = max(1, min(MAX_BATCH, shape.dialogues // MIN_STEPS_PER_EPOCH))
    chosen.set("train", "batch_size", batch, f"≥ {MIN_STEPS_PER_EPOCH} steps an epoch, at most {MAX_BATCH} dialogues")
    steps = math.ceil(shape.dialogues / batch)
    epochs = min(max(math.ceil(TARGET_STEPS / steps), EPOCH_RANGE[0]), EPOCH_RANGE[1])
    chosen.set("train", "epochs", epochs, f"{steps} steps an epoch, about {TARGET_STEPS} steps in all")
    chosen.set("train", "patience", min(max(epochs // 6, PATIENCE_RANGE[0]), PATIENCE_RANGE[1]), "a sixth of the epochs")
    if not shape.multi_label:
        weigh = monitor in EQUAL_CLASS_METRICS and shape.imbalance >= IMBALANCE
        if weigh:
            why = f"{monitor} counts every class alike and the largest class is ≥ {IMBALANCE:g}× the smallest"
        elif monitor in EQUAL_CLASS_METRICS:
            why = f"classes within {IMBALANCE:g}× of each other"
        else:
            why = f"{monitor} counts the frequent classes most"
        chosen.set("train", "class_weights", "inverse_frequency" if weigh else "none", why)
    if entry.auto is not None:
        entry.auto(shape, chosen)
    return chosen
