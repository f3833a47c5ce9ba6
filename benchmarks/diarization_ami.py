"""Diarization error rate of ``merkit.diarization`` on the twelve AMI excerpts (issue #35).

    OMP_NUM_THREADS=1 python benchmarks/diarization_ami.py [--embeddings campplus,ge2e] [--set window=1.5 ...] [--json FILE]

Two voice activities, each with its own rows: Silero (the recording pipeline's settings) and pyannote's
segmentation-3.0 (``merkit.speaker_segmentation``), whose onset/offset/shortest pause are chosen on the ten
``trn`` excerpts (pooled missed + false-alarm speech of one speaker for all speech, over a grid). For each
voice activity and embedding the clustering threshold is chosen on the ``trn`` excerpts too (pooled strict DER
over a grid), then reported on ``dev00``/``dev01`` and pooled over all twelve, beside one speaker for all speech
(same voice activity) and the true number of speakers given. Two last rows replace the voice activity by the
reference speech regions (perfect voice activity). DER by ``pyannote.metrics``: strict (no collar, overlap
scored) and with NIST's 0.25 s collar (``collar=0.5`` in pyannote's terms, the total width). Also the
speaker-count error, and each stage's seconds, real-time factor and the process's peak memory after it.

segmentation-3.0 was trained on AMI's training meetings, and these excerpts come from them (their speakers are
those of EN2001, EN2003 … and ES2003): its rows are not a clean measurement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("MERKIT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")) / "ami-excerpts"
TRAIN = [f"trn{i:02d}" for i in range(10)]
DEV = ["dev00", "dev01"]
GRID = [round(x, 2) for x in np.arange(0.3, 1.01, 0.05)]
VAD_GRID = [{"onset": on, "offset": off, "min_silence": gap}
            for on, off, gap in itertools.product((0.2, 0.3, 0.4, 0.5, 0.6, 0.7), (0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (0.0, 0.1, 0.25)) if off <= on]  # fmt: skip
OVERLAP_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)


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


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", default="campplus,ge2e")
    parser.add_argument("--set", action="append", default=[], help="DiarizationSettings KEY=VALUE (window, step, linkage, min_cluster, min_turn, segmentation_step)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from merkit import speaker_segmentation
    from merkit.diarization import DiarizationSettings, Loudness, regions_of, turns_from_windows, window_embeddings
    from merkit.recording import RecordingSettings, speech_spans

    torch.set_num_threads(1)
    overrides = dict(item.split("=", 1) for item in args.set)
    embeddings = args.embeddings.split(",")
    refs = reference()
    files = TRAIN + DEV
    audio = {f: sf.read(DATA / "audio" / f"{f}.wav", dtype="float32")[0] for f in files}
    seconds = sum(len(a) for a in audio.values()) / 16_000
    loudness = {f: Loudness() for f in files}  # where a change of speaker moves to the quiet near it (settings.snap)
    for f in files:
        loudness[f].add(audio[f])
    rows, stages, results = [], {}, {"files": files, "overrides": overrides, "audio_seconds": seconds}

    def stage(name: str, began: float) -> None:
        took = time.perf_counter() - began
        stages[name] = {"seconds": took, "rtf": took / seconds, "peak_mib": peak_mib()}
        print(f"  stage {name}: {took:.1f} s, real-time factor {took / seconds:.4f}, peak {peak_mib():.0f} MiB", flush=True)

    def report(label: str, turns: dict) -> dict:
        hyps = {f: annotation(f, turns[f]) for f in files}
        parts: dict[str, float] = {}
        strict_all, per = der(refs, hyps, files, parts=parts)
        strict_dev, _ = der(refs, hyps, DEV)
        strict_trn, _ = der(refs, hyps, TRAIN)
        collar_all, _ = der(refs, hyps, files, collar=0.5)
        count_error = float(np.mean([abs(len({w for _, _, w in turns[f]}) - len(refs[f].labels())) for f in files]))
        row = {"system": label, "strict_pooled": strict_all, "strict_trn": strict_trn, "strict_dev": strict_dev,
               "collar_pooled": collar_all, "per_file": per, "speaker_count_error": count_error, "parts": parts}  # fmt: skip
        rows.append(row)
        print(f"{label:48s} strict pooled {strict_all:5.1f}  trn {strict_trn:5.1f}  dev {strict_dev:5.1f}  "
              f"0.25 s collar {collar_all:5.1f}  |count error| {count_error:.2f}  (missed {parts['missed detection']:.1f}, "
              f"false alarm {parts['false alarm']:.1f}, confusion {parts['confusion']:.1f})", flush=True)  # fmt: skip
        return row

    def one_speaker(speech: dict) -> dict:
        return {f: [(a, b, "S") for a, b in speech[f]] for f in files}

    def systems(vad: str, speech: dict, overlapped: dict, base: dict, names: list[str]) -> None:
        """Each embedding's rows on this voice activity: threshold (and overlap threshold, the keys of ``overlapped``)
        chosen on trn, then the true count given."""
        for embedding in names:
            settings = DiarizationSettings(embedding=embedding, **{**base, **overrides})
            began = time.perf_counter()
            windows = {f: window_embeddings(audio[f], speech[f], settings) for f in files}
            stage(f"{vad}: {embedding} embeddings", began)

            def run(chosen: DiarizationSettings, only=files, true_count: bool = False) -> dict:
                overlaps = overlapped[chosen.overlap_threshold if chosen.overlap else None]
                each = {f: chosen.model_copy(update={"num_speakers": len(refs[f].labels())}) if true_count else chosen for f in only}
                return {f: [(t.start, t.end, t.speaker) for t in turns_from_windows(speech[f], *windows[f], each[f], overlaps[f], loudness[f])] for f in only}

            scores = {(t, o): der(refs, {f: annotation(f, v) for f, v in run(settings.model_copy(update={"threshold": t, "overlap_threshold": o or 0.5}), TRAIN).items()}, TRAIN)[0]
                      for t in GRID for o in overlapped}  # fmt: skip
            threshold, high = min(scores, key=scores.get)
            print(f"{vad}, {embedding}: trn pooled strict DER by threshold (overlap threshold) "
                  + " ".join(f"{t:g}({o}):{s:.1f}" for (t, o), s in scores.items()), flush=True)  # fmt: skip
            chosen = settings.model_copy(update={"threshold": threshold, "overlap_threshold": high or 0.5})
            began = time.perf_counter()
            turns = run(chosen)
            stage(f"{vad}: {embedding} clustering", began)
            row = report(f"{vad}: {embedding}, threshold {threshold:g}", turns)
            row.update(threshold=threshold, trn_grid={f"{t:g} ({o})": v for (t, o), v in scores.items()}, settings=chosen.model_dump())
            report(f"{vad}: {embedding}, true speaker count given", run(chosen, true_count=True))

    # Silero, the recording pipeline's voice activity
    began = time.perf_counter()
    silero = {f: speech_spans(audio[f], RecordingSettings()) for f in files}
    stage("silero: voice activity", began)
    report("silero: one speaker", one_speaker(silero))
    systems("silero", silero, {None: {f: [] for f in files}}, {"vad": "silero", "overlap": False}, embeddings)

    # segmentation-3.0: scores once, its hysteresis chosen on trn by one speaker's missed + false alarm
    began = time.perf_counter()
    step = float(overrides.get("segmentation_step", 1.0))
    scores = {f: speaker_segmentation.frame_scores(audio[f], step) for f in files}
    stage("segmentation-3.0: frame scores (loading included)", began)
    detection = {}
    for point in VAD_GRID:
        settings = DiarizationSettings(**point)
        speech = {f: regions_of(scores[f], 30.0, settings)[0] for f in TRAIN}
        parts: dict[str, float] = {}
        der(refs, {f: annotation(f, [(a, b, "S") for a, b in speech[f]]) for f in TRAIN}, TRAIN, parts=parts)
        detection[json.dumps(point)] = parts["missed detection"] + parts["false alarm"]
    vad = json.loads(min(detection, key=detection.get))
    print(f"segmentation-3.0 hysteresis chosen on trn: {vad} (missed + false alarm {min(detection.values()):.1f} %; "
          f"onset=offset=0.5 without gap closing: {detection[json.dumps({'onset': 0.5, 'offset': 0.5, 'min_silence': 0.0})]:.1f} %)", flush=True)  # fmt: skip
    results["vad_grid"] = detection
    settings = DiarizationSettings(**vad)
    speech = {f: regions_of(scores[f], len(audio[f]) / 16_000, settings)[0] for f in files}
    overlapped = {high: {f: regions_of(scores[f], len(audio[f]) / 16_000, settings.model_copy(update={"overlap_threshold": high}))[1] for f in files}
                  for high in OVERLAP_GRID}  # fmt: skip
    report("segmentation: one speaker", one_speaker(speech))
    systems("segmentation", speech, overlapped, {**vad, "vad": "segmentation"}, embeddings)
    systems("segmentation, no overlap", speech, {None: {f: [] for f in files}}, {**vad, "vad": "segmentation", "overlap": False}, embeddings[:1])

    # The same clustering given the reference speech regions (perfect voice activity): how much is the VAD's.
    oracle = {f: [(s.start, s.end) for s in refs[f].get_timeline().support()] for f in files}
    report("perfect VAD: one speaker", one_speaker(oracle))
    chosen = next(r for r in rows if r["system"].startswith(f"silero: {embeddings[0]}, threshold"))
    settings = DiarizationSettings(**chosen["settings"])
    report(f"perfect VAD: {settings.embedding}, threshold {settings.threshold:g}",
           {f: [(t.start, t.end, t.speaker) for t in turns_from_windows(oracle[f], *window_embeddings(audio[f], oracle[f], settings), settings, (), loudness[f])]
            for f in files})  # fmt: skip
    results.update(rows=rows, stages=stages)
    print("\nper file, strict DER (%):")
    print(f"{'file':6s} " + " ".join(f"{r['system'][:22]:>22s}" for r in rows))
    for f in files:
        print(f"{f:6s} " + " ".join(f"{r['per_file'][f]:22.1f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
