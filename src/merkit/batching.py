"""From a corpus + features to padded batches of whole dialogues (``ConversationBatch``).

Rows of every modality are gathered per dialogue from the (memory-mapped) feature arrays
and padded to the longest dialogue of the batch. Dialogues are bucketed by length so that
padding stays small, and the order of batches is a pure function of (seed, epoch), which
makes shuffling identical after a resume and across DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from merkit.data.corpus import SPEAKER_ROLE, Corpus, Dialogue, Split
from merkit.data.features import FeatureSet
from merkit.errors import MerkitError
from merkit.normalization import Scaler

IGNORE_INDEX = -100


@dataclass
class ConversationBatch:
    """A batch of ``B`` dialogues padded to ``T`` utterances.

    ``features[m]``: ``[B, T, D_m]`` (zero where absent); ``present[m]``: ``[B, T]`` bool —
    the utterance has modality ``m`` (False on padding and on missing data);
    ``utterance_mask``: ``[B, T]`` real utterances; ``speakers``: ``[B, T]`` speaker index
    within the dialogue (order of first appearance); ``labels``: ``[B, T]`` class indices
    (``IGNORE_INDEX`` on padding/unlabelled) or ``[B, T, C]`` multi-hot floats;
    ``label_mask``: ``[B, T]`` utterances that carry a label.

    Modalities the dataset delivers as frame sequences (``sequence_modalities``) also have
    ``sequences[m]``: ``[B, T, L, D_m]`` padded to the longest ``L`` of the batch, and
    ``sequence_mask[m]``: ``[B, T, L]`` real frames (from the stored lengths); their
    ``features[m]`` is then the mean over the real frames. An utterance-level modality asked
    for as a sequence comes as ``L = 1``.
    """

    features: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    utterance_mask: torch.Tensor
    speakers: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor
    dialogue_ids: list[str] = field(default_factory=list)
    utterance_ids: list[list[str]] = field(default_factory=list)
    sequences: dict[str, torch.Tensor] = field(default_factory=dict)
    sequence_mask: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def to(self, device: torch.device | str) -> "ConversationBatch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=True)
            elif isinstance(value, dict):
                moved[f.name] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        return replace(self, **moved)

    def with_features(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> "ConversationBatch":
        """The same batch with other feature tensors (used by robustness protocols)."""
        return replace(self, features=features, present=present)


SPEAKER_INDEX = ("order", "role")


def has_speaker_roles(corpus: Corpus) -> bool:
    return all(SPEAKER_ROLE in u.meta for u in corpus.utterances())


def speaker_indices(dialogue: Dialogue, mode: str) -> list[int]:
    """Each utterance's speaker index: its ``speaker_role`` (``mode="role"``, as the official SDT/SURE codes index the
    corpus's speaker one-hot), or the order of first appearance in the dialogue (``order``, and for a dialogue
    without roles, such as a user's conversation at inference)."""
    if mode == "role" and all(SPEAKER_ROLE in u.meta for u in dialogue.utterances):
        return [int(u.meta[SPEAKER_ROLE]) for u in dialogue.utterances]
    first: dict[str, int] = {}
    return [first.setdefault(u.speaker, len(first)) for u in dialogue.utterances]


