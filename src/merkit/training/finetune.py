"""Fine-tune a text encoder on the training split's utterance labels, on the engine's machinery.

This is how the published RoBERTa features of COSMIC/SDT/SURE were made: the encoder is first trained
to classify single utterances (with their context input), then frozen and used as a feature extractor
for all splits (``merkit extract --finetune``). The encoder + dropout + a linear head on the pooled
vector (the extraction's input builder and pooling) is an :class:`~merkit.models.base.ERCModel` over
one-utterance examples, trained by the engine's :class:`~merkit.training.task.ERCTask` in its Trainer
setup (:func:`~merkit.training.task.fit_task`): the same optimiser grouping, schedule, loss, selection
metrics (:mod:`merkit.metrics`), gradient clipping and resume state as ``merkit train``. Here:

* training sees the **train** split only; the encoder is selected on the **valid** split's weighted F1
  (micro F1 on a multi-label corpus, the engine's ``monitor=auto``), checked ``evals_per_epoch`` times
  an epoch; the test split is never used;
* AdamW (no decay on biases and norms), linear warm-up and decay (``scheduler=warmup_linear``),
  seeded length-bucketed batches; bf16 mixed precision where the device computes bf16 natively
  (``bf16=None``; on an AVX2-only CPU it is emulated and far slower than fp32); the GPU when present;
* each stretch of training between two checks is one Lightning epoch, so Lightning's resume state,
  saved at every check in ``.<folder name>.resume/`` beside the output, continues exactly: an
  interrupted run ends with the same encoder as an uninterrupted one (a check's ``train_loss`` in the
  history is the mean over its stretch);
* the selected encoder is saved (:func:`merkit.features.finetuned.save_encoder`) into a folder named
  after a hash of everything that determines it, so a re-run reuses it and features are always
  extracted with exactly the saved encoder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from merkit.batching import BucketBatchSampler
from merkit.data.corpus import Corpus
from merkit.data.store import corpus_fingerprint
from merkit.devices import native_bf16
from merkit.errors import MerkitError
from merkit.features.extract import Log, _stderr
from merkit.features.finetuned import RECORD, freeze_below, save_encoder
from merkit.features.text import TransformerTextExtractor, pool_hidden
from merkit.models.base import DataSpec, ERCModel, ModelConfig, ModelOutput
from merkit.training.config import TrainConfig
from merkit.training.engine import resolve_monitor
from merkit.training.task import BestModelExport, DialogueDataModule, ERCTask, fit_task


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (every field is recorded in the manifest, with the engine's config it becomes)."""

    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps
    dropout: float = 0.1
    seed: int = 0
    bf16: bool | None = None  # None: bf16 autocast where the device has native bf16 (merkit.devices.native_bf16)
    evals_per_epoch: int = 1
    max_steps: int | None = None  # stop early (tests, quick checks)
    # [R] train only the top N transformer layers (and the head); the embeddings and the layers below stay
    # frozen, so the backward pass stops at layer N from the top. None: the whole encoder.
    train_layers: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.evals_per_epoch < 1:
            raise MerkitError("fine-tuning needs epochs >= 1, batch size >= 1, lr > 0 and evals per epoch >= 1")
        if self.train_layers is not None and self.train_layers < 1:
            raise MerkitError(f"fine-tuning needs at least 1 trained layer (got {self.train_layers})")

    def train_config(self, multi_label: bool) -> TrainConfig:
        """The engine's training config of this recipe (its selection metric: the engine's default for the label kind)."""
        config = TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, scheduler="warmup_linear",
            warmup_fraction=self.warmup, grad_clip=1.0, patience=None,
        )  # fmt: skip
        return resolve_monitor(config, multi_label)


def label_rows(corpus: Corpus) -> tuple[list[Any], list[str]]:
    """Every utterance's label and split name, in the corpus's order (the order of ``inputs``)."""
    labels, splits = [], []
    owner = {d: s for s, ids in corpus.splits.items() for d in ids}
    for dialogue in corpus.dialogues:
        for utterance in dialogue.utterances:
            labels.append(utterance.label)
            splits.append(owner.get(dialogue.id, ""))
    return labels, splits


