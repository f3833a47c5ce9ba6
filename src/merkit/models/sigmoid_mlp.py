"""Binary-relevance baseline for multi-label corpora (CMU-MOSEI, M3ED, GoEmotions). models.md §8.

Each modality is mean-pooled over its real frames, the pooled vectors are concatenated with
one presence flag per modality (an absent modality contributes zeros and a 0 flag), and an
MLP gives one sigmoid score per label, trained with BCE; the decision threshold is chosen
on the validation split by the engine. On single-label data the same network is trained
with softmax cross-entropy (the base-class loss), so it also serves as a pooled-frames MLP.
"""

from __future__ import annotations

import torch

from merkit.batching import ConversationBatch
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model


class SigmoidMLPConfig(ModelConfig):
    hidden: int = 256
    dropout: float = 0.5
    # [R] frames that are all zeros are padding in the MOSEI/M3ED files (fixed length 50/60),
    # so they are left out of the mean; False averages over every stored frame.
    drop_zero_frames: bool = True


@register_model(
    "sigmoid-mlp",
    config=SigmoidMLPConfig,
    modalities=("text", "audio", "visual"),
    description="multi-label baseline: mean-pooled frames of each modality, concatenated, MLP with one sigmoid per label",
    feature_level="sequence",
    presets={
        # [U] the batch size, selection metric and thresholds of LDDU's goemotions preset; early stopping on dev.
        "goemotions": {"train": {"batch_size": 64, "epochs": 30, "patience": 5, "monitor": "micro_f1", "threshold": "per_class"}},
    },
)
class SigmoidMLP(ERCModel):
    """Linear → ReLU → Dropout → Linear on ``[pool(x_m) for m] + presence flags``."""

    config_class = SigmoidMLPConfig

    def __init__(self, config: SigmoidMLPConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.net = layers.mlp(layers.early_fusion_width(spec.modalities), config.hidden, spec.num_classes, config.dropout)

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        pooled, flags = [], []
        for modality in self.spec.modalities:
            frames, mask = layers.modality_frames(batch, modality, drop_zero_frames=self.config.drop_zero_frames)
            pooled.append(layers.masked_mean(frames, mask))
            flags.append(mask.any(-1, keepdim=True).to(frames.dtype))
        return ModelOutput(logits=self.net(torch.cat(pooled + flags, dim=-1)))
