"""Context-free per-utterance MLP (early fusion of the chosen modalities). models.md §8."""

from __future__ import annotations


from merkit.batching import ConversationBatch
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model


class MLPConfig(ModelConfig):
    hidden: int = 256
    dropout: float = 0.5


@register_model(
    "mlp",
    config=MLPConfig,
    modalities=("text", "audio", "visual"),
    description="per-utterance MLP, no dialogue context; early fusion of modalities",
)
class MLP(ERCModel):
    """Linear → ReLU → Dropout → Linear on each utterance's concatenated modality vectors."""

    config_class = MLPConfig

    def __init__(self, config: MLPConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.net = layers.mlp(layers.early_fusion_width(spec.modalities), config.hidden, spec.num_classes, config.dropout)

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        return ModelOutput(logits=self.net(layers.early_fusion_input(batch, list(self.spec.modalities))))
