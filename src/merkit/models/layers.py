"""Building blocks shared by the models: masked losses, modality fusion inputs, pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over labelled utterances and all classes; ``pos_weight`` ``[K]`` scales each label's positive term."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none", pos_weight=pos_weight).mean(-1)
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


def packed_bigru(gru: nn.GRU, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A batch-first bidirectional ``gru`` over padded ``inputs`` ``[B, T, D]`` whose rows have ``lengths`` (≥ 1) real
    steps: ``[B, T, 2H]``, zero on padding, run as a packed sequence.

    Under ONNX export the same numbers come without packing, because the exporter bakes the packed batch's sort
    order into the graph: each layer runs each direction as its own GRU, the backward one over every row reversed
    within its length (eval only: no dropout between layers)."""
    total = inputs.shape[1]
    if not torch.onnx.is_in_onnx_export():
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=total)[0]
    positions = torch.arange(total, device=inputs.device).unsqueeze(0)
    real = positions < lengths.unsqueeze(1)
    reverse = torch.where(real, lengths.unsqueeze(1) - 1 - positions, positions)

    def flip(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, reverse.unsqueeze(-1).expand_as(x))

    x = inputs
    for layer in range(gru.num_layers):
        directions = []
        for suffix in ("", "_reverse"):
            names = ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if gru.bias else ()))
            weights = [getattr(gru, f"{name}_l{layer}{suffix}") for name in names]
            start = x.new_zeros(1, x.shape[0], gru.hidden_size)

            def run(steps: torch.Tensor) -> torch.Tensor:
                return torch.gru(steps, start, weights, gru.bias, 1, 0.0, False, False, True)[0]  # noqa: B023

            directions.append(run(x) if not suffix else flip(run(flip(x))))
        x = torch.cat(directions, dim=-1)
    return x * real.unsqueeze(-1)
