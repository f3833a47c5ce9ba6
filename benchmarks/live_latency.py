"""Live mode on this machine (issue #36): turn latency, per-stage cost, agreement with the offline timeline, memory.

    OMP_NUM_THREADS=1 python benchmarks/live_latency.py CKPT [--minutes 10] [--no-pace] [--set KEY=VALUE] [--out live.json]

Builds a stream of ``--minutes`` from real speech: RAVDESS clips of the test actors 19–24 (``--data``,
the shared 16 kHz copy; never seen in training) alternating with espeak-ng lines of two voices, 0.8–2.0 s of
silence after each (seeded). Plays it through :class:`merkit.live.LiveSession` as ``merkit live`` does (frames
of 0.1 s at real-time pace, each arriving at its due time even when a slow turn held the loop, so a backlog
counts in the latency), one thread, with the live settings given by ``--set``. Then the offline pipeline
(:func:`merkit.recording.predict_recording`) on the same file in the same run, with the same cutting and Whisper
settings (and again with ``merkit predict``'s defaults where those differ): its labels are the reference for the
agreement, and its cost per turn the baseline. ``per_turn`` gives each turn's latency beside the seconds from its
end of speech to its close (the pause rule) and its stages. The resident memory after every turn and its slope
over the second half of the stream (MB per minute of audio): ``live_memory.py`` says where it goes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

LINES = [
    "i cannot believe you did that again, i am so tired of this",
    "oh that is wonderful news, congratulations to both of you",
    "could you pass me the report from yesterday please",
    "i miss her so much, the house feels empty without her",
    "get out of my office right now",
    "we could try the new place around the corner tonight",
    "honestly i have no idea what you are talking about",
    "that is the best thing that happened to me all year",
    "the train leaves at half past seven from platform two",
    "why would anyone leave the door open in this weather",
    "i am sorry, i should have told you earlier",
    "wait, you mean the whole team is coming to the party",
]
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}


def test_clips(data: Path, rng: random.Random) -> list[Path]:
    """RAVDESS clips of the test actors 19–24 (never seen in training), in ``rng``'s order."""
    clips = [c for c in sorted((data / "audio").glob("Actor_*/*.flac")) if 19 <= int(c.stem.split("-")[-1]) <= 24]
    rng.shuffle(clips)
    return clips


