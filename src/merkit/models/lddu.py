"""LDDU — Latent Distribution Decoupling for uncertainty-aware multimodal multi-label emotion recognition.

Paper: Findings of ACL 2025 (arXiv 2502.13954); official code 201983290498/lddu_mmer. Spec:
models.md §6. Each utterance (a MOSEI segment, an M3ED dialogue, a GoEmotions comment) is
classified on its own, from its frame sequences; there is no dialogue context.

Architecture, per modality m (sources: [P] paper summary, [C] official code, [R] merkit
reconstruction, [U] unreported):

1. [C] LayerNorm over the feature axis; (unaligned data, ``alignment=ctc``, [C compiled
   modules only]) audio/visual frames are mapped to ``aligned_length`` positions by a
   2-layer LSTM that gives each frame a distribution over the positions plus a blank:
   ``X' = P[1:]ᵀ X``; an optional CTC loss on it (``ctc_weight``, [U], off).
2. [C] Unimodal extractor: ``Dropout(LN(Linear(x) + P[pos]))`` with learned positions, then
   ``encoder_layers`` BERT-style post-LN transformer layers (GELU, dropout on attention and
   sublayer outputs); normal(0.02) init.
3. [C] Label-wise attention: label queries ``Q = Embedding(K, hidden)`` (Xavier), per modality
   ``A = softmax_L(W_q Q (W_s H)ᵀ / √hidden)``, ``F = W_o Dropout(A · W_s H)`` → ``[K, hidden]``.
   [R] ``label_query_residual`` adds ``W_q Q`` to ``F``: with one frame (utterance vectors,
   e.g. MiniLM on GoEmotions) the attention is trivially 1 and, without it, every label
   would get the same representation.
4. [C] Latent encoder (shared over labels, Xavier): MLP ``latent_mlp`` → ``μ``, ``log σ²``;
   ``σ = exp(½ log σ²)``. [P vs C] the paper speaks of Gaussian latents; the code never
   samples: ``sample_latent=false`` (code) feeds ``μ``, ``true`` feeds ``μ + σ·ε`` in training.
5. [C] Fusion: semantic gate ``c_k = σ(MLP([F_m]_m))`` (one head for all labels);
   per-label heads ``p^μ_k = σ(MLP_k([μ_m]_m))`` and ``p^σ_k = σ(MLP'_k([σ_m]_m))``;
   score ``s_k = c_k p^μ_k + (1 − c_k) p^σ_k``.

Losses [C] (weights of the released run script): ``fused_weight·BCE(s) + semantic_weight·BCE(c)
+ cdl_weight·L_cdl + crl_weight·L_crl (+ ctc_weight·CTC)``.

- ``L_cdl``: supervised contrastive loss over ``[μ/‖μ‖; σ/‖σ‖]`` of every (utterance,
  modality, label), class id ``k + K·(2·modality + absent)``, with a FIFO queue of past
  vectors (``queue_size``); cosine / ``cdl_temperature``; anchors are the batch and, as in
  the code, the queue rows (``queue_anchors``). [R] ``queue_init``: ``empty`` (default; the
  code's random rows carry float labels that never match, so they act only as negatives:
  ``random`` reproduces that with id −1); queue entries are detached (the code keeps their
  autograd history).
- ``L_crl`` (``crl_mode``): ``code`` — ``q_σ`` = softmax of ‖σ_k‖ over all B·K values of the
  batch, ``q_c`` = softmax of ``c`` over the K labels per utterance; ``½[KL(q_c‖q_σ) +
  KL(q_σ‖q_c)] / (B·K)``, which pairs *large* σ with *large* confidence; [R]
  ``per_sample_inverse`` — both softmaxes per utterance, confidence against −‖σ‖.

Outputs: ``logits = logit(s)`` (``[B, T, K]``; sigmoid gives ``s``); ``uncertainty`` ``[B, T, K]`` per
label, [R] ``uncertainty``: ``score_entropy`` (default) = the binary entropy of ``s_k``, which rises with the
label's errors; ``sigma_norm`` = ‖[σ_m]_m‖, which the code's L_crl trains to rise with the semantic
confidence c_k instead (positively with ``crl_mode=code``, negatively with ``per_sample_inverse``), and
ranks errors worse than the entropy, or worse than chance (docs/results/multilabel.md, "LDDU's uncertainty"). ``expert_weights`` (eval only) = each modality's share of
the fusion's dependence on it: ``|s − s_without_m|`` averaged over labels, where
``s_without_m`` reruns the gate and heads with modality m's slots zeroed exactly as for a
missing modality, normalised over the modalities (the fusion gates μ- against σ-heads, not
modalities, so this occlusion share is the faithful per-modality weight).

Missing data: frames outside the stored length (and, with ``use_padding_mask`` [R], all-zero
frames: the published files zero-pad to 50/60) are masked in attention; a modality absent
for an utterance has its F/μ/σ slots zeroed and is left out of L_cdl and ‖σ‖.
Single-label data is trained as one-hot multi-label (BCE on ``s``); ``softmax(logit(s))``
keeps the arg-max of ``s``.

Paper/code discrepancies and merkit choices, with the option selecting each reading:
sampling (``sample_latent``); padding masks (``use_padding_mask=false`` = code); queue init
(``queue_init``); CRL form (``crl_mode``); CTC loss for the alignment (``ctc_weight``);
queue rows as anchors (``queue_anchors``). Defaults differ from the code in four places, and
the paper presets (mosei-aligned, mosei-unaligned, m3ed) restore all four: ``queue_size`` (0; code
8192), ``queue_init`` (``empty``; code random rows that are only negatives: ``random``),
``label_query_residual`` (True; code False) and ``use_padding_mask`` (True; code False: its all-ones
masks let attention reach the zero rows that pad the published files to 50). The m3ed reader keeps
each sample's ``len_list`` rows, so the code's attention over the zero rows up to 60 is not
reproduced there. [R] the alignment runs after the input LayerNorm; the fusion concatenates
modalities in merkit's order (text, audio, visual; the code's v, a, t is a permutation). Not reproduced: BertAdam (no bias correction,
per-parameter clipping) — merkit trains with AdamW, no decay on biases/LayerNorm (the code's inverted
grouping, decay on biases/LayerNorm only, is ``--set decay_grouping=inverted``, models.md's
``lddu_inverted_decay``); its cosine restarts from the warm-up end; early stopping is
plain patience on validation micro-F1 (the code's extra train−test gap rule needs test);
the threshold is searched on validation (``threshold=lddu_search``), never on test. Under
DDP each rank keeps its own queue. The per-label KL-to-prior and reconstruction weights of
the code are zero and unused there; they are not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from merkit.batching import ConversationBatch
from merkit.errors import MerkitError
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model


class LDDUConfig(ModelConfig):
    hidden: int = Field(256, ge=8)  # [C]
    latent: int = Field(128, ge=2)  # [C]
    latent_mlp: tuple[int, ...] = (192, 128, 128)  # [C] widths of the latent encoder before the μ/logvar heads
    # [C] the latent encoder's biases keep nn.Linear's default (uniform ±1/√fan_in) init, as in the official code;
    # "zeros" was merkit's earlier choice
    latent_bias_init: Literal["default", "zeros"] = "default"
    encoder_layers: int = Field(3, ge=0)  # [C]
    heads: int = Field(8, ge=1)  # [C]
    ffn: int = Field(256, ge=1)  # [C]
    encoder_dropout: float = 0.3  # [C] embeddings, attention probabilities, sublayer outputs
    max_positions: int = Field(60, ge=1)  # [C] learned positions
    layer_norm_eps: float = 1e-12  # [C]
    label_attention_dropout: float = 0.1  # [C]
    fusion_hidden: int = 128  # [C]
    fusion_dropout: float = 0.1  # [C]
    label_query_residual: bool = True  # [R] False = code (label representations collapse with one frame)
    use_padding_mask: bool = True  # [R] mask all-zero frames; False = code (attends to zero padding)
    sample_latent: bool = False  # [C] False = code (μ); True = the paper's sampled Gaussian latent
    alignment: Literal["none", "ctc"] = "none"  # [C] "ctc": unaligned MOSEI audio/visual → aligned_length positions
    aligned_length: int = Field(50, ge=1)  # [C]
    ctc_weight: float = Field(0.0, ge=0)  # [U] CTC loss on the alignment (TAILOR used 0.5)
    fused_weight: float = 1.0  # [C] BCE(s)
    semantic_weight: float = 0.3  # [C] BCE(c)
    cdl_weight: float = 1.0  # [C]
    crl_weight: float = 0.3  # [C]
    cdl_temperature: float = Field(0.07, gt=0)  # [C]
    # [C] 8192 in the code (every preset). Off by default: a filling queue raises the loss value
    # step by step, which short runs (smoke tests, tiny data) cannot tell from divergence.
    queue_size: int = Field(0, ge=0)
    queue_init: Literal["empty", "random"] = "empty"  # [R]
    queue_anchors: bool = True  # [C] queue rows are anchors too; False: only the batch's vectors
    crl_mode: Literal["code", "per_sample_inverse"] = "code"  # [C] / [R]
    # [R] what the output's ``uncertainty`` is, per label: the binary entropy of the score s_k (error AUROC 0.87 on
    # GoEmotions validation), or ‖[σ_m]_m‖, which L_crl ties to the semantic confidence c_k rather than to error
    # (AUROC 0.72 with crl_mode=code, 0.29 with per_sample_inverse; docs/results/multilabel.md)
    uncertainty: Literal["score_entropy", "sigma_norm"] = "score_entropy"

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "LDDUConfig":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


@dataclass
class LDDUParts:
    """The fusion's inputs and outputs for the real utterances of a batch (N of them, M modalities, K labels)."""

    outputs: dict[str, dict]  # per modality: what ``LDDU._modality`` returned
    features: torch.Tensor  # [N, M, K, hidden]
    mu: torch.Tensor  # [N, M, K, latent]
    head_mu: torch.Tensor  # μ as the heads saw it (sampled with sample_latent in training)
    sigma: torch.Tensor  # [N, M, K, latent]
    keep: torch.Tensor  # [N, M]: modality present
    score: torch.Tensor  # [N, K]: s_k
    confidence: torch.Tensor  # [N, K]: c_k
    sigma_norm: torch.Tensor  # [N, K]: ‖[σ_m]_m‖


