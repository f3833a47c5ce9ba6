"""The emotion track of two-speaker recordings with diarized speakers against the true speakers (issue #35).

    OMP_NUM_THREADS=1 python benchmarks/diarization_emotion.py [--data ../shared/data/ravdess] [--out runs/diarization-emotion]
        [--models voice-ravdess[,CHECKPOINT ...]] [--pairs 19-20,21-22,23-24,19-21,20-22]

Each pair of RAVDESS test actors (19–24: no model here saw them) becomes one conversation: their clips of four
emotions (neutral, happy, sad, angry: 28 each), each cut to its voiced extent (40 dB below its loudest frame,
``merkit.features.media.trim_quiet``), in a shuffled order where the next clip is the other actor's two times
in three; after a change of speaker the pause is 0.2, 0.35 or 1.0 s (two in three under the voice activity's
0.5 s, so the change falls inside one speech stretch and only the speakers can cut it), after the same speaker
1.0 s. The true RTTM is each clip's span and actor. Each model predicts the recording
(``merkit.recording.predict_recording``, Silero + Whisper tiny.en as in ``merkit predict``) three times: the
true RTTM, ``--speakers auto`` (``DiarizationSettings()``, merkit's default), and ``none`` (one unknown
speaker, nothing cut at changes: the baseline). Each clip takes the label of the segment that covers most of
it ("missed" when none does); accuracy against the clips' labels, pooled over the recordings.

The same recordings also give a diarization error rate that no model here was trained on (segmentation-3.0 saw
AMI, not RAVDESS): ``merkit.diarization.diarize`` with Silero's and with segmentation-3.0's voice activity,
beside one speaker for all speech of each, strict (no collar) and with the 0.25 s collar.

``--snap-grid`` chooses ``DiarizationSettings.snap`` (how far a change of speaker may move to the quietest moment)
on conversations of training actors built the same way (``--snap-pairs``, default 1-2,3-4,5-6), by pooled strict
DER, and stops: the test pairs are not read.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_helpers import ravdess_clips  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diarization_ami import annotation  # noqa: E402

RATE = 16_000


def turn_order(data: Path, actors: tuple[int, int]) -> list[tuple[Path, str, int, float]]:
    """The pair's clips of four emotions as one conversation: (clip, label, actor, pause before it in seconds)."""
    rng = random.Random(actors[0] * 100 + actors[1])
    queues = {actor: ravdess_clips(data, [actor]) for actor in actors}
    for clips in queues.values():
        rng.shuffle(clips)
    turns, speaker = [], rng.choice(actors)
    while any(queues.values()):
        other = actors[1] if speaker == actors[0] else actors[0]
        following = other if queues[other] and (not queues[speaker] or rng.random() < 2 / 3) else speaker
        pause = 0.5 if not turns else rng.choice((0.2, 0.35, 1.0)) if following != speaker else 1.0
        speaker = following
        path, label, _ = queues[speaker].pop()
        turns.append((path, label, speaker, pause))
    return turns


