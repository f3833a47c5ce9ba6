"""Fine-tune a text encoder on the training split's utterance labels, then extract with it.

This is how the published RoBERTa features of COSMIC/SDT/SURE were made: the encoder is
first trained to classify single utterances (with their context input), then frozen and
used as a feature extractor for all splits. Here:

* training sees the **train** split only; the checkpoint is selected on the **valid**
  split's weighted F1 (evaluated ``evals_per_epoch`` times an epoch); the test split is
  never used;
* the model is the encoder + dropout + a linear head on the pooled vector (the same input
  builder and pooling as extraction), AdamW with linear warm-up and decay, optional bf16
  autocast where the device computes bf16 natively (``bf16=None``; on an AVX2-only CPU it is emulated
  and far slower than fp32), seeded shuffling; the GPU is used when present;
* the state (encoder, head, optimiser, schedule, random generators, history) is saved at every
  validation check beside the output folder, so an interrupted run resumes from its last check
  and ends with the same encoder as an uninterrupted one;
* the selected encoder is saved (safetensors + tokenizer, plus ``merkit_head.safetensors``
  and ``merkit_finetune.json`` with the recipe, the history and the selection) into a folder
  named after a hash of everything that determines it, so a re-run reuses it and features
  are always extracted with exactly the saved encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Corpus
from merkit.data.store import corpus_fingerprint
from merkit.errors import MerkitError
from merkit.features.extract import Log, _stderr
from merkit.features.text import LocalFolder, TransformerTextExtractor, pool_hidden
from merkit.io import atomic_write_json
from merkit.progress import progress_bar

RECORD = "merkit_finetune.json"
HEAD = "merkit_head.safetensors"


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (every field is recorded in the manifest)."""

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


def _label_rows(corpus: Corpus) -> tuple[list[Any], list[str]]:
    labels, splits = [], []
    owner = {d: s for s, ids in corpus.splits.items() for d in ids}
    for dialogue in corpus.dialogues:
        for utterance in dialogue.utterances:
            labels.append(utterance.label)
            splits.append(owner.get(dialogue.id, ""))
    return labels, splits


def _weighted_f1(logits: np.ndarray, targets: list[Any], multi_label: bool, num_classes: int) -> float:
    from sklearn.metrics import f1_score

    if multi_label:
        truth = np.zeros((len(targets), num_classes), dtype=int)
        for row, label in enumerate(targets):
            truth[row, list(label)] = 1
        return float(f1_score(truth, (logits > 0).astype(int), average="weighted", zero_division=0))
    return float(f1_score(targets, logits.argmax(1), average="weighted", zero_division=0))


