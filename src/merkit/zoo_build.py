"""``merkit zoo build``: every zoo entry rebuilt from its recipe (``recipes/zoo/NAME.yaml``) and the shared corpora.

A recipe is data: the corpus folder, the extractor, the model, seeds and settings, the baseline to train beside
it, what ``--budget reduced`` keeps (fewer seeds), and the model card's human parts (licence, intended use,
limits). Building one entry: extract the features (``WORK/stores/``, cached: a re-run reuses them) → train every
seed under the honest protocol (epoch chosen on the validation split) → the seeds' calibrated ensemble (fitted
on validation) → the baseline on the same features → the test split scored once, by the run itself →
``merkit export`` of the ensemble into the zoo folder, the machine's paths scrubbed, with ``card.json`` (scores
read from the run, never typed in), ``recipe.yaml`` and a ``README.md``. A fused entry is fitted by
:func:`merkit.fusion.fit_fusion` from its two (already built) entries.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from merkit._version import __version__
from merkit.errors import MerkitError
from merkit.io import atomic_write_json
from merkit.zoo import ZOO_DIR, ModelCard, TrainingData, write_card

RECIPES = Path("recipes/zoo")
BUDGETS = ("full", "reduced")
METRICS = ("accuracy", "weighted_f1", "macro_f1")


class ExtractStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: str
    extractor: str
    settings: dict[str, Any] = {}


class TrainStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    modalities: list[str]
    seeds: list[int] = Field(min_length=1)
    preset: str | None = None
    set: dict[str, Any] = {}


class BaselineStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["mlp", "svm"]
    seeds: list[int] = [0]
    c: list[float] = [0.1, 1.0, 10.0]


class CardText(BaseModel):
    """The parts of the model card a person writes; the scores and the command are filled in by the build."""

    model_config = ConfigDict(extra="forbid")

    task: str
    architecture: str
    training_data: list[TrainingData]
    licence: str
    headline: str = "weighted_f1"
    intended_use: str
    limits: list[str]


class Recipe(BaseModel):
    """One zoo entry's recipe (``recipes/zoo/NAME.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    corpus: str = Field(description="folder under --data")
    reader_options: dict[str, Any] = {}
    store: str = Field(description="feature store name under WORK/stores (shared by recipes with the same features)")
    extract: ExtractStep
    train: TrainStep
    ensemble_adjust: Literal["none", "macro_f1", "weighted_f1"] = "none"
    baseline: BaselineStep
    reduced_seeds: list[int] = Field([0, 1], min_length=1, description="the seeds of --budget reduced")
    card: CardText


class ScriptRecipe(BaseModel):
    """An entry made by its own script (``recipes/zoo/SCRIPT``: ``--data CORPUS --out ENTRY --work WORK``, writing the
    entry's checkpoint and a ``results.json`` with ``valid``, ``baseline.valid``, ``choice`` and ``command``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["script"]
    script: str
    corpus: str
    reduced_args: list[str] = Field(description="what --budget reduced adds to the script's command line")
    card: CardText


def script_card(recipe: ScriptRecipe, target: Path, budget: str) -> ModelCard:
    """The card of a script-made entry, its scores read from the script's ``results.json``."""
    results = json.loads((target / "results.json").read_text())
    meta = json.loads((target / "model.json").read_text())
    pick = lambda values: {m: float(values[m]) for m in METRICS if m in values}  # noqa: E731
    return ModelCard(
        name=recipe.name, task=recipe.card.task, modalities=list(meta["data_spec"]["modalities"]), labels=list(meta["labels"]["names"]),
        architecture=recipe.card.architecture, training_data=recipe.card.training_data, licence=recipe.card.licence,
        scores={"valid": pick(results["valid"]), "baseline valid": pick(results["baseline"]["valid"]),
                "held-out part of train (selection)": {"accuracy": float(results["choice"]["holdout_accuracy"])}},
        headline=recipe.card.headline, reported=["valid"],
        protocol="epoch and test-time choices on a held-out part of train; valid scored once per build", command=results["command"],
        intended_use=recipe.card.intended_use, limits=recipe.card.limits,
        built=f"merkit {__version__}, budget {budget}, training {results.get('train_minutes', '?')} min",
    )  # fmt: skip


