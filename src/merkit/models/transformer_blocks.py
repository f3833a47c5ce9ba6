"""Building blocks of SDT (models.md §3) and of SURE (§4), which extends SDT.

SDT: speaker + sinusoidal position embeddings, the intra/inter-modal transformer
``Tr(src → tgt)``, unimodal gates, per-modality reduction and multimodal gated fusion.
SURE adds: the uncertainty-aware mixture of Gaussian experts and the iterative reasoning
module. Every block takes key masks: a padded utterance or an utterance missing a modality
is never attended to, and a query with no valid key at all gets no attention update (zero
weights rather than a uniform or NaN softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from merkit.models import layers

UnimodalGate = Literal["learned", "sigmoid_identity", "none"]


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """``PE[pos, 2i] = sin(pos / 10000^{2i/D})``, ``PE[pos, 2i+1] = cos(·)``: ``[length, dim]``."""
    position = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


def modality_projection(in_dim: int, width: int, input_norm: bool) -> nn.Module:
    """SDT's bias-free per-utterance projection (a kernel-1 "temporal convolution" in the code), optionally
    after a LayerNorm of the input features, which brings small (e.g. L2-normalised) vectors to unit scale."""
    project = nn.Linear(in_dim, width, bias=False)
    return nn.Sequential(nn.LayerNorm(in_dim), project) if input_norm else project


class SpeakerPositionEmbedding(nn.Module):
    """``E_spk + PE`` added to every transformer input (SDT §3.2 steps 1 and 3).

    ``Embedding(S+1, D, padding_idx=S)``: padded utterances get the zero padding row. merkit's
    speaker index is the order of first appearance in the dialogue; indices ≥ S share row S−1.
    """

    def __init__(self, dim: int, max_speakers: int):
        super().__init__()
        self.max_speakers = max_speakers
        self.speakers = nn.Embedding(max_speakers + 1, dim, padding_idx=max_speakers)

    def forward(self, speakers: torch.Tensor, utterance_mask: torch.Tensor) -> torch.Tensor:
        index = speakers.clamp(max=self.max_speakers - 1).masked_fill(~utterance_mask, self.max_speakers)
        positions = sinusoidal_positions(speakers.shape[1], self.speakers.embedding_dim, speakers.device)
        return self.speakers(index) + positions


class DialogueAttention(nn.Module):
    """Multi-head attention over the utterances of a dialogue; keys masked by ``key_mask [B, T_k]``."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(query)), self._split(self.key(keys)), self._split(self.value(keys))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        weights = self.dropout(layers.masked_softmax(scores, key_mask[:, None, None, :]))
        context = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(query.shape)
        return self.output(context)


