"""An ensemble of trained checkpoints as one model: the weighted mean of their calibrated probabilities.

Built by ``merkit ensemble`` (:mod:`merkit.training.ensemble`), never trained: each member is rebuilt
from its own registry entry and config and keeps its weights; each member's probabilities are
temperature-scaled (softmax of ``logits / T_m``, ``T_m`` fitted on the validation split; multi-label
members are not scaled) and averaged with weights ``w_m`` (uniform, or fitted on validation).
Saved as an ordinary checkpoint, so everything that loads a checkpoint runs an ensemble. A single-label
ensemble can also shift its mean toward the rare classes by a logit adjustment ``τ`` (chosen on validation).

``logits`` = log of the mean probability (multi-label: its logit), so softmax/sigmoid gives the mean
back; ``uncertainty`` = the entropy of the mean probability (per label for multi-label data), which
grows both when members are unsure and when they disagree.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from merkit.batching import ConversationBatch
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import get_model, register_model


class EnsembleMember(BaseModel):
    """One member: what rebuilds it, its calibration and weight, and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    config: dict  # the member's model config, as in its model.json
    data_spec: DataSpec
    temperature: float = Field(1.0, gt=0)
    weight: float = Field(ge=0)
    source: str = ""


class EnsembleConfig(ModelConfig):
    members: tuple[EnsembleMember, ...] = Field(min_length=1, description="written by merkit ensemble, not by hand")
    # Post-hoc logit adjustment (Menon et al. 2021) of single-label ensembles: p_c ∝ p̄_c · prior_c^(−τ), which
    # raises the rare classes; τ = 0 leaves the mean as it is (merkit ensemble --adjust chooses τ on validation).
    adjustment: float = Field(0.0, ge=0)
    prior: tuple[float, ...] = ()


def mean_probability(probabilities: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """``Σ_m w_m p_m / Σ_m w_m``."""
    total = sum(weights)
    return sum(w * p for w, p in zip(weights, probabilities, strict=True)) / total


def adjusted(probabilities: torch.Tensor, prior: torch.Tensor, tau: float) -> torch.Tensor:
    """``p_c · prior_c^(−τ)``, renormalised over the classes (the last axis)."""
    scaled = probabilities * prior.clamp(min=1e-12).pow(-tau)
    return scaled / scaled.sum(-1, keepdim=True)


def entropy(probabilities: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Entropy in nats: over classes (``[B, T]``), or per label of a Bernoulli (``[B, T, K]``) when multi-label."""
    p = probabilities.clamp(1e-12, 1.0)
    if multi_label:
        q = (1 - probabilities).clamp(1e-12, 1.0)
        return -(p * p.log() + q * q.log())
    return -(p * p.log()).sum(-1)


@register_model(
    "ensemble",
    config=EnsembleConfig,
    modalities=("text", "audio", "visual"),
    description="weighted mean of calibrated member probabilities (made by merkit ensemble, not trained)",
    trainable=False,
)
class Ensemble(ERCModel):
    config_class = EnsembleConfig

    def __init__(self, config: EnsembleConfig, spec: DataSpec):
        super().__init__(config, spec)
        built = []
        for member in config.members:
            entry = get_model(member.model)
            built.append(entry.model_class(entry.config_class.model_validate(member.config), member.data_spec))
        self.members = nn.ModuleList(built)

    def member_probabilities(self, batch: ConversationBatch) -> list[torch.Tensor]:
        """Each member's calibrated probabilities ``[B, T, C]``."""
        found = []
        for member, model in zip(self.config.members, self.members, strict=True):
            logits = model(batch).logits.float()
            found.append(torch.sigmoid(logits) if self.spec.multi_label else torch.softmax(logits / member.temperature, dim=-1))
        return found

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        mean = mean_probability(self.member_probabilities(batch), [m.weight for m in self.config.members])
        if self.config.adjustment and not self.spec.multi_label:
            mean = adjusted(mean, torch.tensor(self.config.prior, device=mean.device), self.config.adjustment)
        logits = torch.logit(mean, eps=1e-6) if self.spec.multi_label else mean.clamp(min=1e-12).log()
        return ModelOutput(logits=logits, uncertainty=entropy(mean, self.spec.multi_label))
