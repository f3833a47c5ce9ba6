"""MiSTER-E: speech and text experts and a cross-modal expert, mixed per utterance by a learned gate. models.md §5.

Conversation model of "A Mixture-of-Experts Model for Multimodal Emotion Recognition in
Conversations" (iiscleap/MiSTER-E, class ``AttentionMoE``). Speech and text only; no speaker
identity anywhere [P].

Sources of each part:

- [P] speech expert, text expert and cross-modal expert mixed by a gating network; supervised
  contrastive speech–text loss; KL agreement term between the experts; no speaker information.
- [C] speech/text expert = ``ReLU(Conv_k1) + ReLU(Conv_k3) + ReLU(Conv_k5)`` over the utterance
  axis → 3-layer BiGRU → ``+ Linear`` skip of the input; cross-modal expert = projections → 4
  co-attention blocks (3 heads × 40, attention dropout 0.1, residual dropout 0.5, LN eps 1e-6)
  → ``+ Linear`` skips → ``Linear(ReLU(Linear(LN([t; a]))))``; gate ``softmax(MLP([z_a; z_t; z_f]) / 2)``
  with MLP 3C → 10 → 3 mixing *logits*; loss ``FL(z) + FL(z_a) + FL(z_t) + FL(z_f) + 2·SupCon + 0.1·SymKL``
  with focal γ 3 and SupCon τ 1; Adam lr 1e-5, no weight decay, batch 8, 100 epochs, clip 1.0
  (presets ``iemocap``, ``meld``, ``mosi``; paper widths hidden 512/direction, 1024 channels).
- [R] padding and missing utterances are masked (``use_padding_mask``, ``skip_missing``); the
  focal mean is over real utterances (``focal_mean_over_padding``); the KL term skips padding;
  SupCon drops padded positions (the code keeps them as a class "−1"); with the cross-modal
  expert ablated, SupCon contrasts the speech and text experts' states instead of ``a_x, t_x``;
  an utterance missing a modality gets only the expert that can see it (masked in the gate's
  softmax); with one expert only (one modality) the output is that expert's logits and the
  duplicate expert focal term is dropped; merkit's own-feature presets use smaller widths and
  a larger learning rate so that they train on a CPU.
- [U] the splits (COSMIC for IEMOCAP, dev for MELD, the standard MOSI split); the MELD and MOSI
  presets reuse the IEMOCAP settings (the code ships no MELD/MOSI loader); no class weights.
  (The fusion LayerNorm's eps is the official code's 1e-6, ``fusion_norm_eps``.) The code picks its checkpoint on the test split:
  ``--protocol paper-compat`` reproduces that, the default selects on validation.

Paper vs code (config option that selects each reading):

- contrastive positives: paper "paired speech–text representations" (``supcon_positives="pair"``);
  code every utterance with the same label, either modality (``"label"``, default).
- padding: the code has no mask anywhere (``use_padding_mask=false`` reproduces it; merkit packs
  the GRUs and passes key-padding masks).
- focal mean: the code divides by all positions, padding included (``focal_mean_over_padding=true``).
- the experts' declared dropout of 0.2 is never applied in the code, so there is none here.

Embedding substitution: the paper feeds 2048-d utterance embeddings from LoRA-fine-tuned
Qwen2.5-7B (text) and Qwen2-Audio-7B (speech) encoders (models.md §5.2); those weights cannot
ship with merkit, so the embedding source is a config choice (``text_embedding``,
``audio_embedding``: the paper's ``llm-lora``, or merkit's ``mpnet``/``minilm`` text and
``whisper-tiny``/``whisper-base``/``opensmile`` audio features). Input widths are always read from the data;
a named source only checks that the data has that source's width. Results on merkit's
features are therefore not the paper's numbers.

Ablations, one command each (``--set``): ``contrastive=false``, ``kl=false``, ``cross_modal_expert=false``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from merkit.batching import ConversationBatch
from merkit.errors import MerkitError
from merkit.models import layers
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model

EXPERT_NAMES = ("speech", "text", "cross-modal")
_EXPERT_OF = {"audio": "speech", "text": "text"}
EMBEDDING_WIDTHS: dict[str, int | None] = {
    "llm-lora": 2048,  # the paper's fine-tuned Qwen encoders + Linear(→2048)
    "mpnet": 768,
    "minilm": 384,
    "whisper-tiny": 384,
    "whisper-base": 512,
    "opensmile": None,  # depends on the feature set (IS10 1582, eGeMAPS 88, ...)
    "any": None,
}


class MisterEConfig(ModelConfig):
    """Defaults are merkit's CPU-sized widths; the paper presets set the published ones."""

    conv_channels: int = Field(256, ge=1, description="expert convolution channels (paper 1024)")
    conv_kernels: tuple[int, ...] = (1, 3, 5)
    gru_hidden: int = Field(128, ge=1, description="expert BiGRU width per direction (paper 512)")
    gru_layers: int = Field(3, ge=1)
    cross_dim: int = Field(256, ge=1, description="cross-modal expert width (paper 1024)")
    attention_dim: int = Field(120, ge=1)
    attention_heads: int = Field(3, ge=1)
    attention_dropout: float = Field(0.1, ge=0, lt=1)
    residual_dropout: float = Field(0.5, ge=0, lt=1)
    coattention_blocks: int = Field(4, ge=0)
    gate_hidden: int = Field(10, ge=1)
    fusion_norm_eps: float = Field(1e-6, gt=0, description="eps of the cross-modal expert's fusion LayerNorm (official code 1e-6)")
    gate_temperature: float = Field(2.0, gt=0)
    focal_gamma: float = Field(3.0, ge=0)
    focal_mean_over_padding: bool = False
    supcon_weight: float = Field(2.0, ge=0)
    supcon_temperature: float = Field(1.0, gt=0)
    supcon_positives: Literal["label", "pair"] = "label"
    kl_weight: float = Field(0.1, ge=0)
    use_padding_mask: bool = True
    skip_missing: bool = Field(True, description="[R] an expert runs over the utterances that have its modality; False: missing ones enter as zeros")
    contrastive: bool = True
    kl: bool = True
    cross_modal_expert: bool = True
    text_embedding: Literal["llm-lora", "mpnet", "minilm", "any"] = "any"
    audio_embedding: Literal["llm-lora", "whisper-tiny", "whisper-base", "opensmile", "any"] = "any"

    @field_validator("conv_kernels")
    @classmethod
    def _odd_kernels(cls, kernels: tuple[int, ...]) -> tuple[int, ...]:
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError("conv_kernels must be odd sizes ('same' padding over the utterance axis)")
        return kernels

    @model_validator(mode="after")
    def _heads_divide_attention(self) -> "MisterEConfig":
        if self.attention_dim % self.attention_heads:
            raise ValueError(f"attention_dim ({self.attention_dim}) must be a multiple of attention_heads ({self.attention_heads})")
        return self


