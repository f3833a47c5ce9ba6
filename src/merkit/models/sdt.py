"""SDT: intra- and inter-modal transformers, hierarchical gated fusion and self-distillation. models.md §3.

"A Transformer-Based Model With Self-Distillation for Multimodal Emotion Recognition in
Conversations" (IEEE TMM 2023; code butterfliesss/SDT). SURE (``sure.py``) extends it.

Sources of each part:

- [P] intra- and inter-modal transformers, hierarchical gated fusion, self-distillation from
  the fused prediction to each modality's prediction.
- [C] bias-free per-utterance projection (the code's kernel-1 "temporal convolution");
  ``E_spk + PE`` added inside every transformer with independent dropout masks; ``M²``
  one-layer transformers (8 heads, FFN width D, dropout 0.5 also on the attention matrix,
  pre-LN GELU-tanh FFN, LN eps 1e-6, LN on the query stream from the second layer on);
  unimodal gates ``σ(W_g Y) ⊙ Y``; ``H_m = Linear(M·D → D)`` of the gated outputs; one shared
  ``W`` for the multimodal gate (softmax over modalities per feature); modality heads
  ``Linear(Dropout(ReLU(H_m)))`` and a fused head ``Linear(H)``; loss
  ``γ1·NLL_w(z) + γ2·Σ_m NLL_w(z_m) + γ3·Σ_m KL(softmax(z/τ) ‖ softmax(z_m/τ))`` with the teacher not
  detached and no τ² factor; the presets' training settings (§3.4).
- [R] merkit's speaker index is the order of first appearance in the dialogue (the IEMOCAP
  pickle's one-hot is M/F) and indices ≥ ``max_speakers`` share the last row; the model is
  sized for any subset of modalities (``M²`` transformers, ``Linear(M·D → D)``); a modality
  missing for an utterance is masked as a key in every attention and excluded from the
  multimodal gate's softmax, its head's NLL and its KL term; a query with no valid key gets no
  attention update; positions are computed for any dialogue length (the code stops at 512);
  ``input_norm`` (off in the paper presets) puts a LayerNorm before the projection, for small
  L2-normalised sentence embeddings whose projection would otherwise be drowned by ``E_spk + PE``.
- [U] ``hidden`` defaults to a CPU-sized 128 (the paper presets set 1024); the ``*-mpnet`` presets
  for merkit's own text features (width 256, dropout 0.3, ``input_norm``, AdamW with clipping,
  unweighted loss, early stopping on the validation split) are merkit's choices, not the paper's.

Paper vs code: the MELD gate ``W_g = I`` frozen is code-only (``unimodal_gate="sigmoid_identity"``,
set in the ``meld`` preset; ``"learned"`` is the paper's reading, ``"none"`` an ablation).
The official codes select the epoch on the test set: ``--protocol paper-compat`` reproduces that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from merkit.batching import ConversationBatch
from merkit.errors import MerkitError
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.models.registry import register_model
from merkit.models.transformer_blocks import (
    MultimodalGatedFusion,
    SpeakerPositionEmbedding,
    TransformerGateBlock,
    UnimodalGate,
    modality_projection,
)

# IEMOCAP class frequencies of the official code (hap, sad, neu, ang, exc, fru); weights are 1/f (§3.3).
IEMOCAP_FREQUENCIES = (0.086747, 0.144406, 0.227883, 0.160585, 0.127711, 0.252668)
IEMOCAP_CLASS_WEIGHTS = [round(1.0 / f, 6) for f in IEMOCAP_FREQUENCIES]

# The paper's training settings (§3.4): Adam with L2 weight decay, no scheduler, no clipping, no early stopping.
PAPER_TRAIN = {"optimizer": "adam", "weight_decay": 1e-5, "scheduler": "none", "grad_clip": None, "patience": None}
IEMOCAP_TRAIN = {**PAPER_TRAIN, "lr": 1e-4, "batch_size": 16, "epochs": 150, "class_weights": IEMOCAP_CLASS_WEIGHTS}
MELD_TRAIN = {**PAPER_TRAIN, "lr": 5e-6, "batch_size": 8, "epochs": 50, "class_weights": "none"}


class SDTConfig(ModelConfig):
    hidden: int = Field(128, ge=2, description="model width D (paper 1024)")
    heads: int = Field(8, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    layers: int = Field(1, ge=1, description="layers per transformer")
    input_norm: bool = Field(False, description="LayerNorm on each modality's features before the projection [R]")
    max_speakers: int = Field(9, ge=1, description="speaker embedding rows S (IEMOCAP 2, MELD 9)")
    unimodal_gate: UnimodalGate = "learned"
    temperature: float = Field(1.0, gt=0, description="distillation temperature τ (IEMOCAP 1, MELD 8)")
    fused_weight: float = Field(1.0, ge=0, description="γ1: NLL of the fused head")
    modality_weight: float = Field(1.0, ge=0, description="γ2: NLL of each modality head")
    distill_weight: float = Field(1.0, ge=0, description="γ3: KL from the fused head to each modality head")
    detach_teacher: bool = Field(False, description="stop gradients through the KL teacher (the code does not)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "SDTConfig":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


@dataclass
class ModalityHeadsOutput(ModelOutput):
    """A ``ModelOutput`` that also carries each modality head's logits ``[B, T, C]`` (for self-distillation)."""

    modality_logits: dict[str, torch.Tensor] = field(default_factory=dict)