def finetune_key(base: TransformerTextExtractor, config: FinetuneConfig, corpus: Corpus) -> str:
    blob = json.dumps(
        {"base": base.fingerprint(), "config": asdict(config), "corpus": corpus_fingerprint(corpus)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _batches(indices: list[int], lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, shuffle the batches."""
    order = [indices[i] for i in rng.permutation(len(indices))]
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        block = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _freeze_below(encoder, train_layers: int | None) -> None:
    """Leave only the top ``train_layers`` layers trainable: a CPU step then costs the forward pass plus the
    backward pass of those layers alone (top 4 of MPNet's 12: about half the time of the whole encoder)."""
    if train_layers is None:
        return
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise MerkitError(f"training only the top layers needs a BERT-style encoder (encoder.layer); {type(encoder).__name__} has none")
    if train_layers > len(layers):
        raise MerkitError(f"the encoder has {len(layers)} layers; cannot train the top {train_layers}")
    encoder.requires_grad_(False)
    for layer in layers[len(layers) - train_layers :]:
        layer.requires_grad_(True)


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
        from merkit.devices import native_bf16

        config = replace(config, bf16=native_bf16(device))
    folder = out_dir / f"{base.name}-finetuned-{finetune_key(base, config, corpus)}"
    if (folder / RECORD).is_file():
        record = json.loads((folder / RECORD).read_text("utf-8"))
        say(f"reusing the fine-tuned encoder {folder} (valid weighted F1 {record['selected']['valid_weighted_f1']:.4f})")
        return folder, record

    import torch
    from torch import nn

    inputs = base.inputs(corpus)
    labels, splits = _label_rows(corpus)
    train = [i for i, (x, y, s) in enumerate(zip(inputs, labels, splits)) if s == "train" and x is not None and y is not None]
    valid = [i for i, (x, y, s) in enumerate(zip(inputs, labels, splits)) if s == "valid" and x is not None and y is not None]
    if not train or not valid:
        raise MerkitError(
            f"fine-tuning needs labelled utterances in the train and valid splits (found {len(train)} and {len(valid)})"
        )
    multi = corpus.labels.multi_label
    num_classes = corpus.labels.num_classes
    lengths = [0 if x is None else len(x[0]) for x in inputs]
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(base.folder), local_files_only=True).to(device)
    _freeze_below(encoder, config.train_layers)
    hidden = encoder.config.hidden_size
    head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(hidden, num_classes)).to(device)
    pooling = base.settings.pooling

    def forward(indices: list[int]):
        payloads = [inputs[i] for i in indices]
        batch = base.batch_tensors(payloads, device)
        states = encoder(**batch).last_hidden_state
        return head(pool_hidden(states, batch["attention_mask"], [p[1] for p in payloads], pooling).float())

    def target_tensor(indices: list[int]):
        if multi:
            hot = torch.zeros((len(indices), num_classes))
            for row, i in enumerate(indices):
                hot[row, list(labels[i])] = 1.0
            return hot.to(device)
        return torch.tensor([labels[i] for i in indices], dtype=torch.long, device=device)

    loss_fn = nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss()
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad] + [(f"head.{n}", p) for n, p in head.named_parameters()]
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, steps_per_epoch * config.epochs)
    warmup = int(config.warmup * total_steps)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    autocast = torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=config.bf16)
    eval_points = sorted({max(1, round(steps_per_epoch * k / config.evals_per_epoch)) for k in range(1, config.evals_per_epoch + 1)})

    def evaluate() -> float:
        encoder.eval()
        head.eval()
        chunks = []
        order = sorted(valid, key=lambda i: lengths[i])
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), 64):
                chunks.append(forward(order[start : start + 64]).float().cpu().numpy())
        encoder.train()
        head.train()
        logits = np.concatenate(chunks)
        return _weighted_f1(logits, [labels[i] for i in order], multi, num_classes)

    resume = _Resume(folder)
    state = resume.load(encoder, head, optimizer, scheduler, device)
    if state is not None:
        say(f"resuming the fine-tuning from step {state['step']} (saved in {resume.folder})")
        rng.bit_generator.state = state["epoch_rng"]
    else:
        state = {"history": [], "best": {"valid_weighted_f1": -1.0}, "step": 0, "epoch": 0, "batch_number": 0,
                 "running": 0.0, "seen": 0, "seconds": 0.0}  # fmt: skip
    say(
        f"fine-tuning {base.name} on {len(train):,} train utterances ({len(valid):,} valid), {config.epochs} epochs × "
        f"{steps_per_epoch} steps, lr {config.lr}, batch {config.batch_size}, device {device}"
        + (", bf16 autocast" if config.bf16 else "")
        + (f", top {config.train_layers} layers trained" if config.train_layers else "")
    )
    history: list[dict[str, Any]] = state["history"]
    best: dict[str, Any] = state["best"]
    step, first_epoch, skip, spent = state["step"], state["epoch"], state["batch_number"], state["seconds"]
    if step >= total_steps:  # stopped after its last check, before the encoder was saved
        first_epoch = config.epochs
    started = time.perf_counter()
    bar = progress_bar(total_steps * config.batch_size, "fine-tune", enabled=progress, initial=step * config.batch_size)
    encoder.train()
    head.train()
    done = False
    for epoch in range(first_epoch, config.epochs):
        epoch_rng = rng.bit_generator.state
        running, seen = (state["running"], state["seen"]) if epoch == first_epoch else (0.0, 0)
        for batch_number, indices in enumerate(_batches(train, lengths, config.batch_size, rng), start=1):
            if epoch == first_epoch and batch_number <= skip:
                continue
            with autocast:
                logits = forward(indices)
            loss = loss_fn(logits.float(), target_tensor(indices))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running += float(loss.detach()) * len(indices)
            seen += len(indices)
            if bar is not None:
                bar.update(len(indices))
                bar.set_postfix(loss=f"{running / seen:.3f}", refresh=False)
            last = step >= total_steps
            if batch_number in eval_points or last:
                score = evaluate()
                entry = {"epoch": epoch + batch_number / steps_per_epoch, "step": step, "train_loss": running / seen, "valid_weighted_f1": score}
                history.append(entry)
                say(f"  epoch {entry['epoch']:.2f} step {step}: train loss {entry['train_loss']:.4f}, valid weighted F1 {score:.4f}")
                improved = score > best["valid_weighted_f1"]
                if improved:
                    best = entry
                resume.save(
                    encoder, head, optimizer, scheduler, improved=improved,
                    state={
                        "step": step, "epoch": epoch, "batch_number": batch_number, "epoch_rng": epoch_rng, "running": running,
                        "seen": seen, "history": history, "best": best, "seconds": spent + time.perf_counter() - started,
                    },
                )  # fmt: skip
            if last:
                done = True
                break
        if done:
            break
    if bar is not None:
        bar.close()
    seconds = spent + time.perf_counter() - started
    resume.load_best(encoder, head, device)

    record = {
        "base": base.record_name,
        "base_fingerprint": base.fingerprint(),
        "base_weights_sha256": base.weights()["sha256"],
        "input": {k: v for k, v in base.spec()["settings"].items() if k in ("pooling", "speaker", "context_before", "context_after", "max_length")},
        "config": asdict(config),
        "corpus": corpus.name,
        "corpus_fingerprint": corpus_fingerprint(corpus),
        "labels": list(corpus.labels.names),
        "multi_label": multi,
        "train_utterances": len(train),
        "valid_utterances": len(valid),
        "selected": best,
        "history": history,
        "seconds": round(seconds, 1),
        "device": device,
    }
    _save(folder, encoder, base, head, record)
    resume.clear()
    say(f"saved the fine-tuned encoder (valid weighted F1 {best['valid_weighted_f1']:.4f} at epoch {best['epoch']:.2f}) to {folder}")
    return folder, record


