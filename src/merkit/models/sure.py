"""SURE: uncertainty-aware mixture of modality experts, iterative reasoning, SDT's transformer gate. models.md §4.

"SURE: Synergistic Uncertainty-aware REasoning for Multimodal Emotion Recognition in
Conversations" (ICASSP 2026; code swaggy66/SURE). The official code does not run (models.md
§4.2), so it served only for hyper-parameters and data handling; the mechanisms are rebuilt
from the paper's description on top of SDT's blocks (``sdt.py``, ``transformer_blocks.py``).

Per modality: projection → MoE → iterative reasoning → transformer gate block → head; then
``z = Linear(M·C → C)([z_m])``.

Sources of each part:

- [P] each modality modelled as a Gaussian, samples routed to low-uncertainty experts; a query
  vector repeatedly updated over the dialogue context with an LSTM and attention; intra- and
  inter-modal self/cross attention with gates; text is the best single modality, T+A+V best.
- [C] width 1024, 8 heads, dropout 0.5; 4 experts per modality, top-3; 2 reasoning steps with a
  1-layer LSTM; SDT's transformers, unimodal gates and ``3D → D`` reductions without SDT's
  multimodal gated fusion; heads ``Linear(Dropout(ReLU(H_m)))``; loss ``NLL_w(z)`` with the IEMOCAP
  class weights of SDT; the IEMOCAP training settings (Adam 1e-4, weight decay 1e-5, batch 16,
  150 epochs).
- [R] (the code is missing or broken here): the Gaussian expert (``(μ, log σ²) = Linear(D → 2D)``,
  log σ² clamped to ±``logvar_clamp``, reparameterised sample in training, μ in evaluation
  (``eval_latent=mean``; ``samples`` averages the probabilities of ``eval_samples`` seeded draws),
  ``Linear(D → D)`` decoder, KL to N(0, I)); the router score ``r − λ_u·u`` with per-token top-k
  renormalisation over real tokens (the code normalises over the batch and ignores variances);
  the reasoning module (the code's graph readout cannot take ``[B, T, D]``) with its residual;
  the final layer sized ``Linear(M·C → C)`` (the code's ``Linear(D, C)`` cannot take ``3C``); the MoE
  balance and KL terms added to the loss (the code computes them and drops them); masking: a
  modality missing for an utterance is a masked key in every attention (reasoning and
  transformers), excluded from the MoE losses, and its head's logits are dropped from the
  final layer (zero contribution); with ``context_gru`` the BiGRU runs over the utterances that
  have the modality only; capacity limits are not applied (no token is dropped); ``input_norm``
  as in SDT.
- [U] ``uncertainty_weight`` λ_u = 1, ``balance_weight`` α_bal = 0.01, ``kl_weight`` α_kl = 1e-3,
  ``logvar_init`` −4 (initial log σ², σ ≈ 0.14: chosen among 0 / −2 / −4 by validation weighted F1 on
  IEMOCAP text, docs/results/sure-gaussian-experts.md; σ then grows back to ≈ 0.8 as the KL term pulls it); the MELD settings (no run script: SDT's MELD settings, including
  its identity gate and τ 8); ``hidden`` defaults to a CPU-sized 128 (the paper presets set 1024);
  the ``*-mpnet`` presets for merkit's own text features are merkit's choices (``sdt.presets`` plus
  ``moe_residual`` and ``context_gru`` on, see ``OWN_FEATURE_SETTINGS``).

Paper vs code (config option selecting each reading):

- routing: paper favours low-uncertainty experts (``uncertainty_weight=1``); code ignores the
  variances (``uncertainty_weight=0``).
- MoE losses: paper trains the MoE; code drops its terms (``balance_weight=0 kl_weight=0``).
- SDT's multimodal gated fusion: removed in the code (``multimodal_fusion=false``, default);
  ``true`` fuses ``H_m`` as SDT does and classifies the fused vector.
- SDT's self-distillation: not used by the code (``self_distill=false``); ``true`` adds SDT's
  γ2/γ3 terms on the modality heads (``temperature``, ``modality_weight``, ``distill_weight``).
- MoE residual ``LN(y + x)``: present in the code, off (``moe_residual``); the code's unused
  BiGRU context encoder: ``context_gru``.

Ablations, one command each: ``--set moe=false`` (no mixture of experts), ``--set reasoning=false``
(no iterative reasoning), ``--set gate=false`` (no transformer gate block),
``--set unimodal_gate=none`` (transformers kept, gates removed).

Training logs (``logs/metrics.csv``) hold, per epoch and modality, the chosen experts' mean σ
(``diag_sigma_<m>``) and mean ‖μ‖ (``diag_mu_norm_<m>``): with ``logvar_init`` 0, σ stays ≈ 1 per feature
while ‖μ‖ ≈ 5 over 256 features, so the sampling noise (norm ≈ 16) dominates (docs/results/sure-gaussian-experts.md).

Outputs: ``uncertainty [B, T, M]`` = mean variance of the chosen experts per modality (the prior
variance 1 where the modality is missing; absent when ``moe=false``); ``expert_weights [B, T, M]`` =
each modality's share of the final layer's input contribution ``|W_m z_m|₁ / Σ_m' |W_m' z_m'|₁``
(the multimodal gate's weights with ``multimodal_fusion=true``); ``expert_names`` = the modalities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from merkit.batching import ConversationBatch
from merkit.models.base import DataSpec, ERCModel
from merkit.models.registry import register_model
from merkit.models.sdt import ModalityHeadsOutput, SDTConfig, auto_rules, check_single_label, presets, self_distillation_losses
from merkit.models.transformer_blocks import (
    IterativeReasoning,
    MultimodalGatedFusion,
    SpeakerPositionEmbedding,
    TransformerGateBlock,
    UncertaintyAwareMoE,
    modality_projection,
)

# On small L2-normalised sentence vectors the experts' sampling noise drowns the input early in
# training; the code's optional residual LN(y + x) keeps it, and its (unused) BiGRU context encoder
# gives the text-only model the sequential context that the BiGRU baseline exploits.
OWN_FEATURE_SETTINGS = {"moe_residual": True, "context_gru": True}

def _auto_rules(shape: Any, chosen: Any) -> None:
    """``--preset auto`` for SURE: SDT's rules and the *-mpnet presets' own SURE settings (residual mixture, context GRU)."""
    auto_rules(shape, chosen)
    for name, value in OWN_FEATURE_SETTINGS.items():
        chosen.set("model", name, value, "SURE's settings in the *-mpnet presets")


# Seed of the draws with eval_latent=samples.
EVAL_NOISE_SEED = 0

# Variance of the N(0, I) prior: the uncertainty reported for a modality the utterance lacks.
PRIOR_VARIANCE = 1.0


class SUREConfig(SDTConfig):
    moe: bool = Field(True, description="uncertainty-aware mixture of Gaussian experts per modality")
    experts: int = Field(4, ge=1)
    top_k: int = Field(3, ge=1)
    uncertainty_weight: float = Field(1.0, ge=0, description="λ_u in the router score r − λ_u·u [U]")
    logvar_clamp: float = Field(10.0, gt=0, description="log σ² clamped to ±this [R]")
    logvar_init: float = Field(-4.0, description="initial bias of the experts' log σ² [U], chosen on validation")
    eval_latent: Literal["mean", "samples"] = Field(
        "mean", description="evaluation through the experts' μ, or the mean probability over eval_samples draws [R]"
    )
    eval_samples: int = Field(8, ge=1, description="draws averaged with eval_latent=samples [R]")
    moe_residual: bool = Field(False, description="LN(y + x) after the mixture (code, off)")
    balance_weight: float = Field(0.01, ge=0, description="α_bal [U]")
    kl_weight: float = Field(1e-3, ge=0, description="α_kl [U]")
    reasoning: bool = Field(True, description="iterative LSTM + attention reasoning over the dialogue")
    reasoning_steps: int = Field(2, ge=1)
    reasoning_residual: bool = Field(True, description="x̃ = x + g·r + (1 − g)·q [R]")
    context_gru: bool = Field(False, description="BiGRU context encoder before reasoning (code, unused there)")
    gate: bool = Field(True, description="SDT transformer gate block")
    multimodal_fusion: bool = Field(False, description="SDT's multimodal gated fusion instead of Linear(M·C → C)")
    self_distill: bool = Field(False, description="add SDT's modality-head NLL and KL terms")

    @model_validator(mode="after")
    def _consistent(self) -> "SUREConfig":
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds experts ({self.experts})")
        if self.context_gru and self.hidden % 2:
            raise ValueError("context_gru needs an even hidden width (D/2 per direction)")
        return self


@register_model(
    "sure",
    config=SUREConfig,
    modalities=("text", "audio", "visual"),
    description="SURE: uncertainty-aware Gaussian MoE + iterative reasoning + SDT transformer gate",
    presets=presets({name: OWN_FEATURE_SETTINGS for name in ("iemocap-mpnet", "meld-mpnet")}),
    auto=_auto_rules,
)
class SURE(ERCModel):
    config_class = SUREConfig

    def __init__(self, config: SUREConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_single_label("SURE", spec)
        self.names = tuple(spec.modalities)
        width, classes = config.hidden, spec.num_classes
        self.project = nn.ModuleDict(
            {m: modality_projection(dim, width, config.input_norm) for m, dim in spec.modalities.items()}
        )
        self.moe = (
            nn.ModuleDict(
                {
                    m: UncertaintyAwareMoE(
                        width,
                        config.experts,
                        config.top_k,
                        config.uncertainty_weight,
                        config.logvar_clamp,
                        config.moe_residual,
                        config.logvar_init,
                    )
                    for m in self.names
                }
            )
            if config.moe
            else None
        )
        self.reasoning = (
            nn.ModuleDict(
                {
                    m: IterativeReasoning(width, config.reasoning_steps, config.reasoning_residual, config.context_gru)
                    for m in self.names
                }
            )
            if config.reasoning
            else None
        )
        self.embedding = SpeakerPositionEmbedding(width, config.max_speakers) if config.gate else None
        self.block = (
            TransformerGateBlock(list(self.names), width, config.heads, config.dropout, config.layers, config.unimodal_gate)
            if config.gate
            else None
        )
        # Modality heads feed the final Linear(M·C → C), or only the self-distillation terms after a gated fusion.
        self.modality_heads = (
            nn.ModuleDict(
                {m: nn.Sequential(nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(width, classes)) for m in self.names}
            )
            if config.self_distill or not config.multimodal_fusion
            else None
        )
        self.fusion = MultimodalGatedFusion(width) if config.multimodal_fusion else None
        self.head = nn.Linear(width, classes) if config.multimodal_fusion else None
        self.combine = None if config.multimodal_fusion else nn.Linear(len(self.names) * classes, classes)

    def forward(self, batch: ConversationBatch) -> ModalityHeadsOutput:
        if self.training or self.moe is None or self.config.eval_latent == "mean":
            return self._forward(batch)
        # A fixed seed per call: the same batch always gets the same prediction.
        generator = torch.Generator(device=batch.utterance_mask.device).manual_seed(EVAL_NOISE_SEED)
        draws = [self._forward(batch, sample=True, generator=generator) for _ in range(self.config.eval_samples)]

        def mean_probability(logits: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([torch.softmax(x.float(), dim=-1) for x in logits]).mean(0).clamp(min=1e-12).log()

        return replace(
            draws[0],
            logits=mean_probability([d.logits for d in draws]),
            uncertainty=torch.stack([d.uncertainty for d in draws]).mean(0),
            expert_weights=torch.stack([d.expert_weights for d in draws]).mean(0),
            modality_logits={m: mean_probability([d.modality_logits[m] for d in draws]) for m in draws[0].modality_logits},
        )

    def _forward(
        self, batch: ConversationBatch, sample: bool | None = None, generator: torch.Generator | None = None
    ) -> ModalityHeadsOutput:
        config = self.config
        present = {m: batch.present[m] & batch.utterance_mask for m in self.names}
        present_stack = torch.stack([present[m] for m in self.names], dim=2)  # [B, T, M]
        streams = {m: self.project[m](batch.features[m]) for m in self.names}
        aux_losses, uncertainty, diagnostics = {}, None, {}
        if self.moe is not None:
            mixtures = {m: self.moe[m](streams[m], present[m], sample, generator) for m in self.names}
            for m, mixture in mixtures.items():
                diagnostics |= {f"sigma_{m}": mixture.sigma, f"mu_norm_{m}": mixture.mean_norm}
            streams = {m: mixture.output for m, mixture in mixtures.items()}
            aux_losses["moe"] = sum(
                config.balance_weight * mixture.balance_loss + config.kl_weight * mixture.kl_loss for mixture in mixtures.values()
            )
            variances = torch.stack([mixtures[m].uncertainty for m in self.names], dim=2)
            uncertainty = variances.masked_fill(~present_stack, PRIOR_VARIANCE)
        if self.reasoning is not None:
            streams = {m: self.reasoning[m](streams[m], present[m]) for m in self.names}
        if self.block is not None:
            streams = self.block(streams, self.embedding(batch.speakers, batch.utterance_mask), present)
        modality_logits = (
            {m: self.modality_heads[m](streams[m]) for m in self.names} if self.modality_heads is not None else {}
        )
        if self.fusion is not None:
            fused, weights = self.fusion([streams[m] for m in self.names], present_stack)
            logits = self.head(fused)
        else:
            logits, weights = self._combine(modality_logits, present_stack)
        return ModalityHeadsOutput(
            logits=logits,
            aux_losses=aux_losses,
            uncertainty=uncertainty,
            expert_weights=weights,
            expert_names=self.names,
            modality_logits=modality_logits if config.self_distill else {},
            diagnostics=diagnostics,
        )

    def _combine(self, modality_logits: dict[str, torch.Tensor], present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = Σ_m W_m z_m + b`` over the present modalities, and each one's share of ``Σ_m |W_m z_m|₁``."""
        stacked = torch.stack([modality_logits[m] for m in self.names], dim=2) * present.unsqueeze(-1)  # [B, T, M, C]
        classes = stacked.shape[-1]
        per_modality_weight = self.combine.weight.view(classes, len(self.names), classes)  # [C_out, M, C_in]
        contributions = torch.einsum("omi,btmi->btmo", per_modality_weight, stacked)
        magnitude = contributions.detach().abs().sum(-1)
        shares = magnitude / magnitude.sum(-1, keepdim=True).clamp(min=1e-12)
        return contributions.sum(2) + self.combine.bias, shares

    def compute_loss(
        self, output: ModalityHeadsOutput, batch: ConversationBatch, class_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        parts = {"main": self.config.fused_weight * self.main_loss(output, batch, class_weights)}
        if self.config.self_distill:
            parts |= self_distillation_losses(output, batch, class_weights, self.config)
        parts |= output.aux_losses
        return sum(parts.values()), parts  # type: ignore[return-value]