def build_script_entry(recipe: ScriptRecipe, recipe_path: Path, data: Path, *, out: Path, work: Path, budget: str,
                       log: Callable[[str], None]) -> ModelCard:  # fmt: skip
    """Run the entry's script into ``out/NAME``, then write its card."""
    import subprocess
    import sys

    target = out / recipe.name

    def shown(path: Path) -> str:  # the script records its command line in the card: no machine's absolute paths there
        return str(path.resolve().relative_to(Path.cwd().resolve())) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)

    command = [sys.executable, shown(recipe_path.parent / recipe.script), "--data", shown(data / recipe.corpus), "--out", shown(target),
               "--work", shown(work / "runs" / recipe.name), *(recipe.reduced_args if budget == "reduced" else [])]  # fmt: skip
    log(f"{recipe.name}: {' '.join(command)}")
    if subprocess.run(command).returncode != 0:
        raise MerkitError(f"the recipe script of {recipe.name} failed", path=recipe_path.parent / recipe.script)
    card = script_card(recipe, target, budget)
    write_card(target, card, recipe_path)
    return card


def recipe_folder(recipes: Path | None) -> Path:
    """``recipes`` or ``recipes/zoo`` of the current folder (a merkit checkout)."""
    folder = Path(recipes) if recipes is not None else RECIPES
    if not folder.is_dir():
        raise MerkitError("no recipe folder: run `merkit zoo build` from a merkit checkout (recipes/zoo/) or pass --recipes", path=folder)
    return folder


def read_recipe(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise MerkitError("reading recipes needs PyYAML: pip install pyyaml") from None
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise MerkitError(f"not valid YAML: {str(exc).splitlines()[0]}", path=path) from None
    if not isinstance(data, dict):
        raise MerkitError("a recipe is a YAML mapping", path=path)
    return data


def recipes_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _scrub(value: Any, prefixes: dict[str, str]) -> Any:
    """``value`` with the builder's folders replaced by their names (a zoo entry holds no path of the machine that built it)."""
    if isinstance(value, dict):
        return {k: _scrub(v, prefixes) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, prefixes) for v in value]
    if isinstance(value, str):
        for prefix, name in prefixes.items():
            value = value.replace(prefix, name)
    return value


def _percent(values: dict[str, Any]) -> dict[str, float]:
    return {m: round(100 * float(values[m]["mean"]), 2) for m in METRICS if m in values}


