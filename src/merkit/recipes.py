"""Recipes as files (as SpeechBrain's hparams): a YAML file of a command's options, given with ``--config FILE``.

A recipe has one section per command (``train:``, ``extract:``); a section names the command's options by
their long names (``data``, ``model``, ``seeds``, ``modalities``, ``out`` …, ``-`` or ``_``) and its settings
under ``set:`` and reader options under ``option:`` (mappings). A results table of several runs keeps what
they share in the section and each run under ``variants:``, picked with ``--variant NAME``::

    train:
      modalities: text
      seeds: 0,1,2,3,4
      variants:
        iemocap-bigru: {data: stores/iemocap-mpnet, model: bigru, out: runs/iemocap-mpnet/bigru}

Options given on the command line win over the file; ``--set``/``-o`` pairs given there are applied after the
recipe's, so one setting can be changed without repeating the others. The file's values reach the command as
click's ``default_map`` (each option keeps its own type check and help), through :class:`RecipeCommand`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from typer.core import TyperCommand

from merkit.errors import MerkitError

RECIPE = "merkit.recipe"  # ctx.meta key: the recipe this invocation read (a Recipe)
PAIRED = ("set", "option")  # key=value options: the recipe's pairs, then the command line's
SECTION_KEYS = ("variants",)
CONFIG_HELP = "Recipe: a YAML file of this command's options (recipes/); options given here win over it."
VARIANT_HELP = "Recipe variant: which run of the recipe's variants: to use."


class Recipe:
    """One command's section of a recipe file, with its variant merged in: option name → value."""

    def __init__(self, path: Path, command: str, variant: str | None, values: dict[str, Any]):
        self.path, self.command, self.variant, self.values = path, command, variant, values

    def pairs(self, key: str) -> list[str]:
        """The recipe's ``set``/``option`` mapping as ``key=value`` strings, as the command line gives them."""
        return [f"{name}={_text(value)}" for name, value in (self.values.get(key) or {}).items()]


def _text(value: Any) -> str:
    """A YAML value as the command line would spell it (``true``, ``0.001``, ``[64, 32]``)."""
    import json

    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def read_recipe(path: Path, command: str, variant: str | None) -> Recipe:
    """``command``'s section of the recipe at ``path``, with ``variant`` merged over it; errors name the file."""
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError:
        raise MerkitError("no such recipe file", path=path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MerkitError(f"not a YAML recipe: {' '.join(str(exc).split())}", path=path) from None
    if not isinstance(data, Mapping):
        raise MerkitError("a recipe is a YAML mapping of sections (train:, extract:)", path=path)
    section = data.get(command)
    if not isinstance(section, Mapping):
        found = ", ".join(k for k, v in data.items() if isinstance(v, Mapping)) or "none"
        raise MerkitError(f"the recipe has no {command}: section (sections: {found})", path=path)
    values = {_name(k): v for k, v in section.items() if k not in SECTION_KEYS}
    variants = section.get("variants") or {}
    if variants and variant is None:
        raise MerkitError(f"the recipe's {command} section has variants; pick one with --variant: {', '.join(variants)}", path=path)
    if variant is not None:
        if variant not in variants:
            raise MerkitError(f"no variant {variant!r} in the recipe's {command} section (variants: {', '.join(variants) or 'none'})", path=path)
        chosen = variants[variant]
        if not isinstance(chosen, Mapping):
            raise MerkitError(f"{command}.variants.{variant} is not a mapping of options", path=path)
        for key, value in chosen.items():
            key = _name(key)
            values[key] = {**values[key], **value} if key in PAIRED and isinstance(values.get(key), Mapping) and isinstance(value, Mapping) else value
    for key in PAIRED:
        if key in values and not isinstance(values[key], Mapping):
            raise MerkitError(f"{command}.{key} is a mapping (key: value), not {type(values[key]).__name__}", path=path)
    return Recipe(path, command, variant, values)


def _name(key: Any) -> str:
    return str(key).replace("-", "_")


def _peek(args: Sequence[str], option: str) -> str | None:
    """The value of ``option`` on a command line (``--config F`` or ``--config=F``), read before click parses it."""
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == option and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


class RecipeCommand(TyperCommand):
    """A command whose ``--config FILE`` (and ``--variant NAME``) fills in the options the command line leaves out."""

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        path = _peek(args, "--config")
        if path is not None and not ctx.resilient_parsing:  # shell completion reads no file
            recipe = read_recipe(Path(path), ctx.info_name or self.name or "", _peek(args, "--variant"))
            ctx.default_map = {**(ctx.default_map or {}), **_defaults(self, recipe)}
            ctx.meta[RECIPE] = recipe
        return super().parse_args(ctx, args)


def _defaults(command, recipe: Recipe) -> dict[str, Any]:
    """The recipe's values under the names of ``command``'s parameters; an unknown key names the known ones."""
    by_key = {}
    for param in command.params:
        if param.param_type_name == "argument":  # by its name and its metavar (DATA)
            by_key[param.name] = by_key[_name((param.metavar or param.name).lower().removesuffix("..."))] = param
        for opt in param.opts:
            if opt.startswith("--"):
                by_key[_name(opt[2:])] = param
    defaults = {}
    for key, value in recipe.values.items():
        param = by_key.get(key)
        if param is None or key in ("config", "variant", "print_config"):
            known = ", ".join(sorted(k for k in by_key if k not in ("config", "variant", "print_config")))
            raise MerkitError(f"{recipe.command}.{key} is not an option of merkit {recipe.command} (options: {known})", path=recipe.path)
        if key in PAIRED:
            defaults[param.name] = recipe.pairs(key)
        elif isinstance(value, list) and not param.multiple:
            defaults[param.name] = ",".join(_text(v) for v in value)  # seeds: [0, 1, 2] → "0,1,2"
        else:
            defaults[param.name] = value
    return defaults


def merged_pairs(ctx, name: str, key: str, given: list[str] | None) -> list[str]:
    """``--set``/``-o`` pairs (parameter ``name``): the recipe's, then the command line's (which win, coming later)."""
    recipe: Recipe | None = ctx.meta.get(RECIPE)
    if recipe is None or not given or ctx.get_parameter_source(name).name == "DEFAULT_MAP":
        return list(given or [])
    return [*recipe.pairs(key), *given]


RUN_CONTROL = ("config", "variant", "print_config", "resume", "quiet")  # how this invocation runs, not what it makes


def resolved_recipe(ctx, command: str, **given: Any) -> str:
    """The command's resolved options as a recipe (YAML), to print or to keep beside a run: the values click
    settled (command line, else recipe, else default) under their long names, ``given`` replacing some of them."""
    names = {p.name: next((o[2:] for o in p.opts if o.startswith("--")), p.name) for p in ctx.command.params}
    values = {_name(names[name]): value for name, value in ctx.params.items() if name in names}
    values.update(given)
    section = {key: str(value) if isinstance(value, Path) else value for key, value in values.items()
               if value is not None and key not in RUN_CONTROL}  # fmt: skip
    for key in PAIRED:  # last, as a mapping
        if key in section:
            pairs = section.pop(key)
            section[key] = dict(pairs) if isinstance(pairs, Mapping) else dict(_split(pair) for pair in pairs)
    recipe: Recipe | None = ctx.meta.get(RECIPE)
    header = f"# resolved from {recipe.path}{f' (variant {recipe.variant})' if recipe.variant else ''}\n" if recipe else ""
    return header + yaml.safe_dump({command: section}, sort_keys=False, allow_unicode=True)


def _split(pair: str) -> tuple[str, Any]:
    import json

    key, _, raw = pair.partition("=")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw
