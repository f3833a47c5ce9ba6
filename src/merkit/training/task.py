"""The one training loop, as a Lightning module + data module + callbacks around any registered model."""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from merkit.batching import DialogueDataset
from merkit import progress
from merkit.checkpoint import save_checkpoint
from merkit.io import atomic_write_text
from merkit.metrics import headline, score_metrics
from merkit.models.base import ERCModel
from merkit.prediction import make_loader, scores_of
from merkit.thresholds import choose_thresholds
from merkit.training.config import TrainConfig


class DialogueDataModule(L.LightningDataModule):
    """Seeded, length-bucketed batches; under DDP each rank takes its slice of every global batch.

    Every rank evaluates the whole selection split, so the monitored metric (and with it early
    stopping and checkpoint selection) is identical on all ranks without any gathering.
    """

    def __init__(self, train: DialogueDataset, select: DialogueDataset, batch_size: int, seed: int):
        super().__init__()
        self.train_set, self.select_set = train, select
        self.batch_size, self.seed = batch_size, seed
        self.train_sampler = None

    def train_dataloader(self):
        loader = make_loader(
            self.train_set,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_replicas=self.trainer.world_size,
            rank=self.trainer.global_rank,
        )
        self.train_sampler = loader.batch_sampler
        return loader

    def val_dataloader(self):
        return make_loader(self.select_set, self.batch_size)


class ERCTask(L.LightningModule):
    """Trains any :class:`ERCModel`: its loss, the selection split's metrics (:mod:`merkit.metrics`), and the
    optimiser and schedule of ``config`` over ``total_steps`` (None: Lightning's estimate of the run's steps)."""

    def __init__(self, model: ERCModel, config: TrainConfig, class_weights: torch.Tensor | None, total_steps: int | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.total_steps = total_steps
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._select_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.train_sampler.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        output = self.model(batch)
        loss, parts = self.model.compute_loss(output, batch, self.class_weights)
        size = int(batch.utterance_mask.shape[0])
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        if len(parts) > 1:
            for name, value in parts.items():
                self.log(f"loss_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        for name, value in output.diagnostics.items():
            self.log(f"diag_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx):
        output = self.model(batch)
        mask = batch.label_mask
        self._select_outputs.append((batch.labels[mask].cpu(), scores_of(output, self.model.spec.multi_label)[mask].cpu()))

    def on_validation_epoch_end(self) -> None:
        labels = torch.cat([labels for labels, _ in self._select_outputs]).numpy()
        scores = torch.cat([scores for _, scores in self._select_outputs]).float().numpy()
        self._select_outputs.clear()
        multi_label = self.model.spec.multi_label
        # Multi-label epochs are compared at the run's thresholds (tuned on this same selection split),
        # not at 0.5: models whose scores sit low (LDDU's mixture of sigmoids) would look dead for epochs.
        threshold = choose_thresholds(self.config.threshold, labels, scores) if multi_label else 0.5
        metrics = headline(score_metrics(labels, scores, self.model.spec.class_names, multi_label, threshold=threshold))
        for name, value in metrics.items():
            self.log(f"select_{name}", value, prog_bar=name == self.config.monitor, sync_dist=False)

    def configure_optimizers(self):
        decay, no_decay = [], []
        inverted = self.config.decay_grouping == "inverted"
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                bias_or_norm = parameter.ndim < 2 or "norm" in name.lower()
                (decay if bias_or_norm == inverted else no_decay).append(parameter)
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0 if self.config.optimizer == "adamw" else self.config.weight_decay},
        ]
        optimizer_class = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class([g for g in groups if g["params"]], lr=self.config.lr)
        if self.config.scheduler == "none":
            return optimizer
        total = max(1, int(self.total_steps or self.trainer.estimated_stepping_batches))
        warmup = int(self.config.warmup_fraction * total) if self.config.scheduler.startswith("warmup") else 0
        linear = self.config.scheduler == "warmup_linear"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            done = (step - warmup) / max(1, total - warmup)
            return max(0.0, 1 - done) if linear else 0.5 * (1 + math.cos(math.pi * done))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class BestModelExport(L.Callback):
    """Keeps the model of the best selection-split epoch as a safetensors checkpoint (rank 0 writes).

    Its state (best score and epoch) is saved in Lightning's resume checkpoint, so a resumed
    run keeps comparing against the right best.
    """

    def __init__(self, directory: Path, monitor: str, checkpoint_info: dict[str, Any]):
        self.directory = directory
        self.monitor = f"select_{monitor}"
        self.info = checkpoint_info
        self.best_score = -math.inf
        self.best_epoch = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if not np.isfinite(score) or score <= self.best_score:
            return
        self.best_score, self.best_epoch = score, trainer.current_epoch
        if trainer.is_global_zero:
            self.export(pl_module.model, trainer.current_epoch, score)

    def export(self, model: ERCModel, epoch: int, score: float) -> None:
        """Write the best model so far (a merkit checkpoint; the encoder fine-tuning keeps its own files)."""
        save_checkpoint(self.directory, model, **self.info, epoch=epoch, select_score=score)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state_dict["best_score"], state_dict["best_epoch"]


class RestoreRandomState(L.Callback):
    """Saves the global RNG states in the resume checkpoint and restores them, so a resumed run
    draws the same dropout masks as an unbroken one (the batch order is already a function of the epoch).
    Stored as tensors and plain numbers only, so the checkpoint loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state_dict["python"])


class ContinuedCSVLogger(CSVLogger):
    """Lightning's CSVLogger deletes the ``metrics.csv`` it finds, so ``--resume`` lost the earlier
    epochs' log; this one keeps the rows of the epochs before the one training restarts at."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Instead of deleting an earlier log, continue it (at the first ``save``, when the restart epoch is known)."""
        self._earlier = Path(self.metrics_file_path) if Path(self.metrics_file_path).is_file() else None

    def save(self) -> None:
        if self._earlier is not None and self.metrics:
            # Every row Lightning logs carries its epoch: the first new rows are of the epoch the run restarts at,
            # so earlier rows of that epoch or later (after the last checkpoint) are redone and dropped.
            restart = min(row["epoch"] for row in self.metrics)
            with self._earlier.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header, kept = reader.fieldnames or [], [row for row in reader if float(row["epoch"]) < restart]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(self._earlier, text.getvalue())
            self.metrics_keys, self._earlier = list(header), None
        super().save()


class EpochLines(ProgressBar):
    """Training progress as one line per epoch on stderr (where a live bar would only leave fragments):
    the epoch, its seconds and the live bar's metrics (those logged with ``prog_bar``)."""

    def __init__(self, label: str):
        super().__init__()
        self.label, self.enabled, self.started = label, True, time.monotonic()

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num" and not k.endswith("_step")}
        values = ", ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}" for name, value in metrics.items())
        seconds = time.monotonic() - self.started
        print(f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs} ({seconds:.1f} s): {values}", file=sys.stderr, flush=True)


