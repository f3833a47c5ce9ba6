"""Train a registered model on a corpus + features for one or several seeds; write results.

Run directory layout (``--out``)::

    config.json                  what was asked (model, preset, configs, protocol, data)
    seed<N>/checkpoints/last.ckpt  Lightning resume state (optimizer, epoch, RNG, callbacks); deleted
                                 with its folder when the seed finishes unless keep_resume_state (its
                                 size stays in metrics.json as resume_state_bytes)
    seed<N>/best/                model.safetensors + model.json of the selected epoch
    seed<N>/metrics.json         selection/valid/test metrics of the selected model
    seed<N>/predictions-test.jsonl  per-utterance scores on the test split
    seed<N>/logs/                CSV (and TensorBoard when installed) logs; a resumed seed continues them
    results.json                 per-seed metrics and mean ± std, configs, data manifest, versions
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merkit._version import __version__
from merkit.batching import DialogueDataset, has_speaker_roles
from merkit.checkpoint import META, load_checkpoint, read_meta
from merkit.data.corpus import Corpus
from merkit.data.formats import DataBundle, read_data
from merkit.errors import MerkitError
from merkit.io import atomic_write_json, atomic_write_text
from merkit.metrics import headline, score_metrics, summarize
from merkit.models.base import DataSpec
from merkit.models.registry import ModelEntry, get_model
from merkit.normalization import Scaler, fit_scalers, resolve_methods, scalers_to_json
from merkit.prediction import Predictions, label_prior, make_loader, predict
from merkit.thresholds import choose_thresholds
from merkit.training.auto import CorpusShape, auto_preset
from merkit.training.config import AUTO, PROTOCOLS, TrainConfig, override_names, resolve_configs, training_precision


@dataclass(frozen=True)
class TrainPlan:
    """Everything that defines a run (stored as config.json and compared on --resume)."""

    entry: ModelEntry
    preset: str | None
    auto: dict[str, Any] | None  # what --preset auto chose, and why
    model_config: Any
    train_config: TrainConfig
    modalities: list[str]
    protocol: str
    data_manifest: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.entry.name,
            "preset": self.preset,
            **({"auto_preset": self.auto} if self.auto else {}),
            "model_config": self.model_config.model_dump(mode="json"),
            "train_config": self.train_config.model_dump(mode="json"),
            "modalities": self.modalities,
            "protocol": self.protocol,
            "protocol_label": PROTOCOLS[self.protocol]["label"],
            "data": self.data_manifest,
        }


def environment() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform(), "merkit": __version__}
    for package in ("torch", "lightning", "numpy", "scikit-learn", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _launched_rank() -> int:
    """Global rank of this process when a DDP launcher (torchrun, Lightning, SLURM) started it, else 0."""
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable])
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


def claim_run_dir(path: Path, description: dict[str, Any], resume: bool, difference: str) -> None:
    """Store what a run is (``path``: its config.json or crossval.json), or, with ``resume``, check it
    is the stored run; another run in the same directory is an error. DDP workers leave it to rank 0."""
    if _launched_rank() > 0:
        return
    if not path.exists():
        atomic_write_json(path, description)
        return
    if not resume:
        raise MerkitError("this output directory already holds a run; pass --resume to continue it or choose another --out", path=path.parent)
    if json.loads(path.read_text()) != json.loads(json.dumps(description)):
        raise MerkitError(f"--resume with {difference} than the stored run (see its {path.name})", path=path.parent)


def _source_of(data: str | Path | DataBundle) -> str:
    """Where the data came from, absolute when it is a path, so reports can reload it from anywhere."""
    if isinstance(data, DataBundle):
        return "in-memory bundle"
    return str(Path(data).resolve()) if Path(data).exists() else str(data)


def _load_bundle(data: str | Path | DataBundle, data_options: dict[str, Any] | None) -> DataBundle:
    return data if isinstance(data, DataBundle) else read_data(data, **(data_options or {}))


def _choose_modalities(entry: ModelEntry, bundle: DataBundle, modalities: Sequence[str] | None) -> list[str]:
    usable = [m for m, f in bundle.features.items() if f.level == "utterance" or entry.feature_level == "sequence"]
    if modalities:
        unsupported = [m for m in modalities if m not in entry.modalities]
        if unsupported:
            raise MerkitError(f"model {entry.name!r} does not take {', '.join(unsupported)} (it takes {', '.join(entry.modalities)})")
        missing = [m for m in modalities if m not in bundle.features]
        if missing:
            raise MerkitError(f"the data has no {', '.join(missing)} features (it has: {', '.join(bundle.features) or 'none'})")
        return list(modalities)
    chosen = [m for m in entry.modalities if m in usable]
    if not chosen:
        raise MerkitError(
            f"the data has no features {entry.name!r} can use (needs one of {', '.join(entry.modalities)}; "
            f"has {', '.join(bundle.features) or 'none'}); extract some with `merkit extract`"
        )
    return chosen


def _dataset(plan: "TrainPlan", bundle: DataBundle, splits: Sequence[str], scalers: Mapping[str, Scaler]) -> DialogueDataset:
    """The splits' dialogues with the features the model reads (frame sequences for sequence-level models), scaled."""
    sequence_modalities = plan.modalities if plan.entry.feature_level == "sequence" else ()
    return DialogueDataset(
        bundle.corpus, bundle.features, splits, plan.modalities, sequence_modalities, scalers, speaker_index(plan.train_config, bundle.corpus)
    )