class _BertLayer(nn.Module):
    """Post-LN transformer layer as in BERT: ``LN(x + Drop(Attn(x)))`` then ``LN(x + Drop(W₂ GELU(W₁ x)))``."""

    def __init__(self, config: LDDUConfig):
        super().__init__()
        self.attention = nn.MultiheadAttention(config.hidden, config.heads, dropout=config.encoder_dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.ffn = nn.Sequential(nn.Linear(config.hidden, config.ffn), nn.GELU(), nn.Linear(config.ffn, config.hidden))
        self.ffn_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.encoder_dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.attention_norm(x + self.dropout(attended))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class _CTCAlignment(nn.Module):
    """MulT/TAILOR-style pseudo-alignment: each frame → a distribution over ``length`` positions + blank (index 0)."""

    def __init__(self, dim: int, length: int):
        super().__init__()
        self.length = length
        self.position = nn.LSTM(dim, length + 1, num_layers=2, batch_first=True)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, L, D]`` → aligned ``[N, length, D]``, its mask, and the per-frame log-probabilities ``[N, L, length+1]``."""
        log_probs = torch.log_softmax(self.position(frames)[0], dim=-1)
        probs = log_probs.exp()[..., 1:] * mask.unsqueeze(-1)  # drop the blank; padded frames give nothing
        aligned = torch.bmm(probs.transpose(1, 2), frames)
        return aligned, mask.any(1, keepdim=True).expand(-1, self.length), log_probs


class _ModalityEncoder(nn.Module):
    """Input LayerNorm (→ alignment) → projection + learned positions → BERT layers: ``[N, L, D]`` → ``[N, L', hidden]``."""

    def __init__(self, dim: int, config: LDDUConfig, align: bool):
        super().__init__()
        self.max_positions = config.max_positions
        self.input_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.alignment = _CTCAlignment(dim, config.aligned_length) if align else None
        self.project = nn.Linear(dim, config.hidden)
        self.positions = nn.Embedding(config.max_positions, config.hidden)
        self.embedding_norm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.encoder_dropout)
        self.layers = nn.ModuleList(_BertLayer(config) for _ in range(config.encoder_layers))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = self.input_norm(frames)
        log_probs = None
        if self.alignment is not None:
            x, mask, log_probs = self.alignment(x, mask)
        if x.shape[1] > self.max_positions:
            raise MerkitError(
                f"sequences of {x.shape[1]} frames exceed LDDU's max_positions={self.max_positions} "
                "(raise it with --set max_positions=N, or use alignment=ctc for long audio/visual sequences)"
            )
        positions = torch.arange(x.shape[1], device=x.device)
        x = self.dropout(self.embedding_norm(self.project(x) + self.positions(positions)))
        # An utterance without any real frame attends to all of them (no NaN); its slots are dropped later.
        padding = ~mask & mask.any(1, keepdim=True)
        for layer in self.layers:
            x = layer(x, padding)
        return x, mask, log_probs


