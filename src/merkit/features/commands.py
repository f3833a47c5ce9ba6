"""Building a feature extractor from the words of the command line (``merkit extract``'s ``--extractor``,
``--encoder``, ``--modality`` and settings; the commands themselves are :mod:`merkit.extract_commands`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from merkit.errors import MerkitError

DEFAULT_EXTRACTORS = {"text": "minilm", "audio": "is10", "visual": "face-effnet"}


def build_extractor(
    modality: str,
    name: str | None,
    *,
    model: Path | None = None,
    device: str = "auto",
    **settings: Any,
):
    """The extractor ``name`` (or an ``hf`` extractor when ``name`` is a local folder) with the given settings."""
    from merkit.features.registry import available_extractors, get_extractor

    settings = {k: v for k, v in settings.items() if v is not None}
    if name is None:
        if modality not in DEFAULT_EXTRACTORS:
            raise MerkitError(f"unknown modality {modality!r}; choose one of: {', '.join(DEFAULT_EXTRACTORS)}")
        name = DEFAULT_EXTRACTORS[modality]
    if name not in available_extractors() and (Path(name).expanduser().is_dir() or "/" in name):
        model, name = Path(name), "hf"
    if model is not None:
        if name != "hf":
            raise MerkitError(f"--encoder is for --extractor hf (a local model folder), not {name!r}")
        settings["model"] = str(model)
    return get_extractor(name, modality=modality, device=device, **settings)
