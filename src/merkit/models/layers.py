"""Building blocks shared by the models: masked losses, modality fusion inputs, pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from merkit.batching import IGNORE_INDEX, ConversationBatch


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-weighted CE over labelled utterances: ``Σ w_y·CE / Σ w_y`` (plain mean when unweighted)."""
    targets = labels.masked_fill(~mask, IGNORE_INDEX)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        weight=class_weights,
        ignore_index=IGNORE_INDEX,
    )


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over labelled utterances and all classes."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(-1)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def early_fusion_input(batch: ConversationBatch, modalities: list[str]) -> torch.Tensor:
    """Concatenate the modalities' features (zeroed where absent) and one presence flag each: ``[B, T, ΣD + M]``."""
    parts = [batch.features[m] * batch.present[m].unsqueeze(-1) for m in modalities]
    flags = [batch.present[m].unsqueeze(-1).to(parts[0].dtype) for m in modalities]
    return torch.cat(parts + flags, dim=-1)


def early_fusion_width(dims: dict[str, int]) -> int:
    return sum(dims.values()) + len(dims)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where masked-out entries get zero weight (all-masked rows give zeros, not NaN)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim) * mask
    return weights / weights.sum(dim=dim, keepdim=True).clamp(min=1e-12)