class _PerLabelHeads(nn.Module):
    """K independent ``Linear(in→hidden) → Dropout → ReLU → Linear(hidden→1)`` heads, one per label: ``[N, K, in]`` → ``[N, K]``."""

    def __init__(self, labels: int, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.first_weight = nn.Parameter(torch.empty(labels, in_dim, hidden))
        self.first_bias = nn.Parameter(torch.empty(labels, hidden))
        self.second_weight = nn.Parameter(torch.empty(labels, hidden))
        self.second_bias = nn.Parameter(torch.empty(labels))
        self.dropout = nn.Dropout(dropout)
        for parameter, fan_in in ((self.first_weight, in_dim), (self.first_bias, in_dim), (self.second_weight, hidden), (self.second_bias, hidden)):
            nn.init.uniform_(parameter, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))  # nn.Linear's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.dropout(torch.einsum("nki,kih->nkh", x, self.first_weight) + self.first_bias))
        return torch.einsum("nkh,kh->nk", hidden, self.second_weight) + self.second_bias


def contrastive_disentanglement_loss(
    vectors: torch.Tensor,
    ids: torch.Tensor,
    queue: torch.Tensor,
    queue_ids: torch.Tensor,
    temperature: float,
    queue_anchors: bool = True,
) -> torch.Tensor:
    """LDDU's L_cdl: ``mean_i −mean_{j∈P(i)} [ℓ_ij − log Σ_{k≠i} exp ℓ_ik]`` with ``ℓ = f_i·f_j / 2 / τ``.

    ``vectors`` ``[V, 2Z]`` are ``[μ/‖μ‖; σ/‖σ‖]`` (norm √2, so ``f·f/2`` is a cosine); the queue
    rows join every denominator, are anchors too when ``queue_anchors``, and never carry
    gradient. Positives share the id (id −1 never matches); an anchor without positives adds
    0 but counts in the mean.
    """
    everything = torch.cat([vectors, queue.detach()])
    all_ids = torch.cat([ids, queue_ids])
    anchor_count = len(everything) if queue_anchors else len(vectors)
    if anchor_count == 0:
        return vectors.sum() * 0.0
    logits = (everything[:anchor_count] * (0.5 / temperature)) @ everything.T
    not_self = ~torch.eye(anchor_count, len(everything), dtype=torch.bool, device=vectors.device)
    log_denominator = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1)
    anchor_ids = all_ids[:anchor_count]
    positive = (anchor_ids[:, None] == all_ids[None, :]) & not_self & (anchor_ids[:, None] >= 0)
    count = positive.sum(1)
    # Σ_{j∈P} (ℓ_ij − log_den_i) without materialising the log-probability matrix (CPU memory).
    per_anchor = -((logits * positive).sum(1) - count * log_denominator) / count.clamp(min=1)
    return per_anchor.mean()


