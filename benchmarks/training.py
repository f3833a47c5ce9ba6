"""Training throughput (dialogues/s) and peak memory of every registered model, same data for all.

    python benchmarks/training.py [--models mlp,bigru,...] [--dialogues 240] [--turns 10,40]
        [--dims text=768,audio=88,visual=64] [--modalities text] [--epochs 6] [--batch-size 16]
        [--device cpu] [--precision 32-true] [--threads 1] [--json OUT]

Each model is trained in its own child process (so its peak memory is its own) by the engine's
Lightning task and data module, with its default config, on one seeded synthetic corpus (by
default 240 dialogues of 10-40 turns, 168 of them for training, 768-d text like the MPNet
features). The first epoch is a warm-up; dialogues/s is the training dialogues divided by the
mean time of the later epochs (no validation, no checkpointing). Memory on the CPU: the child's
peak resident set (``ru_maxrss``), and as "training memory" the rise of the peak resident set
during training above the resident set when training started (Linux; what the model, optimiser
and activations add to the loaded data); on a GPU: ``torch.cuda.max_memory_allocated``. Ratios
are against the per-utterance MLP measured in the same run, since these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "mlp"


def _status_bytes(field: str) -> int:
    """A memory field of this process from Linux ``/proc/self/status`` (0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_resident() -> int:
    """Reset the peak resident set (Linux: ``clear_refs`` 5) and return the resident set now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def parse_dims(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in (part.split("=") for part in text.split(",") if part)}


def measure(args: argparse.Namespace) -> dict:
    """Train ``args.worker`` for ``args.epochs`` epochs and time every epoch after the first."""
    import lightning as L
    import torch

    from merkit.batching import DialogueDataset
    from merkit.data.formats import read_data
    from merkit.devices import lightning_accelerator
    from merkit.models.base import DataSpec
    from merkit.models.registry import get_model
    from merkit.training.config import resolve_configs
    from merkit.training.task import DialogueDataModule, ERCTask

    torch.set_num_threads(args.threads)
    low, high = (int(t) for t in args.turns.split(","))
    dims = parse_dims(args.dims)
    options = {"dialogues": args.dialogues, "min_turns": low, "max_turns": high, **{f"{m}_dim": d for m, d in dims.items()}}
    bundle = read_data("synthetic", **options)
    entry = get_model(args.worker)
    modalities = [m for m in args.modalities.split(",") if m in entry.modalities]
    model_config, train_config = resolve_configs(entry, None, [f"batch_size={args.batch_size}"])
    sequence = modalities if entry.feature_level == "sequence" else ()
    train = DialogueDataset(bundle.corpus, bundle.features, ["train"], modalities, sequence)
    select = DialogueDataset(bundle.corpus, bundle.features, ["valid"], modalities, sequence)
    labels = bundle.corpus.labels
    spec = DataSpec(modalities={m: bundle.features[m].dim for m in modalities}, num_classes=labels.num_classes, class_names=labels.names)
    L.seed_everything(0, verbose=False)
    task = ERCTask(entry.model_class(model_config, spec), train_config, None)

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            if module.device.type == "cuda":
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator=lightning_accelerator(args.device),
        devices=1,
        precision=args.precision,
        max_epochs=args.epochs,
        limit_val_batches=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    before_fit = reset_peak_resident()
    trainer.fit(task, datamodule=DialogueDataModule(train, select, train_config.batch_size, 0))
    timed = timer.seconds[1:] or timer.seconds
    on_gpu = task.device.type == "cuda"
    peak = torch.cuda.max_memory_allocated() if on_gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": args.worker,
        "modalities": modalities,
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "train_dialogues": len(train),
        "seconds_per_epoch": sum(timed) / len(timed),
        "dialogues_per_second": len(train) / (sum(timed) / len(timed)),
        "peak_memory_mib": peak / 2**20,
        "training_memory_mib": (peak if on_gpu else max(_status_bytes("VmHWM") - before_fit, 0)) / 2**20,
        "memory_kind": "cuda max allocated" if on_gpu else "peak RSS",
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated (default: every registered model)")
    parser.add_argument("--dialogues", type=int, default=240)
    parser.add_argument("--turns", default="10,40", help="min,max utterances per dialogue")
    parser.add_argument("--dims", default="text=768,audio=88,visual=64")
    parser.add_argument("--modalities", default="text")
    parser.add_argument("--epochs", type=int, default=6, help="the first is a warm-up")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda, as in merkit train")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return 0

    from merkit.models.registry import available_models

    models = [m for m in args.models.split(",") if m] or list(available_models())
    models = [BASELINE] + [m for m in models if m != BASELINE]
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("models", "json", "worker")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    rows = []
    for name in models:
        child = subprocess.run([sys.executable, __file__, f"--worker={name}", *passthrough], capture_output=True, text=True, env=env)
        if child.returncode != 0:
            print(f"{name}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"{name}: {rows[-1]['dialogues_per_second']:.1f} dialogues/s", file=sys.stderr, flush=True)
    base = rows[0]
    print(f"\n{base['train_dialogues']} training dialogues of {args.turns.replace(',', '-')} turns, {args.modalities} ({args.dims}), "
          f"batch {args.batch_size}, {args.device} {args.precision}, {args.threads} thread(s), device {base['device']}\n")
    print("| model | parameters | dialogues/s | × MLP | peak memory (MiB) | training memory (MiB) | × MLP |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        row["speed_vs_mlp"] = row["dialogues_per_second"] / base["dialogues_per_second"]
        row["memory_vs_mlp"] = row["training_memory_mib"] / max(base["training_memory_mib"], 1e-9)
        print(f"| {row['model']} | {row['parameters']:,} | {row['dialogues_per_second']:.1f} | {row['speed_vs_mlp']:.2f} "
              f"| {row['peak_memory_mib']:.0f} | {row['training_memory_mib']:.1f} | {row['memory_vs_mlp']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
