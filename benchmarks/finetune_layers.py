"""Seconds per fine-tuning step with the whole encoder trained against only its top N layers.

    python benchmarks/finetune_layers.py ../shared/data/meld --extractor mpnet --layers 4,2 --threads 2

The same batches (16 utterances of the corpus's train split, drawn with a fixed seed, the
context input of issue #16: speaker names, 3 previous turns and 1 next, the target's tokens
pooled) go through a forward and backward pass of a freshly loaded encoder, first with every
layer trained (the baseline), then with ``FinetuneConfig.train_layers`` = N. Prints seconds a
step and the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from merkit.data.formats import read_data
from merkit.features.finetuned import freeze_below
from merkit.features.registry import get_extractor
from merkit.features.text import pool_hidden
from merkit.training.finetune import label_rows


def seconds_per_step(extractor, batches, train_layers: int | None) -> float:
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(extractor.folder), local_files_only=True)
    freeze_below(encoder, train_layers)
    encoder.train()
    head = torch.nn.Linear(encoder.config.hidden_size, 7)
    started = time.perf_counter()
    for payloads in batches:
        batch = extractor.batch_tensors(payloads, "cpu")
        states = encoder(**batch).last_hidden_state
        pooled = pool_hidden(states, batch["attention_mask"], [p[1] for p in payloads], "target")
        head(pooled).logsumexp(1).mean().backward()
    return (time.perf_counter() - started) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--extractor", default="mpnet")
    parser.add_argument("--layers", default="4,2", help="trained top layers to compare with the whole encoder")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = read_data(args.corpus).corpus
    extractor = get_extractor(args.extractor, speaker=True, context_before=3, context_after=1, pooling="target")
    _, splits = label_rows(corpus)
    inputs = [x for x, split in zip(extractor.inputs(corpus), splits) if x is not None and split == "train"]
    rng = np.random.default_rng(0)
    batches = [[inputs[i] for i in rng.choice(len(inputs), 16, replace=False)] for _ in range(args.steps)]
    baseline = seconds_per_step(extractor, batches, None)
    print(f"{args.corpus}: {args.extractor}, {args.steps} steps of 16 utterances, {args.threads} threads")
    print(f"  all layers trained: {baseline:.2f} s a step")
    for layers in (int(n) for n in args.layers.split(",")):
        seconds = seconds_per_step(extractor, batches, layers)
        print(f"  top {layers} trained: {seconds:.2f} s a step, {baseline / seconds:.2f}x faster")


if __name__ == "__main__":
    main()