def calibration_loss(sigma_norm: torch.Tensor, confidence: torch.Tensor, mode: str = "code") -> torch.Tensor:
    """LDDU's L_crl between ``‖σ‖`` ``[N, K]`` and the semantic confidence ``c`` ``[N, K]``: symmetric KL / (N·K).

    ``code``: ``q_σ`` = softmax of ‖σ‖ over all N·K values, ``q_c`` = softmax of c over each row's K
    labels; ``per_sample_inverse``: ``q_σ`` = softmax of −‖σ‖ over each row's K labels.
    """
    if mode == "code":
        log_q_sigma = torch.log_softmax(sigma_norm.reshape(-1), dim=0)
    elif mode == "per_sample_inverse":
        log_q_sigma = torch.log_softmax(-sigma_norm, dim=-1).reshape(-1)
    else:
        raise ValueError(f"unknown crl_mode {mode!r}")
    log_q_c = torch.log_softmax(confidence, dim=-1).reshape(-1)
    difference = log_q_c - log_q_sigma
    symmetric = (log_q_c.exp() * difference).sum() - (log_q_sigma.exp() * difference).sum()
    return 0.5 * symmetric / max(sigma_norm.numel(), 1)


def binary_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """``−s log s − (1 − s) log(1 − s)`` in nats, per element (0 at s ∈ {0, 1}, log 2 at 0.5)."""
    p = probabilities.float().clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def _bce_on_probabilities(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE on probabilities in float32 with autocast off (CUDA autocast refuses it as unsafe)."""
    with torch.autocast(probabilities.device.type, enabled=False):
        return F.binary_cross_entropy(probabilities.float().clamp(1e-7, 1 - 1e-7), targets.float())


# The paper presets' model: the code's readings of the four defaults that differ from it.
_CODE = {"queue_size": 8192, "queue_init": "random", "label_query_residual": False, "use_padding_mask": False}
_MOSEI_TRAIN = {
    "epochs": 30,
    "batch_size": 64,
    "lr": 2e-4,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "scheduler": "warmup_cosine",
    "warmup_fraction": 0.1,
    "grad_clip": 1.0,
    "patience": 5,
    "monitor": "micro_f1",
    "threshold": "lddu_search",
}


AUTO_LR = 2e-4  # [C] the released run script's rate
AUTO_SMALL_CORPUS = 10_000  # [R] training items below which the extractors get no transformer layer
AUTO_POS_WEIGHT_POWER = 1.0  # [R] positive weights (negatives/positives)^p of the labels' BCE on small multi-label corpora
AUTO_WEIGHTING_REASON = (
    "rare labels' positives weighted by negatives/positives, chosen on the validation splits of two 5k-item corpora "
    "(no class at F1 0, then the best micro-F1) over no weighting, power 0.5 and no L_cdl"
)


def auto_rules(shape: Any, chosen: Any) -> None:
    """``--preset auto`` for LDDU, after the shared rules of :mod:`merkit.training.auto` (batch, epochs, patience).

    - ``lr`` = 2e-4, the code's rate: at merkit's default 1e-3 LDDU stalls at the label priors (training loss
      flat, the same validation scores every epoch, rare labels at F1 0), with or without L_cdl.
    - [R] ``encoder_layers`` = 0 below ``AUTO_SMALL_CORPUS`` training items: on a small corpus each layer of depth
      costs the rare labels (dev mean AP over epochs 5–14, 5k GoEmotions items: 3 layers 38.4, 1 layer 40.8,
      none 41.6; the sigmoid MLP 46.2); the label-wise attention still reads every frame.
    - [R] multi-label data below ``AUTO_SMALL_CORPUS`` items: ``class_weights`` = inverse_frequency with
      ``class_weight_power`` = ``AUTO_POS_WEIGHT_POWER``, i.e. each label's positives weighted by its
      negatives/positives in the fused BCE (the code weighs nothing; the paper presets keep that). Chosen on the
      validation splits only, by a rule fixed before the runs (no class at validation F1 0 in any seed, then the best
      validation micro-F1 over both corpora): power 1 59.32, unweighted 59.28 (both without zeros); power 0.5 (3
      class-seeds at validation F1 0) and unweighted without L_cdl (2) were ruled out. The micro-F1 margin is within
      the seed spread; what power 1 changes is the rare labels: no class-seed at test F1 0 (unweighted: 1 of 42),
      test macro-F1 +0.4 (A) and +3.1 (B). Larger multi-label corpora keep the code's unweighted loss (not measured).

    Measured on two disjoint 5k-item GoEmotions subsamples, MiniLM vectors, seeds 0–2, test micro-F1 (docs/results/
    multilabel.md, "LDDU on small multi-label corpora", with the commands): sigmoid MLP auto 58.62 / 57.39; these rules
    57.82 / 56.78 (no class-seed at F1 0); unweighted 58.17 / 56.83 (one at 0: disgust, B seed 2); the rate alone
    57.40 / 56.04 (5 at 0); auto before #34 (lr 1e-3, 3 layers) 47.70 / 49.28 (28 at 0). Sequence corpora this small
    (frames that the layers could relate) were not measured.
    """
    chosen.set("train", "lr", AUTO_LR, "LDDU's code rate; at 1e-3 LDDU stalls at the label priors")
    if shape.utterances < AUTO_SMALL_CORPUS:
        chosen.set("model", "encoder_layers", 0, f"under {AUTO_SMALL_CORPUS:,} training items the layers' depth costs the rare labels")
        if shape.multi_label:
            chosen.set("train", "class_weights", "inverse_frequency", AUTO_WEIGHTING_REASON)
            chosen.set("train", "class_weight_power", AUTO_POS_WEIGHT_POWER, AUTO_WEIGHTING_REASON)


@register_model(
    "lddu",
    config=LDDUConfig,
    modalities=("text", "audio", "visual"),
    description="LDDU: label-wise per-modality Gaussian latents (μ, σ), contrastive disentangling, uncertainty-aware fusion; multi-label",
    feature_level="sequence",
    presets={
        # CMU-MOSEI word-aligned (MMSA aligned_50.pkl): the released run script's settings.
        "mosei-aligned": {"model": dict(_CODE), "train": dict(_MOSEI_TRAIN)},
        # Unaligned MOSEI: audio/visual (500 frames) pseudo-aligned to 50 positions [C compiled modules].
        "mosei-unaligned": {"model": {**_CODE, "alignment": "ctc"}, "train": dict(_MOSEI_TRAIN)},
        # M3ED (CARAT features, one sample = one dialogue, K=7 from the data): no script published [U] → MOSEI's.
        "m3ed": {"model": dict(_CODE), "train": dict(_MOSEI_TRAIN)},
        # GoEmotions text only (MiniLM/MPNet utterance vectors: one frame) [U]: per-label queries added to the
        # one-frame attention output; a smaller queue whose rows are not anchors (5x cheaper on CPU), one
        # encoder layer, fewer epochs, per-class thresholds tuned on dev.
        "goemotions": {
            "model": {"label_query_residual": True, "queue_size": 2048, "queue_anchors": False, "encoder_layers": 1},
            "train": {**_MOSEI_TRAIN, "epochs": 10, "patience": 3, "threshold": "per_class"},
        },
    },
    auto=auto_rules,
)
class LDDU(ERCModel):
    config_class = LDDUConfig

    def __init__(self, config: LDDUConfig, spec: DataSpec):
        super().__init__(config, spec)
        self.names = tuple(spec.modalities)
        labels, modalities = spec.num_classes, len(self.names)
        align = config.alignment == "ctc"
        self.encoders = nn.ModuleDict({m: _ModalityEncoder(dim, config, align and m != "text") for m, dim in spec.modalities.items()})
        self.apply(self._bert_init)
        self.label_embedding = nn.Embedding(labels, config.hidden)
        nn.init.xavier_uniform_(self.label_embedding.weight)
        self.label_query = nn.ModuleDict({m: nn.Linear(config.hidden, config.hidden) for m in self.names})
        self.label_source = nn.ModuleDict({m: nn.Linear(config.hidden, config.hidden) for m in self.names})
        self.label_output = nn.ModuleDict({m: nn.Linear(config.hidden, config.hidden) for m in self.names})
        self.label_dropout = nn.Dropout(config.label_attention_dropout)
        self.latent = nn.ModuleDict({m: self._latent_encoder(config) for m in self.names})
        self.semantic_gate = nn.Sequential(
            nn.Linear(modalities * config.hidden, config.fusion_hidden),
            nn.Dropout(config.fusion_dropout),
            nn.ReLU(),
            nn.Linear(config.fusion_hidden, 1),
        )
        self.mu_heads = _PerLabelHeads(labels, modalities * config.latent, config.fusion_hidden, config.fusion_dropout)
        self.sigma_heads = _PerLabelHeads(labels, modalities * config.latent, config.fusion_hidden, config.fusion_dropout)
        if config.queue_init == "random":  # unit-norm μ and σ halves, id −1: negatives only
            queue = F.normalize(torch.randn(config.queue_size, 2, config.latent), dim=-1).flatten(1)
        else:
            queue = torch.zeros(config.queue_size, 2 * config.latent)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ids", torch.full((config.queue_size,), -1, dtype=torch.long))

    @staticmethod
    def _bert_init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)

    @staticmethod
    def _latent_encoder(config: LDDUConfig) -> nn.ModuleDict:
        widths = (config.hidden, *config.latent_mlp)
        trunk = nn.Sequential(*(m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())))
        encoder = nn.ModuleDict({"trunk": trunk, "mu": nn.Linear(widths[-1], config.latent), "logvar": nn.Linear(widths[-1], config.latent)})
        for module in encoder.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if config.latent_bias_init == "zeros":
                    nn.init.zeros_(module.bias)
        return encoder

    def _modality(self, modality: str, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """One modality's label-wise features F, μ, σ (each ``[N, K, ·]``), its per-utterance presence,
        and (with alignment) the frames' position log-probabilities and counts for the CTC loss."""
        frame_counts = mask.sum(-1)
        hidden, mask, log_probs = self.encoders[modality](frames, mask)
        queries = self.label_query[modality](self.label_embedding.weight)  # [K, hidden]
        source = self.label_source[modality](hidden)  # [N, L, hidden]
        scores = torch.einsum("kh,nlh->nkl", queries, source) / math.sqrt(self.config.hidden)
        attention = layers.masked_softmax(scores, mask.unsqueeze(1).expand_as(scores), dim=-1)
        features = self.label_output[modality](self.label_dropout(attention @ source))
        if self.config.label_query_residual:
            features = features + queries
        encoder = self.latent[modality]
        trunk = encoder["trunk"](features)
        mu, logvar = encoder["mu"](trunk), encoder["logvar"](trunk)
        return {
            "features": features,
            "mu": mu,
            "sigma": torch.exp(0.5 * logvar),
            "present": mask.any(-1),
            "log_probs": log_probs,
            "frame_counts": frame_counts,
        }

    def _fuse(self, features: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score ``s`` and semantic confidence ``c`` (``[N, K]``) from per-modality slots ``[N, M, K, ·]``;
        slots where ``keep[N, M]`` is False are zeroed (a missing modality)."""

        def concat(slots: torch.Tensor) -> torch.Tensor:
            slots = torch.where(keep[:, :, None, None], slots, torch.zeros_like(slots))
            return slots.permute(0, 2, 1, 3).flatten(2)  # [N, K, M·width]

        confidence = torch.sigmoid(self.semantic_gate(concat(features)).squeeze(-1))
        p_mu, p_sigma = torch.sigmoid(self.mu_heads(concat(mu))), torch.sigmoid(self.sigma_heads(concat(sigma)))
        return confidence * p_mu + (1 - confidence) * p_sigma, confidence

    def _modality_shares(self, features, mu, sigma, keep, score) -> torch.Tensor:
        """Occlusion share of each modality: ``|s − s_without_m|`` over labels, normalised over modalities ``[N, M]``."""
        changes = []
        for index in range(len(self.names)):
            without = keep.clone()
            without[:, index] = False
            changes.append((score - self._fuse(features, mu, sigma, without)[0]).abs().mean(-1))
        change = torch.stack(changes, dim=1) * keep
        total = change.sum(1, keepdim=True)
        uniform = keep / keep.sum(1, keepdim=True).clamp(min=1)
        return torch.where(total > 0, change / total.clamp(min=1e-12), uniform)

    def parts(self, batch: ConversationBatch) -> LDDUParts:
        """Everything the fusion computed for the batch's real utterances (forward's first half; studies read it)."""
        valid = batch.utterance_mask
        outputs = {}
        for modality in self.names:
            frames, mask = layers.modality_frames(batch, modality, drop_zero_frames=self.config.use_padding_mask)
            outputs[modality] = self._modality(modality, frames[valid], mask[valid])
        features, mu, sigma = (torch.stack([outputs[m][key] for m in self.names], dim=1) for key in ("features", "mu", "sigma"))
        keep = torch.stack([outputs[m]["present"] for m in self.names], dim=1)  # [N, M]
        head_mu = mu + sigma * torch.randn_like(sigma) if self.config.sample_latent and self.training else mu
        score, confidence = self._fuse(features, head_mu, sigma, keep)
        sigma_norm = (sigma.square() * keep[:, :, None, None]).sum((1, 3)).sqrt()  # ‖[σ_m]_m‖ per label, [N, K]
        return LDDUParts(outputs, features, mu, head_mu, sigma, keep, score, confidence, sigma_norm)

    def forward(self, batch: ConversationBatch) -> ModelOutput:
        valid = batch.utterance_mask
        parts = self.parts(batch)
        batch_size, length = valid.shape
        logits = parts.score.new_zeros(batch_size, length, self.spec.num_classes)
        logits[valid] = torch.logit(parts.score, eps=1e-6)
        chosen = parts.sigma_norm if self.config.uncertainty == "sigma_norm" else binary_entropy(parts.score)
        uncertainty = parts.sigma_norm.new_zeros(batch_size, length, self.spec.num_classes)  # dtypes differ under autocast
        uncertainty[valid] = chosen.detach().to(uncertainty.dtype)
        output = ModelOutput(logits=logits, uncertainty=uncertainty)
        if self.training:
            output.aux_losses = self._aux_losses(batch, parts)
        else:
            weights = parts.score.new_zeros(batch_size, length, len(self.names))
            weights[valid] = self._modality_shares(parts.features, parts.head_mu, parts.sigma, parts.keep, parts.score)
            output.expert_weights, output.expert_names = weights, self.names
        return output

    def _targets(self, batch: ConversationBatch) -> torch.Tensor:
        """Multi-hot ``[B, T, K]`` targets (one-hot for single-label data)."""
        if self.spec.multi_label:
            return batch.labels.float()
        return F.one_hot(batch.labels.clamp(min=0), self.spec.num_classes).float()

    def main_loss(self, output: ModelOutput, batch: ConversationBatch, class_weights: torch.Tensor | None) -> torch.Tensor:
        """``fused_weight``·BCE(s); on multi-label data ``class_weights`` are the labels' positive weights (none in the code)."""
        pos_weight = class_weights if self.spec.multi_label else None
        return self.config.fused_weight * layers.masked_bce(output.logits, self._targets(batch), batch.label_mask, pos_weight)

    def _aux_losses(self, batch: ConversationBatch, parts: LDDUParts) -> dict[str, torch.Tensor]:
        config = self.config
        outputs, mu, sigma, keep, confidence, sigma_norm = parts.outputs, parts.mu, parts.sigma, parts.keep, parts.confidence, parts.sigma_norm
        labelled = batch.label_mask[batch.utterance_mask]  # [N]
        targets = self._targets(batch)[batch.utterance_mask][labelled]  # [n, K]
        losses = {"semantic": config.semantic_weight * _bce_on_probabilities(confidence[labelled], targets)}
        if config.cdl_weight:
            losses["cdl"] = config.cdl_weight * self._cdl(mu[labelled], sigma[labelled], keep[labelled], targets)
        if config.crl_weight:
            losses["crl"] = config.crl_weight * calibration_loss(sigma_norm[labelled], confidence[labelled], config.crl_mode)
        if config.alignment == "ctc" and config.ctc_weight:
            losses["ctc"] = config.ctc_weight * sum(self._ctc(outputs[m]) for m in self.names if outputs[m]["log_probs"] is not None)
        return losses

    def _cdl(self, mu: torch.Tensor, sigma: torch.Tensor, keep: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_cdl over the present (utterance, modality, label) vectors; the batch then enters the queue."""
        labels = self.spec.num_classes
        vectors = torch.cat([F.normalize(mu, dim=-1), F.normalize(sigma, dim=-1)], dim=-1)  # [n, M, K, 2Z]
        modality = torch.arange(len(self.names), device=mu.device)[None, :, None]
        label = torch.arange(labels, device=mu.device)[None, None, :]
        absent = (1 - targets.long())[:, None, :]
        ids = label + labels * (2 * modality + absent)  # [n, M, K]
        chosen = keep[:, :, None].expand_as(ids)
        vectors, ids = vectors[chosen], ids[chosen]
        filled = self.queue_ids >= 0 if self.config.queue_init == "empty" else torch.ones_like(self.queue_ids, dtype=torch.bool)
        loss = contrastive_disentanglement_loss(
            vectors, ids, self.queue[filled], self.queue_ids[filled], self.config.cdl_temperature, self.config.queue_anchors
        )
        if self.config.queue_size:
            # FIFO, newest first; a new tensor (not an in-place write) keeps the loss's saved queue intact.
            self.queue = torch.cat([vectors.detach(), self.queue])[: self.config.queue_size]
            self.queue_ids = torch.cat([ids, self.queue_ids])[: self.config.queue_size]
        return loss

    def _ctc(self, output: dict) -> torch.Tensor:
        """[U] CTC loss of the alignment: the real frames should emit positions 1..aligned_length in order."""
        present = output["present"]
        log_probs, counts = output["log_probs"][present], output["frame_counts"][present]
        if len(log_probs) == 0:
            return output["log_probs"].sum() * 0.0
        length = self.config.aligned_length
        targets = torch.arange(1, length + 1, device=log_probs.device).expand(len(log_probs), -1)
        return F.ctc_loss(
            log_probs.transpose(0, 1).float(),
            targets,
            input_lengths=counts,
            target_lengths=torch.full_like(counts, length),
            zero_infinity=True,
        )