def finetune_key(base: TransformerTextExtractor, config: FinetuneConfig, corpus: Corpus) -> str:
    blob = json.dumps(
        {"base": base.fingerprint(), "config": asdict(config), "corpus": corpus_fingerprint(corpus)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


@dataclass
class UtteranceBatch:
    """One-utterance examples in the shape :class:`ERCTask` reads: labels and masks with one turn, ``[B, 1(, C)]``."""

    tokens: dict[str, torch.Tensor]
    spans: list[tuple[int, int]]
    labels: torch.Tensor
    label_mask: torch.Tensor

    @property
    def utterance_mask(self) -> torch.Tensor:
        return self.label_mask

    def to(self, device: str | torch.device) -> UtteranceBatch:
        tokens = {name: tensor.to(device) for name, tensor in self.tokens.items()}
        return replace(self, tokens=tokens, labels=self.labels.to(device), label_mask=self.label_mask.to(device))


class UtteranceDataset:
    """Labelled utterances with text, in the form the engine's loaders take (``lengths`` to bucket by, ``collate``)."""

    def __init__(self, base: TransformerTextExtractor, inputs: list[tuple[list[int], tuple[int, int]]], labels: list[Any], spec: DataSpec):
        self.base, self.inputs, self.labels, self.spec = base, inputs, labels, spec
        self.lengths = [len(ids) for ids, _ in inputs]

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> UtteranceBatch:
        payloads = [self.inputs[i] for i in indices]
        if self.spec.multi_label:
            labels = torch.zeros((len(indices), 1, self.spec.num_classes))
            for row, i in enumerate(indices):
                labels[row, 0, list(self.labels[i])] = 1.0
        else:
            labels = torch.tensor([[self.labels[i]] for i in indices], dtype=torch.long)
        mask = torch.ones((len(indices), 1), dtype=torch.bool)
        return UtteranceBatch(self.base.batch_tensors(payloads, "cpu"), [span for _, span in payloads], labels, mask)


class EncoderClassifier(ERCModel):
    """The encoder + dropout + a linear head on the pooled vector (the extraction's pooling): what is fine-tuned."""

    def __init__(self, encoder: nn.Module, pooling: str, spec: DataSpec, dropout: float):
        super().__init__(ModelConfig(), spec)
        self.encoder, self.pooling = encoder, pooling
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(encoder.config.hidden_size, spec.num_classes))

    def forward(self, batch: UtteranceBatch) -> ModelOutput:  # type: ignore[override]
        states = self.encoder(**batch.tokens).last_hidden_state
        pooled = pool_hidden(states, batch.tokens["attention_mask"], batch.spans, self.pooling)
        return ModelOutput(logits=self.head(pooled.float()).unsqueeze(1))


def check_stretches(steps_per_epoch: int, config: FinetuneConfig) -> list[tuple[int, int, int]]:
    """The stretches of training between two validation checks, as ``(epoch, first batch, end batch)``: checks
    ``evals_per_epoch`` times an epoch, and after the last step when ``max_steps`` stops a run mid-epoch."""
    points = sorted({max(1, round(steps_per_epoch * k / config.evals_per_epoch)) for k in range(1, config.evals_per_epoch + 1)})
    total = steps_per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, steps_per_epoch * config.epochs)
    stretches, step = [], 0
    for epoch in range(config.epochs):
        start = 0
        for point in points:
            end = min(point, start + total - step)
            stretches.append((epoch, start, end))
            step += end - start
            if step == total:
                return stretches
            start = point
    return stretches


class StretchSampler(Sampler[list[int]]):
    """Batch sampler whose epoch ``k`` is stretch ``k``: batches ``[start, end)`` of a seeded, length-bucketed pass
    over the data (the engine's :class:`BucketBatchSampler` at that stretch's data epoch)."""

    def __init__(self, passes: BucketBatchSampler, stretches: list[tuple[int, int, int]], epoch: int):
        self.passes, self.stretches, self.epoch = passes, stretches, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        data_epoch, start, end = self.stretches[self.epoch]
        self.passes.set_epoch(data_epoch)
        return itertools.islice(iter(self.passes), start, end)

    def __len__(self) -> int:
        _, start, end = self.stretches[self.epoch]
        return end - start


class StretchDataModule(DialogueDataModule):
    """The engine's data module, one stretch an epoch (the Trainer reloads it every epoch: each has its length)."""

    def __init__(self, train: UtteranceDataset, select: UtteranceDataset, batch_size: int, seed: int, stretches: list[tuple[int, int, int]]):
        super().__init__(train, select, batch_size, seed)  # type: ignore[arg-type]
        self.stretches = stretches

    def train_dataloader(self):
        passes = super().train_dataloader().batch_sampler
        self.train_sampler = StretchSampler(passes, self.stretches, self.trainer.current_epoch)
        return DataLoader(self.train_set, batch_sampler=self.train_sampler, collate_fn=self.train_set.collate)


class EncoderSelection(BestModelExport):
    """The best check's encoder and head (``best.safetensors`` in the resume folder) and every check's history entry,
    kept in Lightning's resume state with the best score."""

    def __init__(self, directory: Path, monitor: str, stretches: list[tuple[int, int, int]], steps_per_epoch: int, say: Log):
        super().__init__(directory, monitor, {})
        self.key = f"valid_{monitor}"
        self.stretches, self.steps_per_epoch, self.say = stretches, steps_per_epoch, say
        self.history: list[dict[str, Any]] = []
        self.seconds, self.resumed, self.started = 0.0, False, time.perf_counter()

    def export(self, model: ERCModel, epoch: int, score: float) -> None:
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "best.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, self.directory / "best.safetensors")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.resumed:
            self.say(f"resuming the fine-tuning from step {trainer.global_step} (saved in {self.directory})")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data_epoch, _, end = self.stretches[trainer.current_epoch]
        metrics = trainer.callback_metrics
        entry = {"epoch": data_epoch + end / self.steps_per_epoch, "step": trainer.global_step,
                 "train_loss": float(metrics["loss_epoch"]), self.key: float(metrics[self.monitor])}  # fmt: skip
        self.history.append(entry)
        self.seconds += time.perf_counter() - self.started
        self.say(f"  epoch {entry['epoch']:.2f} step {entry['step']}: train loss {entry['train_loss']:.4f}, {self.key} {entry[self.key]:.4f}")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history, self.seconds, self.resumed = state_dict["history"], state_dict["seconds"], True