def record(turns: list[tuple[Path, str, int, float]], out: Path) -> list[tuple[float, float, str, str]]:
    """The conversation as one recording at ``out`` (each clip cut to its voiced extent); each clip's (start, end, speaker, label)."""
    from merkit.features.media import decode_audio, trim_quiet
    from merkit.io import write_wav

    pieces, truth, clock = [], [], 0
    for path, label, actor, pause in turns:
        samples = trim_quiet(decode_audio(str(path), sample_rate=RATE), RATE, 40.0)
        pieces += [np.zeros(int(pause * RATE), np.float32), samples]
        clock += int(pause * RATE)
        truth.append((clock / RATE, (clock + len(samples)) / RATE, f"Actor_{actor:02d}", label))
        clock += len(samples)
    write_wav(out, np.concatenate(pieces + [np.zeros(RATE // 2, np.float32)]))
    return truth


def context_checkpoint(data: Path, out: Path, test_pairs: list[tuple[int, int]]) -> Path:
    """SDT (speaker-aware dialogue transformer) on Whisper-base vectors of each clip cut to its voiced extent, trained
    on the conversations of actors 1–16 (pairs 1–2 … 15–16, cut into dialogues of 14 turns), epoch chosen on
    actors 17–18's; the test pairs' conversations are its test split (the model on the true clips)."""
    import subprocess

    rows = []
    for first in range(1, 19, 2):
        split = "valid" if first == 17 else "train"
        for index, (path, label, actor, _) in enumerate(turn_order(data, (first, first + 1))):
            rows.append({"dialogue_id": f"actors{first}-{first + 1}-{index // 14}", "speaker": f"Actor_{actor:02d}", "label": label, "split": split, "audio": str(path.resolve())})
    for pair in test_pairs:
        rows += [{"dialogue_id": f"actors{pair[0]}-{pair[1]}", "speaker": f"Actor_{actor:02d}", "label": label, "split": "test", "audio": str(path.resolve())}
                 for path, label, actor, _ in turn_order(data, pair)]  # fmt: skip
    corpus, store, run = out / "context.jsonl", out / "context-store", out / "context-sdt"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    merkit = [sys.executable, "-m", "merkit"]
    if not (run / "seed0" / "best").is_dir():
        subprocess.run([*merkit, "extract", str(corpus), "-m", "audio", "-e", "whisper-base", "--set", "pad_to_window=False", "--set", "trim_db=40",
                        "--out", str(store), "-q", "--threads", "1"], check=True)  # fmt: skip
        subprocess.run([*merkit, "train", str(store), "--model", "sdt", "--modalities", "audio", "--seeds", "0", "--out", str(run), "-q", "--threads", "1"], check=True)
    return run / "seed0" / "best"


def clip_labels(truth, segments) -> list[str]:
    """Each clip's label: that of the segment overlapping it most ("missed" when none does)."""
    found = []
    for start, end, _, _ in truth:
        overlaps = [(min(end, s.end) - max(start, s.start), s.label) for s in segments]
        best = max(overlaps, default=(0.0, "missed"))
        found.append(best[1] if best[0] > 0 else "missed")
    return found


def scored(pair: str, wav: Path, truth):
    """What the DER of a recording needs: its 16 kHz audio, the reference annotation, the scored extent (UEM) and Silero's speech."""
    from pyannote.core import Segment, Timeline

    from merkit.features.media import decode_audio
    from merkit.recording import RecordingSettings, speech_spans

    audio = decode_audio(str(wav), sample_rate=RATE)
    reference = annotation(pair, [(a, b, who) for a, b, who, _ in truth])
    return audio, reference, Timeline([Segment(0, len(audio) / RATE)]), speech_spans(audio, RecordingSettings())


def choose_snap(args: argparse.Namespace) -> None:
    """Pooled strict DER of the default diarization on training actors' conversations for each snap value."""
    import torch
    from pyannote.metrics.diarization import DiarizationErrorRate

    from merkit.diarization import DiarizationSettings, diarize

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    depth = str(DiarizationSettings().snap_depth)  # when a grid point gives no depth: the default's
    grid = [tuple(float(x) for x in (v.split(":") + [depth])[:2]) for v in args.snap_grid.split(",")]  # snap[:depth in dB]
    metrics = {snap: DiarizationErrorRate(collar=0.0, skip_overlap=False) for snap in grid}
    for pair in args.snap_pairs.split(","):
        actors = tuple(int(a) for a in pair.split("-"))
        if min(actors) > 16:
            raise SystemExit(f"--snap-pairs {pair}: choose on training actors (1-16) only")
        wav = args.out / f"train-actors{pair}.wav"
        audio, reference, uem, silero = scored(pair, wav, record(turn_order(args.data, actors), wav))
        for snap, metric in metrics.items():
            settings = DiarizationSettings(snap=snap[0], snap_depth=snap[1])
            metric(reference, annotation(pair, [(t.start, t.end, t.speaker) for t in diarize(audio, silero, settings)]), uem=uem)
    scores = {snap: 100 * abs(metric) for snap, metric in metrics.items()}
    for snap, metric in metrics.items():
        print(f"snap {snap[0]:g} s, depth {snap[1]:g} dB: strict DER {scores[snap]:.2f} (confusion {100 * metric['confusion'] / metric['total']:.2f})")
    print(f"chosen: snap {min(scores, key=scores.get)} (pairs {args.snap_pairs})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess"))
    parser.add_argument("--out", type=Path, default=Path("runs/diarization-emotion"))
    parser.add_argument("--models", default="voice-ravdess,context", help="zoo names or checkpoints; context: the SDT trained here")
    parser.add_argument("--pairs", default="19-20,21-22,23-24,19-21,20-22")
    parser.add_argument("--skip-track", action="store_true", help="the recordings, their DER and the context model only")
    parser.add_argument("--skip-der", action="store_true", help="the recordings and the emotion track only")
    parser.add_argument("--snap-grid", help="comma-separated snap values to choose from on --snap-pairs (then stop)")
    parser.add_argument("--snap-pairs", default="1-2,3-4,5-6")
    args = parser.parse_args()
    if args.snap_grid:
        choose_snap(args)
        return

    import torch
    from pyannote.metrics.diarization import DiarizationErrorRate

    import merkit
    from merkit.diarization import DiarizationSettings, Turn, chunk_speech, diarize, to_rttm
    from merkit.recording import RecordingSettings, predict_recording

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    recordings = []
    for pair in args.pairs.split(","):
        actors = tuple(int(a) for a in pair.split("-"))
        wav, rttm = args.out / f"actors{pair}.wav", args.out / f"actors{pair}.rttm"
        truth = record(turn_order(args.data, actors), wav)
        rttm.write_text("".join(f"SPEAKER actors{pair} 1 {a:.3f} {b - a:.3f} <NA> <NA> {who} <NA> <NA>\n" for a, b, who, _ in truth))
        recordings.append((pair, wav, rttm, truth))
        print(f"actors {pair}: {len(truth)} clips, {truth[-1][1]:.0f} s, "
              f"{sum(1 for x, y in zip(truth, truth[1:]) if x[2] != y[2])} changes of speaker", flush=True)  # fmt: skip

    # diarization error rate on these recordings, by voice activity
    systems = {"silero: one speaker": None, "silero: CAM++": DiarizationSettings(vad="silero"),
               "segmentation: one speaker": None, "segmentation: CAM++": DiarizationSettings(vad="segmentation")}  # fmt: skip
    metrics = {name: (DiarizationErrorRate(collar=0.0, skip_overlap=False), DiarizationErrorRate(collar=0.5, skip_overlap=False)) for name in systems}
    counts: dict[str, list[int]] = {name: [] for name in systems}
    for pair, wav, _, truth in [] if args.skip_der else recordings:
        audio, reference, uem, silero = scored(pair, wav, truth)
        segmentation = DiarizationSettings(vad="segmentation")
        for name, settings in systems.items():
            if settings is None:
                spans = silero if name.startswith("silero") else chunk_speech(audio, silero, segmentation)[0]
                turns = [(a, b, "S") for a, b in spans]
            else:
                turns = [(t.start, t.end, t.speaker) for t in diarize(audio, silero, settings)]
            hypothesis = annotation(pair, turns)
            for metric in metrics[name]:
                metric(reference, hypothesis, uem=uem)
            counts[name].append(len({who for *_, who in turns}))
    der_rows = []
    for name, (strict, collar) in [] if args.skip_der else metrics.items():
        der_rows.append({"system": name, "strict": 100 * abs(strict), "collar": 100 * abs(collar),
                         "missed": 100 * strict["missed detection"] / strict["total"], "false_alarm": 100 * strict["false alarm"] / strict["total"],
                         "confusion": 100 * strict["confusion"] / strict["total"], "speakers": counts[name]})  # fmt: skip
        print(f"DER {name:28s} strict {der_rows[-1]['strict']:5.1f}  collar {der_rows[-1]['collar']:5.1f}  "
              f"(missed {der_rows[-1]['missed']:.1f}, false alarm {der_rows[-1]['false_alarm']:.1f}, confusion {der_rows[-1]['confusion']:.1f})  "
              f"speakers {counts[name]}", flush=True)  # fmt: skip

    # the emotion track with true, diarized and no speakers
    track_rows = []
    pairs = [tuple(int(a) for a in pair.split("-")) for pair in args.pairs.split(",")]
    for model in args.models.split(","):
        checkpoint = context_checkpoint(args.data, args.out, pairs) if model == "context" else model
        if args.skip_track:
            continue
        with merkit.load(checkpoint, threads=1) as predictor:
            found: dict[str, list[str]] = {"true RTTM": [], "auto": [], "none": []}
            truth_labels: list[str] = []
            for pair, wav, rttm, truth in recordings:
                truth_labels += [label for *_, label in truth]
                for mode, speakers in (("true RTTM", rttm), ("auto", "auto"), ("none", "none")):
                    timeline = predict_recording(predictor, wav, RecordingSettings(), speakers=speakers, diarization=DiarizationSettings())
                    found[mode] += clip_labels(truth, timeline.segments)
                    if mode == "auto":
                        (args.out / f"actors{pair}.auto.rttm").write_text(to_rttm([Turn(s.start, s.end, s.speaker) for s in timeline.segments], f"actors{pair}"))
        row = {"model": model, "clips": len(truth_labels)}
        for mode, labels in found.items():
            row[mode] = 100 * float(np.mean([a == b for a, b in zip(labels, truth_labels, strict=True)]))
            row[f"{mode} missed"] = labels.count("missed")
        track_rows.append(row)
        print(f"emotion track, {model}: " + ", ".join(f"{mode} {row[mode]:.2f} ({row[mode + ' missed']} missed)" for mode in found), flush=True)
    if not args.skip_track:
        (args.out / "results.json").write_text(json.dumps({"der": der_rows, "track": track_rows, "pairs": args.pairs}, indent=2))


if __name__ == "__main__":
    main()