class FeedForward(nn.Module):
    """Pre-LN position-wise FFN with residual: ``x + Dropout(W₂ Dropout(GELU_tanh(W₁ LN(x))))``."""

    def __init__(self, dim: int, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.inner, self.outer = nn.Linear(dim, width), nn.Linear(width, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.gelu(self.inner(self.norm(x)), approximate="tanh"))
        return x + self.dropout(self.outer(hidden))


class ModalityTransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, first: bool):
        super().__init__()
        # SDT normalises the query stream before attention only from the second layer on.
        self.norm = nn.Identity() if first else nn.LayerNorm(dim, eps=1e-6)
        self.attention = DialogueAttention(dim, heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.feed_forward = FeedForward(dim, dim, dropout)


class ModalityTransformer(nn.Module):
    """SDT's ``Tr(src → tgt)`` (§3.2 step 4): the target stream queries itself (intra, ``source``
    None) or the source stream (inter); both get ``E_spk + PE`` and independent dropout.

    Intra vs inter is an explicit argument (the official code compares tensor values).
    """

    def __init__(self, dim: int, heads: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(ModalityTransformerLayer(dim, heads, dropout, i == 0) for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor | None, embedding: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        stream = self.dropout(target + embedding)
        memory = None if source is None else self.dropout(source + embedding)
        for layer in self.layers:
            query = layer.norm(stream)
            keys = query if memory is None else memory
            stream = layer.feed_forward(layer.dropout(layer.attention(query, keys, key_mask)) + query)
        return stream


def apply_gate(kind: UnimodalGate, gate: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """Unimodal gated fusion (§3.2 step 5): ``σ(W_g x) ⊙ x``; ``sigmoid_identity`` is SDT-MELD's frozen
    ``W_g = I`` (``σ(x) ⊙ x``); ``none`` leaves ``x`` ungated (an ablation)."""
    if kind == "none":
        return x
    return torch.sigmoid(gate(x) if kind == "learned" else x) * x


class TransformerGateBlock(nn.Module):
    """SDT §3.2 steps 4–6 for M modalities: ``M²`` transformers, a unimodal gate on each output and
    ``H_m = Linear(M·D → D)([Y'_{m→m}; Y'_{s→m} for the other s in order])``."""

    def __init__(self, modalities: list[str], dim: int, heads: int, dropout: float, num_layers: int, gate: UnimodalGate):
        super().__init__()
        self.modalities = list(modalities)
        self.gate_kind = gate
        self.pairs = [(target, source) for target in self.modalities for source in self._sources(target)]
        self.transformers = nn.ModuleDict(
            {self._key(t, s): ModalityTransformer(dim, heads, dropout, num_layers) for t, s in self.pairs}
        )
        self.gates = nn.ModuleDict(
            {self._key(t, s): nn.Linear(dim, dim, bias=False) for t, s in self.pairs} if gate == "learned" else {}
        )
        count = len(self.modalities)
        self.reduce = nn.ModuleDict({m: nn.Linear(count * dim, dim) for m in self.modalities})

    def _sources(self, target: str) -> list[str]:
        return [target] + [m for m in self.modalities if m != target]

    @staticmethod
    def _key(target: str, source: str) -> str:
        return f"{source}_to_{target}"

    def forward(
        self, streams: dict[str, torch.Tensor], embedding: torch.Tensor, present: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        reduced = {}
        for target in self.modalities:
            parts = []
            for source in self._sources(target):
                key = self._key(target, source)
                other = None if source == target else streams[source]
                output = self.transformers[key](streams[target], other, embedding, present[source])
                parts.append(apply_gate(self.gate_kind, self.gates[key] if key in self.gates else None, output))
            reduced[target] = self.reduce[target](torch.cat(parts, dim=-1))
        return reduced


class MultimodalGatedFusion(nn.Module):
    """SDT §3.2 step 7: ``H = Σ_m softmax_m(W H_m) ⊙ H_m`` per feature, over the present modalities only.

    Returns ``H [B, T, D]`` and the modality weights averaged over features ``[B, T, M]``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, dim, bias=False)

    def forward(self, streams: list[torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack(streams, dim=2)  # [B, T, M, D]
        weights = layers.masked_softmax(self.score(stacked), present.unsqueeze(-1).expand_as(stacked), dim=2)
        return (weights * stacked).sum(2), weights.detach().mean(-1)


@dataclass
class MixtureOutput:
    """What one modality's mixture of experts computed for every token, and its per-batch diagnostics."""

    output: torch.Tensor  # [B, T, D]
    uncertainty: torch.Tensor  # [B, T]: mean variance of the chosen experts
    balance_loss: torch.Tensor
    kl_loss: torch.Tensor
    sigma: torch.Tensor  # scalar: mean σ of the chosen experts over the mask tokens
    mean_norm: torch.Tensor  # scalar: mean ‖μ‖ of the chosen experts over the mask tokens


@dataclass
class ExpertOutput:
    """One Gaussian expert's output per token and what it says about its latent."""

    output: torch.Tensor  # [B, T, D]: decoded latent
    kl: torch.Tensor  # [B, T]: KL to N(0, I), summed over features
    variance: torch.Tensor  # [B, T]: mean σ² over features
    sigma: torch.Tensor  # [B, T]: mean σ over features
    mean_norm: torch.Tensor  # [B, T]: ‖μ‖


class GaussianExpert(nn.Module):
    """One VAE-like expert (models.md §4.3 step 2, [R]): ``(μ, log σ²) = Linear(D → 2D)(x)``, ``log σ²``
    clamped, ``z = μ + σ ⊙ ε`` when sampling (training) and ``z = μ`` otherwise, output ``Linear(D → D)(z)``.

    ``logvar_init`` is the initial bias of ``log σ²``: a negative value starts the experts with a small
    sampling noise (as VIB implementations do), so that it does not drown small input features.
    ``generator`` draws ε reproducibly (evaluation by the mean of samples); ``None`` uses the global RNG.
    """

    def __init__(self, dim: int, logvar_clamp: float, logvar_init: float = 0.0):
        super().__init__()
        self.encode = nn.Linear(dim, 2 * dim)
        self.decode = nn.Linear(dim, dim)
        self.logvar_clamp = logvar_clamp
        with torch.no_grad():
            self.encode.bias[dim:].fill_(logvar_init)

    def forward(self, x: torch.Tensor, sample: bool | None = None, generator: torch.Generator | None = None) -> ExpertOutput:
        mean, logvar = self.encode(x).chunk(2, dim=-1)
        logvar = logvar.clamp(-self.logvar_clamp, self.logvar_clamp)
        variance, sigma = logvar.exp(), (0.5 * logvar).exp()
        latent = mean
        if self.training if sample is None else sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latent = mean + sigma * noise
        kl = -0.5 * (1 + logvar - mean.pow(2) - variance).sum(-1)
        return ExpertOutput(self.decode(latent), kl, variance.mean(-1), sigma.mean(-1), mean.norm(dim=-1))


class UncertaintyAwareMoE(nn.Module):
    """Mixture of Gaussian experts routed toward low uncertainty (models.md §4.3 step 2).

    Router score ``s_e = r_e − λ_u·u_e`` with ``r = Linear(D → E)(x)`` and ``u_e`` the expert's mean
    variance; ``p = softmax(s)``; the top-k experts per token are kept and renormalised. The
    balance loss ``mean_e(P̄_e·f̄_e)``, the experts' mean KL and the σ / ‖μ‖ diagnostics are taken
    over ``mask`` tokens only.
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        uncertainty_weight: float,
        logvar_clamp: float,
        residual: bool,
        logvar_init: float = 0.0,
    ):
        super().__init__()
        self.experts = nn.ModuleList(GaussianExpert(dim, logvar_clamp, logvar_init) for _ in range(num_experts))
        self.router = nn.Linear(dim, num_experts)
        self.top_k = top_k
        self.uncertainty_weight = uncertainty_weight
        self.norm = nn.LayerNorm(dim) if residual else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, sample: bool | None = None, generator: torch.Generator | None = None
    ) -> MixtureOutput:
        experts = [expert(x, sample, generator) for expert in self.experts]
        outputs = torch.stack([e.output for e in experts], dim=-1)  # [B, T, D, E]
        kls, variances, sigmas, norms = (torch.stack([getattr(e, f) for e in experts], dim=-1) for f in ("kl", "variance", "sigma", "mean_norm"))
        probabilities = torch.softmax(self.router(x) - self.uncertainty_weight * variances, dim=-1)  # [B, T, E]
        chosen = torch.zeros_like(probabilities).scatter(-1, probabilities.topk(self.top_k, dim=-1).indices, 1.0)
        weights = probabilities * chosen
        weights = weights / weights.sum(-1, keepdim=True)
        output = (outputs * weights.unsqueeze(-2)).sum(-1)
        if self.norm is not None:
            output = self.norm(output + x)
        valid = mask.unsqueeze(-1).to(probabilities.dtype)
        count = valid.sum().clamp(min=1)
        mean_probability = (probabilities * valid).sum((0, 1)) / count
        mean_chosen = (chosen * valid).sum((0, 1)) / count

        def chosen_mean(values: torch.Tensor) -> torch.Tensor:
            return (values.detach() * chosen * valid).sum() / (count * self.top_k)

        return MixtureOutput(
            output=output,
            uncertainty=(variances * chosen).sum(-1) / self.top_k,
            balance_loss=(mean_probability * mean_chosen).mean(),
            kl_loss=((kls * valid).sum((0, 1)) / count).mean(),
            sigma=chosen_mean(sigmas),
            mean_norm=chosen_mean(norms),
        )


class IterativeReasoning(nn.Module):
    """Iterative query refinement over the dialogue (models.md §4.3 step 3, [R]).

    For every utterance: ``q*₀ = Linear(D → 2D)(x_t)``; K times ``q_k = LSTMCell(q*_{k−1})``, attend
    ``a = softmax_j(⟨x_j, q_k⟩/√D)`` over the ``mask`` utterances, ``r_k = Σ_j a_j x_j``,
    ``q*_k = [q_k; r_k]``; then ``g = σ(Linear(2D → 1)(q*_K))`` and
    ``x̃_t = [x_t +] g·r_K + (1 − g)·q_K``. With ``context_gru`` the ``mask`` utterances first pass
    through a BiGRU (D/2 per direction, dropout 0.2), the official code's unused context encoder.
    """

    def __init__(self, dim: int, steps: int, residual: bool, context_gru: bool):
        super().__init__()
        self.start = nn.Linear(dim, 2 * dim)
        self.cell = nn.LSTMCell(2 * dim, dim)
        self.gate = nn.Linear(2 * dim, 1)
        self.steps = steps
        self.residual = residual
        self.context = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True) if context_gru else None

    def _encode_context(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """BiGRU over the utterances that have this modality only (moved together, run packed, moved back);
        utterances without it get zeros, which nothing downstream reads."""
        batch, length, dim = x.shape
        slot = (mask.long().cumsum(1) - 1).clamp(min=0)  # position among the dialogue's present utterances
        rows = torch.arange(batch, device=x.device).unsqueeze(1).expand_as(slot)
        compact = x.new_zeros(batch, length, dim).index_put((rows[mask], slot[mask]), x[mask])
        output = layers.packed_bigru(self.context, compact, mask.sum(1).clamp(min=1))
        spread = output[rows, slot] * mask.unsqueeze(-1)
        return F.dropout(spread, 0.2, self.training)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.context is not None:
            x = self._encode_context(x, mask)
        batch, length, dim = x.shape
        query_star = self.start(x).reshape(batch * length, 2 * dim)
        state = None
        for _ in range(self.steps):
            hidden, cell = self.cell(query_star, state)
            state = (hidden, cell)
            query = hidden.view(batch, length, dim)
            attention = layers.masked_softmax(query @ x.transpose(1, 2) / math.sqrt(dim), mask[:, None, :])
            read = attention @ x  # [B, T, D]
            query_star = torch.cat([query, read], dim=-1).reshape(batch * length, 2 * dim)
        gate = torch.sigmoid(self.gate(query_star)).view(batch, length, 1)
        mixed = gate * read + (1 - gate) * query
        return x + mixed if self.residual else mixed
