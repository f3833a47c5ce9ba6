"""Running a model over a dataset and collecting per-utterance outputs (used by training and evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from merkit.batching import BucketBatchSampler, ConversationBatch, DialogueDataset
from merkit.models.base import ERCModel, ModelOutput


@dataclass
class Predictions:
    """Flat per-utterance results over the labelled utterances of a dataset, in dataset order."""

    utterance_ids: list[str]
    labels: np.ndarray  # [N] class indices, or [N, C] multi-hot
    scores: np.ndarray  # [N, C] probabilities (softmax or sigmoid)
    uncertainty: np.ndarray | None = None  # [N] or [N, M]
    expert_weights: np.ndarray | None = None  # [N, E]
    expert_names: tuple[str, ...] = ()
    from_prior: np.ndarray | None = None  # [N] bool: no modality at all, so the scores are the label prior

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(axis=1)


def make_loader(dataset: DialogueDataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, **sampler_args) -> DataLoader:
    sampler = BucketBatchSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed, **sampler_args)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate)


def scores_of(output: ModelOutput, multi_label: bool) -> torch.Tensor:
    logits = output.logits.float()
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


@torch.no_grad()
def predict(
    model: ERCModel,
    loader: DataLoader,
    device: str | torch.device = "cpu",
    transform: Callable[[ConversationBatch], ConversationBatch] | None = None,
    all_utterances: bool = False,
    prior: np.ndarray | None = None,
) -> Predictions:
    """Per-utterance scores of ``model`` on every labelled utterance (every real one with
    ``all_utterances``: inference on unlabelled conversations); ``transform`` alters each batch
    first (robustness protocols drop or perturb modalities with it).

    An utterance with no modality at all gets ``prior`` (the training split's label frequencies,
    :func:`label_prior`; uniform when the checkpoint has none) as its scores, flagged in ``from_prior``:
    a model's output on nothing (often logits of exactly 0, hence class 0) is not a prediction."""
    model.eval()
    ids, labels, scores, uncertainty, weights, empty = [], [], [], [], [], []
    names: tuple[str, ...] = ()
    for batch in loader:
        batch: ConversationBatch = batch.to(device)
        if transform is not None:
            batch = transform(batch)
        output = model(batch)
        mask = batch.utterance_mask if all_utterances else batch.label_mask
        ids.extend(u for b, row in enumerate(batch.utterance_ids) for t, u in enumerate(row) if mask[b, t])
        labels.append(batch.labels[mask].cpu().numpy())
        nothing = ~torch.stack(list(batch.present.values()), dim=-1).any(-1)[mask].cpu().numpy()
        found = scores_of(output, model.spec.multi_label)[mask].cpu().numpy()
        if nothing.any():
            found[nothing] = prior if prior is not None else 1.0 / found.shape[1]
        scores.append(found)
        empty.append(nothing)
        if output.uncertainty is not None:
            uncertainty.append(output.uncertainty.float()[mask].cpu().numpy())
        if output.expert_weights is not None:
            weights.append(output.expert_weights.float()[mask].cpu().numpy())
            names = output.expert_names
    return Predictions(
        utterance_ids=ids,
        labels=np.concatenate(labels),
        scores=np.concatenate(scores),
        uncertainty=np.concatenate(uncertainty) if uncertainty else None,
        expert_weights=np.concatenate(weights) if weights else None,
        expert_names=names,
        from_prior=np.concatenate(empty),
    )


def label_prior(dataset: DialogueDataset) -> list[float]:
    """Per class, the fraction of the dataset's labelled utterances that carry it (multi-label: each class's rate)."""
    counts = np.zeros(dataset.num_classes)
    labelled = 0
    for dialogue in dataset.dialogues:
        for utterance in dialogue.utterances:
            if utterance.label is not None:
                counts[list(utterance.label_indices())] += 1
                labelled += 1
    return (counts / max(labelled, 1)).tolist()