def finetune_encoder(
    corpus: Corpus,
    base: TransformerTextExtractor,
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    progress: bool = True,
    log: Log | None = _stderr,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune ``base``'s encoder on ``corpus``'s train split; return the saved folder and its record.

    A folder already saved for the same base, recipe and corpus is reused.
    """
    say = log or (lambda message: None)
    out_dir = Path(out_dir)
    device = base.resolve_device()
    if config.bf16 is None:
        config = replace(config, bf16=native_bf16(device))
    folder = out_dir / f"{base.name}-finetuned-{finetune_key(base, config, corpus)}"
    if (folder / RECORD).is_file():
        record = json.loads((folder / RECORD).read_text("utf-8"))
        key = f"valid_{record.get('monitor', 'weighted_f1')}"
        say(f"reusing the fine-tuned encoder {folder} ({key} {record['selected'][key]:.4f})")
        return folder, record

    multi = corpus.labels.multi_label
    inputs = base.inputs(corpus)
    labels, splits = label_rows(corpus)
    rows = {
        split: [i for i, (x, y, s) in enumerate(zip(inputs, labels, splits)) if s == split and x is not None and y is not None]
        for split in ("train", "valid")
    }
    if not rows["train"] or not rows["valid"]:
        raise MerkitError(
            f"fine-tuning needs labelled utterances in the train and valid splits (found {len(rows['train'])} and {len(rows['valid'])})"
        )
    train_config = config.train_config(multi)
    L.seed_everything(config.seed, workers=True, verbose=False)
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(base.folder), local_files_only=True)
    freeze_below(encoder, config.train_layers)
    labels_of = corpus.labels
    spec = DataSpec(
        modalities={"text": encoder.config.hidden_size}, num_classes=labels_of.num_classes, multi_label=multi, class_names=labels_of.names
    )
    model = EncoderClassifier(encoder, base.settings.pooling, spec, config.dropout).train()  # loaded in eval mode: no dropout
    train, valid = (UtteranceDataset(base, [inputs[i] for i in rows[s]], [labels[i] for i in rows[s]], spec) for s in ("train", "valid"))
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    stretches = check_stretches(steps_per_epoch, config)
    resume = folder.parent / f".{folder.name}.resume"
    selection = EncoderSelection(resume, train_config.monitor, stretches, steps_per_epoch, say)
    say(
        f"fine-tuning {base.name} on {len(train):,} train utterances ({len(valid):,} valid), {config.epochs} epochs × "
        f"{steps_per_epoch} steps, lr {config.lr}, batch {config.batch_size}, device {device}"
        + (", bf16 autocast" if config.bf16 else "")
        + (f", top {config.train_layers} layers trained" if config.train_layers else "")
    )
    task = ERCTask(model, train_config, None, total_steps=sum(end - start for _, start, end in stretches))
    fit_task(
        task, StretchDataModule(train, valid, config.batch_size, config.seed, stretches), resume, selection, label="fine-tune",
        resume=True, progress=progress, accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=[int(device.partition(":")[2] or 0)] if device.startswith("cuda") else 1,
        precision="bf16-mixed" if config.bf16 else "32-true", max_epochs=len(stretches), reload_dataloaders_every_n_epochs=1,
    )  # fmt: skip
    if selection.best_epoch < 0:
        raise MerkitError("fine-tuning produced no finite validation score (diverged?)", path=resume)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(resume / "best.safetensors")))
    record = {
        "base": base.record_name,
        "base_fingerprint": base.fingerprint(),
        "base_weights_sha256": base.weights()["sha256"],
        "input": {k: v for k, v in base.spec()["settings"].items() if k in ("pooling", "speaker", "context_before", "context_after", "max_length")},
        "config": asdict(config),
        "train_config": train_config.model_dump(mode="json"),
        "monitor": train_config.monitor,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus_fingerprint(corpus),
        "labels": list(labels_of.names),
        "multi_label": multi,
        "train_utterances": len(train),
        "valid_utterances": len(valid),
        "selected": selection.history[selection.best_epoch],
        "history": selection.history,
        "seconds": round(selection.seconds, 1),
        "device": device,
    }
    save_encoder(folder, model.encoder, base, model.head, record)
    shutil.rmtree(resume, ignore_errors=True)
    best = record["selected"]
    say(f"saved the fine-tuned encoder ({selection.key} {best[selection.key]:.4f} at epoch {best['epoch']:.2f}) to {folder}")
    return folder, record