def new_length(audio: list[np.ndarray], i: int) -> np.ndarray:
    """Call ``i``'s turn: the clips in turn, 10 ms shorter on each pass, so that every call brings a new length."""
    return audio[i % len(audio)][: audio[i % len(audio)].size - 160 * (i // len(audio))]


def build(folder: Path, data: Path, seconds: float, seed: int = 0) -> tuple[Path, list[dict]]:
    """The stream's wav (16 kHz mono float32) and its parts: (start, end, source, truth)."""
    import soundfile

    from merkit.features.media import decode_audio

    rng = random.Random(seed)
    clips = test_clips(data, rng)
    pieces, parts, clock, i = [], [], 0, 0
    while clock < seconds * 16_000:
        if i % 2 == 0:
            clip = clips[(i // 2) % len(clips)]
            samples, source, truth = decode_audio(str(clip), sample_rate=16_000), clip.stem, RAVDESS_EMOTIONS[clip.stem.split("-")[2]]
        else:
            wav = folder / f"line{i}.wav"
            voice = "en-us" if i % 4 == 1 else "en-gb+m3"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), LINES[(i // 2) % len(LINES)]], check=True)
            samples, source, truth = decode_audio(str(wav), sample_rate=16_000), f"espeak {voice}", None
        parts.append({"start": clock / 16_000, "end": (clock + samples.size) / 16_000, "source": source, "truth": truth})
        pause = np.zeros(int(rng.uniform(0.8, 2.0) * 16_000), np.float32)
        pieces += [samples, pause]
        clock += samples.size + pause.size
        i += 1
    path = folder / "stream.wav"
    soundfile.write(path, np.concatenate(pieces), 16_000, subtype="FLOAT")
    return path, parts


def report(result: dict, out: Path | None) -> None:
    """The result as JSON on stdout, and in ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q, method="linear")) if values else float("nan")


def offline_run(predictor, path: Path, settings, timeline, turns) -> tuple[object, dict]:
    """The offline timeline of the stream with ``settings``, and how the live labels and transcripts agree with it on
    the turns both cut at the same span (final: after the last turn; first: each turn's own event)."""
    from merkit.recording import predict_recording

    began = time.monotonic()
    offline = predict_recording(predictor, path, settings, cache=False)
    seconds = time.monotonic() - began
    by_span = {(s.start, s.end): s for s in offline.segments}
    first = {e.turn: e.label for e in turns}
    same_span = [(i, t, by_span[(t.start, t.end)]) for i, t in enumerate(timeline.segments) if (t.start, t.end) in by_span]
    return offline, {
        "settings": settings.model_dump(exclude_defaults=True), "seconds": round(seconds, 1), "turns": len(offline.segments),
        "seconds_per_turn": seconds / len(offline.segments), "same_span_turns": len(same_span),
        "agreement_final": sum(a.label == b.label for _, a, b in same_span) / max(1, len(same_span)),
        "agreement_first": sum(first[i] == b.label for i, _, b in same_span) / max(1, len(same_span)),
        "same_text": sum(a.text == b.text for _, a, b in same_span) / max(1, len(same_span)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--no-pace", dest="pace", action="store_false")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="a live setting (min_pause, early_asr, compute_type, context_turns, ...); the offline run takes the same")
    parser.add_argument("--offline", action=argparse.BooleanOptionalAction, default=True, help="also run the offline pipeline")
    parser.add_argument("--voices", action="store_true", help="speakers from voice embeddings (default: one speaker, as the offline timeline)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from merkit.devices import bound_native_caches

    bound_native_caches()  # as `merkit live` does, before torch is imported
    import psutil
    import torch

    import merkit
    from merkit.live import LiveSession, LiveSettings, OneSpeaker
    from merkit.live_cli import file_frames, paced
    from merkit.recording import RecordingSettings

    torch.set_num_threads(1)
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp, merkit.load(args.checkpoint, threads=1) as predictor:
        path, parts = build(Path(tmp), args.data, 60 * args.minutes)
        predictor.predict([{"text": "warming up"}])
        events, memory, rows, began = [], [], [], time.monotonic()
        settings = LiveSettings(**dict(pair.split("=", 1) for pair in args.pairs))
        with LiveSession(predictor, settings, speakers=None if args.voices else OneSpeaker()) as session:
            for frame, arrived in paced(file_frames(path), args.pace, time.monotonic):
                for speech in session.listen(frame, arrived):
                    closed = time.monotonic() - speech.heard
                    new = session.recognise(speech)
                    turn = next(e for e in new if e.type == "turn")
                    rows.append({"seconds": round(turn.end - turn.start, 2), "closed_after": round(closed, 4), "latency": turn.latency, "early": turn.early, **turn.stages})
                    events += new
                    memory.append((session.seconds, process.memory_info().rss / 2**20))
            events += session.stop()
            live_seconds = time.monotonic() - began
            timeline = session.timeline(predictor.meta["model"], predictor.labels.names)
        turns = [e for e in events if e.type == "turn"]
        result = {
            "checkpoint": str(args.checkpoint), "minutes": round(parts[-1]["end"] / 60, 2), "pace": args.pace,
            "settings": settings.model_dump(exclude_defaults=True), "speakers": "voice embeddings" if args.voices else "one", "turns": len(turns), "revisions": sum(e.type == "revision" for e in events),
            "live_seconds": round(live_seconds, 1), "parts": len(parts),
        }  # fmt: skip
        latencies = [e.latency for e in turns]
        result["latency"] = {"p50": quantile(latencies, 0.5), "p95": quantile(latencies, 0.95), "max": max(latencies), "mean": statistics.mean(latencies)}
        result["stages"] = {
            stage: {"p50": quantile([e.stages[stage] for e in turns], 0.5), "p95": quantile([e.stages[stage] for e in turns], 0.95),
                    "mean": statistics.mean(e.stages[stage] for e in turns)}
            for stage in turns[0].stages
        }  # fmt: skip
        if len(memory) >= 4:
            half = memory[len(memory) // 2 :]
            slope = np.polyfit([m / 60 for m, _ in half], [r for _, r in half], 1)[0]
            result["memory"] = {"rss_first_mb": memory[0][1], "rss_last_mb": memory[-1][1], "slope_mb_per_minute_second_half": float(slope)}
        result["per_turn"] = rows
        if args.offline:
            recording = settings.recording()
            offline, result["offline"] = offline_run(predictor, path, recording, timeline, turns)
            if recording != RecordingSettings():  # also against `merkit predict`'s defaults
                result["offline_default_settings"] = offline_run(predictor, path, RecordingSettings(), timeline, turns)[1]
            by_span, first = {(s.start, s.end): s for s in offline.segments}, {e.turn: e.label for e in turns}
            truth = []
            for p in parts:
                if p["truth"] is None:
                    continue
                inside = [i for i, t in enumerate(timeline.segments) if p["start"] <= (t.start + t.end) / 2 <= p["end"]]
                if len(inside) == 1:
                    i = inside[0]
                    off = by_span.get((timeline.segments[i].start, timeline.segments[i].end))
                    truth.append((p["truth"], first[i], timeline.segments[i].label, off.label if off else None))
            result["ravdess_turns"] = {
                "clips": sum(p["truth"] is not None for p in parts), "one_turn_each": len(truth),
                "accuracy_live_first": sum(t == a for t, a, _, _ in truth) / max(1, len(truth)),
                "accuracy_live_final": sum(t == b for t, _, b, _ in truth) / max(1, len(truth)),
                "accuracy_offline": sum(t == c for t, _, _, c in truth) / max(1, len(truth)),
            }  # fmt: skip
    report(result, args.out)


if __name__ == "__main__":
    main()
