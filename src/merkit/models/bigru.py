"""BiGRU over the dialogue (bc-LSTM style) on early-fused utterance vectors. models.md §8."""

from __future__ import annotations

import torch
from torch import nn

from merkit.batching import ConversationBatch
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model


class BiGRUConfig(ModelConfig):
    projection: int = 256
    hidden: int = 128
    num_layers: int = 1
    dropout: float = 0.3  # [U] models.md gives no value


class DialogueGRU(nn.Module):
    """Linear projection → dropout → packed bidirectional GRU: ``[B, T, D_in]`` → ``[B, T, 2·hidden]``."""

    def __init__(self, in_dim: int, config: BiGRUConfig):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, config.projection), nn.ReLU(), nn.Dropout(config.dropout))
        self.gru = nn.GRU(
            config.projection,
            config.hidden,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(layers.packed_bigru(self.gru, self.project(inputs), mask.sum(1).clamp(min=1)))


@register_model(
    "bigru",
    config=BiGRUConfig,
    modalities=("text", "audio", "visual"),
    description="bidirectional GRU over the dialogue; early fusion of modalities",
)
class BiGRU(ERCModel):
    config_class = BiGRUConfig

    def __init__(self, config: BiGRUConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.encoder = DialogueGRU(layers.early_fusion_width(spec.modalities), config)
        self.classify = nn.Linear(2 * config.hidden, spec.num_classes)

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        inputs = layers.early_fusion_input(batch, list(self.spec.modalities))
        return ModelOutput(logits=self.classify(self.encoder(inputs, batch.utterance_mask)))