def speaker_index(config: TrainConfig, corpus: Corpus) -> str:
    """``auto`` → ``role`` where the reader gave every utterance a speaker role (IEMOCAP, the SDT/DialogueGCN pickles), else ``order``."""
    roles = has_speaker_roles(corpus)
    if config.speaker_index == "role" and not roles:
        raise MerkitError("speaker_index=role: this corpus's reader gives no speaker roles (IEMOCAP and the feature pickles do); use order")
    return "role" if config.speaker_index == "role" or (config.speaker_index == "auto" and roles) else "order"


_SELECTION_METRICS = {False: ("weighted_f1", "macro_f1", "accuracy", "uar"), True: ("micro_f1", "macro_f1", "jaccard_accuracy")}


def _require_training_labels(bundle: DataBundle, protocol: str) -> None:
    """A training split without one labelled utterance is an error, not a run (a label column the reader missed?)."""
    corpus = bundle.corpus
    splits = PROTOCOLS[protocol]["train"]
    dialogues = [d for split in splits for d in corpus.split_dialogues(split)]
    if any(u.label is not None for d in dialogues for u in d.utterances):
        return
    count = sum(len(d) for d in dialogues)
    raise MerkitError(
        f"the training split ({'+'.join(splits)}) of {corpus.name!r} has no labelled utterances ({count:,} utterances, none with a label); "
        "if the labels are in a column the reader did not recognise, name it with -o label_column=NAME (see `merkit data stats`)"
    )


def resolve_monitor(config: TrainConfig, multi_label: bool) -> TrainConfig:
    """``monitor=auto`` becomes weighted_f1 (single-label) or micro_f1 (multi-label); a metric the label kind lacks is an error."""
    if config.monitor == "auto":
        return config.model_copy(update={"monitor": _SELECTION_METRICS[multi_label][0]})
    if config.monitor not in _SELECTION_METRICS[multi_label]:
        kind = "multi-label" if multi_label else "single-label"
        raise MerkitError(f"monitor={config.monitor} is not a {kind} metric; choose one of: {', '.join(_SELECTION_METRICS[multi_label])}")
    return config


