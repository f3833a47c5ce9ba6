"""The extraction driver: corpus → batches → cache → :class:`FeatureSet` → feature store.

Any registered extractor, any modality. The work is planned deterministically: distinct
inputs (identical inputs are encoded once) are sorted by cost (longest first, so a batch
holds inputs of similar length and an out-of-memory error shows at once), cut into batches
and the batches into chunks. Each chunk, once computed, is written to the content-hash
cache (:mod:`merkit.features.cache`); a chunk whose inputs are all cached is skipped. So:

* a re-run of the same command does no model work at all;
* a killed run resumes with the chunk it was computing, and because chunks and batches are
  the same as in an unbroken run, the arrays are bit-identical to an unbroken run's;
* ``shard=(i, n)`` computes chunks ``i, i+n, i+2n, …`` only and leaves a shard marker;
  :func:`merge_shards` (``merkit merge``) then checks that every shard is done and writes
  the store without computing anything. Shards + merge give the unsharded arrays exactly.

The cache lives in ``<store>/.cache/<modality>-<fingerprint>/`` unless another folder is
named (a shared one lets many stores reuse rows).

An extractor may return :class:`Absent` instead of a row: the utterance's row is masked
(``present`` False); a row holding NaN or infinite values is taken as a failed one. A *failed*
one (corrupt or silent file, no audio track) is also listed in the failure report
``<store>/failures/<modality>.jsonl`` (utterance, media, reason) and counted in
:attr:`ExtractionResult.failures`; the rest goes on. Absent results are
recorded in the cache folder (``absent-*.json``) like rows, so a re-run does not retry them
(a changed file has another hash, hence another key, and is computed afresh).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet, stack_rows
from merkit.data.store import corpus_fingerprint, write_store
from merkit.errors import MerkitError
from merkit.features.cache import FeatureCache, item_key
from merkit.features.registry import Extractor, get_extractor
from merkit.io import atomic_write_json, atomic_write_text
from merkit.progress import progress_bar

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"2/8"`` → ``(2, 8)``: shard ``i`` of ``n``, counted from 0."""
    if spec is None or spec == "":
        return None
    index, sep, count = str(spec).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise MerkitError(f"bad shard {spec!r}: give i/n with 0 <= i < n (e.g. 0/4 … 3/4)")
    return i, n


def default_cache_dir(out: str | Path, extractor: Extractor) -> Path:
    return Path(out) / ".cache" / f"{extractor.modality}-{extractor.fingerprint()[:16]}"


@dataclass(frozen=True)
class Absent:
    """What :meth:`Extractor.encode` returns in place of a row for an input that gives none.

    ``failed=True``: the input could not be used (corrupt or silent file, no audio track);
    ``failed=False``: a legitimate empty result (no face in any frame): the row is just masked.
    """

    reason: str
    failed: bool = True