def training_progress(label: str, *, enabled: bool = True) -> list[Any]:
    """The progress callbacks of a Lightning fit: none on a terminal (Lightning adds its live bar) or when
    progress is off (``enable_progress_bar`` says which), else one line per epoch."""
    if not enabled or progress.live():
        return []
    return [EpochLines(label)]


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # a resumed run's own


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def fit_task(
    task: ERCTask,
    data: L.LightningDataModule,
    checkpoints: Path,
    exporter: BestModelExport,
    *,
    label: str,
    resume: bool,
    progress: bool,
    **trainer_options: Any,
) -> L.Trainer:
    """Train ``task`` with the one Trainer setup of merkit: Lightning's resume state in ``checkpoints/last.ckpt``
    (weights, optimiser, schedule, epoch, the random states, the exporter's best so far), continued when
    ``resume`` and it exists; gradient clipping and, with ``config.patience``, early stopping on the selection
    metric; deterministic algorithms on the CPU. ``trainer_options`` (accelerator, devices, precision,
    loggers …) are passed on to :class:`lightning.Trainer`."""
    quiet_lightning()
    config = task.config
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="last", enable_version_counter=False),
        exporter,
        RestoreRandomState(),
        *training_progress(label, enabled=progress),
    ]
    if config.patience is not None:
        callbacks.append(EarlyStopping(monitor=f"select_{config.monitor}", mode="max", patience=config.patience))
    options = {
        "max_epochs": config.epochs,
        "gradient_clip_val": config.grad_clip,
        "deterministic": not uses_gpu(trainer_options.get("accelerator", "auto")) or "warn",
        "logger": False,
        "use_distributed_sampler": False,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
        "enable_progress_bar": progress,
        "log_every_n_steps": 1,
        **trainer_options,
    }
    trainer = L.Trainer(callbacks=callbacks, **options)
    last = checkpoints / "last.ckpt"
    trainer.fit(task, datamodule=data, ckpt_path=last if resume and last.exists() else None)
    return trainer