@dataclass
class MisterEOutput(ModelOutput):
    """Adds what the losses need: per-expert logits ``[B, T, 3, C]`` (zeros for an expert the model
    lacks), which experts can see each utterance ``[B, T, 3]``, and the two views SupCon contrasts."""

    expert_logits: torch.Tensor | None = None
    expert_available: torch.Tensor | None = None
    contrast_views: tuple[torch.Tensor, torch.Tensor] | None = None


class ContextExpert(nn.Module):
    """Multi-kernel convolution + BiGRU over the dialogue with a linear skip: ``[B, T, D]`` → ``[B, T, 2H]``.

    With a mask, the utterances it selects are moved to the front (in dialogue order), encoded as
    a packed sequence and put back, so padding and skipped utterances never reach the GRU or
    the convolution windows; the unselected positions output zeros.
    """

    def __init__(self, in_dim: int, config: MisterEConfig):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, config.conv_channels, k, padding=k // 2) for k in config.conv_kernels)
        self.gru = nn.GRU(config.conv_channels, config.gru_hidden, num_layers=config.gru_layers, batch_first=True, bidirectional=True)
        self.skip = nn.Linear(in_dim, 2 * config.gru_hidden)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        channels = x.transpose(1, 2)
        local = sum(torch.relu(conv(channels)) for conv in self.convs).transpose(1, 2)
        if lengths is None:
            return self.gru(local)[0]
        return layers.packed_bigru(self.gru, local, lengths.clamp(min=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return self._encode(x, None) + self.skip(x)
        positions = torch.arange(x.shape[1], device=x.device)
        # present steps first, each group in order: unique keys, so no stable sort is needed (ONNX has none)
        order = torch.argsort((~mask).long() * x.shape[1] + positions, dim=1)
        lengths = mask.sum(1)
        kept = positions < lengths.unsqueeze(1)
        compact = x.gather(1, order.unsqueeze(-1).expand_as(x)) * kept.unsqueeze(-1)
        encoded = self._encode(compact, lengths)
        restored = torch.zeros_like(encoded).scatter(1, order.unsqueeze(-1).expand_as(encoded), encoded)
        return (restored + self.skip(x)) * mask.unsqueeze(-1)


class CrossModalExpert(nn.Module):
    """Co-attention between the text and audio streams; returns ``(t_x, a_x, logits)``."""

    def __init__(self, text_dim: int, audio_dim: int, num_classes: int, config: MisterEConfig):
        super().__init__()
        width = config.cross_dim
        self.project_text, self.project_audio = nn.Linear(text_dim, width), nn.Linear(audio_dim, width)
        self.skip_text, self.skip_audio = nn.Linear(text_dim, width), nn.Linear(audio_dim, width)
        self.blocks = nn.ModuleList(
            layers.CoAttentionBlock(width, config.attention_dim, config.attention_heads, config.attention_dropout, config.residual_dropout)
            for _ in range(config.coattention_blocks)
        )
        self.norm = nn.LayerNorm(2 * width, eps=config.fusion_norm_eps)
        self.fuse = nn.Linear(2 * width, width)
        self.classify = nn.Linear(width, num_classes)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, text_padding: torch.Tensor | None, audio_padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t, a = self.project_text(text), self.project_audio(audio)
        for block in self.blocks:
            t, a = block(t, a, text_padding, audio_padding)
        t_x, a_x = t + self.skip_text(text), a + self.skip_audio(audio)
        return t_x, a_x, self.classify(torch.relu(self.fuse(self.norm(torch.cat([t_x, a_x], dim=-1)))))


_PAPER_MODEL = {"conv_channels": 1024, "gru_hidden": 512, "cross_dim": 1024, "text_embedding": "llm-lora", "audio_embedding": "llm-lora"}
_PAPER_TRAIN = {
    "epochs": 100,
    "batch_size": 8,
    "lr": 1e-5,
    "weight_decay": 0.0,
    "optimizer": "adam",
    "scheduler": "none",
    "grad_clip": 1.0,
    "patience": None,
    "class_weights": "none",
}
_OWN_TRAIN = {**_PAPER_TRAIN, "lr": 1e-4, "patience": 15}


def _own_features(text_embedding: str) -> dict:
    return {"model": {"text_embedding": text_embedding, "audio_embedding": "any"}, "train": _OWN_TRAIN}


@register_model(
    "mister-e",
    config=MisterEConfig,
    modalities=("text", "audio"),
    description="MiSTER-E: speech, text and cross-modal experts mixed by a learned gate; SupCon + KL losses",
    presets={
        "iemocap": {"model": _PAPER_MODEL, "train": _PAPER_TRAIN},
        "meld": {"model": _PAPER_MODEL, "train": _PAPER_TRAIN},
        "mosi": {"model": _PAPER_MODEL, "train": _PAPER_TRAIN},
        "iemocap-mpnet": _own_features("mpnet"),
        "meld-mpnet": _own_features("mpnet"),
        "iemocap-minilm": _own_features("minilm"),
        "meld-minilm": _own_features("minilm"),
    },
)
class MisterE(ERCModel):
    """Gate weights per utterance in ``expert_weights`` ``[B, T, 3]`` over ("speech", "text", "cross-modal");
    an expert the model lacks, or that cannot see an utterance, has weight 0 there."""

    config_class = MisterEConfig

    def __init__(self, config: MisterEConfig, spec: DataSpec):
        super().__init__(config, spec)
        if spec.multi_label:
            raise MerkitError("mister-e is a single-label model (softmax gate and focal loss); this data is multi-label")
        self.modalities = tuple(m for m in ("audio", "text") if m in spec.modalities)
        if not self.modalities:
            raise MerkitError(f"mister-e needs text or audio features; the data has {', '.join(spec.modalities) or 'none'}")
        for modality, source in (("text", config.text_embedding), ("audio", config.audio_embedding)):
            width = EMBEDDING_WIDTHS[source]
            if modality in spec.modalities and width is not None and spec.modalities[modality] != width:
                raise MerkitError(
                    f"mister-e is set for {source} {modality} embeddings ({width}-d) but the data's {modality} features are "
                    f"{spec.modalities[modality]}-d; choose the preset for your features or --set {modality}_embedding=any"
                )
        self.experts = nn.ModuleDict({m: ContextExpert(spec.modalities[m], config) for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(2 * config.gru_hidden, spec.num_classes) for m in self.modalities})
        both = len(self.modalities) == 2
        self.cross = (
            CrossModalExpert(spec.modalities["text"], spec.modalities["audio"], spec.num_classes, config)
            if both and config.cross_modal_expert
            else None
        )
        self.active_experts = tuple(
            name for name, kept in zip(EXPERT_NAMES, ("audio" in self.modalities, "text" in self.modalities, self.cross is not None)) if kept
        )
        experts = len(self.active_experts)
        self.gate = (
            nn.Sequential(nn.Linear(experts * spec.num_classes, config.gate_hidden), nn.ReLU(), nn.Linear(config.gate_hidden, experts))
            if experts > 1
            else None
        )

    def forward(self, batch: ConversationBatch) -> MisterEOutput:
        config = self.config
        available = {m: batch.utterance_mask & batch.present[m] for m in self.modalities}
        inputs = {m: batch.features[m] * available[m].unsqueeze(-1) for m in self.modalities}
        if not config.use_padding_mask:
            sequence = {m: None for m in self.modalities}
        else:
            sequence = {m: available[m] if config.skip_missing else batch.utterance_mask for m in self.modalities}
        hidden = {m: self.experts[m](inputs[m], sequence[m]) for m in self.modalities}
        expert_logits = {_EXPERT_OF[m]: self.heads[m](hidden[m]) for m in self.modalities}
        expert_mask = {_EXPERT_OF[m]: available[m] for m in self.modalities}
        views = (hidden["audio"], hidden["text"]) if len(self.modalities) == 2 else None
        if self.cross is not None:
            padding = {m: None if mask is None else ~mask for m, mask in sequence.items()}
            t_x, a_x, expert_logits["cross-modal"] = self.cross(inputs["text"], inputs["audio"], padding["text"], padding["audio"])
            expert_mask["cross-modal"] = available["text"] & available["audio"]
            views = (a_x, t_x)

        stacked = torch.stack([expert_logits[n] for n in self.active_experts], dim=2)  # [B, T, E, C]
        mask = torch.stack([expert_mask[n] for n in self.active_experts], dim=2)  # [B, T, E]
        if self.gate is None:
            weights = mask.to(stacked.dtype)
        else:
            # An utterance lacking a modality has exactly one available expert, so whatever the gate
            # scores there is masked away; where it has a choice, all its inputs are real.
            scores = self.gate(stacked.flatten(2)) / config.gate_temperature
            weights = layers.masked_softmax(scores, mask, dim=2)
        logits = (weights.unsqueeze(-1) * stacked).sum(2)

        index = [EXPERT_NAMES.index(n) for n in self.active_experts]
        batch_size, length, num_classes = logits.shape
        all_weights = weights.new_zeros(batch_size, length, len(EXPERT_NAMES))  # dtypes differ under autocast
        all_weights[..., index] = weights
        all_logits = stacked.new_zeros(batch_size, length, len(EXPERT_NAMES), num_classes)
        all_logits[:, :, index] = stacked
        all_available = torch.zeros_like(all_weights, dtype=torch.bool)
        all_available[..., index] = mask
        return MisterEOutput(
            logits=logits,
            expert_weights=all_weights,
            expert_names=EXPERT_NAMES,
            expert_logits=all_logits,
            expert_available=all_available,
            contrast_views=views,
        )

    def compute_loss(
        self, output: MisterEOutput, batch: ConversationBatch, class_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config = self.config
        labelled = batch.label_mask & batch.utterance_mask
        normalizer = float(labelled.numel()) if config.focal_mean_over_padding else None

        def focal(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return layers.masked_focal_loss(logits, batch.labels, mask, config.focal_gamma, class_weights, normalizer)

        parts = {"main": focal(output.logits, labelled)}
        experts = [EXPERT_NAMES.index(n) for n in self.active_experts]
        if len(experts) > 1:
            for e in experts:
                parts[EXPERT_NAMES[e]] = focal(output.expert_logits[:, :, e], labelled & output.expert_available[..., e])
            if config.kl:
                pairs = [
                    layers.symmetric_kl(
                        output.expert_logits[:, :, i],
                        output.expert_logits[:, :, j],
                        output.expert_available[..., i] & output.expert_available[..., j],
                        normalizer=batch.utterance_mask.shape[0],  # [C] batchmean over dialogues
                    )
                    for i, j in itertools.combinations(experts, 2)
                ]
                parts["kl"] = config.kl_weight * torch.stack(pairs).mean()
        if config.contrastive and output.contrast_views is not None:
            paired = output.expert_available[..., 0] & output.expert_available[..., 1]
            if config.supcon_positives == "label":
                paired = paired & labelled
            speech, text = output.contrast_views
            parts["supcon"] = config.supcon_weight * layers.supervised_contrastive_loss(
                speech, text, batch.labels, paired, config.supcon_temperature, config.supcon_positives
            )
        return sum(parts.values()), parts  # type: ignore[return-value]