@dataclass
class ExtractionResult:
    """What a run did: counts, timing, and the features (``None`` for a shard run).

    ``failures`` maps each utterance whose input failed to the reason; ``masked`` counts the
    utterances whose input gave no row without failing (e.g. no face found).
    """

    utterances: int
    present: int
    unique: int
    cached: int
    computed: int
    seconds: float
    cache_dir: Path | None
    shard: tuple[int, int] | None = None
    features: FeatureSet | None = None
    store: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    masked: int = 0
    report: Path | None = None

    @property
    def rate(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")


def _read_absent(cache_dir: Path) -> dict[bytes, Absent]:
    """The absent results recorded in a cache folder (by any shard)."""
    found: dict[bytes, Absent] = {}
    for path in sorted(cache_dir.glob("absent-*.json")):
        for key, entry in json.loads(path.read_text("utf-8")).items():
            found[bytes.fromhex(key)] = Absent(entry["reason"], entry["failed"])
    return found


def _write_absent(cache_dir: Path, absent: dict[bytes, Absent]) -> None:
    name = hashlib.sha256(b"".join(sorted(absent))).hexdigest()[:24]
    entries = {key.hex(): {"reason": a.reason, "failed": a.failed} for key, a in sorted(absent.items())}
    atomic_write_json(cache_dir / f"absent-{name}.json", entries)


def failure_report_path(out: str | Path, modality: str) -> Path:
    return Path(out) / "failures" / f"{modality}.jsonl"


def _write_failure_report(out: str | Path, corpus: Corpus, extractor: Extractor, failures: dict[str, str]) -> Path:
    """One JSON line per failed utterance (id, dialogue, media, span, reason); a stale report is removed."""
    path = failure_report_path(out, extractor.modality)
    if not failures:
        path.unlink(missing_ok=True)
        return path
    lines = []
    for dialogue in corpus.dialogues:
        for utterance in dialogue.utterances:
            if utterance.id in failures:
                lines.append(json.dumps({
                    "utterance": utterance.id, "dialogue": dialogue.id, "media": dict(utterance.media),
                    "start": utterance.start, "end": utterance.end, "extractor": extractor.record_name,
                    "reason": failures[utterance.id],
                }, ensure_ascii=False))  # fmt: skip
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def run_extraction(
    corpus: Corpus,
    extractor: Extractor,
    *,
    out: str | Path | None = None,
    source: str = "",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    chunk_size: int = 512,
    shard: tuple[int, int] | None = None,
    compute: bool = True,
    progress: bool = True,
    log: Log | None = _stderr,
) -> ExtractionResult:
    """Extract one modality for every utterance of ``corpus``; write it into the store ``out``.

    ``compute=False`` only assembles rows already cached (the merge step) and fails naming
    how many are missing.
    """
    say = log or (lambda message: None)
    started = time.perf_counter()
    if batch_size < 1 or chunk_size < 1:
        raise MerkitError("batch size and chunk size must be at least 1")
    if shard is not None and not use_cache:
        raise MerkitError("--shard needs the cache (it is where shards leave their work); drop --no-cache")
    if use_cache and cache_dir is None:
        if out is None:
            raise MerkitError("name a store (--out) or a cache folder (--cache) to cache features in")
        cache_dir = default_cache_dir(out, extractor)
    cache = FeatureCache(cache_dir) if use_cache else None

    fingerprint = extractor.fingerprint()
    items = extractor.plan(corpus)
    ids = [utterance.id for utterance in corpus.utterances()]
    if len(items) != len(ids):
        raise RuntimeError(f"extractor {extractor.name} planned {len(items)} items for {len(ids)} utterances")
    keys = [None if item is None else item_key(fingerprint, item.content) for item in items]
    unique: dict[bytes, Any] = {}
    for key, item in zip(keys, items, strict=True):
        if key is not None and key not in unique:
            unique[key] = item
    order = sorted(unique, key=lambda k: (-unique[k].cost, k))
    per_chunk = max(1, math.ceil(chunk_size / batch_size)) * batch_size
    chunks = [order[i : i + per_chunk] for i in range(0, len(order), per_chunk)]
    mine = [c for j, c in enumerate(chunks) if shard is None or j % shard[1] == shard[0]]
    absent = _read_absent(Path(cache_dir)) if cache is not None else {}
    todo = [c for c in mine if cache is None or any(k not in absent for k in cache.missing(c))]
    to_compute = sum(len(c) for c in todo)
    mine_count = sum(len(c) for c in mine)
    label = f"{extractor.record_name} {extractor.modality}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
    say(
        f"{label}: {len(ids):,} utterances, {sum(k is not None for k in keys):,} with {extractor.modality}, "
        f"{len(unique):,} distinct inputs" + (f", {mine_count:,} in this shard" if shard else "")
        + f"; {mine_count - to_compute:,} cached, {to_compute:,} to compute"
        + (f" (cache {cache_dir})" if cache is not None else "")
    )  # fmt: skip

    computed: dict[bytes, np.ndarray] = {}
    if todo and not compute:
        raise MerkitError(
            f"{to_compute:,} of {len(unique):,} inputs are not in the cache: a shard has not finished "
            "(run the missing shards, then merge again)",
            path=cache_dir,
        )
    compute_started = time.perf_counter()
    if todo:
        bar = progress_bar(to_compute, label, enabled=progress)
        try:
            for chunk in todo:
                chunk_rows: dict[bytes, np.ndarray] = {}
                chunk_absent: dict[bytes, Absent] = {}
                for start in range(0, len(chunk), batch_size):
                    batch = chunk[start : start + batch_size]
                    rows = extractor.encode([unique[k].payload for k in batch])
                    if len(rows) != len(batch):
                        raise RuntimeError(f"extractor {extractor.name} returned {len(rows)} rows for {len(batch)} inputs")
                    for key, row in zip(batch, rows, strict=True):
                        if not isinstance(row, Absent) and not np.isfinite(row).all():
                            # one odd input must not stop (and, once cached, keep stopping) the whole run
                            row = Absent("the extractor gave NaN or infinite features")
                        if isinstance(row, Absent):
                            chunk_absent[key] = row
                        else:
                            chunk_rows[key] = row
                    if bar is not None:
                        bar.update(len(batch))
                if cache is not None:
                    if chunk_rows:
                        cache.put(list(chunk_rows), list(chunk_rows.values()))
                    if chunk_absent:
                        _write_absent(Path(cache_dir), chunk_absent)
                absent.update(chunk_absent)
                if shard is None:
                    computed.update(chunk_rows)
        finally:
            if bar is not None:
                bar.close()
    compute_seconds = time.perf_counter() - compute_started

    counted = {k for c in mine for k in c}
    failures = {i: absent[k].reason for i, k in zip(ids, keys, strict=True) if k in counted and k in absent and absent[k].failed}
    masked_reasons = [absent[k].reason for k in keys if k in counted and k in absent and not absent[k].failed]
    masked = len(masked_reasons)
    result = ExtractionResult(
        utterances=len(ids), present=sum(k is not None for k in keys), unique=len(unique),
        cached=mine_count - to_compute, computed=to_compute, seconds=compute_seconds,
        cache_dir=Path(cache_dir) if cache is not None else None, shard=shard, failures=failures, masked=masked,
    )  # fmt: skip
    if failures:
        shown = "; ".join(f"{i}: {r}" for i, r in list(failures.items())[:3]) + ("; …" if len(failures) > 3 else "")
        say(f"{label}: {len(failures):,} utterance(s) failed and are masked ({shown})")
    run_info = {"batch_size": batch_size, "chunk_size": chunk_size}
    if shard is not None:
        assert cache is not None and cache_dir is not None
        _write_shard_marker(Path(cache_dir), corpus, extractor, shard, source, run_info, mine_count)
        say(f"{label}: done ({to_compute:,} computed in {compute_seconds:.1f}s); merge with: merkit merge {out or '--cache ' + str(cache_dir)}")
        return result

    need = [k for k in unique if k not in computed and k not in absent]
    if need:
        assert cache is not None
        computed.update(cache.get_many(need, sequence=extractor.level == "sequence"))
    rows = [None if key is None or key in absent else computed[key] for key in keys]
    if absent and all(row is None for row in rows):
        if out is not None:
            _write_failure_report(out, corpus, extractor, failures)
        raise MerkitError(f"no utterance gave {extractor.modality} features ({len(failures):,} failed, {masked:,} masked)", path=out)
    settings = {**extractor.manifest_settings(), "run": {**run_info, "failed": len(failures), "masked": masked}}
    features = stack_rows(
        extractor.modality, rows, ids=ids, sequence=extractor.level == "sequence",
        extractor=extractor.record_name, settings=settings, source=source,
    )  # fmt: skip
    result.features = features
    if out is not None:
        write_store(out, corpus, {extractor.modality: features}, keep_existing=True)
        result.store = Path(out)
        report = _write_failure_report(out, corpus, extractor, failures)
        result.report = report if failures else None
        say(
            f"wrote {out}: {extractor.modality} {features.level} features, {features.dim}-d, "
            f"{int(features.present.sum()):,}/{len(features):,} utterances "
            f"({to_compute:,} computed in {compute_seconds:.1f}s, {result.cached:,} from the cache; "
            f"{time.perf_counter() - started:.1f}s in all)"
            + (f"; {masked:,} masked ({masked_reasons[0]}, …)" if masked else "")
            + (f"; {len(failures):,} failed, listed in {report}" if failures else "")
        )
    return result


def _write_shard_marker(
    cache_dir: Path, corpus: Corpus, extractor: Extractor, shard: tuple[int, int], source: str, run_info: dict, count: int
) -> None:
    fingerprint = corpus_fingerprint(corpus)
    corpus_file = cache_dir / f"corpus-{fingerprint[:16]}.json"
    if not corpus_file.is_file():
        atomic_write_text(corpus_file, corpus.model_dump_json())
    atomic_write_json(
        cache_dir / f"shard-{shard[0]}-of-{shard[1]}.json",
        {
            "extractor": extractor.spec(),
            "record_name": extractor.record_name,
            "extra": extractor.extra,
            "fingerprint": extractor.fingerprint(),
            "corpus_file": corpus_file.name,
            "corpus_fingerprint": fingerprint,
            "source": source,
            "shard": list(shard),
            "inputs": count,
            "run": run_info,
        },
    )


def merge_shards(
    out: str | Path, *, cache_dir: str | Path | None = None, device: str | None = None, log: Log | None = _stderr
) -> ExtractionResult:
    """Check that every shard of a sharded extraction finished, then write the store ``out``."""
    out = Path(out)
    if cache_dir is not None:
        markers = sorted(Path(cache_dir).glob("shard-*-of-*.json"))
        where = Path(cache_dir)
    else:
        markers = sorted(out.glob(".cache/*/shard-*-of-*.json"))
        where = out / ".cache"
    if not markers:
        raise MerkitError("no shard markers found: run merkit extract ... --shard i/n first", path=where)
    folders = sorted({m.parent for m in markers})
    if len(folders) > 1:
        raise MerkitError(
            "shards of more than one extraction are here; name one with --cache: " + ", ".join(map(str, folders)), path=where
        )
    entries = [json.loads(m.read_text("utf-8")) for m in markers]
    counts = {e["shard"][1] for e in entries}
    if len(counts) > 1 or len({e["fingerprint"] for e in entries}) > 1 or len({e["corpus_fingerprint"] for e in entries}) > 1:
        raise MerkitError("the shard markers disagree (shard count, extractor or corpus)", path=folders[0])
    count = counts.pop()
    missing = sorted(set(range(count)) - {e["shard"][0] for e in entries})
    if missing:
        raise MerkitError(
            f"shards {', '.join(f'{i}/{count}' for i in missing)} have not finished (no marker)", path=folders[0]
        )
    first = entries[0]
    corpus = Corpus.model_validate_json((folders[0] / first["corpus_file"]).read_text("utf-8"))
    extractor = get_extractor(first["extractor"]["name"], device=device, **first["extractor"]["settings"])
    extractor.record_name = first["record_name"]
    extractor.extra = first["extra"]
    if extractor.fingerprint() != first["fingerprint"]:
        raise MerkitError(
            "the extractor's weights or settings changed since the shards ran (fingerprint differs)", path=folders[0]
        )
    return run_extraction(
        corpus, extractor, out=out, source=first["source"], cache_dir=folders[0],
        batch_size=first["run"]["batch_size"], chunk_size=first["run"]["chunk_size"], compute=False, log=log,
    )  # fmt: skip
