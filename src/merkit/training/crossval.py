"""Speaker-independent K-fold cross-validation: ``merkit train … --folds K --group-by speaker``
(or ``--folds loso``, leave one group out).

Each fold is an ordinary run of :func:`merkit.training.engine.train_model` in ``OUT/fold<i>/``
(its own validation part for selection, its own test part scored once; see
:mod:`merkit.data.folds`), so every fold resumes, exports and reports like any run. ``OUT/results.json``
gathers them: per fold × seed headline metrics, mean ± std over all of them, and which speakers
each fold tested and selected on. ``merkit baseline --folds`` gathers its folds with the same
helpers, so both write the same ``results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merkit.data.folds import LOSO, Fold, make_folds
from merkit.data.formats import DataBundle
from merkit.errors import MerkitError
from merkit.io import atomic_write_json
from merkit.metrics import summarize
from merkit.training.engine import _load_bundle, _source_of, claim_run_dir, train_model


def cross_validate(
    data: str | Path | DataBundle,
    model: str,
    *,
    out: str | Path,
    folds: int | str,
    group_by: str = "speaker",
    assignment: str = "contiguous",
    seeds: Sequence[int] = (0,),
    resume: bool = False,
    data_options: dict[str, Any] | None = None,
    **train_options: Any,
) -> dict[str, Any]:
    """Train ``model`` on every fold (all ``seeds``) and return (and write) the gathered ``results.json``."""
    if train_options.get("protocol", "honest") != "honest":
        raise MerkitError("--folds selects on each fold's validation part; it runs under the honest protocol only")
    bundle = _load_bundle(data, data_options)
    plan = make_folds(bundle.corpus, folds, group_by, assignment)
    out = Path(out)
    layout = fold_layout(plan, folds, group_by, assignment)
    claim_run_dir(out / "crossval.json", layout, resume, "different folds")
    started = time.time()
    per_fold = {}
    for fold in plan:
        per_fold[f"fold{fold.index}"] = train_model(
            DataBundle(fold.corpus, bundle.features), model, out=out / f"fold{fold.index}", seeds=seeds, resume=resume,
            source=_source_of(data), data_options=data_options, **train_options,
        )  # fmt: skip
    if not all(per_fold.values()):  # non-zero DDP ranks do not evaluate or write
        return {}
    results = gather_folds(plan, layout, per_fold, seeds, time.time() - started)
    atomic_write_json(out / "results.json", results)
    return results


def fold_layout(plan: Sequence[Fold], folds: int | str, group_by: str, assignment: str) -> dict[str, Any]:
    """How the corpus was cut (``results.json``'s ``cross_validation``): K, and the groups of each fold's parts."""
    loso = {LOSO: True} if folds == LOSO else {}  # only then: crossval.json of K-fold runs stays as it was
    return {"folds": len(plan), **loso, "group_by": group_by, "assignment": assignment, "parts": {f"fold{f.index}": f.groups for f in plan}}


def summarise_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of each headline metric of each split over ``rows`` (per-run ``{split: {metric: value}}``)."""
    summary = {}
    for split in ("valid", "test"):
        values = [row[split] for row in rows if split in row]
        if values:
            summary[split] = {metric: summarize([v[metric] for v in values]) for metric in values[0]}
    return summary


def gather_folds(
    plan: Sequence[Fold], layout: dict[str, Any], per_fold: dict[str, dict[str, Any]], seeds: Sequence[int], wall: float
) -> dict[str, Any]:
    """One ``results.json`` from the folds' own (``per_fold``: ``fold<i>`` → that run's results)."""
    first = next(iter(per_fold.values()))
    rows = {f"{fold}/seed{seed}": row for fold, result in per_fold.items() for seed, row in result["per_seed"].items()}
    return {
        **{k: v for k, v in first.items() if k not in ("per_seed", "summary", "wall_seconds", "seeds", "warnings")},
        "cross_validation": layout,
        "seeds": list(seeds),
        "runs": len(rows),
        "per_seed": rows,
        "per_fold": {fold: result["summary"] for fold, result in per_fold.items()},
        "summary": summarise_rows(list(rows.values())),
        "warnings": [f"fold{f.index}: {note}" for f in plan for note in f.notes]
        + [f"{fold} {w}" for fold, result in per_fold.items() for w in result.get("warnings", [])],
        "wall_seconds": round(wall, 2),
    }
