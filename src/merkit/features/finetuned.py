"""A fine-tuned text encoder as the features layer sees it: which layers train, the saved folder, its extractor.

The training itself is :mod:`merkit.training.finetune` (on the engine's machinery); this module holds
what extraction needs to know: the folder an encoder is saved to (safetensors + tokenizer, plus
``merkit_head.safetensors`` and ``merkit_finetune.json`` with the recipe, the history and the
selection) and the extractor that reads it with the base extractor's input settings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from merkit.errors import MerkitError
from merkit.features.text import LocalFolder, TransformerTextExtractor
from merkit.io import atomic_write_json

RECORD = "merkit_finetune.json"
HEAD = "merkit_head.safetensors"


def freeze_below(encoder, train_layers: int | None) -> None:
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


def save_encoder(folder: Path, encoder, base: TransformerTextExtractor, head, record: dict[str, Any]) -> None:
    """Write the encoder's folder whole or not at all (built beside it, then renamed into place)."""
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
    extractor = LocalFolder(device=base.device, **settings)
    extractor.record_name = f"{base.record_name}-finetuned"
    weights = extractor.weights()
    extractor.extra = {
        "finetune": record,
        "finetuned_encoder": {"path": weights["path"], "sha256": weights["sha256"]},
        "base_weights": {"path": str(base.folder), "sha256": record["base_weights_sha256"]},
    }
    return extractor