def _class_weights(config: TrainConfig, dataset: DialogueDataset) -> torch.Tensor | None:
    """The loss's per-class weights from the training split: cross-entropy weights (1/frequency)^p for single-label
    data, BCE positive weights (negatives/positives)^p for multi-label (1 for a label never or always present)."""
    if config.class_weights == "none":
        return None
    if isinstance(config.class_weights, list):
        if len(config.class_weights) != dataset.num_classes:
            raise MerkitError(f"class_weights has {len(config.class_weights)} values for {dataset.num_classes} classes")
        return torch.tensor(config.class_weights, dtype=torch.float32)
    rates, power = np.clip(np.asarray(label_prior(dataset)), 1e-12, 1.0), config.class_weight_power
    seen = rates > 1e-12
    if dataset.multi_label:
        weights = np.where(seen & (rates < 1), ((1 - rates) / rates) ** power, 1.0)
    else:
        weights = np.where(seen, 1.0 / rates**power, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def write_predictions(path: Path, predictions: Predictions) -> None:
    """One JSON line an utterance: its id, label, scores (and uncertainty, expert weights when the model has them)."""
    lines = []
    for i, utterance_id in enumerate(predictions.utterance_ids):
        row = {"id": utterance_id, "label": predictions.labels[i].tolist(), "scores": np.round(predictions.scores[i], 6).tolist()}
        if predictions.uncertainty is not None:
            row["uncertainty"] = np.round(predictions.uncertainty[i], 6).tolist()
        if predictions.expert_weights is not None:
            row["expert_weights"] = dict(zip(predictions.expert_names, np.round(predictions.expert_weights[i], 6).tolist()))
        lines.append(json.dumps(row))
    atomic_write_text(path, "\n".join(lines) + "\n")


def train_model(
    data: str | Path | DataBundle,
    model: str,
    *,
    out: str | Path,
    preset: str | None = None,
    overrides: Sequence[str] | dict[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    protocol: str = "honest",
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    resume: bool = False,
    progress: bool = True,
    data_options: dict[str, Any] | None = None,
    source: str | None = None,
    keep_resume_state: bool = False,
    announce: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Train ``model`` for every seed and return (and write) ``results.json``'s content.

    ``source`` names where an in-memory ``data`` bundle was read from (recorded in the results);
    ``announce`` is told, before training, what ``preset="auto"`` chose.
    A seed's resume state (``checkpoints/last.ckpt``) is deleted once the seed has finished,
    unless ``keep_resume_state``; an interrupted seed keeps it for ``resume``."""
    if protocol not in PROTOCOLS:
        raise MerkitError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    entry = get_model(model)
    if not entry.trainable:
        raise MerkitError(f"the {model} model is not trained: {entry.description}")
    model_config, train_config = resolve_configs(entry, preset, overrides)  # a bad --set fails before the data is read
    bundle = _load_bundle(data, data_options)
    _require_training_labels(bundle, protocol)
    multi_label = bundle.corpus.labels.multi_label
    auto = None
    if preset == AUTO:
        shape = CorpusShape.of(bundle.corpus, PROTOCOLS[protocol]["train"])
        auto = auto_preset(entry, shape, resolve_monitor(train_config, multi_label).monitor)
        model_config, train_config = resolve_configs(entry, preset, overrides, auto.describe())
        announce(auto.summary(override_names(overrides)))
    train_config = resolve_monitor(train_config, multi_label)
    chosen = _choose_modalities(entry, bundle, modalities)
    features_manifest = {m: bundle.features[m].describe() for m in chosen}
    plan = TrainPlan(
        entry=entry,
        preset=preset,
        auto=auto.describe() if auto else None,
        model_config=model_config,
        train_config=train_config,
        modalities=chosen,
        protocol=protocol,
        data_manifest={
            "corpus": bundle.corpus.name,
            "source": source or _source_of(data),
            "options": {k: v for k, v in (data_options or {}).items() if k != "trust_pickle"},
            "features": features_manifest,
        },
    )
    out = Path(out)
    claim_run_dir(out / "config.json", plan.describe(), resume, "a different configuration")

    # One scaling for every seed: it depends on the training split only.
    methods = resolve_methods(train_config.normalize, bundle.features, chosen)
    scalers = fit_scalers(bundle.features, bundle.corpus, PROTOCOLS[protocol]["train"], methods)
    started = time.time()
    per_seed: dict[str, Any] = {}
    for seed in seeds:
        result = _train_seed(
            plan, bundle, scalers, seed, out / f"seed{seed}", accelerator, devices, num_nodes, strategy, precision, resume,
            progress, keep_resume_state,
        )  # fmt: skip
        if result is not None:
            per_seed[str(seed)] = result
    if not per_seed:  # non-zero DDP ranks do not evaluate or write
        return {}
    results = _summarise(plan, per_seed, time.time() - started)
    atomic_write_json(out / "results.json", results)
    return results


def _train_seed(
    plan: TrainPlan,
    bundle: DataBundle,
    scalers: Mapping[str, Scaler],
    seed: int,
    run_dir: Path,
    accelerator: str,
    devices: int | str,
    num_nodes: int,
    strategy: str,
    precision: str | None,
    resume: bool,
    progress: bool,
    keep_resume_state: bool = False,
) -> dict[str, Any] | None:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from merkit.training.task import BestModelExport, ContinuedCSVLogger, DialogueDataModule, ERCTask, fit_task, uses_gpu

    metrics_path = run_dir / "metrics.json"
    if resume and metrics_path.exists():
        return json.loads(metrics_path.read_text())
    config, corpus = plan.train_config, bundle.corpus
    protocol = PROTOCOLS[plan.protocol]
    L.seed_everything(seed, workers=True, verbose=False)
    train_set = _dataset(plan, bundle, protocol["train"], scalers)
    select_set = _dataset(plan, bundle, [protocol["select"]], scalers)
    spec = DataSpec(
        modalities={m: bundle.features[m].dim for m in plan.modalities},
        num_classes=corpus.labels.num_classes,
        multi_label=corpus.labels.multi_label,
        class_names=corpus.labels.names,
    )
    model = plan.entry.model_class(plan.model_config, spec)
    task = ERCTask(model, config, _class_weights(config, train_set))
    best_dir = run_dir / "best"
    info = {
        "model_name": plan.entry.name,
        "labels": corpus.labels,
        "features": plan.data_manifest["features"],
        "train_config": config.model_dump(mode="json"),
        "preset": plan.preset,
        "protocol": plan.protocol,
        "seed": seed,
        "normalization": scalers_to_json(scalers),
        "label_prior": [round(p, 6) for p in label_prior(train_set)],
        "speaker_index": train_set.speaker_index,
    }
    exporter = BestModelExport(best_dir, config.monitor, info)
    loggers = [ContinuedCSVLogger(run_dir, name="logs", version="")]
    try:  # needs tensorboard or tensorboardX
        loggers.append(TensorBoardLogger(run_dir, name="logs", version="tensorboard"))
    except ModuleNotFoundError:
        pass
    use_gpu = uses_gpu(accelerator)
    chosen_precision = training_precision(precision, plan.protocol, use_gpu, use_gpu and torch.cuda.is_bf16_supported())
    last = run_dir / "checkpoints" / "last.ckpt"
    started = time.time()
    trainer = fit_task(
        task, DialogueDataModule(train_set, select_set, config.batch_size, seed), last.parent, exporter, label=f"seed {seed}",
        resume=resume, progress=progress, accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=chosen_precision, logger=loggers,
    )  # fmt: skip
    if not trainer.is_global_zero:
        return None
    if exporter.best_epoch < 0:
        raise MerkitError("training produced no finite selection score (diverged?)", path=run_dir)
    best = load_checkpoint(best_dir)
    result = {
        "seed": seed,
        "best_epoch": exporter.best_epoch,
        "epochs_run": trainer.current_epoch,
        "protocol": plan.protocol,
        "precision": chosen_precision,
        "world_size": trainer.world_size,
        "normalization": {m: scalers[m].method if m in scalers else "none" for m in plan.modalities},
    }
    predictions = {
        split: predict(best.model, make_loader(_dataset(plan, bundle, [split], scalers), config.batch_size), prior=best.prior)
        for split in dict.fromkeys(("valid", "test", protocol["select"]))
        if corpus.splits.get(split)
    }
    threshold: float | np.ndarray = 0.5
    if corpus.labels.multi_label:
        threshold = _tune_thresholds(config, predictions[protocol["select"]], corpus.labels.names, best_dir, result)
    for split in ("valid", "test"):
        if split not in predictions or split in protocol["train"]:  # paper-compat trains on valid: no valid score
            continue
        labels, scores = predictions[split].labels, predictions[split].scores
        result[split] = score_metrics(labels, scores, corpus.labels.names, corpus.labels.multi_label, threshold=threshold)
        if corpus.labels.multi_label:
            result[f"{split}_threshold_0.5"] = headline(score_metrics(labels, scores, corpus.labels.names, True))
        if split == "test":
            write_predictions(run_dir / "predictions-test.jsonl", predictions[split])
    result["wall_seconds"] = round(time.time() - started, 2)
    result["resume_state_bytes"] = last.stat().st_size if last.exists() else 0
    atomic_write_json(metrics_path, result)  # first: a seed with metrics.json is finished, even without last.ckpt
    if not keep_resume_state:
        last.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder holds nothing else; kept if something was put there
            last.parent.rmdir()
    return result


def _tune_thresholds(
    config: TrainConfig, tuning: Predictions, class_names: Sequence[str], best_dir: Path, result: dict[str, Any]
) -> np.ndarray:
    """Multi-label thresholds from the selection split's predictions only (test is never seen under
    the honest protocol); recorded in the metrics and in the checkpoint's model.json."""
    thresholds = choose_thresholds(config.threshold, tuning.labels, tuning.scores)
    result["threshold_strategy"] = config.threshold
    result["thresholds"] = dict(zip(class_names, thresholds.round(6).tolist()))
    meta = read_meta(best_dir)
    meta.update(threshold_strategy=config.threshold, thresholds=result["thresholds"])
    atomic_write_json(best_dir / META, meta)
    return thresholds


def _summarise(plan: TrainPlan, per_seed: dict[str, Any], wall: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for split in ("valid", "test"):
        rows = [headline(result[split]) for result in per_seed.values() if split in result]
        if rows:
            summary[split] = {metric: summarize([row[metric] for row in rows]) for metric in rows[0]}
    return {
        **plan.describe(),
        "seeds": [int(s) for s in per_seed],
        "per_seed": {seed: {split: headline(r[split]) for split in ("valid", "test") if split in r} | {"best_epoch": r["best_epoch"]} for seed, r in per_seed.items()},
        "summary": summary,
        "precision": sorted({str(r.get("precision", "unknown")) for r in per_seed.values()}),
        "warnings": [f"seed {seed} {split}: {w}" for seed, r in per_seed.items() for split in ("valid", "test") for w in r.get(split, {}).get("warnings", [])],
        "environment": environment(),
        "wall_seconds": round(wall, 2),
    }
