"""The output of inference: one :class:`UtterancePrediction` per utterance, gathered in a :class:`PredictionResult`."""

from __future__ import annotations

import csv
import io

from pydantic import BaseModel, Field


class UtterancePrediction(BaseModel):
    """What the model says about one utterance."""

    dialogue_id: str
    utterance_id: str
    speaker: str
    text: str
    label: str | list[str] = Field(description="the predicted class (multi-label: every class above its threshold)")
    probabilities: dict[str, float] = Field(description="per class: softmax (single-label) or sigmoid (multi-label)")
    uncertainty: float | None = Field(None, description="higher = less certain (mean of the components); models without one give null")
    uncertainty_components: list[float] | None = Field(None, description="per modality or per class, as the model gives it")
    expert_weights: dict[str, float] | None = Field(None, description="how much each expert/modality contributed")
    modalities: list[str] = Field(description="the modalities the model had for this utterance")
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="per modality: why an available medium gave no features, or that the model does not read it; "
        "'input': the turn had nothing the model reads",
    )


class PredictionResult(BaseModel):
    """Predictions for every utterance of the input, in input order."""

    model: str
    labels: list[str]
    multi_label: bool
    modalities: list[str]
    utterances: list[UtterancePrediction]

    def to_csv(self) -> str:
        """One row per utterance: ids, speaker, text, label, a ``p_<class>`` column per class, uncertainty, modalities."""
        experts = sorted({name for u in self.utterances for name in (u.expert_weights or {})})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["dialogue_id", "utterance_id", "speaker", "text", "label", *(f"p_{n}" for n in self.labels), "uncertainty",
             *(f"weight_{e}" for e in experts), "modalities", "notes"]
        )  # fmt: skip
        for u in self.utterances:
            label = ";".join(u.label) if isinstance(u.label, list) else u.label
            weights = u.expert_weights or {}
            writer.writerow(
                [u.dialogue_id, u.utterance_id, u.speaker, u.text, label, *(u.probabilities[n] for n in self.labels),
                 "" if u.uncertainty is None else u.uncertainty, *(weights.get(e, "") for e in experts),
                 ";".join(u.modalities), "; ".join(f"{m}: {r}" for m, r in u.notes.items())]
            )  # fmt: skip
        return buffer.getvalue()
