"""Recipes as files (issue #37): ``--config FILE.yaml [--variant NAME]``, the command line winning, ``--print-config``,
and two published recipes re-run on a reduced budget with the run's recorded configuration equal to the recipe's."""

import json
from pathlib import Path

from conftest import run_main
import pytest
import yaml

from merkit.models.registry import get_model
from merkit.training.config import resolve_configs

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BUDGET = ["synthetic", "-o", "dialogues=24", "--seeds", "0", "--set", "epochs=1", "--threads", "1", "--quiet"]


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_every_recipe_file_reads_and_names_only_options_of_its_commands():
    """Each section of each recipe (and each variant) maps onto its command's options; print-config needs no data."""
    from typer.main import get_command

    from merkit.cli import app
    from merkit.recipes import RecipeCommand, _defaults, read_recipe

    commands = get_command(app).commands
    files = sorted(RECIPES.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        data = yaml.safe_load(path.read_text())
        for section in ("extract", "train", "baseline"):
            if section not in data:
                continue
            assert isinstance(commands[section], RecipeCommand)
            for variant in data[section].get("variants") or [None]:
                recipe = read_recipe(path, section, variant)
                _defaults(commands[section], recipe)  # raises on an unknown key


def test_the_command_line_wins_and_pairs_add_up(tmp_path, capsys):
    recipe = _write(tmp_path, """
train:
  data: synthetic
  model: bigru
  seeds: [0, 1]
  set: {lr: 1e-3, hidden: 32}
  option: {dialogues: 24}
""")
    out = tmp_path / "run"
    code, printed, err = run_main(["train", "--config", str(recipe), "--out", str(out), "--set", "lr=0.01", "--seeds", "3", "--print-config"], capsys)
    assert code == 0, err
    assert not out.exists()  # nothing trained
    section = yaml.safe_load(printed)["train"]
    assert section["model"] == "bigru" and section["data"] == "synthetic" and section["seeds"] == "3"
    assert section["set"]["train.lr"] == 0.01 and section["set"]["model.hidden"] == 32  # the file's hidden, the line's lr
    assert section["option"] == {"dialogues": 24}


@pytest.mark.parametrize(
    ("text", "variant", "message"),
    [
        ("train:\n  modalitiez: text\n", None, r"recipe.yaml: train.modalitiez is not an option of merkit train \(options: .*modalities"),
        ("extract:\n  data: x\n", None, r"recipe.yaml: the recipe has no train: section \(sections: extract\)"),
        ("train:\n  variants: {a: {model: mlp}, b: {model: bigru}}\n", None, "has variants; pick one with --variant: a, b"),
        ("train:\n  variants: {a: {model: mlp}}\n", "c", r"no variant 'c' in the recipe's train section \(variants: a\)"),
        ("train:\n  set: [lr=1]\n", None, r"train.set is a mapping \(key: value\), not list"),
        ("train: [unclosed\n", None, "not a YAML recipe"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_file(tmp_path, capsys, text, variant, message):
    import re

    argv = ["train", "--config", str(_write(tmp_path, text)), "--print-config", *(["--variant", variant] if variant else [])]
    code, _, err = run_main(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err


@pytest.mark.parametrize(
    ("recipe", "variant"),
    [("text-mpnet.yaml", "iemocap-sdt"), ("ravdess.yaml", "is10-sure-avt-moe=false")],
)
def test_a_published_recipe_reruns_on_a_reduced_budget_with_its_configuration(tmp_path, capsys, recipe, variant):
    """The table's recipe, on the synthetic corpus for one epoch of one seed: the run records the recipe's model,
    preset, modalities and settings (the budget's epochs aside), and its recipe.yaml re-reads as the same run."""
    from merkit.recipes import read_recipe

    wanted = read_recipe(RECIPES / recipe, "train", variant).values
    out = tmp_path / "run"
    code, _, err = run_main(["train", *BUDGET[:1], "--config", str(RECIPES / recipe), "--variant", variant, *BUDGET[1:], "--out", str(out)], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == wanted["model"] and config["preset"] == wanted.get("preset")
    assert config["modalities"] == wanted["modalities"].split(",")
    settings = [f"{k}={json.dumps(v)}" for k, v in (wanted.get("set") or {}).items()] + ["epochs=1"]
    model_config, train_config = resolve_configs(get_model(wanted["model"]), wanted.get("preset"), settings)
    resolved = {**model_config.model_dump(mode="json"), **train_config.model_dump(mode="json")}
    recorded = {**config["model_config"], **config["train_config"]}
    assert recorded.pop("monitor") != "auto" and resolved.pop("monitor") == "auto"  # the engine names the metric for the data
    assert recorded == resolved
    kept = yaml.safe_load((out / "recipe.yaml").read_text())["train"]
    assert kept["model"] == wanted["model"] and kept["data"] == "synthetic" and kept["set"]["epochs"] == 1
    code, printed, err = run_main(["train", "--config", str(out / "recipe.yaml"), "--print-config"], capsys)
    assert code == 0, err
    again = yaml.safe_load(printed)["train"]["set"]
    assert {k.split(".", 1)[1]: v for k, v in again.items() if k != "train.monitor"} == recorded
