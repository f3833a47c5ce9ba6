"""``merkit ensemble``: several trained checkpoints (seeds, models) as one run, fitted on validation only.

Members are every ``seed*/best`` of the given runs (or checkpoint folders given directly). They must
share the label set, the features of every modality they read (same store: extractor, width and
fingerprint), the feature scaling and the speaker index, and be trained under the honest protocol
(a paper-compat member has trained on the validation split the ensemble is fitted on). Each
single-label member gets a temperature fitted on validation; the weights are uniform or
(``weights="fit"``) the simplex weights minimising the validation NLL of the mixture. Fitted weights favour the
members whose validation score was luckiest (the same split chose each member's epoch): on IEMOCAP they
overfit it (README "Seed ensembles"), so uniform is the default.

The result is a run folder like ``merkit train``'s (``config.json``, ``results.json``,
``seed0/best`` with the ``ensemble`` model, ``seed0/metrics.json``, ``seed0/predictions-test.jsonl``),
so ``evaluate``, ``report``, ``predict``, ``serve`` and :func:`merkit.load` take it like any run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from merkit.calibration import apply_temperature, fit_temperature
from merkit.checkpoint import Checkpoint, check_compatible, load_checkpoint, save_checkpoint
from merkit.data.formats import DataBundle, read_data
from merkit.errors import MerkitError
from merkit.io import atomic_write_json
from merkit.metrics import classification_metrics, headline, score_metrics, summarize
from merkit.models.base import DataSpec
from merkit.models.ensemble import Ensemble, EnsembleConfig, EnsembleMember
from merkit.models.registry import get_model
from merkit.prediction import Predictions, make_loader, predict
from merkit.thresholds import choose_thresholds
from merkit.training.engine import claim_run_dir, environment, write_predictions

WEIGHTS = ("uniform", "fit")
ADJUST = ("none", "macro_f1", "weighted_f1")
TAU_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.25), 2).tolist())  # logit-adjustment strengths tried on validation


def member_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Every checkpoint folder named: a checkpoint itself, or each ``seed*/best`` of a run."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "model.json").is_file():
            found.append(path)
            continue
        seeds = sorted(path.glob("seed*/best"), key=lambda p: p.parent.name)
        if not seeds:
            raise MerkitError("neither a checkpoint (model.json) nor a run (seed*/best)", path=path)
        found.extend(seeds)
    if len(set(found)) != len(found):
        raise MerkitError("a checkpoint is named twice: " + ", ".join(sorted({str(p) for p in found if found.count(p) > 1})))
    return found


def _run_results(folder: Path) -> dict[str, Any] | None:
    """The ``results.json`` of the run a ``RUN/seedN/best`` folder belongs to, if any."""
    path = folder.parent.parent / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _feature_identity(description: dict[str, Any]) -> tuple:
    settings = description.get("settings") or {}
    return (description.get("extractor"), description.get("dim"), settings.get("fingerprint"), description.get("count"))


def check_members(folders: Sequence[Path], checkpoints: Sequence[Checkpoint]) -> None:
    """One error naming every member that differs from the first in labels, features, scaling or protocol."""
    first, problems = checkpoints[0].meta, []
    for folder, checkpoint in zip(folders, checkpoints, strict=True):
        meta = checkpoint.meta
        if get_model(meta["model"]).feature_level != "utterance":
            problems.append(f"{folder}: {meta['model']} reads frame sequences; ensembles take utterance-level models")
        if meta.get("protocol", "honest") != "honest":
            problems.append(f"{folder}: trained under {meta['protocol']} (it has seen the validation split the ensemble is fitted on)")
        if meta["labels"] != first["labels"]:
            problems.append(f"{folder}: labels {meta['labels']['names']} differ from {first['labels']['names']} ({folders[0]})")
        if meta.get("speaker_index", "order") != first.get("speaker_index", "order"):
            problems.append(f"{folder}: speaker_index {meta.get('speaker_index')} differs from {first.get('speaker_index')} ({folders[0]})")
    for modality in sorted({m for c in checkpoints for m in c.modalities}):
        users = [(f, c.meta) for f, c in zip(folders, checkpoints, strict=True) if modality in c.modalities]
        reference_folder, reference = users[0]
        for folder, meta in users[1:]:
            if _feature_identity(meta["features"][modality]) != _feature_identity(reference["features"][modality]):
                problems.append(f"{folder}: its {modality} features come from another feature store than {reference_folder}'s")
            elif (meta.get("normalization") or {}).get(modality) != (reference.get("normalization") or {}).get(modality):
                problems.append(f"{folder}: its {modality} feature scaling differs from {reference_folder}'s")
    if problems:
        raise MerkitError("these checkpoints cannot be ensembled: " + "; ".join(problems))


def fit_weights(member_scores: Sequence[np.ndarray], labels: np.ndarray, multi_label: bool) -> list[float]:
    """Simplex weights minimising the NLL (BCE for multi-label) of the weighted mean on the given labels."""
    stacked = torch.as_tensor(np.stack(member_scores), dtype=torch.float64).clamp(1e-12, 1 - 1e-12)  # [M, N, C]
    targets = torch.as_tensor(labels)
    raw = torch.zeros(len(member_scores), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([raw], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        mixture = (torch.softmax(raw, 0)[:, None, None] * stacked).sum(0)
        if multi_label:
            loss = torch.nn.functional.binary_cross_entropy(mixture.clamp(1e-12, 1 - 1e-12), targets.double())
        else:
            loss = -mixture.gather(1, targets.long()[:, None]).log().mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return [round(float(w), 6) for w in torch.softmax(raw.detach(), 0)]


def choose_adjustment(mean: np.ndarray, labels: np.ndarray, prior: np.ndarray, metric: str, names: Sequence[str]) -> dict[str, Any]:
    """The logit-adjustment strength τ of :data:`TAU_GRID` with the best ``metric`` on these (validation) labels."""
    scores = {}
    for tau in TAU_GRID:
        shifted = mean * np.clip(prior, 1e-12, None) ** -tau
        scores[tau] = classification_metrics(labels, shifted.argmax(1), names)[metric]
    best = max(TAU_GRID, key=lambda tau: (scores[tau], -tau))  # ties: the smaller shift
    return {"metric": metric, "tau": best, "valid": {str(tau): round(score, 6) for tau, score in scores.items()}}


def build_ensemble(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    data: str | Path | DataBundle | None = None,
    weights: Literal["uniform", "fit"] = "uniform",
    adjust: Literal["none", "macro_f1", "weighted_f1"] = "none",
    batch_size: int = 16,
    resume: bool = False,
    data_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (on validation) and write the ensemble run of the checkpoints in ``paths``; return its results.

    ``data_options``: reader options for ``data`` (format, trust_pickle, ``-o`` options); without ``data``, the
    members' recorded data is read with the options they record (their validation split, e.g. ``valid_pattern``)."""
    if weights not in WEIGHTS:
        raise MerkitError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHTS)}")
    if adjust not in ADJUST:
        raise MerkitError(f"unknown adjust {adjust!r}; choose one of: {', '.join(ADJUST)}")
    started = time.time()
    folders = member_folders(paths)
    if len(folders) < 2:
        raise MerkitError("an ensemble needs at least two checkpoints")
    checkpoints = [load_checkpoint(folder) for folder in folders]
    check_members(folders, checkpoints)
    results = [_run_results(folder) for folder in folders]
    sources = {r["data"]["source"] for r in results if r}
    if data is None:
        if len(sources) != 1:
            raise MerkitError("say which data to fit the ensemble on (--data): " + ("the members were trained on " + ", ".join(sorted(sources)) if sources else "no run records it"))
        data = sources.pop()
        recorded = {json.dumps(r["data"].get("options", {}), sort_keys=True) for r in results if r}
        data_options = json.loads(recorded.pop()) if len(recorded) == 1 else {}
    bundle = data if isinstance(data, DataBundle) else read_data(data, **(data_options or {}))
    source = "in-memory data" if isinstance(data, DataBundle) else str(data)
    if not bundle.corpus.splits.get("valid"):
        raise MerkitError(f"the data ({source}) has no validation split to fit the ensemble on")
    for checkpoint in checkpoints:
        check_compatible(checkpoint.meta, bundle.corpus.labels, {m: f.describe() for m, f in bundle.features.items()})
    labels = checkpoints[0].labels
    out = Path(out)
    if adjust != "none" and labels.multi_label:
        raise MerkitError("--adjust (logit adjustment toward rare classes) is for single-label data")
    description = {"model": "ensemble", "members": [str(f) for f in folders], "weights": weights, "adjust": adjust, "data": source}
    claim_run_dir(out / "config.json", description, resume, "different members or settings")

    def member_predictions(checkpoint: Checkpoint, split: str) -> Predictions:
        loader = make_loader(checkpoint.dataset(bundle.corpus, bundle.features, [split]), batch_size)
        return predict(checkpoint.model, loader, prior=checkpoint.prior)

    valid = [member_predictions(c, "valid") for c in checkpoints]
    if any(p.utterance_ids != valid[0].utterance_ids for p in valid):
        raise MerkitError("the members do not predict the same validation utterances (different data?)")
    temperatures = [1.0 if labels.multi_label else round(fit_temperature(p.scores, p.labels), 6) for p in valid]
    calibrated = [p.scores if labels.multi_label else apply_temperature(p.scores, t) for p, t in zip(valid, temperatures, strict=True)]
    # Uniform weights on the simplex too, so a member's recorded (and printed) weight is its share of the mean.
    member_weights = fit_weights(calibrated, valid[0].labels, labels.multi_label) if weights == "fit" else [1 / len(folders)] * len(folders)

    prior = tuple(checkpoints[0].meta.get("label_prior") or [1.0 / labels.num_classes] * labels.num_classes)
    adjustment = {"metric": adjust, "tau": 0.0}
    if adjust != "none":
        mean = sum(w * p for w, p in zip(member_weights, calibrated, strict=True)) / sum(member_weights)
        adjustment = choose_adjustment(mean, valid[0].labels, np.asarray(prior), adjust, labels.names)

    members = tuple(
        EnsembleMember(model=c.meta["model"], config=c.meta["model_config"], data_spec=c.model.spec, temperature=t, weight=w, source=str(f))
        for f, c, t, w in zip(folders, checkpoints, temperatures, member_weights, strict=True)
    )
    dims = {m: d for c in checkpoints for m, d in c.model.spec.modalities.items()}
    spec = DataSpec(modalities=dims, num_classes=labels.num_classes, multi_label=labels.multi_label, class_names=labels.names)
    model = Ensemble(EnsembleConfig(members=members, adjustment=adjustment["tau"], prior=prior), spec)
    for target, checkpoint in zip(model.members, checkpoints, strict=True):
        target.load_state_dict(checkpoint.model.state_dict())
    first = checkpoints[0].meta
    best = out / "seed0" / "best"
    save_checkpoint(
        best, model, model_name="ensemble", labels=labels,
        features={m: next(c.meta["features"][m] for c in checkpoints if m in c.modalities) for m in dims},
        normalization={m: v for c in checkpoints for m, v in (c.meta.get("normalization") or {}).items()},
        label_prior=first.get("label_prior"), speaker_index=first.get("speaker_index", "order"), protocol="honest",
        train_config=first.get("train_config"), seed=0, members=[str(f) for f in folders],
    )  # fmt: skip
    ensemble = load_checkpoint(best)
    predictions = {split: member_predictions(ensemble, split) for split in ("valid", "test") if bundle.corpus.splits.get(split)}
    threshold: float | np.ndarray = 0.5
    metrics: dict[str, Any] = {"seed": 0, "protocol": "honest", "weights": dict(zip(map(str, folders), member_weights)),
                               "temperatures": dict(zip(map(str, folders), temperatures))}  # fmt: skip
    if labels.multi_label:
        strategy = (first.get("train_config") or {}).get("threshold", "per_class")
        threshold = choose_thresholds(strategy, predictions["valid"].labels, predictions["valid"].scores)
        metrics |= {"threshold_strategy": strategy, "thresholds": dict(zip(labels.names, threshold.round(6).tolist()))}
        meta = ensemble.meta | {"threshold_strategy": strategy, "thresholds": metrics["thresholds"]}
        atomic_write_json(best / "model.json", meta)
    for split, found in predictions.items():
        metrics[split] = score_metrics(found.labels, found.scores, labels.names, labels.multi_label, threshold=threshold)
    if "test" in predictions:
        write_predictions(out / "seed0" / "predictions-test.jsonl", predictions["test"])
    metrics["wall_seconds"] = round(time.time() - started, 2)
    atomic_write_json(out / "seed0" / "metrics.json", metrics)
    per_seed = {"0": {split: headline(metrics[split]) for split in predictions} | {"best_epoch": None}}
    summary = {split: {k: summarize([v]) for k, v in per_seed["0"][split].items()} for split in predictions}
    run = {
        "model": "ensemble",
        "preset": None,
        "model_config": {"members": [m.model_dump(mode="json") for m in members]},
        "train_config": first.get("train_config"),
        "modalities": list(dims),
        "protocol": "honest",
        "protocol_label": "honest: temperatures and weights fitted on the validation split",
        "data": {"corpus": bundle.corpus.name, "source": source, "features": ensemble.meta["features"]},
        "adjustment": adjustment,
        "members": [{"checkpoint": str(f), "model": c.meta["model"], "temperature": t, "weight": w,
                     **({"test": r["per_seed"].get(str(c.meta.get("seed")), {}).get("test")} if r else {})}
                    for f, c, t, w, r in zip(folders, checkpoints, temperatures, member_weights, results, strict=True)],  # fmt: skip
        "seeds": [0],
        "per_seed": per_seed,
        "summary": summary,
        "precision": ["32-true"],
        "warnings": [f"seed 0 {split}: {w}" for split in predictions for w in metrics[split].get("warnings", [])],
        "environment": environment(),
        "wall_seconds": metrics["wall_seconds"],
    }
    atomic_write_json(out / "results.json", run)
    return run

