"""Diarization error rate of ``merkit.diarization`` on the twelve AMI excerpts (issue #35).

    OMP_NUM_THREADS=1 python benchmarks/diarization_ami.py [--embeddings campplus,ge2e] [--set window=1.5 ...] [--json FILE]

Voice activity is merkit's own (Silero, the recording pipeline's settings) for every row, so the rows
differ only in who is said to speak. For each candidate embedding the clustering threshold is chosen on
the ten ``trn`` excerpts (pooled strict DER over a grid) and then reported on ``dev00``/``dev01`` and pooled
over all twelve, beside: one speaker for all speech (same VAD), and the true number of speakers given
(``num_speakers``). Two last rows replace the VAD by the reference speech regions (perfect voice activity),
to show which part of the error is the VAD's. DER by ``pyannote.metrics``: strict (no collar, overlap scored) and with NIST's 0.25 s
collar (``collar=0.5`` in pyannote's terms, the total width). Also the speaker-count error and the
real-time factor of the diarization stage (embeddings + clustering, one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("MERKIT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")) / "ami-excerpts"
TRAIN = [f"trn{i:02d}" for i in range(10)]
DEV = ["dev00", "dev01"]
GRID = [round(x, 2) for x in np.arange(0.3, 1.01, 0.05)]


def reference() -> dict:
    from pyannote.core import Annotation, Segment

    refs: dict[str, Annotation] = {}
    for name in ("train.rttm", "dev.rttm"):
        for line in (DATA / "rttm" / name).read_text("utf-8").splitlines():
            f = line.split()
            if f and f[0] == "SPEAKER":
                refs.setdefault(f[1], Annotation(uri=f[1]))[Segment(float(f[3]), float(f[3]) + float(f[4]))] = f[7]
    return refs


def annotation(uri: str, turns) -> object:
    from pyannote.core import Annotation, Segment

    out = Annotation(uri=uri)
    for start, end, who in turns:
        if end > start:
            out[Segment(start, end)] = who
    return out


def der(refs: dict, hyps: dict, files: list[str], collar: float = 0.0, parts: dict | None = None) -> tuple[float, dict[str, float]]:
    """Pooled DER (%) and each file's; ``parts`` (if given) gets the pooled missed speech, false alarm and confusion (% of speech)."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    per = {f: 100 * metric(refs[f], hyps[f], uem=Timeline([Segment(0, 30)])) for f in files}
    if parts is not None:
        for name in ("missed detection", "false alarm", "confusion"):
            parts[name] = 100 * metric[name] / metric["total"]
    return 100 * abs(metric), per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", default="campplus,ge2e")
    parser.add_argument("--set", action="append", default=[], help="DiarizationSettings KEY=VALUE (window, step, linkage, min_cluster, min_turn)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from merkit.diarization import DiarizationSettings, turns_from_windows, window_embeddings
    from merkit.recording import RecordingSettings, speech_spans

    torch.set_num_threads(1)
    overrides = dict(item.split("=", 1) for item in args.set)
    refs = reference()
    files = TRAIN + DEV
    audio = {f: sf.read(DATA / "audio" / f"{f}.wav", dtype="float32")[0] for f in files}
    spans = {f: speech_spans(audio[f], RecordingSettings()) for f in files}
    seconds = sum(len(a) for a in audio.values()) / 16_000
    one = {f: annotation(f, [(a, b, "S") for a, b in spans[f]]) for f in files}
    rows, results = [], {"files": files, "overrides": overrides}

    def report(label: str, hyps: dict, counts: dict[str, int]) -> dict:
        parts: dict[str, float] = {}
        strict_all, per = der(refs, hyps, files, parts=parts)
        strict_dev, _ = der(refs, hyps, DEV)
        strict_trn, _ = der(refs, hyps, TRAIN)
        collar_all, _ = der(refs, hyps, files, collar=0.5)
        count_error = float(np.mean([abs(counts[f] - len(refs[f].labels())) for f in files]))
        row = {"system": label, "strict_pooled": strict_all, "strict_trn": strict_trn, "strict_dev": strict_dev,
               "collar_pooled": collar_all, "per_file": per, "speaker_count_error": count_error, "parts": parts}  # fmt: skip
        rows.append(row)
        print(f"{label:40s} strict pooled {strict_all:5.1f}  trn {strict_trn:5.1f}  dev {strict_dev:5.1f}  "
              f"0.25 s collar {collar_all:5.1f}  |count error| {count_error:.2f}  (missed {parts['missed detection']:.1f}, "
              f"false alarm {parts['false alarm']:.1f}, confusion {parts['confusion']:.1f})", flush=True)  # fmt: skip
        return row

    report("one speaker (same VAD)", one, {f: 1 for f in files})
    for embedding in args.embeddings.split(","):
        base = DiarizationSettings(embedding=embedding, **overrides)
        began = time.perf_counter()
        windows = {f: window_embeddings(audio[f], spans[f], base) for f in files}
        embed_seconds = time.perf_counter() - began

        def run(settings):
            began = time.perf_counter()
            turns = {f: turns_from_windows(spans[f], *windows[f], settings) for f in files}
            took = time.perf_counter() - began
            hyps = {f: annotation(f, [(t.start, t.end, t.speaker) for t in turns[f]]) for f in files}
            return hyps, {f: len({t.speaker for t in turns[f]}) for f in files}, took

        scores = {}
        for threshold in GRID:
            hyps, _, _ = run(base.model_copy(update={"threshold": threshold}))
            scores[threshold] = der(refs, hyps, TRAIN)[0]
        chosen = min(scores, key=scores.get)
        print(f"{embedding}: trn pooled strict DER by threshold " + " ".join(f"{t:g}:{s:.1f}" for t, s in scores.items()), flush=True)
        hyps, counts, cluster_seconds = run(base.model_copy(update={"threshold": chosen}))
        row = report(f"{embedding}, threshold {chosen:g} (chosen on trn)", hyps, counts)
        row.update(threshold=chosen, trn_grid=scores, rtf=(embed_seconds + cluster_seconds) / seconds, settings=base.model_copy(update={"threshold": chosen}).model_dump())
        print(f"{'':40s} diarization real-time factor {row['rtf']:.4f} (embeddings {embed_seconds:.1f} s + clustering {cluster_seconds:.2f} s for {seconds:.0f} s)")
        oracle = {}
        for f in files:
            oracle[f] = base.model_copy(update={"num_speakers": len(refs[f].labels())})
        turns = {f: turns_from_windows(spans[f], *windows[f], oracle[f]) for f in files}
        report(f"{embedding}, true speaker count given", {f: annotation(f, [(t.start, t.end, t.speaker) for t in turns[f]]) for f in files},
               {f: len({t.speaker for t in turns[f]}) for f in files})  # fmt: skip
    # The same clustering given the reference speech regions (perfect voice activity): how much is the VAD's.
    oracle = {f: [(s.start, s.end) for s in refs[f].get_timeline().support()] for f in files}
    report("perfect VAD: one speaker", {f: annotation(f, [(a, b, "S") for a, b in oracle[f]]) for f in files}, {f: 1 for f in files})
    chosen = next(r for r in rows if r["system"].startswith(args.embeddings.split(",")[0] + ", threshold"))
    settings = DiarizationSettings(**chosen["settings"])
    turns = {f: turns_from_windows(oracle[f], *window_embeddings(audio[f], oracle[f], settings), settings) for f in files}
    report(f"perfect VAD: {settings.embedding}, threshold {settings.threshold:g}", {f: annotation(f, [(t.start, t.end, t.speaker) for t in turns[f]]) for f in files},
           {f: len({t.speaker for t in turns[f]}) for f in files})  # fmt: skip
    results["rows"] = rows
    print("\nper file, strict DER (%):")
    print(f"{'file':6s} " + " ".join(f"{r['system'][:18]:>18s}" for r in rows))
    for f in files:
        print(f"{f:6s} " + " ".join(f"{r['per_file'][f]:18.1f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