def build_entry(
    recipe: Recipe, recipe_path: Path, data: Path, *, out: Path, work: Path, budget: str = "full",
    progress: bool = True, log: Callable[[str], None] = lambda line: None,
) -> ModelCard:  # fmt: skip
    """Build one checkpoint entry into ``out/NAME`` (see the module docstring) and return its card."""
    from merkit.data.formats import read_data
    from merkit.evaluation.baselines import svm_baseline
    from merkit.export import export_model
    from merkit.features.commands import build_extractor
    from merkit.features.extract import run_extraction
    from merkit.training.engine import train_model
    from merkit.training.ensemble import build_ensemble

    if budget not in BUDGETS:
        raise MerkitError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    started = time.time()
    corpus_dir = data / recipe.corpus
    if not corpus_dir.exists():
        raise MerkitError(f"{recipe.name} is trained on {recipe.corpus}, which is not under --data", path=corpus_dir)
    store = work / "stores" / recipe.store
    if not (store / "manifest.json").is_file() or recipe.extract.modality not in json.loads((store / "manifest.json").read_text()).get("features", {}):
        log(f"{recipe.name}: extracting {recipe.extract.modality} features ({recipe.extract.extractor}) of {corpus_dir} into {store}")
        bundle = read_data(corpus_dir, **recipe.reader_options)
        extractor = build_extractor(recipe.extract.modality, recipe.extract.extractor, device="cpu", **recipe.extract.settings)
        try:
            run_extraction(bundle.corpus, extractor, out=store, source=str(corpus_dir), progress=progress, log=log)
        finally:
            extractor.close()
    seeds = recipe.train.seeds if budget == "full" else recipe.reduced_seeds
    runs = work / "runs" / (recipe.name if budget == "full" else f"{recipe.name}-reduced")
    run = runs / recipe.train.model

    def trained(folder: Path, model: str, run_seeds: list[int], preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
        if (folder / "results.json").is_file():
            log(f"{recipe.name}: reusing {folder}")
            return json.loads((folder / "results.json").read_text())
        log(f"{recipe.name}: training {model}, seeds {run_seeds} → {folder}")
        return train_model(store, model, out=folder, preset=preset, overrides=overrides, modalities=recipe.train.modalities,
                           seeds=run_seeds, progress=progress)  # fmt: skip

    results = trained(run, recipe.train.model, seeds, recipe.train.preset, recipe.train.set)
    checkpoint = run / f"seed{seeds[0]}" / "best"
    if len(seeds) > 1:
        ensemble = runs / "ensemble"
        if (ensemble / "results.json").is_file():
            results = json.loads((ensemble / "results.json").read_text())
        else:
            log(f"{recipe.name}: the {len(seeds)} seeds' calibrated ensemble (fitted on validation) → {ensemble}")
            results = build_ensemble([run], ensemble, data=store, adjust=recipe.ensemble_adjust)
        checkpoint = ensemble / "seed0" / "best"
    base = runs / f"baseline-{recipe.baseline.model}"
    if recipe.baseline.model == "svm":
        if (base / "results.json").is_file():
            baseline = json.loads((base / "results.json").read_text())
        else:
            baseline = svm_baseline(read_data(store), recipe.train.modalities, out=base, c_grid=recipe.baseline.c, source=str(store))
    else:
        baseline = trained(base, "mlp", recipe.baseline.seeds, None, {})

    target = out / recipe.name
    export_model(checkpoint, target)
    prefixes = {str(work.resolve()): "WORK", str(work): "WORK", str(data.resolve()): "DATA", str(data): "DATA", str(Path.home()): "~"}
    for name in ("model.json", "metrics.json", "results.json"):
        if (target / name).is_file():
            atomic_write_json(target / name, _scrub(json.loads((target / name).read_text()), prefixes))
    seeds_text = ",".join(map(str, seeds))
    command = (f"merkit zoo build --data-root {data} --only {recipe.name}" + ("" if budget == "full" else " --budget reduced")
               + f"  # = merkit extract {recipe.corpus} -m {recipe.extract.modality} -e {recipe.extract.extractor}"
               + "".join(f" --set {k}={v}" for k, v in recipe.extract.settings.items())
               + f"; merkit train --model {recipe.train.model} --modalities {','.join(recipe.train.modalities)} --seeds {seeds_text}"
               + (f" --preset {recipe.train.preset}" if recipe.train.preset else "")
               + "".join(f" --set {k}={v}" for k, v in recipe.train.set.items())
               + ("; merkit ensemble" + (f" --adjust {recipe.ensemble_adjust}" if recipe.ensemble_adjust != "none" else "") if len(seeds) > 1 else "")
               + f"; baseline {recipe.baseline.model}")  # fmt: skip
    scores = {split: _percent(values) for split, values in results["summary"].items()}
    scores[f"baseline {recipe.baseline.model} test"] = _percent(baseline["summary"]["test"])
    if len(seeds) > 1:
        member = json.loads((run / "results.json").read_text())["summary"]["test"]
        scores["single seeds test (mean)"] = _percent(member)
    meta = json.loads((target / "model.json").read_text())
    card = ModelCard(
        name=recipe.name, task=recipe.card.task, modalities=recipe.train.modalities, labels=list(meta["labels"]["names"]),
        architecture=recipe.card.architecture, training_data=recipe.card.training_data, licence=recipe.card.licence,
        scores=scores, headline=recipe.card.headline,
        protocol="honest: every epoch, temperature and weight chosen on the validation split; the test split scored once",
        command=command, intended_use=recipe.card.intended_use, limits=recipe.card.limits,
        built=f"merkit {__version__}, {datetime.date.today().isoformat()}, budget {budget}, {time.time() - started:.0f} s",
    )  # fmt: skip
    write_card(target, card, recipe_path)
    return card


def build_zoo(
    data: Path, *, out: Path | None = None, work: Path = Path("runs/zoo-build"), only: list[str] | None = None, budget: str = "full",
    recipes: Path | None = None, progress: bool = True, log: Callable[[str], None] = lambda line: None,
) -> dict[str, ModelCard]:  # fmt: skip
    """Build the entries named in ``only`` (default: every recipe), checkpoints first, fused entries after."""
    found = recipes_in(recipe_folder(recipes))
    wanted = only or list(found)
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise MerkitError(f"no recipe for {', '.join(unknown)}; the recipes are: {', '.join(found) or 'none'}")
    out = Path(out) if out is not None else ZOO_DIR
    raw = {name: read_recipe(found[name]) for name in wanted}
    cards = {}
    for name in sorted(wanted, key=lambda n: raw[n].get("kind") == "fused"):
        if raw[name].get("kind") == "script":
            cards[name] = build_script_entry(ScriptRecipe.model_validate(raw[name]), found[name], Path(data), out=out, work=Path(work),
                                             budget=budget, log=log)  # fmt: skip
            continue
        if raw[name].get("kind") == "fused":
            from merkit.fusion_cases import fit_fusion

            cards[name] = fit_fusion(raw[name], found[name], data, out=out, work=work, budget=budget, log=log)
            continue
        try:
            recipe = Recipe.model_validate(raw[name])
        except ValidationError as exc:
            raise MerkitError(f"invalid recipe: {str(exc).splitlines()[0]} ({exc.errors()[0]['loc']})", path=found[name]) from None
        cards[name] = build_entry(recipe, found[name], Path(data), out=out, work=Path(work), budget=budget, progress=progress, log=log)
    return cards
