"""Building blocks shared by the models: masked losses, modality fusion inputs, pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def modality_frames(batch: ConversationBatch, modality: str, *, drop_zero_frames: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A modality as frames ``[B, T, L, D]`` with its real-frame mask ``[B, T, L]``.

    Utterance vectors (the dataset was not asked for sequences) are one-frame sequences. The
    mask is False wherever the modality is absent; ``drop_zero_frames`` also masks all-zero
    frames, for files that pad sequences with zero rows instead of storing their length.
    """
    present = batch.present[modality]
    if modality in batch.sequences:
        frames, mask = batch.sequences[modality], batch.sequence_mask[modality] & present.unsqueeze(-1)
    else:
        frames, mask = batch.features[modality].unsqueeze(2), present.unsqueeze(-1)
    if drop_zero_frames:
        mask = mask & (frames != 0).any(-1)
    return frames, mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[..., L, D]`` over the ``L`` positions where ``mask[..., L]`` (zeros where none)."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(-2) / weights.sum(-2).clamp(min=1)


def masked_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    class_weights: torch.Tensor | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Focal loss ``(1 − p_y)^γ · CE`` (Lin et al. 2017) over the masked utterances; ``γ = 0`` is cross-entropy.

    Divided by ``Σ w_y`` over the mask (the utterance count when unweighted), like
    :func:`masked_cross_entropy`, unless ``normalizer`` is given.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    targets = labels.masked_fill(~mask, 0)
    log_p = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    losses = -((1 - log_p.exp()) ** gamma) * log_p
    weights = mask.float() if class_weights is None else class_weights[targets] * mask
    denominator = weights.sum().clamp(min=1e-12) if normalizer is None else normalizer
    return (losses * weights).sum() / denominator


def supervised_contrastive_loss(
    first: torch.Tensor,
    second: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    positives: str = "label",
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) between two paired views ``[B, T, D]`` of the masked utterances.

    The N masked pairs give 2N L2-normalised anchors; anchor i's positives are every other
    anchor with its label (``positives="label"``, either view) or only its paired view
    (``"pair"``); ``ℓ_i = −mean_{j∈P(i)} [s_ij − log Σ_{k≠i} exp s_ik]`` with ``s`` the cosine
    over ``temperature``. Mean over all anchors; an anchor without positives adds 0.
    """
    if positives not in ("label", "pair"):
        raise ValueError(f"positives must be 'label' or 'pair', not {positives!r}")
    count = int(mask.sum())
    if count == 0:
        return first.sum() * 0.0
    anchors = F.normalize(torch.cat([first[mask], second[mask]]).float(), dim=-1)
    similarity = anchors @ anchors.T / temperature
    not_self = ~torch.eye(2 * count, dtype=torch.bool, device=anchors.device)
    log_denominator = torch.logsumexp(similarity.masked_fill(~not_self, float("-inf")), dim=1, keepdim=True)
    if positives == "label":
        anchor_labels = labels[mask].repeat(2)
        positive = (anchor_labels[:, None] == anchor_labels[None, :]) & not_self
    else:
        index = torch.arange(2 * count, device=anchors.device)
        positive = index[None, :] == (index[:, None] + count) % (2 * count)
    per_anchor = -((similarity - log_denominator) * positive).sum(1) / positive.sum(1).clamp(min=1)
    return per_anchor.mean()


def symmetric_kl(first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor, normalizer: float | None = None) -> torch.Tensor:
    """``KL(p‖q) + KL(q‖p)`` between the softmax of two logit tensors ``[..., C]``, summed over the
    masked positions and classes and divided by ``normalizer`` (default: the masked count)."""
    log_p, log_q = torch.log_softmax(first.float(), dim=-1), torch.log_softmax(second.float(), dim=-1)
    divergence = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)  # = KL(p‖q) + KL(q‖p)
    denominator = mask.sum().clamp(min=1) if normalizer is None else normalizer
    return (divergence * mask).sum() / denominator


class ResidualAttention(nn.Module):
    """``x ← LN(x + Dropout(W_o · MHA(W_q x, W_k y, W_v y)))`` with a key-padding mask on ``y``.

    A batch item whose keys are all masked (e.g. a dialogue without audio) gets no update
    instead of the NaN that an all-masked softmax gives.
    """

    def __init__(self, dim: int, attention_dim: int, heads: int, attention_dropout: float, dropout: float, eps: float = 1e-6):
        super().__init__()
        self.query = nn.Linear(dim, attention_dim)
        self.key = nn.Linear(dim, attention_dim)
        self.value = nn.Linear(dim, attention_dim)
        self.attention = nn.MultiheadAttention(attention_dim, heads, dropout=attention_dropout, batch_first=True)
        self.output = nn.Linear(attention_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        empty = None
        if key_padding_mask is not None:
            empty = key_padding_mask.all(dim=1)
            key_padding_mask = key_padding_mask & ~empty.unsqueeze(1)
        attended, _ = self.attention(
            self.query(x), self.key(y), self.value(y), key_padding_mask=key_padding_mask, need_weights=False
        )
        update = self.dropout(self.output(attended))
        if empty is not None:
            update = update.masked_fill(empty[:, None, None], 0.0)
        return self.norm(x + update)


class CoAttentionBlock(nn.Module):
    """Two streams attend to each other (both from the block's inputs), then each to itself."""

    def __init__(self, dim: int, attention_dim: int, heads: int, attention_dropout: float, dropout: float):
        super().__init__()

        def make() -> ResidualAttention:
            return ResidualAttention(dim, attention_dim, heads, attention_dropout, dropout)

        self.cross_x, self.cross_y, self.self_x, self.self_y = make(), make(), make(), make()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_padding: torch.Tensor | None = None, y_padding: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.cross_x(x, y, y_padding), self.cross_y(y, x, x_padding)
        return self.self_x(x, x, x_padding), self.self_y(y, y, y_padding)


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """Linear → ReLU → Dropout → Linear (the baselines' per-utterance classifier, models.md §8)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