def weighted_nll(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """``Σ w_y·(−log p_y) / Σ w_y`` over ``mask`` (0 when nothing is masked in, e.g. a modality absent from the batch)."""
    targets = labels.masked_fill(~mask, 0)
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    weights = mask.float() if class_weights is None else class_weights[targets] * mask
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def distillation_kl(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher/τ) ‖ softmax(student/τ))`` summed over classes and ``mask`` positions, divided by their count."""
    log_teacher = torch.log_softmax(teacher.float() / temperature, dim=-1)
    log_student = torch.log_softmax(student.float() / temperature, dim=-1)
    divergence = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return (divergence * mask).sum() / mask.sum().clamp(min=1)


def self_distillation_losses(
    output: ModalityHeadsOutput, batch: ConversationBatch, class_weights: torch.Tensor | None, config: SDTConfig
) -> dict[str, torch.Tensor]:
    """SDT's γ2 (modality-head NLL) and γ3 (fused → modality KL) terms, each over the utterances that have the modality."""
    teacher = output.logits.detach() if config.detach_teacher else output.logits
    nll, kl = [], []
    for modality, logits in output.modality_logits.items():
        present = batch.present[modality] & batch.utterance_mask
        nll.append(weighted_nll(logits, batch.labels, present & batch.label_mask, class_weights))
        kl.append(distillation_kl(teacher, logits, present, config.temperature))
    return {"modality_nll": config.modality_weight * sum(nll), "distill": config.distill_weight * sum(kl)}


def check_single_label(name: str, spec: DataSpec) -> None:
    if spec.multi_label:
        raise MerkitError(f"{name} predicts one emotion per utterance; this data is multi-label")


OWN_MODEL = {"hidden": 256, "heads": 8, "dropout": 0.3, "input_norm": True}  # CPU-sized, for merkit's own features


