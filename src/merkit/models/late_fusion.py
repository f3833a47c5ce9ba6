"""Late fusion: one dialogue BiGRU per modality, probabilities mixed with learned modality weights. models.md §8."""

from __future__ import annotations

import torch
from torch import nn

from merkit.batching import ConversationBatch
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelOutput
from merkit.models.bigru import BiGRUConfig, DialogueGRU
from merkit.models.registry import register_model


class LateFusionConfig(BiGRUConfig):
    learned_weights: bool = True  # False: plain average of the available modalities' probabilities


@register_model(
    "late-fusion",
    config=LateFusionConfig,
    modalities=("text", "audio", "visual"),
    description="one BiGRU per modality; class probabilities mixed by learned modality weights",
)
class LateFusion(ERCModel):
    """Each modality predicts alone; an utterance's missing modalities get zero weight in the mix."""

    config_class = LateFusionConfig

    def __init__(self, config: LateFusionConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.names = tuple(spec.modalities)
        self.encoders = nn.ModuleDict({m: DialogueGRU(dim, config) for m, dim in spec.modalities.items()})
        self.heads = nn.ModuleDict({m: nn.Linear(2 * config.hidden, spec.num_classes) for m in spec.modalities})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.names)), requires_grad=config.learned_weights)

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        per_modality = torch.stack(
            [self.heads[m](self.encoders[m](batch.features[m], batch.utterance_mask)) for m in self.names], dim=2
        )  # [B, T, M, C]
        present = torch.stack([batch.present[m] for m in self.names], dim=2)  # [B, T, M]
        # An utterance with no modality at all keeps uniform weights rather than dividing by zero.
        mask = present | ~present.any(dim=2, keepdim=True)
        weights = layers.masked_softmax(self.weight_logits.expand_as(present), mask, dim=2)
        if self.spec.multi_label:
            probs = (weights.unsqueeze(-1) * torch.sigmoid(per_modality)).sum(2).clamp(1e-6, 1 - 1e-6)
            logits = torch.log(probs) - torch.log1p(-probs)
        else:
            probs = (weights.unsqueeze(-1) * torch.softmax(per_modality, dim=-1)).sum(2)
            logits = torch.log(probs.clamp(min=1e-12))
        return ModelOutput(logits=logits, expert_weights=weights, expert_names=self.names)
