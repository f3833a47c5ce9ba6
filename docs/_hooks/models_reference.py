"""MkDocs hook: the model pages' registry facts are read from the model registry at build time.

``<!-- merkit-models -->`` becomes the table of every registered model (what ``merkit models`` lists) and of
the corpus shape each preset name was made for; ``<!-- merkit-model NAME -->`` becomes one model's
modalities, presets (their settings) and configuration fields with defaults and descriptions. A new model,
preset or field shows up in the docs without anyone editing them.
"""

from __future__ import annotations

import json
import re
from typing import Any

ONE = re.compile(r"<!-- merkit-model ([a-z0-9-]+) -->")
ALL = "<!-- merkit-models -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if ALL in markdown:
        markdown = markdown.replace(ALL, _all_models())
    return ONE.sub(lambda match: _one_model(match.group(1)), markdown)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return " ".join(text.split()).replace("|", "\\|")


def _all_models() -> str:
    from merkit.models.registry import PRESET_SHAPES, available_models

    lines = ["| model | modalities | presets | what it is |", "|---|---|---|---|"]
    for entry in sorted(available_models().values(), key=lambda e: e.name):
        presets = ", ".join(f"`{name}`" for name in entry.presets) or "–"
        lines.append(f"| `{entry.name}` | {', '.join(entry.modalities)} | {presets} | {_cell(entry.description)} |")
    lines += ["", "| preset name | the corpus shape it was made for |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(shape)} |" for name, shape in PRESET_SHAPES.items()]
    return "\n".join(lines) + "\n"


def _one_model(name: str) -> str:
    from merkit.models.registry import get_model

    entry = get_model(name)
    lines = [
        f"`merkit train STORE --model {entry.name}` — {_cell(entry.description)}.",
        "",
        f"Modalities: {', '.join(entry.modalities)}; features: one vector per utterance"
        + (" or frame sequences" if entry.feature_level == "sequence" else "")
        + ("; `--preset auto` adds rules of its own after the shared ones" if entry.auto else "")
        + ".",
        "",
    ]
    if entry.presets:
        lines += ["| preset | model settings | training settings |", "|---|---|---|"]
        for preset, settings in entry.presets.items():
            model = ", ".join(f"`{k}={_cell(v)}`" for k, v in settings.get("model", {}).items()) or "–"
            train = ", ".join(f"`{k}={_cell(v)}`" for k, v in settings.get("train", {}).items()) or "–"
            lines.append(f"| `{preset}` | {model} | {train} |")
        lines.append("")
    lines += ["| setting (`--set NAME=VALUE`) | default | what it is |", "|---|---|---|"]
    for field_name, field in entry.config_class.model_fields.items():
        default = "required" if field.is_required() else f"`{_cell(field.default)}`"
        lines.append(f"| `{field_name}` | {default} | {_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"