class DialogueDataset(Dataset):
    """The dialogues of some splits with the chosen modalities' features.

    Modalities in ``sequence_modalities`` (models that read frames ask for them) are delivered
    as padded frame sequences; every other modality must have one vector per utterance.
    ``scalers`` (from :mod:`merkit.normalization`, fitted on the training split) scale the rows
    of their modality as they are read.
    """

    def __init__(
        self,
        corpus: Corpus,
        features: dict[str, FeatureSet],
        splits: Sequence[Split],
        modalities: Sequence[str],
        sequence_modalities: Sequence[str] = (),
        scalers: Mapping[str, Scaler] | None = None,
        speaker_index: str = "order",
    ):
        """``speaker_index``: ``order`` (first appearance in the dialogue) or ``role`` (the reader's speaker roles, see
        :func:`speaker_indices`)."""
        missing = [m for m in modalities if m not in features]
        if missing:
            raise MerkitError(
                f"the data has no {', '.join(missing)} features (it has: {', '.join(features) or 'none'})"
            )
        for modality in modalities:
            if features[modality].level != "utterance" and modality not in sequence_modalities:
                raise MerkitError(f"{modality} features are frame sequences; this model needs one vector per utterance")
        if speaker_index not in SPEAKER_INDEX:
            raise MerkitError(f"unknown speaker_index {speaker_index!r}; choose one of: {', '.join(SPEAKER_INDEX)}")
        self.speaker_index = speaker_index
        self.corpus = corpus
        self.modalities = list(modalities)
        self.sequence_modalities = [m for m in modalities if m in sequence_modalities]
        self.features = {m: features[m] for m in modalities}
        self.scalers = {m: s for m, s in (scalers or {}).items() if m in self.features}
        for modality, scaler in self.scalers.items():
            if scaler.center.shape != (self.features[modality].dim,):
                raise MerkitError(
                    f"{modality} normalization has {scaler.center.shape[0]} columns, the features {self.features[modality].dim}"
                )
        self.multi_label = corpus.labels.multi_label
        self.num_classes = corpus.labels.num_classes
        starts, offset = {}, 0
        for dialogue in corpus.dialogues:
            starts[dialogue.id] = offset
            offset += len(dialogue)
        self.dialogues: list[Dialogue] = [d for split in splits for d in corpus.split_dialogues(split)]
        if not self.dialogues:
            raise MerkitError(f"no dialogues in split(s) {', '.join(splits)}")
        self.row_starts = [starts[d.id] for d in self.dialogues]

    def __len__(self) -> int:
        return len(self.dialogues)

    @property
    def lengths(self) -> list[int]:
        return [len(d) for d in self.dialogues]

    def __getitem__(self, index: int) -> dict:
        dialogue = self.dialogues[index]
        rows = slice(self.row_starts[index], self.row_starts[index] + len(dialogue))
        return {
            "dialogue": dialogue,
            "features": {m: self._rows(f, rows) for m, f in self.features.items()},
            "present": {m: np.array(f.present[rows], dtype=bool) for m, f in self.features.items()},
            "speakers": speaker_indices(dialogue, self.speaker_index),
        }

    def _rows(self, features: FeatureSet, rows: slice) -> np.ndarray | list[np.ndarray]:
        """``[n, D]`` utterance vectors, or one ``[L_i, D]`` array per utterance for a sequence modality (scaled)."""
        scaler = self.scalers.get(features.modality)
        scale = scaler.apply if scaler is not None else (lambda values: values)
        if features.modality not in self.sequence_modalities:
            return scale(np.array(features.values[rows], dtype=np.float32))
        if features.offsets is None:
            return [row[None, :] for row in scale(np.array(features.values[rows], dtype=np.float32))]
        return [scale(np.array(features.row(i), dtype=np.float32)) for i in range(rows.start, rows.stop)]

    def _pad_sequences(self, items: list[dict], length: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        sequences, masks = {}, {}
        for m in self.sequence_modalities:
            frames = max((len(row) for item in items for row in item["features"][m]), default=1) or 1
            sequences[m] = torch.zeros(len(items), length, frames, self.features[m].dim)
            masks[m] = torch.zeros(len(items), length, frames, dtype=torch.bool)
            for b, item in enumerate(items):
                for t, row in enumerate(item["features"][m]):
                    if item["present"][m][t] and len(row):
                        sequences[m][b, t, : len(row)] = torch.from_numpy(row)
                        masks[m][b, t, : len(row)] = True
        return sequences, masks

    def collate(self, items: list[dict]) -> ConversationBatch:
        batch_size, length = len(items), max(len(item["dialogue"]) for item in items)
        utterance_mask = torch.zeros(batch_size, length, dtype=torch.bool)
        speakers = torch.zeros(batch_size, length, dtype=torch.long)
        if self.multi_label:
            labels = torch.zeros(batch_size, length, self.num_classes)
        else:
            labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        label_mask = torch.zeros(batch_size, length, dtype=torch.bool)
        features = {m: torch.zeros(batch_size, length, f.dim) for m, f in self.features.items()}
        present = {m: torch.zeros(batch_size, length, dtype=torch.bool) for m in self.features}
        sequences, sequence_mask = self._pad_sequences(items, length)
        for b, item in enumerate(items):
            dialogue: Dialogue = item["dialogue"]
            n = len(dialogue)
            utterance_mask[b, :n] = True
            speakers[b, :n] = torch.tensor(item["speakers"])
            for m in self.features:
                present[m][b, :n] = torch.from_numpy(item["present"][m])
                if m not in sequences:
                    features[m][b, :n] = torch.from_numpy(item["features"][m])
            for t, utterance in enumerate(dialogue.utterances):
                if utterance.label is None:
                    continue
                label_mask[b, t] = True
                if self.multi_label:
                    labels[b, t, list(utterance.label_indices())] = 1.0
                else:
                    labels[b, t] = utterance.label
        for m, frames in sequences.items():
            counts = sequence_mask[m].sum(-1, keepdim=True)
            features[m] = (frames * sequence_mask[m].unsqueeze(-1)).sum(2) / counts.clamp(min=1)
            present[m] &= counts.squeeze(-1) > 0
        for m in self.features:
            features[m] = features[m] * present[m].unsqueeze(-1)
        return ConversationBatch(
            features=features,
            present=present,
            utterance_mask=utterance_mask,
            speakers=speakers,
            labels=labels,
            label_mask=label_mask,
            dialogue_ids=[item["dialogue"].id for item in items],
            utterance_ids=[[u.id for u in item["dialogue"].utterances] for item in items],
            sequences=sequences,
            sequence_mask=sequence_mask,
        )


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dialogues of similar length, in a seeded order that depends only on the epoch.

    With ``num_replicas > 1`` (DDP), global batches of ``batch_size * num_replicas`` dialogues
    are formed identically on every rank and each rank takes its slice, so one global step
    sees the same dialogues as a single process with the larger batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        bucket_factor: int = 50,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.bucket_factor = bucket_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        global_size = self.batch_size * self.num_replicas
        order = np.arange(len(self.lengths))
        if not self.shuffle:
            ordered = sorted(order, key=lambda i: self.lengths[i])
            return [ordered[i : i + global_size] for i in range(0, len(ordered), global_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(order)
        bucket = global_size * self.bucket_factor
        batches = []
        for start in range(0, len(order), bucket):
            chunk = sorted(order[start : start + bucket], key=lambda i: self.lengths[i])
            batches.extend(chunk[i : i + global_size] for i in range(0, len(chunk), global_size))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            if self.num_replicas == 1:
                yield [int(i) for i in batch]
                continue
            per_rank = math.ceil(len(batch) / self.num_replicas)
            part = batch[self.rank * per_rank : (self.rank + 1) * per_rank]
            # Every rank must take the same number of steps: pad a short slice by repetition.
            yield [int(i) for i in (part or batch[:1])]

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / (self.batch_size * self.num_replicas))