def presets(model_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Paper presets (§3.4; the published features' widths are read from the data) and ``*-mpnet``
    presets for merkit's own text features (768-d L2-normalised MPNet vectors, text only, trained on a
    CPU): a smaller width, ``input_norm``, lighter dropout, AdamW with clipping, early stopping on the
    validation split and the unweighted loss of the BiGRU baseline they are compared with."""
    extra = model_overrides or {}
    own_train = {"optimizer": "adamw", "weight_decay": 1e-4, "scheduler": "none", "grad_clip": 1.0, "class_weights": "none"}
    table = {
        "iemocap": ({"hidden": 1024, "max_speakers": 2, "temperature": 1.0, "unimodal_gate": "learned"}, IEMOCAP_TRAIN),
        "meld": ({"hidden": 1024, "max_speakers": 9, "temperature": 8.0, "unimodal_gate": "sigmoid_identity"}, MELD_TRAIN),
        "iemocap-mpnet": (
            {**OWN_MODEL, "max_speakers": 2, "temperature": 1.0},
            {**own_train, "lr": 1e-3, "batch_size": 8, "epochs": 60, "patience": 10},
        ),
        "meld-mpnet": (
            {**OWN_MODEL, "max_speakers": 9, "temperature": 8.0},
            {**own_train, "lr": 5e-4, "batch_size": 16, "epochs": 30, "patience": 6},
        ),
    }
    return {name: {"model": {**model, **extra.get(name, {})}, "train": dict(train)} for name, (model, train) in table.items()}


AUTO_LR = 5e-4


def auto_rules(shape: Any, chosen: Any) -> None:
    """``--preset auto`` for SDT and SURE (after the shared rules of :mod:`merkit.training.auto`): one speaker row
    per speaker of the busiest training dialogue, and [R] the CPU-sized model and the learning rate of the
    ``meld-mpnet`` preset, which beat the bare defaults and ``iemocap-mpnet`` on both corpora of docs/results/presets-auto.md."""
    chosen.set("model", "max_speakers", max(shape.max_speakers, 1), "the most speakers in one training dialogue")
    for name, value in OWN_MODEL.items():
        chosen.set("model", name, value, "merkit's CPU-sized model of the *-mpnet presets")
    chosen.set("train", "lr", AUTO_LR, "meld-mpnet's rate, better than 1e-3 on the documented new corpora")


@register_model(
    "sdt",
    config=SDTConfig,
    modalities=("text", "audio", "visual"),
    description="SDT: intra/inter-modal transformers, hierarchical gated fusion, self-distillation",
    presets=presets(),
    auto=auto_rules,
)
class SDT(ERCModel):
    """Projection → ``M²`` speaker/position-aware transformers → unimodal gates → per-modality
    reduction → multimodal gated fusion → fused and modality heads.

    ``expert_weights``: the multimodal gate's weights averaged over features, one per modality.
    """

    config_class = SDTConfig

    def __init__(self, config: SDTConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_single_label("SDT", spec)
        self.names = tuple(spec.modalities)
        width, classes = config.hidden, spec.num_classes
        self.project = nn.ModuleDict(
            {m: modality_projection(dim, width, config.input_norm) for m, dim in spec.modalities.items()}
        )
        self.embedding = SpeakerPositionEmbedding(width, config.max_speakers)
        self.block = TransformerGateBlock(
            list(self.names), width, config.heads, config.dropout, config.layers, config.unimodal_gate
        )
        self.fusion = MultimodalGatedFusion(width)
        self.modality_heads = nn.ModuleDict(
            {m: nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(width, classes)) for m in self.names}
        )
        self.head = nn.Linear(width, classes)

    def forward(self, batch: ConversationBatch) -> ModalityHeadsOutput:
        present = {m: batch.present[m] & batch.utterance_mask for m in self.names}
        streams = {m: self.project[m](batch.features[m]) for m in self.names}
        reduced = self.block(streams, self.embedding(batch.speakers, batch.utterance_mask), present)
        fused, weights = self.fusion([reduced[m] for m in self.names], torch.stack([present[m] for m in self.names], 2))
        return ModalityHeadsOutput(
            logits=self.head(fused),
            expert_weights=weights,
            expert_names=self.names,
            modality_logits={m: self.modality_heads[m](reduced[m]) for m in self.names},
        )

    def compute_loss(
        self, output: ModalityHeadsOutput, batch: ConversationBatch, class_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        parts = {"main": self.config.fused_weight * self.main_loss(output, batch, class_weights)}
        parts |= self_distillation_losses(output, batch, class_weights, self.config)
        parts |= output.aux_losses
        return sum(parts.values()), parts  # type: ignore[return-value]