class _Resume:
    """The fine-tuning state at the last validation check, in ``.<folder name>.resume/`` beside the output.

    ``state.pt`` holds the encoder, head, optimiser and schedule with the counters and random states
    (read back with ``weights_only=True``: merkit's own file, no code runs); ``best.safetensors`` the
    encoder and head of the best check so far, written only when it improves.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.parent / f".{folder.name}.resume"

    def save(self, encoder, head, optimizer, scheduler, *, improved: bool, state: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        if improved:
            tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
            tensors.update({f"head.{k}": v for k, v in head.state_dict().items()})
            tmp = self.folder / "best.safetensors.tmp"
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, self.folder / "best.safetensors")
        blob = {
            **state, "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "encoder": encoder.state_dict(), "head": head.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        }  # fmt: skip
        tmp = self.folder / "state.pt.tmp"
        torch.save(blob, tmp)
        os.replace(tmp, self.folder / "state.pt")

    def load(self, encoder, head, optimizer, scheduler, device: str) -> dict[str, Any] | None:
        import torch

        path = self.folder / "state.pt"
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:
            raise MerkitError(f"{path}: the saved fine-tuning state cannot be read ({exc}); delete {self.folder} to start over") from exc
        encoder.load_state_dict(blob.pop("encoder"))
        head.load_state_dict(blob.pop("head"))
        optimizer.load_state_dict(blob.pop("optimizer"))
        scheduler.load_state_dict(blob.pop("scheduler"))
        torch.set_rng_state(blob.pop("torch_rng").cpu())
        cuda_rng = blob.pop("cuda_rng")
        if cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([r.cpu() for r in cuda_rng])
        return blob

    def load_best(self, encoder, head, device: str) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(self.folder / "best.safetensors"), device=device)
        encoder.load_state_dict({k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")})
        head.load_state_dict({k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")})

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _save(folder: Path, encoder, base: TransformerTextExtractor, head, record: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        encoder.to("cpu").save_pretrained(str(work), safe_serialization=True)
        base.tokenizer.save_pretrained(str(work))
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(work / HEAD))
        atomic_write_json(work / "sentence_bert_config.json", {"max_seq_length": record["input"]["max_length"], "do_lower_case": False})
        atomic_write_json(work / RECORD, record)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def finetuned_extractor(base: TransformerTextExtractor, folder: Path, record: dict[str, Any]) -> LocalFolder:
    """The extractor that uses the saved fine-tuned encoder with the base's input settings."""
    settings = {**base.spec()["settings"], "model": str(folder), "normalize": False}
    if base.level == "sequence":
        settings["normalize"] = False
    extractor = LocalFolder(device=base.device, **settings)
    extractor.record_name = f"{base.record_name}-finetuned"
    weights = extractor.weights()
    extractor.extra = {
        "finetune": record,
        "finetuned_encoder": {"path": weights["path"], "sha256": weights["sha256"]},
        "base_weights": {"path": str(base.folder), "sha256": record["base_weights_sha256"]},
    }
    return extractor

