"""The model contract: every model consumes a :class:`ConversationBatch` and returns a :class:`ModelOutput`.

A model is built from its typed config and a :class:`DataSpec` (what the data offers:
modality widths, classes, label kind), so feature dimensions are always read from the data
and never hard-coded. The engine trains any model through :meth:`ERCModel.compute_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from merkit.batching import ConversationBatch
from merkit.models import layers


class ModelConfig(BaseModel):
    """Base of every model's typed config. Unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(BaseModel):
    """What a model needs to know about the data it is built for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: dict[str, int]
    num_classes: int
    multi_label: bool = False
    class_names: tuple[str, ...] = ()


@dataclass
class ModelOutput:
    """Per-utterance scores plus what the model can say about how it decided.

    ``logits``: ``[B, T, C]`` (softmax for single-label, sigmoid for multi-label);
    ``aux_losses``: named, already weighted terms added to the main loss in training;
    ``uncertainty``: optional ``[B, T]`` (higher = less certain) or per-modality ``[B, T, M]``;
    ``expert_weights``: optional ``[B, T, E]`` with ``expert_names`` naming the E experts;
    ``diagnostics``: named detached scalars about the model's internals, logged per training epoch.
    """

    logits: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    uncertainty: torch.Tensor | None = None
    expert_weights: torch.Tensor | None = None
    expert_names: tuple[str, ...] = ()
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class ERCModel(nn.Module):
    """Base class: holds config and data spec; the default loss is (weighted) CE or BCE + aux terms."""

    config_class: type[ModelConfig] = ModelConfig

    def __init__(self, config: ModelConfig, spec: DataSpec):
        super().__init__()
        self.config = config
        self.spec = spec

    def forward(self, batch: ConversationBatch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def main_loss(self, output: ModelOutput, batch: ConversationBatch, class_weights: torch.Tensor | None) -> torch.Tensor:
        if self.spec.multi_label:
            return layers.masked_bce(output.logits, batch.labels, batch.label_mask, class_weights)
        return layers.masked_cross_entropy(output.logits, batch.labels, batch.label_mask, class_weights)

    def compute_loss(
        self, output: ModelOutput, batch: ConversationBatch, class_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        """Total training loss and its named parts (for logging)."""
        parts = {"main": self.main_loss(output, batch, class_weights), **output.aux_losses}
        return sum(parts.values()), parts  # type: ignore[return-value]
